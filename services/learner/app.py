"""Wiring: settings → service channels → run registry (recovered from runs_dir) → servicer → GrpcServer."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from grpc import aio

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import learner_pb2_grpc, verifier_pb2_grpc, weak_model_pb2_grpc
from services.common.server import GrpcServer
from services.learner.clients.verifier import VerifierClient
from services.learner.clients.weak_model import WeakModelClient
from services.learner.runs.registry import RunRegistry
from services.learner.service import SERVICE_NAME, LearnerServicer
from services.learner.settings import LearnerSettings

log = logging.getLogger(__name__)


@dataclass
class LearnerApp:
    """A running learner server, its runs, and its channels to the weak-model and verifier services."""

    settings: LearnerSettings
    server: GrpcServer
    servicer: LearnerServicer
    registry: RunRegistry
    channels: list[aio.Channel]

    async def stop(self) -> None:
        """Ask live runs to stop after their step (they resume on restart), wait up to grace_period_s, stop."""
        await self.registry.close(self.settings.grace_period_s)
        await self.server.stop()
        for channel in self.channels:
            await channel.close()


async def start_learner(settings: LearnerSettings) -> LearnerApp:
    """Serve, resume unfinished runs of runs_dir, report SERVING.

    The weak-model and verifier services need not be up: channels connect lazily, and a run whose calls
    fail ends FAILED with the status in its error.
    """
    token = settings.client_token
    weak_channel = open_channel(settings.weak_model_target, token=token, max_message_bytes=settings.max_message_bytes)
    verifier_channel = open_channel(settings.verifier_target, token=token, max_message_bytes=settings.max_message_bytes)
    channels = [weak_channel, verifier_channel]
    registry = RunRegistry(
        settings,
        WeakModelClient(weak_model_pb2_grpc.WeakModelServiceStub(weak_channel)),
        VerifierClient(verifier_pb2_grpc.VerifierServiceStub(verifier_channel)),
    )
    servicer = LearnerServicer(registry)
    server = GrpcServer(settings, "learner")
    server.add_service(learner_pb2_grpc.add_LearnerServiceServicer_to_server, servicer, SERVICE_NAME)
    try:
        settings.runs_dir.mkdir(parents=True, exist_ok=True)
        await server.start()
        registry.recover()
    except BaseException:
        await registry.close(0)
        await server.stop()
        for channel in channels:
            await channel.close()
        raise
    await server.set_serving(True)
    log.info("learner serving on %s (runs in %s)", server.address, settings.runs_dir)
    return LearnerApp(settings, server, servicer, registry, channels)
