"""The gRPC server every service runs: health, reflection, interceptors, limits, TLS, metrics, graceful stop.

Usage (in a service's ``__main__``)::

    server = GrpcServer(settings, name="verifier")
    server.add_service(add_VerifierServiceServicer_to_server, servicer, VERIFIER_SERVICE_NAME)
    await server.start()
    await server.set_serving(True)      # once the model is loaded
    await server.run_until_signal()     # SIGTERM/SIGINT: NOT_SERVING, drain delay, stop(grace)
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import Callable
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.interceptors import BearerTokenInterceptor, ErrorMappingInterceptor
from services.common.metrics import MetricsServer, start_metrics_server
from services.common.settings import ServerSettings

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def channel_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """Message-size limits and keepalive, set explicitly rather than relying on grpc's 4 MiB default."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Accept client pings as often as every 10 s without calls in flight (clients use keepalive too).
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials when a certificate is configured; a client CA also turns on mTLS."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    key_pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [key_pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def server_ssl_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """The same TLS (and mTLS) as :func:`server_credentials`, for the HTTP endpoints beside gRPC."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file is not None:
        context.load_verify_locations(settings.tls_client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class GrpcServer:
    """A grpc.aio server with the project's standard plumbing around the services added to it."""

    def __init__(self, settings: ServerSettings, name: str) -> None:
        self.settings = settings
        self.name = name
        interceptors: list[aio.ServerInterceptor] = []
        token = settings.resolved_auth_token()
        if token is not None:
            interceptors.append(BearerTokenInterceptor(token))
        interceptors.append(ErrorMappingInterceptor(name))
        # No maximum_concurrent_rpcs: it would refuse health checks too. Services bound admission themselves.
        self._server = aio.server(interceptors=interceptors, options=channel_options(settings))
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._service_names: list[str] = []
        self._metrics: MetricsServer | None = None
        self._stop_requested = asyncio.Event()
        self._stopped = False
        self.port: int | None = None
        self.metrics_port: int | None = None

    def add_service(self, add_to_server: Callable[[Any, aio.Server], None], servicer: Any, full_name: str) -> None:
        """Register a servicer; full_name (e.g. ``legibility.v1.VerifierService``) gets a health entry."""
        add_to_server(servicer, self._server)
        self._service_names.append(full_name)

    @property
    def address(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> None:
        """Bind, start serving; health stays NOT_SERVING until :meth:`set_serving` (model loaded)."""
        if self.settings.reflection:
            names = [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
            reflection.enable_server_reflection(names, self._server)
        for service in ["", *self._service_names]:
            await self._health.set(service, NOT_SERVING)
        bind = f"{self.settings.host}:{self.settings.port}"
        credentials = server_credentials(self.settings)
        if credentials is None:
            self.port = self._server.add_insecure_port(bind)
        else:
            self.port = self._server.add_secure_port(bind, credentials)
        if self.port == 0:
            raise OSError(f"could not bind gRPC server to {bind}")
        await self._server.start()
        if self.settings.metrics_enabled:
            self._metrics = start_metrics_server(self.settings.host, self.settings.metrics_port)
            self.metrics_port = self._metrics.port
        log.info(
            "%s serving gRPC on %s (tls=%s, mtls=%s, auth=%s)",
            self.name,
            self.address,
            credentials is not None,
            self.settings.tls_client_ca_file is not None,
            self.settings.auth_token is not None or self.settings.auth_token_file is not None,
        )

    async def set_serving(self, serving: bool) -> None:
        """Flip health for the server and every service (ignored once shutdown began)."""
        status = SERVING if serving else NOT_SERVING
        for service in ["", *self._service_names]:
            await self._health.set(service, status)

    def request_stop(self) -> None:
        """Ask :meth:`run_until_signal` to shut down (what SIGTERM does)."""
        self._stop_requested.set()

    async def stop(self) -> None:
        """Graceful shutdown: NOT_SERVING, wait drain_delay_s, refuse new calls, let in-flight ones finish."""
        if self._stopped:
            return
        self._stopped = True
        await self._health.enter_graceful_shutdown()
        log.info("%s shutting down: NOT_SERVING for %.1fs, then draining", self.name, self.settings.drain_delay_s)
        await asyncio.sleep(self.settings.drain_delay_s)
        await self._server.stop(self.settings.grace_period_s)
        if self._metrics is not None:
            await asyncio.to_thread(self._metrics.stop)
        log.info("%s stopped", self.name)

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT (or :meth:`request_stop`), then stop gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_requested.set)
        try:
            await self._stop_requested.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()
