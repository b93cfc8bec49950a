"""A real policy step on the bundled policy: DCA's step split reaches the loss, the EOS is trained, PPO clips."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from services.decoding.requests import SegmentRequest
from services.learner.clients.segments import Segment
from services.learner.rl import trainer as trainer_module
from services.learner.rl.credit import dca_token_advantages
from services.learner.rl.policy import TransformersPolicy
from services.learner.rl.policy_step import Attempt, policy_step
from services.learner.rl.rollout import RolloutOptions
from services.learner.rl.schedule import SOLO
from services.learner.rl.trainer import OptimizerOptions, PolicyTrainer
from services.tasks.prompts import PromptFormat
from services.tasks.toy_task import ToyTask

MODELS = Path(__file__).resolve().parents[3] / "models"
OPTIONS = RolloutOptions(SOLO, max_new_tokens=60)


class NoWeakModel:
    """Solo rollouts never call the weak model."""

    async def write(self, requests: Sequence[SegmentRequest]) -> list[Segment]:
        assert not requests, "a solo rollout called the weak model"
        return []


async def alternating_reward(attempts: Sequence[Attempt]) -> tuple[list[float], dict[str, float]]:
    return [float(i % 2 == 0) for i in range(len(attempts))], {}


def first_line_end(solution: str) -> int | None:
    at = solution.find("\n")
    return at + 1 if 0 <= at < len(solution) - 1 else None


def policy_and_prompts() -> tuple[TransformersPolicy, PromptFormat]:
    policy = TransformersPolicy.load(MODELS / "strong", torch_threads=1)
    return policy, PromptFormat(ToyTask(), policy.tokenizer)


async def test_dca_step_split_reaches_the_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    policy, prompts = policy_and_prompts()
    seen: list[torch.Tensor] = []

    def recording_loss(*args: Any, **kwargs: Any) -> Any:
        seen.append(args[2].clone())  # the advantages the loss is given
        return original(*args, **kwargs)

    original = trainer_module.policy_loss
    monkeypatch.setattr(trainer_module, "policy_loss", recording_loss)

    async def credit(attempts: Sequence[Attempt], advantages: Sequence[float]) -> list[list[float]]:
        # Step 1 (the first line) raises the score to 1.0, the rest lowers it to 0.5: a better-than-group rollout's
        # credit goes to step 1 only, a worse one's blame to the rest only.
        out = []
        for a, advantage in zip(attempts, advantages, strict=True):
            end = first_line_end(a.solution)
            steps = [] if end is None else [(end, 1.0), (len(a.solution), 0.5)]
            out.append(dca_token_advantages(advantage, steps, policy.tokens_text(a.trained_ids), 0.0))
        return out

    trainer = PolicyTrainer(policy, OptimizerOptions(group_size=4, learning_rate=1e-4))
    problems = ToyTask().problems("train", 3, 5)
    _, attempts = await policy_step(
        trainer, NoWeakModel(), prompts, problems, OPTIONS, alternating_reward, seed=1, credit_fn=credit
    )
    assert len(seen) == 1
    table = seen[0]
    checked = 0
    for row, a in enumerate([a for a in attempts if a.trained_ids]):
        end = first_line_end(a.solution)
        if end is None:
            continue
        values = table[row, : len(a.trained_ids)].tolist()
        split = len(policy.encode(a.solution[:end]))  # the toy tokenizer is one token per character
        first, rest = values[:split], values[split:]
        if row % 2 == 0:  # reward 1 in a {1, 0, 1, 0} group: A = +0.866, all on step 1, doubled (K = 2)
            assert first == pytest.approx([2 * 0.866] * split, abs=1e-3) and set(rest) == {0.0}
        else:
            assert set(first) == {0.0} and rest == pytest.approx([-2 * 0.866] * len(rest), abs=1e-3)
        checked += 1
    assert checked >= 6


async def test_the_policys_eos_is_trained_and_weighted() -> None:
    policy, prompts = policy_and_prompts()
    trainer = PolicyTrainer(policy, OptimizerOptions(group_size=4))
    _, attempts = await policy_step(
        trainer, NoWeakModel(), prompts, ToyTask().problems("train", 2, 5), OPTIONS, alternating_reward, seed=2
    )
    ended = [a for a in attempts if a.rollout.ended_by_eos]
    assert ended, "no solution ended within 60 tokens"
    for a in ended:
        assert a.trained_ids[:-1] == tuple(a.rollout.response_ids)
        assert a.trained_ids[-1] in policy.tokens.eos_ids
        assert a.token_weights(0.0)[-1] == 1.0  # the policy stopped: its stop decision is trained
    for a in attempts:
        if not a.rollout.ended_by_eos:
            assert a.trained_ids == tuple(a.rollout.response_ids)  # out of budget: nothing to stop on


@pytest.mark.parametrize(("epochs", "mini_batches", "binds"), [(1, 1, False), (2, 2, True)])
async def test_clip_binds_only_off_policy(epochs: int, mini_batches: int, binds: bool) -> None:
    policy, prompts = policy_and_prompts()
    options = OptimizerOptions(group_size=4, learning_rate=3e-3, ppo_epochs=epochs, mini_batches=mini_batches)
    trainer = PolicyTrainer(policy, options)
    metrics, _ = await policy_step(
        trainer, NoWeakModel(), prompts, ToyTask().problems("train", 4, 5), OPTIONS, alternating_reward, seed=3
    )
    if binds:
        assert metrics["clip_frac"] > 0.0 and metrics["ratio_mean"] != 1.0
    else:
        assert metrics["clip_frac"] == 0.0 and metrics["ratio_mean"] == 1.0
