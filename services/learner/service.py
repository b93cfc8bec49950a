"""The LearnerService servicer: validate, call the run registry, build the response. Errors are domain exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from services.common.genproto.legibility.v1 import learner_pb2, learner_pb2_grpc
from services.learner.runs.config import config_document
from services.learner.runs.registry import RunRegistry
from services.learner.wire import event_message, run_message

SERVICE_NAME = learner_pb2.DESCRIPTOR.services_by_name["LearnerService"].full_name


class LearnerServicer(learner_pb2_grpc.LearnerServiceServicer):
    """StartRun, GetRun, WatchRun, StopRun and ListRuns over a :class:`RunRegistry`."""

    def __init__(self, registry: RunRegistry) -> None:
        self.registry = registry

    async def StartRun(
        self, request: learner_pb2.StartRunRequest, context: aio.ServicerContext
    ) -> learner_pb2.StartRunResponse:
        record = await self.registry.start(config_document(request.config))
        return learner_pb2.StartRunResponse(run=run_message(record))

    async def GetRun(
        self, request: learner_pb2.GetRunRequest, context: aio.ServicerContext
    ) -> learner_pb2.GetRunResponse:
        return learner_pb2.GetRunResponse(run=run_message(self.registry.get(request.run_id)))

    async def WatchRun(
        self, request: learner_pb2.WatchRunRequest, context: aio.ServicerContext
    ) -> AsyncIterator[learner_pb2.WatchRunResponse]:
        async for sequence, event in self.registry.watch(request.run_id, request.after_sequence):
            yield learner_pb2.WatchRunResponse(event=event_message(request.run_id, sequence, event))

    async def StopRun(
        self, request: learner_pb2.StopRunRequest, context: aio.ServicerContext
    ) -> learner_pb2.StopRunResponse:
        return learner_pb2.StopRunResponse(run=run_message(self.registry.stop(request.run_id)))

    async def ListRuns(
        self, request: learner_pb2.ListRunsRequest, context: aio.ServicerContext
    ) -> learner_pb2.ListRunsResponse:
        return learner_pb2.ListRunsResponse(runs=[run_message(record) for record in self.registry.list()])
