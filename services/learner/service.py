"""The LearnerService servicer: validate, call the run registry, build the response. Errors are domain exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from services.common.genproto.legibility.v1 import learner_pb2, learner_pb2_grpc
from services.learner.runs.registry import RunRegistry

SERVICE_NAME = learner_pb2.DESCRIPTOR.services_by_name["LearnerService"].full_name


class LearnerServicer(learner_pb2_grpc.LearnerServiceServicer):
    """StartRun, GetRun, WatchRun, StopRun and ListRuns over a :class:`RunRegistry`."""

    def __init__(self, registry: RunRegistry) -> None:
        self.registry = registry

    async def StartRun(
        self, request: learner_pb2.StartRunRequest, context: aio.ServicerContext
    ) -> learner_pb2.StartRunResponse:
        return learner_pb2.StartRunResponse(run=(await self.registry.start(request.config)).message())

    async def GetRun(
        self, request: learner_pb2.GetRunRequest, context: aio.ServicerContext
    ) -> learner_pb2.GetRunResponse:
        return learner_pb2.GetRunResponse(run=self.registry.get(request.run_id).message())

    async def WatchRun(
        self, request: learner_pb2.WatchRunRequest, context: aio.ServicerContext
    ) -> AsyncIterator[learner_pb2.WatchRunResponse]:
        async for event in self.registry.watch(request.run_id, request.after_sequence):
            yield learner_pb2.WatchRunResponse(event=event)

    async def StopRun(
        self, request: learner_pb2.StopRunRequest, context: aio.ServicerContext
    ) -> learner_pb2.StopRunResponse:
        return learner_pb2.StopRunResponse(run=self.registry.stop(request.run_id).message())

    async def ListRuns(
        self, request: learner_pb2.ListRunsRequest, context: aio.ServicerContext
    ) -> learner_pb2.ListRunsResponse:
        return learner_pb2.ListRunsResponse(runs=[record.message() for record in self.registry.list()])
