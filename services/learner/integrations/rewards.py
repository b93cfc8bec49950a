"""One reward definition for every adapter: the verifier's score over gRPC and/or task correctness.

Async callers (the OpenRLHF AgentExecutor, inside a Ray actor's event loop) use :class:`ServiceClients`; plain
threads (OpenRLHF ``reward_func``, TRL reward functions, verl ``compute_score``) use :class:`RewardClient`, which
runs the same async clients on a private event loop so its gRPC channel outlives each call.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from grpc import aio

from services.common.calls import call_until
from services.common.client import open_channel
from services.common.genproto.legibility.v1 import verifier_pb2_grpc, weak_model_pb2_grpc
from services.learner.clients.verifier import VerifierClient
from services.learner.clients.weak_model import WeakModelClient
from services.learner.integrations.settings import IntegrationSettings, RewardMode
from services.tasks.base import Task, stated_answer

_T = TypeVar("_T")


@dataclass(frozen=True)
class Reward:
    """A reward and what it was made of (for the stacks' extra logs)."""

    value: float
    verifier_score: float | None = None
    verifier_version: int | None = None
    correct: float | None = None

    @property
    def filter_score(self) -> float:
        """A 0..1 score for OpenRLHF's dynamic filtering: correctness when known, else the verifier's probability."""
        if self.correct is not None:
            return self.correct
        assert self.verifier_score is not None
        return 1.0 / (1.0 + math.exp(-self.verifier_score))

    def logs(self) -> dict[str, float]:
        """The parts that are set, as floats (OpenRLHF turns extra_logs into tensors)."""
        parts = (("verifier_score", self.verifier_score), ("verifier_version", self.verifier_version))
        return {key: float(value) for key, value in (*parts, ("correct", self.correct)) if value is not None}


def gold_answer(task: Task, label: Any, field: str = "label") -> str:
    """The gold answer in a dataset label, as ``task`` compares it: a bare answer (``42``, ``"1,234"``,
    ``"\\frac{1}{2}"``) or a reference solution stating it (``"… #### 42"``, ``"… \\boxed{\\frac12}"``)."""
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    if isinstance(label, str) and (found := stated_answer(task, label)) is not None:
        return found
    raise ValueError(f"{field}: expected an answer of task {task.name!r} or a solution stating one, got {label!r}")


def needs_verifier(mode: RewardMode) -> bool:
    return mode != "correctness"


def needs_label(mode: RewardMode) -> bool:
    return mode != "verifier"


def combine(mode: RewardMode, score: float | None, version: int | None, correct: float | None) -> Reward:
    if mode == "verifier":
        assert score is not None
        return Reward(score, score, version, correct)
    if mode == "correctness":
        assert correct is not None
        return Reward(correct, score, version, correct)
    assert score is not None and correct is not None
    return Reward(correct + score, score, version, correct)


async def score_rewards(
    verifier: VerifierClient | None,
    mode: RewardMode,
    task: Task,
    problems: Sequence[str],
    solutions: Sequence[str],
    labels: Sequence[Any] | None,
    min_version: int = 0,
    deadline_s: float = 120.0,
) -> list[Reward]:
    """Rewards of (problem, solution) pairs; correctness is checked only when ``mode`` needs it.

    The verifier is asked until ``deadline_s`` (through restarts and full queues); past it the call raises
    :class:`~services.common.calls.ServiceCallFailed`: a failed scorer is never a reward of 0.
    """
    if len(problems) != len(solutions):
        raise ValueError(f"{len(problems)} problems but {len(solutions)} solutions")
    corrects: list[float | None] = [None] * len(solutions)
    if labels is not None:
        if len(labels) != len(solutions):
            raise ValueError(f"{len(labels)} labels but {len(solutions)} solutions")
        for i, (solution, label) in enumerate(zip(solutions, labels, strict=True)):
            try:
                gold = gold_answer(task, label, f"labels[{i}]")
            except ValueError:
                if needs_label(mode):
                    raise
                continue  # the verifier alone rewards; a label that is no answer only loses the "correct" log
            corrects[i] = float(task.is_correct(solution, gold))
    elif needs_label(mode):
        raise ValueError(f"reward mode {mode!r} needs one label per solution (the task's answer)")
    scores: list[float | None] = [None] * len(solutions)
    version = None
    if needs_verifier(mode):
        if verifier is None:
            raise ValueError(f"reward mode {mode!r} needs the verifier service")
        pairs = list(zip(problems, solutions, strict=True))
        got, version = await call_until(
            "verifier", "Score", lambda: verifier.score(pairs, min_version), deadline_s=deadline_s
        )
        if not all(math.isfinite(s) for s in got):
            raise RuntimeError("the verifier returned a non-finite score")
        scores = list(got)
    return [combine(mode, s, version, c) for s, c in zip(scores, corrects, strict=True)]


class ServiceClients:
    """gRPC clients of the verifier and weak-model services, opened in the event loop that first asks for them."""

    def __init__(self, settings: IntegrationSettings) -> None:
        self.settings = settings
        self._channels: dict[str, aio.Channel] = {}

    def _channel(self, target: str) -> aio.Channel:
        if target not in self._channels:
            self._channels[target] = open_channel(
                target, token=self.settings.client_token, tls_ca_file=self.settings.tls_ca_file
            )
        return self._channels[target]

    @property
    def verifier(self) -> VerifierClient:
        stub = verifier_pb2_grpc.VerifierServiceStub(self._channel(self.settings.verifier_target))
        return VerifierClient(stub, timeout_s=self.settings.timeout_s)

    @property
    def weak(self) -> WeakModelClient:
        stub = weak_model_pb2_grpc.WeakModelServiceStub(self._channel(self.settings.weak_model_target))
        return WeakModelClient(stub, timeout_s=self.settings.timeout_s)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()


class BlockingClients:
    """:class:`ServiceClients` for callers on plain threads: they live on a private event-loop thread."""

    def __init__(self, settings: IntegrationSettings) -> None:
        self.settings = settings
        self.clients = ServiceClients(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="legibility-clients", daemon=True)
        self._thread.start()

    def call(self, work: Callable[[ServiceClients], Awaitable[_T]]) -> _T:
        """Run ``work(clients)`` on the private loop and wait for its result."""

        async def run() -> _T:
            return await work(self.clients)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def close(self) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self.clients.close(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)


class RewardClient:
    """Blocking rewards (OpenRLHF reward_func, TRL, verl): :func:`score_rewards` on :class:`BlockingClients`."""

    def __init__(self, settings: IntegrationSettings | None = None) -> None:
        self.settings = settings or IntegrationSettings()
        self.prompts = self.settings.reward_prompt_format()
        self._clients = BlockingClients(self.settings)

    def rewards(
        self,
        problems: Sequence[str],
        solutions: Sequence[str],
        labels: Sequence[Any] | None = None,
        mode: RewardMode | None = None,
    ) -> list[Reward]:
        reward_mode = mode or self.settings.reward
        min_version = self.settings.verifier_min_version

        async def work(clients: ServiceClients) -> list[Reward]:
            verifier = clients.verifier if needs_verifier(reward_mode) else None
            task = self.prompts.task
            return await score_rewards(
                verifier, reward_mode, task, problems, solutions, labels, min_version, self.settings.reward_deadline_s
            )

        return self._clients.call(work)

    def close(self) -> None:
        self._clients.close()
