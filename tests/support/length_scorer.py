"""A VerifierService whose "model" scores a solution by its length: exercises the server bootstrap without torch."""

from __future__ import annotations

import asyncio
import math

from services.common.admission import AdmissionGate
from services.common.errors import InvalidArgument
from services.common.genproto.legibility.v1 import common_pb2, verifier_pb2, verifier_pb2_grpc

SERVICE_NAME = verifier_pb2.DESCRIPTOR.services_by_name["VerifierService"].full_name


class LengthScorer(verifier_pb2_grpc.VerifierServiceServicer):
    """Score = len(solution) / 10. ``delay_s`` holds each call inside the admission gate, to test saturation."""

    def __init__(self, delay_s: float = 0.0, admission_limit: int = 8) -> None:
        self.delay_s = delay_s
        self.gate = AdmissionGate("length_scorer", admission_limit)
        self.completed = 0

    async def Score(self, request: verifier_pb2.ScoreRequest, context: object) -> verifier_pb2.ScoreResponse:
        if not request.items:
            raise InvalidArgument("items", "must not be empty")
        for index, item in enumerate(request.items):
            if not item.problem:
                raise InvalidArgument(f"items[{index}].problem", "must not be empty")
            if item.solution == "raise":
                raise RuntimeError("the length model broke")
        async with self.gate.admit():
            await asyncio.sleep(self.delay_s)
        scores = [len(item.solution) / 10 for item in request.items]
        self.completed += 1
        return verifier_pb2.ScoreResponse(
            results=[verifier_pb2.ScoreResult(score=s, probability=1 / (1 + math.exp(-s))) for s in scores],
            model=common_pb2.ModelInfo(name="length", version=1),
        )
