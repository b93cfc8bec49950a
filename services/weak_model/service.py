"""The WeakModelService servicer: validate, call the engine, build the response. Errors are domain exceptions."""

from __future__ import annotations

from grpc import aio
from prometheus_client import Counter

from services.common.errors import NotReady
from services.common.genproto.legibility.v1 import weak_model_pb2, weak_model_pb2_grpc
from services.common.offload import validate_sized
from services.decoding.boundaries import FinishReason
from services.weak_model.engine import Continuation, TextLogProbs, WeakEngine
from services.weak_model.validation import validate_continue, validate_logprobs

SERVICE_NAME = weak_model_pb2.DESCRIPTOR.services_by_name["WeakModelService"].full_name

ITEMS = Counter("legibility_weak_model_items_total", "Items answered, by RPC.", ["rpc"])
GENERATED_TOKENS = Counter("legibility_weak_model_generated_tokens_total", "Tokens returned by Continue.")
SCORED_TOKENS = Counter("legibility_weak_model_scored_tokens_total", "Text tokens scored by LogProbs.")
FINISHES = Counter("legibility_weak_model_finishes_total", "Continuations by finish reason.", ["reason"])

FINISH_REASONS = {
    FinishReason.BOUNDARY: weak_model_pb2.FINISH_REASON_BOUNDARY,
    FinishReason.STOP_STRING: weak_model_pb2.FINISH_REASON_STOP_STRING,
    FinishReason.LENGTH: weak_model_pb2.FINISH_REASON_LENGTH,
    FinishReason.EOS: weak_model_pb2.FINISH_REASON_EOS,
}


def _continue_result(result: Continuation) -> weak_model_pb2.ContinueResult:
    return weak_model_pb2.ContinueResult(
        text=result.text,
        token_ids=result.token_ids,
        logprobs=result.logprobs,
        finish_reason=FINISH_REASONS[result.finish_reason],
        matched_stop=result.matched_stop,
        prefix_tokens=result.prefix_tokens,
    )


def _logprobs_result(result: TextLogProbs) -> weak_model_pb2.LogProbsResult:
    return weak_model_pb2.LogProbsResult(
        token_ids=result.token_ids, logprobs=result.logprobs, mean_logprob=result.mean_logprob, tokens=result.tokens
    )


class WeakModelServicer(weak_model_pb2_grpc.WeakModelServiceServicer):
    """Continue and LogProbs on a frozen engine; UNAVAILABLE until :meth:`attach` gives it one."""

    def __init__(self, *, max_new_tokens_cap: int, max_items: int) -> None:
        self.max_new_tokens_cap = max_new_tokens_cap
        self.max_items = max_items
        self._engine: WeakEngine | None = None

    @property
    def engine(self) -> WeakEngine:
        if self._engine is None:
            raise NotReady("the weak model is still loading")
        return self._engine

    def attach(self, engine: WeakEngine) -> None:
        """Start answering with ``engine`` (loaded and started)."""
        self._engine = engine

    async def Continue(
        self, request: weak_model_pb2.ContinueRequest, context: aio.ServicerContext
    ) -> weak_model_pb2.ContinueResponse:
        engine = self.engine
        requests = await validate_sized(
            request.ByteSize(),
            validate_continue,
            request,
            engine,
            max_new_tokens_cap=self.max_new_tokens_cap,
            max_items=self.max_items,
        )
        results = await engine.continue_batch(requests)
        ITEMS.labels("Continue").inc(len(results))
        GENERATED_TOKENS.inc(sum(len(r.token_ids) for r in results))
        for result in results:
            FINISHES.labels(result.finish_reason.value).inc()
        return weak_model_pb2.ContinueResponse(
            results=[_continue_result(r) for r in results], model=engine.weights.message()
        )

    async def LogProbs(
        self, request: weak_model_pb2.LogProbsRequest, context: aio.ServicerContext
    ) -> weak_model_pb2.LogProbsResponse:
        engine = self.engine
        requests = await validate_sized(
            request.ByteSize(), validate_logprobs, request, engine, max_items=self.max_items
        )
        results = await engine.logprobs_batch(requests)
        ITEMS.labels("LogProbs").inc(len(results))
        SCORED_TOKENS.inc(sum(len(r.token_ids) for r in results))
        return weak_model_pb2.LogProbsResponse(
            results=[_logprobs_result(r) for r in results], model=engine.weights.message()
        )

    async def GetModelInfo(
        self, request: weak_model_pb2.WeakModelServiceGetModelInfoRequest, context: aio.ServicerContext
    ) -> weak_model_pb2.WeakModelServiceGetModelInfoResponse:
        return weak_model_pb2.WeakModelServiceGetModelInfoResponse(model=self.engine.weights.message())
