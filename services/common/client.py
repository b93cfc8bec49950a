"""gRPC client channels to our services: same limits and keepalive as the servers, optional TLS and token."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from services.common.settings import MiB


class _BearerToken(aio.UnaryUnaryClientInterceptor, aio.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call (works on plaintext channels, unlike call creds)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._header)
        return aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation: Any, details: aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(self._with_token(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: aio.ClientCallDetails, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


def open_channel(
    target: str,
    *,
    token: str | None = None,
    tls_ca_file: Path | None = None,
    tls_cert_file: Path | None = None,
    tls_key_file: Path | None = None,
    max_message_bytes: int = 16 * MiB,
    options: Sequence[tuple[str, Any]] = (),
) -> aio.Channel:
    """An aio channel to target (``host:port``); a CA file turns on TLS, a client cert/key on mTLS."""
    channel_options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        *options,
    ]
    interceptors = [_BearerToken(token)] if token else None
    if tls_ca_file is None:
        return aio.insecure_channel(target, options=channel_options, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls_ca_file.read_bytes(),
        private_key=tls_key_file.read_bytes() if tls_key_file else None,
        certificate_chain=tls_cert_file.read_bytes() if tls_cert_file else None,
    )
    return aio.secure_channel(target, credentials, options=channel_options, interceptors=interceptors)
