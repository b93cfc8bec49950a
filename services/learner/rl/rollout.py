"""Tandem rollouts: the policy and the weak model take turns writing each solution, segment by segment.

After each segment the rollout's :class:`HandoffDrawer` says who writes the next one; the segment is appended with
its author. Each author works in its own lane: the weak model's takes every rollout waiting for it in one batched
``Continue``; the in-process policy holds the rollouts it is writing in one continuous decoding loop (they join
it, continue in it while the drawer keeps drawing the policy, and leave it for the weak model). A rollout ends at
EOS from either author or when its token budget (the run's ``max_new_tokens``, capped by the context window) is
spent. The lockstep form (one batched call per author per round) stays for comparison.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from services.decoding.boundaries import StopRule
from services.decoding.requests import SegmentRequest
from services.learner.clients.segments import ContinuousSegmentWriter, Segment, SegmentSession, SegmentWriter
from services.learner.rl.authorship import Authorship
from services.learner.rl.schedule import Author, HandoffDrawer, HandoffSchedule


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (run seed, step, rollout index, segment index): stable across processes."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class Rollout:
    """One jointly written solution: the prompt, who wrote which token, and how it ended."""

    prompt_ids: tuple[int, ...]
    budget: int
    """Most response tokens."""
    drawer: HandoffDrawer
    seed: int
    authorship: Authorship = field(default_factory=Authorship)
    ended_by_eos: bool = False
    ended_by: Author | None = None
    """Who emitted the EOS that ended the text (None while running or when the budget ran out)."""
    eos_log_prob: float | None = None
    """The policy's log-prob of that EOS, when the policy ended the text and its writer reports it."""
    eos_id: int | None = None
    """Which EOS token ended the text, when its writer reports it."""
    segments: int = 0

    @property
    def done(self) -> bool:
        return self.ended_by_eos or len(self.authorship) >= self.budget

    @property
    def response_ids(self) -> list[int]:
        return self.authorship.token_ids

    def completion(self, eos_id: int | None) -> tuple[list[int], list[bool], list[float]]:
        """The response as an RL stack trains on it, so stopping is learnt where the policy stopped.

        Token ids with the EOS that ended the text appended (the one its writer reports, else ``eos_id``), whether
        the policy wrote each token (the EOS: if the policy ended the text), and the policy's log-prob of each (0.0
        where the weak model wrote). A text that ran out of budget, or whose writer stopped without EOS, gets none.
        """
        authorship = self.authorship
        ids, log_probs = authorship.token_ids, authorship.rollout_log_probs()
        by_policy = [a is Author.POLICY for a in authorship.authors]
        ended_with = self.eos_id if self.eos_id is not None else eos_id
        if self.ended_by is not None and ended_with is not None:
            ids.append(ended_with)
            by_policy.append(self.ended_by is Author.POLICY)
            log_probs.append(self.eos_log_prob or 0.0)
        return ids, by_policy, log_probs


@dataclass(frozen=True)
class RolloutOptions:
    schedule: HandoffSchedule
    max_new_tokens: int
    policy_temperature: float = 1.0
    weak_temperature: float = 1.0


def new_rollout(prompt: Sequence[int], options: RolloutOptions, context_window: int, seed: int) -> Rollout:
    """One rollout of ``prompt`` (token ids) whose handoff draws and segment seeds all derive from ``seed``."""
    budget = min(options.max_new_tokens, context_window - len(prompt) - 1)  # -1: room for the lookahead
    if budget < 1:
        raise ValueError(f"a prompt of {len(prompt)} tokens leaves no room in the {context_window}-token window")
    return Rollout(tuple(prompt), budget, HandoffDrawer(options.schedule, seed=seed), seed)


def new_rollouts(
    prompts: Sequence[Sequence[int]], options: RolloutOptions, context_window: int, seed: int
) -> list[Rollout]:
    """Rollouts for ``prompts`` (token ids), each with its own drawer seeded from (seed, index)."""
    rollouts = []
    for index, prompt in enumerate(prompts):
        try:
            rollouts.append(new_rollout(prompt, options, context_window, derive_seed(seed, index)))
        except ValueError as exc:
            raise ValueError(f"prompt {index}: {exc}") from None
    return rollouts


def _plan(rollout: Rollout, options: RolloutOptions) -> tuple[Author, SegmentRequest]:
    """Who writes the rollout's next segment, and the request for it (the whole prefix so far)."""
    plan = rollout.drawer.next_segment(rollout.authorship.trailing_run)
    room = rollout.budget - len(rollout.authorship)
    rule = StopRule(min(plan.limit.max_tokens, room), plan.limit.boundary)
    temperature = options.policy_temperature if plan.author is Author.POLICY else options.weak_temperature
    prefix = rollout.prompt_ids + tuple(rollout.authorship.token_ids)
    segment_seed = derive_seed(rollout.seed, rollout.segments)
    return plan.author, SegmentRequest(prefix, rule, temperature, seed=segment_seed)


def _append(rollout: Rollout, author: Author, segment: Segment) -> None:
    log_probs = segment.log_probs if author is Author.POLICY else None
    rollout.authorship.append(segment.token_ids, author, log_probs)
    rollout.segments += 1
    # An empty segment without EOS cannot happen with a boundary rule (one token is always kept);
    # treat it as the end so a misbehaving writer cannot spin the loop.
    rollout.ended_by_eos = segment.ended or not segment.token_ids
    if segment.ended:
        rollout.ended_by = author
        rollout.eos_log_prob = segment.eos_log_prob if author is Author.POLICY else None
        rollout.eos_id = segment.eos_id


async def run_tandem(
    rollouts: Sequence[Rollout],
    policy: SegmentWriter,
    weak: SegmentWriter,
    options: RolloutOptions,
    overlap: bool = True,
) -> None:
    """Advance every rollout until it is done; mutates them in place.

    ``overlap`` (default): each author works through the rollouts waiting for it as soon as it is free, so the
    rollouts the weak model is writing do not stall those the policy could write (and the other way round); a
    rollout's tokens do not depend on which batch its segment lands in (each segment is seeded by the rollout).
    A policy that decodes continuously (:class:`ContinuousSegmentWriter`, the in-process one) holds every rollout
    it is writing in one decoding loop: a rollout joins it when handed over, continues in it when the policy draws
    its next segment too, and goes to the weak model the moment its segment ends.
    ``overlap=False`` is the lockstep form: one batched call per author per round, every round waiting for both.
    """
    if overlap:
        await _run_overlapped(rollouts, policy, weak, options)
        return
    while active := [r for r in rollouts if not r.done]:
        requests: dict[Author, list[tuple[Rollout, SegmentRequest]]] = {Author.POLICY: [], Author.WEAK: []}
        for rollout in active:
            author, request = _plan(rollout, options)
            requests[author].append((rollout, request))
        written = await asyncio.gather(
            policy.write([req for _, req in requests[Author.POLICY]]),
            weak.write([req for _, req in requests[Author.WEAK]]),
        )
        for author, segments in zip((Author.POLICY, Author.WEAK), written, strict=True):
            for (rollout, _), segment in zip(requests[author], segments, strict=True):
                _append(rollout, author, segment)


async def _run_overlapped(
    rollouts: Sequence[Rollout], policy: SegmentWriter, weak: SegmentWriter, options: RolloutOptions
) -> None:
    """Two lanes, one per author: each takes every rollout waiting for it, writes their segments (in one batched
    call, or by stepping its session), and hands each rollout to whoever writes its next segment."""
    waiting: dict[Author, list[tuple[Rollout, SegmentRequest]]] = {Author.POLICY: [], Author.WEAK: []}
    wake = {Author.POLICY: asyncio.Event(), Author.WEAK: asyncio.Event()}
    unfinished = [sum(not r.done for r in rollouts)]

    def next_segment(rollout: Rollout) -> tuple[Author, SegmentRequest] | None:
        """Who writes the rollout's next segment; None (and one fewer unfinished) if it is done."""
        if not rollout.done:
            return _plan(rollout, options)
        unfinished[0] -= 1
        if not unfinished[0]:
            for event in wake.values():
                event.set()
        return None

    def hand_to(author: Author, rollout: Rollout, request: SegmentRequest) -> None:
        waiting[author].append((rollout, request))
        wake[author].set()

    for rollout in rollouts:
        if not rollout.done:
            author, request = _plan(rollout, options)
            hand_to(author, rollout, request)

    async def lane(author: Author, writer: SegmentWriter) -> None:
        while unfinished[0]:
            if not waiting[author]:
                wake[author].clear()
                await wake[author].wait()
                continue
            batch, waiting[author] = waiting[author], []
            segments = await writer.write([request for _, request in batch])
            for (rollout, _), segment in zip(batch, segments, strict=True):
                _append(rollout, author, segment)
                if (following := next_segment(rollout)) is not None:
                    hand_to(following[0], rollout, following[1])

    async def policy_session_lane(session: SegmentSession) -> None:
        by_key = {id(rollout): rollout for rollout in rollouts}
        resume: list[tuple[Hashable, SegmentRequest]] = []
        leave: list[Hashable] = []
        drop: list[Hashable] = []
        while unfinished[0]:
            join, waiting[Author.POLICY] = waiting[Author.POLICY], []
            if not (join or resume or leave or drop or session.running):
                wake[Author.POLICY].clear()
                await wake[Author.POLICY].wait()
                continue
            ended = await session.step([(id(r), req) for r, req in join], resume, leave, drop)
            resume, leave, drop = [], [], []
            for key, segment in ended:
                rollout = by_key[key]
                _append(rollout, Author.POLICY, segment)
                if (following := next_segment(rollout)) is None:
                    drop.append(key)
                elif following[0] is Author.POLICY:
                    resume.append((key, following[1]))
                else:
                    leave.append(key)
                    hand_to(Author.WEAK, rollout, following[1])

    policy_lane = (
        policy_session_lane(policy.session())
        if isinstance(policy, ContinuousSegmentWriter)
        else lane(Author.POLICY, policy)
    )
    await asyncio.gather(policy_lane, lane(Author.WEAK, weak))
