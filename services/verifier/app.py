"""Wiring: settings → verified weights → VerifierModel → servicer → GrpcServer. Used by ``__main__`` and the tests."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

from services.common.genproto.legibility.v1 import verifier_pb2_grpc
from services.common.metrics import MODEL_VERSION
from services.common.server import GrpcServer, server_ssl_context
from services.common.weights import VerifiedWeights, verified_weights
from services.verifier.http_reward import RewardHttpServer
from services.verifier.model import VerifierModel, load_verifier
from services.verifier.service import SERVICE_NAME, VerifierServicer
from services.verifier.settings import VerifierSettings
from services.verifier.swap import VersionWatcher

log = logging.getLogger(__name__)


@dataclass
class VerifierApp:
    """A running verifier server and the servicer holding the model reference."""

    settings: VerifierSettings
    server: GrpcServer
    servicer: VerifierServicer
    watcher: VersionWatcher | None = None
    """Hot-swaps newer registry versions in; None unless settings.watch_registry."""
    http: RewardHttpServer | None = None
    """The OpenRLHF ``/get_reward`` endpoint; None unless settings.http_enabled."""

    @property
    def http_port(self) -> int | None:
        """The bound HTTP port of ``/get_reward``, None when it is not served."""
        return self.http.port if self.http is not None else None

    @property
    def model(self) -> VerifierModel:
        """The model answering new calls now."""
        return self.servicer.model

    async def stop(self) -> None:
        """Stop swapping, the HTTP endpoint, graceful server stop (in-flight calls finish), then the model's batcher."""
        if self.watcher is not None:
            await self.watcher.stop()
        if self.http is not None:
            await self.http.stop()
        await self.server.stop()
        await self.servicer.model.close()


async def load_model(settings: VerifierSettings, weights: VerifiedWeights) -> VerifierModel:
    """Load verified weights off the event loop and start their batcher (ready to attach)."""
    model = await asyncio.to_thread(
        load_verifier,
        weights.path,
        weights.info,
        max_batch_size=settings.max_batch_size,
        max_delay_ms=settings.max_delay_ms,
        max_queue_size=settings.max_queue_size,
        torch_threads=settings.torch_threads,
        prompts=settings.prompt_format,
        device=settings.device,
        engine=settings.engine,
        hf_worker=settings.hf_worker,
        vllm_gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
    )
    await model.start()
    return model


async def start_verifier(settings: VerifierSettings) -> VerifierApp:
    """Serve at once with health NOT_SERVING (calls get UNAVAILABLE), load and verify the weights, then SERVING.

    Raises (after stopping the server) when the weights cannot be verified or loaded: the service refuses to start.
    """
    server = GrpcServer(settings, "verifier")
    # A request never holds more pairs than may wait in the queue, or it could never be admitted.
    servicer = VerifierServicer(max_items=settings.max_queue_size)
    server.add_service(verifier_pb2_grpc.add_VerifierServiceServicer_to_server, servicer, SERVICE_NAME)
    await server.start()
    try:
        weights = await verified_weights(settings)
        model = await load_model(settings, weights)
    except BaseException:
        await server.stop()
        raise
    servicer.attach(model)
    http = None
    if settings.http_enabled:
        http = RewardHttpServer(
            lambda: servicer.model,
            settings.host,
            settings.http_port,
            max_items=settings.max_queue_size,
            reward=settings.http_reward,
            auth_token=settings.resolved_auth_token(),
            ssl_context=server_ssl_context(settings),
        )
        try:
            await http.start()
        except BaseException:
            await server.stop()
            await model.close()
            raise
    MODEL_VERSION.labels(weights.name).set(weights.version)
    await server.set_serving(True)
    log.info("%s v%d (sha256 %s) serving on %s", weights.name, weights.version, weights.sha256, server.address)
    watcher = None
    if settings.watch_registry:
        watcher = VersionWatcher(settings, servicer, functools.partial(load_model, settings))
        watcher.start()
    return VerifierApp(settings, server, servicer, watcher, http)
