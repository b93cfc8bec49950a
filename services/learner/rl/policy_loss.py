"""GRPO-style clipped policy objective with per-token loss weights, matching OpenRLHF's semantics.

Mirrors ``openrlhf/models/loss.py`` ``PolicyLoss`` (clipped surrogate, ``masked_mean`` reduction),
``openrlhf/models/utils.py`` ``compute_approx_kl`` (k1/k2/k3, clamped to [-10, 10]) and the ``group_norm``
advantage estimator of ``openrlhf/trainer/ppo_utils/experience_maker.py``. OpenRLHF's ``openrlhf.models`` does not
import on CPU without flash-attn, so the few lines are restated here rather than imported.

Token weights generalise OpenRLHF's 0/1 ``action_mask``: 1 for policy tokens, λ for weak-model tokens, 0 for padding.
The reduction is the weighted mean ``sum(w·x) / sum(w)``, which is exactly ``masked_mean`` when the weights are 0/1.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from statistics import fmean, stdev
from typing import Literal

import torch

KlKind = Literal["k1", "k2", "k3"]


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """(reward − group mean) / (group std + eps) for consecutive groups of ``group_size`` rollouts.

    ``rewards``: shape [G·n], the n rollouts of each problem adjacent. The std is torch's default unbiased one
    (Bessel-corrected, n − 1), as in OpenRLHF's ``rewards.std(-1)``; OpenRLHF adds 1e-9, we default to 1e-6. A group
    whose rewards are all equal, or a group of one, gets advantage 0 (no NaN).
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1; got {group_size}")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries")
    groups = rewards.reshape(-1, group_size)
    centred = groups - groups.mean(dim=-1, keepdim=True)
    if group_size == 1:
        return centred.reshape(-1)  # zeros; the unbiased std of one value is NaN
    return (centred / (groups.std(dim=-1, keepdim=True) + eps)).reshape(-1)


def keyed_advantages(rewards: Sequence[float], keys: Sequence[Hashable], eps: float = 1e-6) -> list[float]:
    """:func:`group_advantages` over groups named by ``keys`` (e.g. (problem, role)) instead of consecutive runs.

    Same formula: (reward − mean of its group) / (unbiased std of its group + eps); a group of one gets 0.
    """
    if len(rewards) != len(keys):
        raise ValueError(f"{len(rewards)} rewards but {len(keys)} keys")
    groups: dict[Hashable, list[float]] = defaultdict(list)
    for reward, key in zip(rewards, keys, strict=True):
        groups[key].append(reward)
    stats = {key: (fmean(v), stdev(v) if len(v) > 1 else 0.0) for key, v in groups.items()}
    return [
        0.0 if len(groups[key]) == 1 else (reward - stats[key][0]) / (stats[key][1] + eps)
        for reward, key in zip(rewards, keys, strict=True)
    ]


def approx_kl(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, kind: KlKind = "k3") -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from sampled tokens (Schulman's k1/k2/k3), clamped to [-10, 10]."""
    dtype = torch.promote_types(log_probs.dtype, torch.float32)  # bf16 log-probs are upcast, as OpenRLHF's .float()
    log_ratio = log_probs.to(dtype) - ref_log_probs.to(dtype)
    if kind == "k1":
        kl = log_ratio
    elif kind == "k2":
        kl = log_ratio**2 / 2.0
    elif kind == "k3":
        kl = torch.expm1(-log_ratio) + log_ratio  # e^{-x} − 1 + x ≥ 0; expm1 keeps precision near x = 0
    else:
        raise ValueError(f"kind must be k1, k2 or k3; got {kind!r}")
    return kl.clamp(min=-10.0, max=10.0)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor, token_level: bool = True) -> torch.Tensor:
    """OpenRLHF's ``masked_mean`` with real-valued weights: over all tokens, or per sequence then over sequences.

    A sequence (or batch) whose weights are all 0 contributes 0 instead of OpenRLHF's NaN.
    """
    weighted = values * weights
    if token_level:
        return weighted.sum() / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny)
    per_sequence = weighted.sum(dim=-1) / weights.sum(dim=-1).clamp(min=torch.finfo(weights.dtype).tiny)
    return per_sequence.mean()


def policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    token_weights: torch.Tensor,
    clip_eps: float = 0.2,
    kl_coef: float = 0.0,
    ref_log_probs: torch.Tensor | None = None,
    token_level: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate loss (to minimise) plus ``kl_coef`` × k3 KL to the reference, and diagnostics.

    Shapes: ``log_probs``, ``old_log_probs``, ``token_weights`` and ``ref_log_probs`` are [B, T]; ``advantages`` is
    [B] (one per sequence, as GRPO) or [B, T] (per token, e.g. after DCA). ``token_level``: OpenRLHF's
    ``token_level_loss`` (mean over all tokens) versus a mean per sequence, then over sequences.

    Stats, over tokens with weight > 0: ``clip_frac`` (share where the clipped term was taken, OpenRLHF's
    clip_ratio), ``approx_kl`` (k3 estimate of KL(π ‖ π_old)), ``ratio_mean``, and ``ref_kl`` when a reference is given.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    if log_probs.shape != old_log_probs.shape or log_probs.shape != token_weights.shape:
        raise ValueError("log_probs, old_log_probs and token_weights must have the same shape")
    ratio = (log_probs - old_log_probs).exp()
    surrogate = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = weighted_mean(-torch.min(surrogate, clipped), token_weights, token_level)

    in_loss = (token_weights > 0).to(log_probs.dtype)
    stats: dict[str, float] = {}
    with torch.no_grad():
        stats["clip_frac"] = weighted_mean((clipped < surrogate).to(log_probs.dtype), in_loss).item()
        stats["approx_kl"] = weighted_mean(approx_kl(log_probs, old_log_probs), in_loss).item()
        stats["ratio_mean"] = weighted_mean(ratio, in_loss).item()
    if ref_log_probs is not None:
        ref_kl = approx_kl(log_probs, ref_log_probs, "k3")
        stats["ref_kl"] = weighted_mean(ref_kl.detach(), in_loss).item()
        if kl_coef:
            loss = loss + kl_coef * weighted_mean(ref_kl.to(loss.dtype), token_weights, token_level)
    elif kl_coef:
        raise ValueError("kl_coef > 0 needs ref_log_probs")
    return loss, stats
