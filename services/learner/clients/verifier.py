"""The verifier service as the learner uses it: scores for rewards, and waiting for a newly published version."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from services.common.genproto.legibility.v1 import verifier_pb2, verifier_pb2_grpc


class VerifierClient:
    """``Score`` in batches, and :meth:`wait_for_version` after a publish."""

    def __init__(self, stub: verifier_pb2_grpc.VerifierServiceStub, timeout_s: float = 60.0, batch: int = 256) -> None:
        self._stub = stub
        self._timeout_s = timeout_s
        self._batch = batch

    async def score(self, pairs: Sequence[tuple[str, str]], min_version: int = 0) -> tuple[list[float], int]:
        """Scores of (problem, solution) pairs and the lowest model version that answered."""
        scores: list[float] = []
        versions: list[int] = []
        for start in range(0, len(pairs), self._batch):
            chunk = pairs[start : start + self._batch]
            reply = await self._stub.Score(
                verifier_pb2.ScoreRequest(
                    items=[verifier_pb2.ScoreItem(problem=p, solution=s) for p, s in chunk], min_version=min_version
                ),
                timeout=self._timeout_s,
            )
            scores += [r.score for r in reply.results]
            versions.append(reply.model.version)
        return scores, min(versions, default=0)

    async def score_steps(
        self, pairs: Sequence[tuple[str, str]], min_version: int = 0, items_per_call: int = 32
    ) -> list[list[tuple[int, float]]]:
        """(end offset, score) after each step of each solution (the task's step splitter), in order."""
        results: list[list[tuple[int, float]]] = []
        for start in range(0, len(pairs), items_per_call):
            chunk = pairs[start : start + items_per_call]
            reply = await self._stub.ScoreSteps(
                verifier_pb2.ScoreStepsRequest(
                    items=[verifier_pb2.ScoreStepsItem(problem=p, solution=s) for p, s in chunk],
                    min_version=min_version,
                ),
                timeout=self._timeout_s,
            )
            results += [[(step.end, step.score) for step in r.steps] for r in reply.results]
        return results

    async def version(self) -> int:
        reply = await self._stub.GetModelInfo(verifier_pb2.VerifierServiceGetModelInfoRequest(), timeout=10)
        return int(reply.model.version)

    async def wait_for_version(self, version: int, timeout_s: float, poll_s: float = 0.2) -> float:
        """Poll until the service reports ``version`` or newer; returns the seconds waited (TimeoutError past it)."""
        started = time.perf_counter()
        while (serving := await self.version()) < version:
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(
                    f"the verifier still serves version {serving} after {timeout_s:.0f} s; want {version}"
                )
            await asyncio.sleep(poll_s)
        return time.perf_counter() - started
