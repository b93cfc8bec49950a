"""Training loops for the toy models: causal LMs on (prompt, completion) pairs and the score-head verifier."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from rich.progress import Progress
from transformers import PreTrainedModel, PreTrainedTokenizerFast

Example = tuple[str, str]  # (prompt, completion)


@dataclass(frozen=True)
class Schedule:
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int = 100
    weight_decay: float = 0.01

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to 10 %."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        return self.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def encode_completions(
    tokenizer: PreTrainedTokenizerFast, examples: Sequence[Example]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and labels that cover only the completion and its EOS."""
    rows = [
        (tokenizer.encode(prompt), [*tokenizer.encode(completion), tokenizer.eos_token_id])
        for prompt, completion in examples
    ]
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, completion) in enumerate(rows):
        full = prompt + completion
        ids[i, : len(full)] = torch.tensor(full)
        labels[i, len(prompt) : len(full)] = torch.tensor(completion)
        mask[i, : len(full)] = 1
    return ids, mask, labels


def _optimizer(model: PreTrainedModel, schedule: Schedule) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wte" not in n and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "wte" not in n and "wpe" not in n)]
    groups = [
        {"params": decay, "weight_decay": schedule.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=schedule.learning_rate, betas=(0.9, 0.98))


def train_steps(
    model: PreTrainedModel,
    schedule: Schedule,
    loss_of_batch: Callable[[random.Random], torch.Tensor],
    rng: random.Random,
    progress: Progress,
    description: str,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run ``schedule.steps`` AdamW steps; ``loss_of_batch`` draws a batch and returns its loss.

    ``on_step(step, mean of the last 50 losses)`` after each step, for progress reported elsewhere."""
    optimizer = _optimizer(model, schedule)
    model.train()
    losses: list[float] = []
    task = progress.add_task(description, total=schedule.steps, loss=float("nan"))
    for step in range(schedule.steps):
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(step)
        loss = loss_of_batch(rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        recent = losses[-50:]
        progress.update(task, advance=1, loss=sum(recent) / len(recent))
        if on_step is not None:
            on_step(step + 1, sum(recent) / len(recent))
    model.eval()
    return losses


def train_causal_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    draw_examples: Callable[[random.Random, int], list[Example]],
    schedule: Schedule,
    seed: int,
    progress: Progress,
    description: str,
) -> list[float]:
    """Next-token loss on completions only (prompts are given, never learned)."""

    def loss_of_batch(rng: random.Random) -> torch.Tensor:
        ids, mask, labels = encode_completions(tokenizer, draw_examples(rng, schedule.batch_size))
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    return train_steps(model, schedule, loss_of_batch, random.Random(seed), progress, description)
