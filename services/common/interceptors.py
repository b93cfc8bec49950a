"""Server interceptors: domain errors → status codes with per-method metrics, and bearer-token auth.

Business code raises :mod:`services.common.errors`; only this module turns them into gRPC statuses
(like KServe's ``interceptors.py``). Handlers are async functions or async generators (streaming).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from grpc import aio

from services.common.errors import DomainError
from services.common.metrics import GRPC_IN_FLIGHT, GRPC_LATENCY, GRPC_REQUESTS

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def _handler_factory(handler: grpc.RpcMethodHandler) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The behaviour of a handler and the grpc factory that builds a handler of the same kind."""
    if handler.request_streaming and handler.response_streaming:
        return handler.stream_stream, grpc.stream_stream_rpc_method_handler
    if handler.request_streaming:
        return handler.stream_unary, grpc.stream_unary_rpc_method_handler
    if handler.response_streaming:
        return handler.unary_stream, grpc.unary_stream_rpc_method_handler
    return handler.unary_unary, grpc.unary_unary_rpc_method_handler


class Undecodable:
    """What a request that cannot be parsed (bad UTF-8 in a string field, truncated bytes) becomes, so the call
    answers INVALID_ARGUMENT; grpc's own answer to a failing deserializer is INTERNAL."""

    def __init__(self, error: BaseException) -> None:
        self.reason = f"{type(error).__name__}: {error}"


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:
            return Undecodable(error)

    return parse


def _rebuild(handler: grpc.RpcMethodHandler, behaviour: Callable[..., Any]) -> grpc.RpcMethodHandler:
    _, factory = _handler_factory(handler)
    deserialize = handler.request_deserializer
    return factory(
        behaviour,
        request_deserializer=deserialize if handler.request_streaming else _tolerant(deserialize),
        response_serializer=handler.response_serializer,
    )


async def _refuse_undecodable(request: Any, outcome: _CallOutcome, context: aio.ServicerContext) -> None:
    if isinstance(request, Undecodable):
        outcome.code = grpc.StatusCode.INVALID_ARGUMENT
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: cannot be decoded ({request.reason})")


class _CallOutcome:
    """Tracks one call's status for metrics and turns exceptions into aborts."""

    def __init__(self, service: str, method: str) -> None:
        self.service, self.method = service, method
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()
        GRPC_IN_FLIGHT.labels(service, method).inc()

    async def fail(self, error: BaseException, context: aio.ServicerContext) -> None:
        """Abort the call with the status that error maps to (never returns)."""
        if isinstance(error, DomainError):
            self.code = error.code
            await context.abort(error.code, str(error))
        error_id = uuid.uuid4().hex[:12]
        self.code = grpc.StatusCode.INTERNAL
        log.error("unexpected error in %s (error id %s)", self.method, error_id, exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (error id {error_id}; see server log)")

    def passthrough(self, context: aio.ServicerContext, default: grpc.StatusCode) -> None:
        """Record the status of an abort or cancellation that did not come from this interceptor."""
        if self.code == grpc.StatusCode.OK:
            self.code = context.code() or default

    def finish(self) -> None:
        GRPC_IN_FLIGHT.labels(self.service, self.method).dec()
        GRPC_REQUESTS.labels(self.service, self.method, self.code.name).inc()
        GRPC_LATENCY.labels(self.service, self.method).observe(time.perf_counter() - self.started)


class ErrorMappingInterceptor(aio.ServerInterceptor):
    """Maps domain errors to status codes (unexpected ones to INTERNAL, traceback logged) and counts calls."""

    def __init__(self, service_label: str) -> None:
        self._service = service_label

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler  # health stays on the cheapest path; unknown methods get UNIMPLEMENTED
        behaviour, _ = _handler_factory(handler)
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if handler.response_streaming:
            return _rebuild(handler, self._wrap_stream(behaviour, method))
        return _rebuild(handler, self._wrap_unary(behaviour, method))

    def _wrap_unary(self, behaviour: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
        async def call(request: Any, context: aio.ServicerContext) -> Any:
            outcome = _CallOutcome(self._service, method)
            try:
                await _refuse_undecodable(request, outcome, context)
                return await behaviour(request, context)
            except (aio.AbortError, asyncio.CancelledError):
                outcome.passthrough(context, grpc.StatusCode.CANCELLED)
                raise
            except Exception as error:
                await outcome.fail(error, context)
            finally:
                outcome.finish()

        return call

    def _wrap_stream(self, behaviour: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., Any]:
        async def call(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            outcome = _CallOutcome(self._service, method)
            try:
                await _refuse_undecodable(request, outcome, context)
                async for response in behaviour(request, context):
                    yield response
            except (aio.AbortError, asyncio.CancelledError):
                outcome.passthrough(context, grpc.StatusCode.CANCELLED)
                raise
            except Exception as error:
                await outcome.fail(error, context)
            finally:
                outcome.finish()

        return call


class BearerTokenInterceptor(aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every RPC except the exempt ones (health)."""

    def __init__(self, token: str, exempt_prefixes: Iterable[str] = (HEALTH_PREFIX,)) -> None:
        if not token:
            raise ValueError("auth token must not be empty")
        self._expected = f"Bearer {token}".encode()
        self._exempt = tuple(exempt_prefixes)

    def _authorised(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                given = value if isinstance(value, bytes) else value.encode()
                return hmac.compare_digest(given, self._expected)  # constant time
        return False

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._exempt):
            return handler
        if self._authorised(handler_call_details.invocation_metadata):
            return handler

        async def deny(request: Any, context: aio.ServicerContext) -> None:
            # The token itself is never logged, only that a call was refused.
            log.warning("refused %s: missing or wrong bearer token", handler_call_details.method)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

        if handler.response_streaming:

            async def deny_stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
                await deny(request, context)
                yield  # pragma: no cover - unreachable, makes this an async generator

            return _rebuild(handler, deny_stream)
        return _rebuild(handler, deny)
