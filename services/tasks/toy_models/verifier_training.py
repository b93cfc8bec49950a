"""The toy verifier: a score head on a tiny LM, trained on sampled solutions labelled by the answer checker."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import Progress
from transformers import GPT2ForSequenceClassification, PreTrainedTokenizerFast

from services.common.model_loading import load_pretrained
from services.tasks.prompts import PromptFormat
from services.tasks.toy_models.training import Schedule, train_steps
from services.tasks.toy_task import ToyTask
from services.tasks.verifier_input import VerifierInput


@dataclass(frozen=True)
class LabelledSolution:
    question: str
    solution: str
    correct: bool
    source: str
    """Which model wrote it: weak or strong."""


def toy_verifier_input(tokenizer: PreTrainedTokenizerFast) -> VerifierInput:
    """The toy verifier input for ``tokenizer``: problem, newline, solution, EOS as the read-out, right-padded."""
    return VerifierInput(PromptFormat(ToyTask(), tokenizer))


def score(
    model: GPT2ForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    pairs: Sequence[tuple[str, str]],
    batch_size: int = 256,
) -> list[float]:
    """The verifier's logit for each (question, solution)."""
    return toy_verifier_input(tokenizer).scores(model, pairs, batch_size)


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
    model = load_pretrained(GPT2ForSequenceClassification, init_from, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    correct = [s for s in samples if s.correct]
    incorrect = [s for s in samples if not s.correct]
    if not correct or not incorrect:
        raise ValueError(f"need both labels to train a verifier: {len(correct)} correct, {len(incorrect)} incorrect")
    loss_fn = torch.nn.BCEWithLogitsLoss()
    encoder = toy_verifier_input(tokenizer)

    def loss_of_batch(rng: random.Random) -> torch.Tensor:
        half = schedule.batch_size // 2
        batch = rng.choices(correct, k=half) + rng.choices(incorrect, k=schedule.batch_size - half)
        logits = encoder.logits(model, [(s.question, s.solution) for s in batch])
        return loss_fn(logits, torch.tensor([float(s.correct) for s in batch]))

    train_steps(model, schedule, loss_of_batch, random.Random(seed), progress, "verifier")
    return model
