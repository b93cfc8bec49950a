"""Wiring: settings → verified weights → engine → servicer → GrpcServer. Used by ``__main__`` and the tests."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from services.common.genproto.legibility.v1 import weak_model_pb2_grpc
from services.common.metrics import MODEL_VERSION
from services.common.server import GrpcServer
from services.common.weights import verified_weights
from services.weak_model.engine import WeakEngine
from services.weak_model.engines import load_engine
from services.weak_model.service import SERVICE_NAME, WeakModelServicer
from services.weak_model.settings import WeakModelSettings

log = logging.getLogger(__name__)


@dataclass
class WeakModelApp:
    """A running weak-model server and the engine behind it."""

    settings: WeakModelSettings
    server: GrpcServer
    servicer: WeakModelServicer
    engine: WeakEngine
    failures: list[str]
    """Why the service stopped itself (the engine died and could not be restarted); empty while healthy."""

    @property
    def failure(self) -> str | None:
        return self.failures[0] if self.failures else None

    async def stop(self) -> None:
        """Graceful server stop (in-flight calls finish), then the engine's workers."""
        await self.server.stop()
        await self.engine.close()


async def start_weak_model(settings: WeakModelSettings) -> WeakModelApp:
    """Serve at once with health NOT_SERVING (calls get UNAVAILABLE), load and verify the weights, then SERVING.

    Raises (after stopping the server) when the weights cannot be verified or loaded: the service refuses to start.
    """
    server = GrpcServer(settings, "weak_model")
    # A request never holds more items than may wait in the queue, or it could never be admitted.
    servicer = WeakModelServicer(max_new_tokens_cap=settings.max_new_tokens_cap, max_items=settings.max_queue_size)
    server.add_service(weak_model_pb2_grpc.add_WeakModelServiceServicer_to_server, servicer, SERVICE_NAME)
    await server.start()
    try:
        weights = await verified_weights(settings)
        engine = await asyncio.to_thread(load_engine, settings, weights)
        await engine.start()
    except BaseException:
        await server.stop()
        raise
    servicer.attach(engine)
    failures: list[str] = []

    def give_up(reason: str) -> None:
        failures.append(reason)
        server.request_stop()  # run_until_signal returns; the process exits non-zero (see __main__)

    engine.supervise(server.set_serving, give_up)
    MODEL_VERSION.labels(weights.name).set(weights.version)
    await server.set_serving(True)
    log.info("%s v%d (sha256 %s) serving on %s", weights.name, weights.version, weights.sha256, server.address)
    return WeakModelApp(settings, server, servicer, engine, failures)
