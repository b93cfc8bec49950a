"""call_until: retryable statuses are repeated until the deadline, others fail at once; both name what failed."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from services.common.calls import ServiceCallFailed, call_until


def rpc_error(code: grpc.StatusCode, previous_attempts: int = 0) -> aio.AioRpcError:
    trailing = aio.Metadata(("grpc-previous-rpc-attempts", str(previous_attempts))) if previous_attempts else None
    return aio.AioRpcError(code, aio.Metadata(), trailing or aio.Metadata(), details="no")


async def test_retryable_failures_are_repeated_until_one_succeeds() -> None:
    outcomes = [rpc_error(grpc.StatusCode.UNAVAILABLE, 4), rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED), 7.0]

    async def call() -> float:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await call_until("verifier", "Score", call, deadline_s=10, initial_backoff_s=0.01) == 7.0
    assert outcomes == []


async def test_a_status_retrying_cannot_fix_fails_at_once_counting_grpcs_own_attempts() -> None:
    calls = 0

    async def call() -> float:
        nonlocal calls
        calls += 1
        raise rpc_error(grpc.StatusCode.INVALID_ARGUMENT, previous_attempts=2)

    with pytest.raises(ServiceCallFailed) as raised:
        await call_until("verifier", "Score", call, deadline_s=10)
    assert calls == 1 and raised.value.attempts == 3
    assert str(raised.value) == "verifier Score failed: INVALID_ARGUMENT after 3 attempts: no"
