"""Follow a learner run's events across connection recycling: WatchRun resumed after the last sequence seen.

Servers close every connection after ``max_connection_age_s`` (+ grace), so they rebalance behind a load balancer;
a stream that outlives it ends with UNAVAILABLE. A run's event stream is numbered from 1 and WatchRun resumes
after any sequence, so the watcher reconnects and continues without a gap or a repeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from services.common.genproto.legibility.v1 import learner_pb2, learner_pb2_grpc


async def watch_run(
    stub: learner_pb2_grpc.LearnerServiceStub, run_id: str, after_sequence: int = 0, max_reconnects: int = 5
) -> AsyncIterator[learner_pb2.RunEvent]:
    """Every event of ``run_id`` after ``after_sequence`` until the run's stream ends, each exactly once.

    UNAVAILABLE (connection recycled, server restarting) reconnects with backoff; more than ``max_reconnects``
    failures in a row without an event in between, or any other error, is raised.
    """
    failures = 0
    while True:
        try:
            request = learner_pb2.WatchRunRequest(run_id=run_id, after_sequence=after_sequence)
            async for reply in stub.WatchRun(request):
                failures = 0
                after_sequence = reply.event.sequence
                yield reply.event
            return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or failures >= max_reconnects:
                raise
            failures += 1
            await asyncio.sleep(min(0.2 * 2**failures, 5.0))
