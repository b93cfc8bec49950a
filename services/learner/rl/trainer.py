"""The single-machine policy update: group-normalised advantages and the clipped, author-weighted GRPO loss.

One :meth:`PolicyTrainer.update` per batch of rollouts makes ``ppo_epochs`` passes over it in ``mini_batches``
shuffled mini-batches, one optimizer step each. With one of each (the default) the update is on-policy: the ratio
π/π_old is exactly 1, the clip never binds and the loss is the policy gradient with the group baseline (the tandem
paper's REINFORCE). With more, the later mini-batches see weights the earlier ones moved, and ``clip_eps`` bounds
how far (PPO).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean

import torch
from transformers import PreTrainedModel

from services.learner.rl.policy import TransformersPolicy
from services.learner.rl.policy_loss import policy_loss


@dataclass(frozen=True)
class TrainItem:
    """One rollout ready for the loss: tokens, per-token loss weights (author mask × λ), and its advantage."""

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    token_weights: tuple[float, ...]
    advantage: float | tuple[float, ...]
    """One per rollout (GRPO), or one per response token (after deliberative credit assignment)."""


@dataclass(frozen=True)
class OptimizerOptions:
    """PolicyOptimizer of learner.proto, resolved (names and meanings as there)."""

    learning_rate: float = 1e-5
    group_size: int = 8
    problems_per_step: int = 4
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    junior_token_weight: float = 0.0
    temperature: float = 1.0
    max_new_tokens: int = 256
    ppo_epochs: int = 1
    """Passes over each batch of rollouts."""
    mini_batches: int = 1
    """Optimizer steps per pass (the batch is shuffled and split into this many parts)."""


def response_log_probs(model: PreTrainedModel, items: Sequence[TrainItem], pad_id: int) -> torch.Tensor:
    """Log-prob of every response token under ``model``, right-padded to [batch, longest response]."""
    width = max(len(i.prompt_ids) + len(i.response_ids) for i in items)
    longest = max(len(i.response_ids) for i in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        full = item.prompt_ids + item.response_ids
        ids[row, : len(full)] = torch.tensor(full)
        mask[row, : len(full)] = 1
    log_probs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
    out = torch.zeros((len(items), longest))
    for row, item in enumerate(items):
        start, n = len(item.prompt_ids), len(item.response_ids)
        if n:
            # Position t predicts token t + 1.
            predicting = log_probs[row, start - 1 : start - 1 + n]
            out[row, :n] = predicting.gather(-1, torch.tensor(item.response_ids)[:, None])[:, 0]
    return out


def _advantages(items: Sequence[TrainItem], longest: int) -> torch.Tensor:
    """[B] when every item has one advantage, else [B, longest] (a scalar repeated over its tokens)."""
    if all(isinstance(i.advantage, float) for i in items):
        return torch.tensor([i.advantage for i in items])
    out = torch.zeros((len(items), longest))
    for row, item in enumerate(items):
        if isinstance(item.advantage, float):
            out[row, : len(item.response_ids)] = item.advantage
        else:
            out[row, : len(item.advantage)] = torch.tensor(item.advantage)
    return out


class PolicyTrainer:
    """Owns the optimizer of a :class:`TransformersPolicy`; one :meth:`update` per training step."""

    def __init__(
        self, policy: TransformersPolicy, options: OptimizerOptions, reference: PreTrainedModel | None = None
    ) -> None:
        if options.kl_coef > 0 and reference is None:
            raise ValueError("kl_coef > 0 needs the initial policy as a reference model")
        self.policy = policy
        self.options = options
        self.reference = reference.eval() if reference is not None else None
        self.optimizer = torch.optim.AdamW(policy.model.parameters(), lr=options.learning_rate, weight_decay=0.0)
        self._updates = 0  # seeds each update's mini-batch shuffle

    def set_learning_rate(self, learning_rate: float) -> None:
        """From the next step on (e.g. the game phase's own rate); the optimizer's moments are kept."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate

    def update(self, items: Sequence[TrainItem]) -> dict[str, float]:
        """``ppo_epochs`` × ``mini_batches`` gradient steps on ``items``; returns the mean loss statistics."""
        items = [i for i in items if i.response_ids]
        if not items:
            return {"loss": 0.0}
        options = self.options
        parts = min(options.mini_batches, len(items))
        on_policy = options.ppo_epochs == 1 and parts == 1
        # The sampling policy's log-probs (π_old): with one step they are the current ones, read off the same pass.
        old = None if on_policy else self._log_probs(self.policy.model, items)
        reference = None if self.reference is None else self._log_probs(self.reference, items)
        shuffle = random.Random(self._updates)
        self._updates += 1
        passes: list[dict[str, float]] = []
        for _ in range(options.ppo_epochs):
            order = list(range(len(items)))
            if not on_policy:
                shuffle.shuffle(order)
            for part in range(parts):
                rows = order[part::parts]
                passes.append(
                    self._step(
                        [items[r] for r in rows],
                        None if old is None else [old[r] for r in rows],
                        None if reference is None else [reference[r] for r in rows],
                    )
                )
        return {key: fmean(p[key] for p in passes) for key in passes[0]}

    def _log_probs(self, model: PreTrainedModel, items: Sequence[TrainItem]) -> list[torch.Tensor]:
        """Each item's response log-probs under ``model``, without gradient."""
        with torch.no_grad():
            table = response_log_probs(model, items, self.policy.pad_id)
        return [table[row, : len(item.response_ids)] for row, item in enumerate(items)]

    def _step(
        self, items: list[TrainItem], old: list[torch.Tensor] | None, reference: list[torch.Tensor] | None
    ) -> dict[str, float]:
        """One optimizer step on ``items``."""
        model = self.policy.model
        longest = max(len(i.response_ids) for i in items)
        weights = torch.zeros((len(items), longest))
        for row, item in enumerate(items):
            weights[row, : len(item.token_weights)] = torch.tensor(item.token_weights)
        advantages = _advantages(items, longest)
        model.train()
        log_probs = response_log_probs(model, items, self.policy.pad_id)
        loss, stats = policy_loss(
            log_probs,
            log_probs.detach() if old is None else _padded(old, longest),
            advantages,
            weights,
            clip_eps=self.options.clip_eps,
            kl_coef=self.options.kl_coef,
            ref_log_probs=None if reference is None else _padded(reference, longest),
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        self.optimizer.step()
        self.policy.prefix_cache.clear()  # its KV states were computed by the weights just changed
        model.eval()
        return {
            "loss": float(loss.detach()),
            "grad_norm": float(grad_norm.detach()),
            **{k: float(v) for k, v in stats.items()},
        }


def _padded(rows: Sequence[torch.Tensor], longest: int) -> torch.Tensor:
    """Per-item log-probs right-padded with 0 to [len(rows), longest]."""
    out = torch.zeros((len(rows), longest))
    for index, row in enumerate(rows):
        out[index, : len(row)] = row
    return out
