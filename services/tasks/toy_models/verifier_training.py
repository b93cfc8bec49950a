"""The toy verifier: a score head on a tiny LM, trained on sampled solutions labelled by the answer checker."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import Progress
from transformers import GPT2ForSequenceClassification, PreTrainedTokenizerFast

from services.tasks.toy import format_verifier_input
from services.tasks.toy_models.training import Schedule, train_steps


@dataclass(frozen=True)
class LabelledSolution:
    question: str
    solution: str
    correct: bool
    source: str
    """Which model wrote it: weak or strong."""


def encode_for_scoring(
    tokenizer: PreTrainedTokenizerFast, pairs: Sequence[tuple[str, str]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ending in EOS (the read-out position) and the attention mask."""
    rows = [[*tokenizer.encode(format_verifier_input(q, s)), tokenizer.eos_token_id] for q, s in pairs]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


@torch.inference_mode()
def score(
    model: GPT2ForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 256,
) -> list[float]:
    """The verifier's logit for each (question, solution)."""
    scores: list[float] = []
    for start in range(0, len(pairs), batch_size):
        ids, mask = encode_for_scoring(tokenizer, pairs[start : start + batch_size])
        scores += model(input_ids=ids, attention_mask=mask).logits[:, 0].tolist()
    return scores


def train_verifier(
    init_from: Path,
    tokenizer: PreTrainedTokenizerFast,
    samples: Sequence[LabelledSolution],
    schedule: Schedule,
    seed: int,
    progress: Progress,
) -> GPT2ForSequenceClassification:
    """Cross-entropy on correctness, batches balanced 50/50 correct/incorrect; body initialised from init_from."""
    torch.manual_seed(seed)
    model = GPT2ForSequenceClassification.from_pretrained(init_from, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    correct = [s for s in samples if s.correct]
    incorrect = [s for s in samples if not s.correct]
    if not correct or not incorrect:
        raise ValueError(f"need both labels to train a verifier: {len(correct)} correct, {len(incorrect)} incorrect")
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def loss_of_batch(rng: random.Random) -> torch.Tensor:
        half = schedule.batch_size // 2
        batch = rng.choices(correct, k=half) + rng.choices(incorrect, k=schedule.batch_size - half)
        ids, mask = encode_for_scoring(tokenizer, [(s.question, s.solution) for s in batch])
        logits = model(input_ids=ids, attention_mask=mask).logits[:, 0]
        return loss_fn(logits, torch.tensor([float(s.correct) for s in batch]))

    train_steps(model, schedule, loss_of_batch, random.Random(seed), progress, "verifier")
    return model
