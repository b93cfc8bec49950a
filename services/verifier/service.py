"""The VerifierService servicer: validate, call the model, build the response. Errors are domain exceptions."""

from __future__ import annotations

import math

from grpc import aio
from prometheus_client import Counter

from services.common.errors import NotReady
from services.common.genproto.legibility.v1 import verifier_pb2, verifier_pb2_grpc
from services.common.offload import validate_sized
from services.verifier.model import VerifierModel
from services.verifier.validation import check_version, validate_score, validate_score_steps

SERVICE_NAME = verifier_pb2.DESCRIPTOR.services_by_name["VerifierService"].full_name

ITEMS = Counter("legibility_verifier_items_total", "Items scored, by RPC.", ["rpc"])
PREFIXES = Counter("legibility_verifier_step_prefixes_total", "Solution prefixes scored by ScoreSteps.")


def probability(score: float) -> float:
    """sigmoid(score), without overflow for large negative scores."""
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    exp = math.exp(score)
    return exp / (1.0 + exp)


class VerifierServicer(verifier_pb2_grpc.VerifierServiceServicer):
    """Score and ScoreSteps; UNAVAILABLE until :meth:`attach` gives it a model.

    Each call reads the model reference once and is answered entirely by that model, so replacing the
    reference (a hot swap) never mixes versions within a response.
    """

    def __init__(self, *, max_items: int) -> None:
        self.max_items = max_items
        self._model: VerifierModel | None = None

    @property
    def model(self) -> VerifierModel:
        if self._model is None:
            raise NotReady("the verifier is still loading")
        return self._model

    def attach(self, model: VerifierModel) -> VerifierModel | None:
        """Answer new calls with ``model`` (loaded and started); returns the previous one, for its owner to close."""
        previous, self._model = self._model, model
        return previous

    async def Score(
        self, request: verifier_pb2.ScoreRequest, context: aio.ServicerContext
    ) -> verifier_pb2.ScoreResponse:
        model = self.model
        check_version(request.min_version, model.weights.version)
        encoded = await validate_sized(request.ByteSize(), validate_score, request, model, max_items=self.max_items)
        scores = await model.score(encoded)
        ITEMS.labels("Score").inc(len(scores))
        results = [verifier_pb2.ScoreResult(score=s, probability=probability(s)) for s in scores]
        return verifier_pb2.ScoreResponse(results=results, model=model.weights.message())

    async def ScoreSteps(
        self, request: verifier_pb2.ScoreStepsRequest, context: aio.ServicerContext
    ) -> verifier_pb2.ScoreStepsResponse:
        model = self.model
        check_version(request.min_version, model.weights.version)
        items = await validate_sized(request.ByteSize(), validate_score_steps, request, model, max_items=self.max_items)
        scored = await model.score_steps(items)
        ITEMS.labels("ScoreSteps").inc(len(scored))
        PREFIXES.inc(sum(len(steps) for steps in scored))
        results = [
            verifier_pb2.ScoreStepsResult(
                steps=[
                    verifier_pb2.StepScore(end=s.end, score=s.score, probability=probability(s.score)) for s in steps
                ]
            )
            for steps in scored
        ]
        return verifier_pb2.ScoreStepsResponse(results=results, model=model.weights.message())

    async def GetModelInfo(
        self, request: verifier_pb2.VerifierServiceGetModelInfoRequest, context: aio.ServicerContext
    ) -> verifier_pb2.VerifierServiceGetModelInfoResponse:
        return verifier_pb2.VerifierServiceGetModelInfoResponse(model=self.model.weights.message())
