"""Tandem rollouts against the real weak-model service: authorship, forced switches, determinism, the author mask."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import pytest
import torch

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import weak_model_pb2_grpc
from services.decoding.requests import SegmentRequest
from services.learner.clients.segments import Segment, SegmentWriter
from services.learner.clients.weak_model import WeakModelClient
from services.learner.rl.policy import TransformersPolicy
from services.learner.rl.policy_loss import policy_loss
from services.learner.rl.rollout import Rollout, RolloutOptions, new_rollouts, run_tandem
from services.learner.rl.schedule import Author, HandoffSchedule
from services.learner.rl.trainer import OptimizerOptions, PolicyTrainer, TrainItem, response_log_probs
from services.tasks import toy
from services.weak_model.app import start_weak_model
from services.weak_model.settings import WeakModelSettings

MODELS = Path(__file__).resolve().parents[3] / "models"


@pytest.fixture
async def weak() -> AsyncIterator[WeakModelClient]:
    app = await start_weak_model(
        WeakModelSettings(port=0, metrics_port=0, drain_delay_s=0, grace_period_s=1, max_delay_ms=2.0)
    )
    channel = open_channel(f"127.0.0.1:{app.server.port}")
    yield WeakModelClient(weak_model_pb2_grpc.WeakModelServiceStub(channel))
    await channel.close()
    await app.stop()


@pytest.fixture(scope="module")
def policy() -> TransformersPolicy:
    return TransformersPolicy.load(MODELS / "strong", torch_threads=1)


async def _rollouts(
    policy: TransformersPolicy,
    weak: WeakModelClient,
    schedule: HandoffSchedule,
    count: int = 32,
    seed: int = 7,
    overlap: bool = True,
    temperature: float = 1.0,
    author: SegmentWriter | None = None,
) -> list[Rollout]:
    problems = toy.generate("train", count, seed=1)
    prompts = [policy.encode(toy.format_prompt(p.question)) for p in problems]
    options = RolloutOptions(schedule, max_new_tokens=80, policy_temperature=temperature, weak_temperature=temperature)
    rollouts = new_rollouts(prompts, options, policy.context_window, seed)
    await run_tandem(rollouts, author or policy, weak, options, overlap=overlap)
    return rollouts


@dataclass
class PerCall:
    """The policy behind the plain SegmentWriter interface: one decoding call per batch of segments."""

    policy: TransformersPolicy
    calls: int = 0

    async def write(self, requests: Sequence[SegmentRequest]) -> list[Segment]:
        self.calls += bool(requests)
        return await self.policy.write(requests)


async def test_every_token_has_an_author_and_both_write(policy: TransformersPolicy, weak: WeakModelClient) -> None:
    rollouts = await _rollouts(policy, weak, HandoffSchedule(strategy="word", p_primary=0.5))
    fractions = [r.authorship.senior_token_frac for r in rollouts]
    mean = sum(fractions) / len(fractions)
    assert 0.3 < mean < 0.8, mean  # words are drawn 50/50; the policy's words are longer (jargon) on average
    assert sum(r.authorship.num_handoffs for r in rollouts) > len(rollouts)
    for r in rollouts:
        assert len(r.authorship.authors) == len(r.response_ids) <= r.budget
        assert r.ended_by_eos or len(r.response_ids) == r.budget


async def test_switch_rule_forces_the_weak_model_after_max_gap_tokens(
    policy: TransformersPolicy, weak: WeakModelClient
) -> None:
    schedule = HandoffSchedule(strategy="word", p_primary=1.0, max_gap_tokens=6, gap_rule="switch")
    rollouts = await _rollouts(policy, weak, schedule)
    runs = [(a, len(list(g))) for r in rollouts for a, g in groupby(r.authorship.authors)]
    assert max(n for a, n in runs if a is Author.POLICY) <= 6
    assert any(a is Author.WEAK for a, _ in runs)  # only forced switches hand over at p_primary = 1


async def test_redraw_rule_cuts_segments_at_max_gap_tokens(policy: TransformersPolicy, weak: WeakModelClient) -> None:
    # p_primary = 1 redraws the policy at every gap: it writes everything, in segments of at most 6 tokens.
    rollouts = await _rollouts(policy, weak, HandoffSchedule(strategy="word", p_primary=1.0, max_gap_tokens=6), 8)
    assert {a for r in rollouts for a in r.authorship.authors} == {Author.POLICY}
    assert all(r.segments >= len(r.response_ids) / 6 for r in rollouts)


async def test_same_seed_same_rollouts(policy: TransformersPolicy, weak: WeakModelClient) -> None:
    first = await _rollouts(policy, weak, HandoffSchedule(), count=8, seed=3)
    again = await _rollouts(policy, weak, HandoffSchedule(), count=8, seed=3)
    other = await _rollouts(policy, weak, HandoffSchedule(), count=8, seed=4)
    assert [r.response_ids for r in first] == [r.response_ids for r in again]
    assert [r.authorship.authors for r in first] == [r.authorship.authors for r in again]
    assert [r.response_ids for r in first] != [r.response_ids for r in other]


async def test_lockstep_overlapped_and_continuous_scheduling_write_the_same_rollouts(
    policy: TransformersPolicy, weak: WeakModelClient
) -> None:
    # Other batches, other moments, cached prefixes or not, segments continued in the policy's decoding loop or
    # prefilled afresh: each rollout's segments are seeded by the rollout alone. T = 2.5: the seeds matter.
    policy.prefix_cache.clear()
    forms = {
        "lockstep": dict(overlap=False),
        "overlapped, one policy call per batch": dict(author=PerCall(policy)),
        "continuous": {},
    }
    written = {
        name: await _rollouts(policy, weak, HandoffSchedule(), count=16, seed=5, temperature=2.5, **form)
        for name, form in forms.items()
    }
    lockstep = written["lockstep"]
    for rollouts in written.values():
        assert [r.response_ids for r in rollouts] == [r.response_ids for r in lockstep]
        assert [r.authorship.authors for r in rollouts] == [r.authorship.authors for r in lockstep]
    assert policy.prefix_cache.stats.reused_share > 0.5  # the policy fed mostly what the weak model added
    assert len({tuple(r.response_ids) for r in lockstep}) == 16  # sampled, not all alike


async def test_the_policy_continues_its_own_segments_without_a_new_call(
    policy: TransformersPolicy, weak: WeakModelClient
) -> None:
    """At p_primary 1 with 6-token gaps the policy writes every segment: per call it needs one call per segment
    round; continuous, it holds each rollout in one decoding loop and never prefills from its cache."""
    schedule = HandoffSchedule(strategy="word", p_primary=1.0, max_gap_tokens=6)
    per_call = PerCall(policy)
    policy.prefix_cache.clear()
    first = await _rollouts(policy, weak, schedule, count=8, author=per_call)
    lookups = policy.prefix_cache.stats.lookups
    again = await _rollouts(policy, weak, schedule, count=8)
    assert [r.response_ids for r in again] == [r.response_ids for r in first]
    assert per_call.calls >= max(r.segments for r in first) > 3
    assert policy.prefix_cache.stats.lookups == lookups + 8  # one join per rollout, then continued in the loop


async def test_weak_tokens_get_no_gradient_at_lambda_zero(policy: TransformersPolicy, weak: WeakModelClient) -> None:
    rollouts = await _rollouts(policy, weak, HandoffSchedule(), count=8)
    advantages = [1.0 if i % 2 else -1.0 for i in range(len(rollouts))]
    for junior_weight in (0.0, 0.2):
        items = [
            TrainItem(r.prompt_ids, tuple(r.response_ids), tuple(r.authorship.loss_weights(junior_weight)), a)
            for r, a in zip(rollouts, advantages, strict=True)
        ]
        log_probs = response_log_probs(policy.model, items, policy.pad_id)
        weights = torch.zeros_like(log_probs)
        for row, item in enumerate(items):
            weights[row, : len(item.token_weights)] = torch.tensor(item.token_weights)
        log_probs.retain_grad()
        loss, _ = policy_loss(log_probs, log_probs.detach(), torch.tensor(advantages), weights)
        loss.backward()
        weak_mask = torch.zeros_like(log_probs, dtype=torch.bool)
        for row, r in enumerate(rollouts):
            for col, author in enumerate(r.authorship.authors):
                weak_mask[row, col] = author is Author.WEAK
        assert weak_mask.any()
        weak_grad = log_probs.grad[weak_mask]
        if junior_weight == 0.0:
            assert torch.count_nonzero(weak_grad) == 0
        else:
            assert torch.count_nonzero(weak_grad) == weak_mask.sum()
        policy.model.zero_grad(set_to_none=True)


def test_an_update_on_weak_tokens_only_changes_nothing(policy: TransformersPolicy) -> None:
    trainer = PolicyTrainer(policy, OptimizerOptions(learning_rate=1e-2))
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    item = TrainItem((1, 5, 6), (7, 8, 9), (0.0, 0.0, 0.0), 1.0)
    trainer.update([item])
    assert all(torch.equal(before[k], v) for k, v in policy.model.state_dict().items())
