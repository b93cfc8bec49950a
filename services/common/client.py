"""gRPC client channels to our services: same limits and keepalive as the servers, optional TLS and token, and a
service config that spreads calls over every replica and retries the ones a replica could not take.

- Load balancing: ``round_robin`` over every address the target resolves to. In Kubernetes dial the headless
  Service (``dns:///verifier-grpc.legibility.svc.cluster.local:50051``): its DNS name resolves to every ready pod,
  and the channel keeps one subchannel per pod. A ClusterIP name resolves to one virtual IP, so every call of a
  channel would go down one connection to one pod. Static lists work too: ``ipv4:10.0.0.5:50051,10.0.0.6:50051``.
- Retries (gRPC's own retry policy, per attempt a random backoff up to the current one, doubling): Score,
  ScoreSteps, Continue and LogProbs are retried on UNAVAILABLE (a replica restarting, draining or
  still loading) and RESOURCE_EXHAUSTED (its queue full), at most ``max_attempts`` times in all, within the call's
  deadline. The learner's StartRun / StopRun are not retried: they are not idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
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


RETRIED_METHODS = (
    ("legibility.v1.VerifierService", "Score"),
    ("legibility.v1.VerifierService", "ScoreSteps"),
    ("legibility.v1.WeakModelService", "Continue"),
    ("legibility.v1.WeakModelService", "LogProbs"),
)
"""The hot-path methods, safe to repeat. GetModelInfo is not retried: callers use it as a quick probe (the learner's
best-effort tokenizer check in StartRun must not hold StartRun for seconds when a service is down)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    """Attempts in all, the first included (gRPC caps it at 5)."""
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    backoff_multiplier: float = 2.0
    codes: tuple[str, ...] = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")


def service_config(retry: RetryPolicy | None = RetryPolicy()) -> dict[str, Any]:
    """gRPC service config: round_robin, and ``retry`` on the idempotent services (none when ``retry`` is None)."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retry is not None:
        config["methodConfig"] = [
            {
                "name": [{"service": service, "method": method} for service, method in RETRIED_METHODS],
                "retryPolicy": {
                    "maxAttempts": retry.max_attempts,
                    "initialBackoff": f"{retry.initial_backoff_s}s",
                    "maxBackoff": f"{retry.max_backoff_s}s",
                    "backoffMultiplier": retry.backoff_multiplier,
                    "retryableStatusCodes": list(retry.codes),
                },
            }
        ]
    return config


def open_channel(
    target: str,
    *,
    token: str | None = None,
    tls_ca_file: Path | None = None,
    tls_cert_file: Path | None = None,
    tls_key_file: Path | None = None,
    max_message_bytes: int = 16 * MiB,
    retry: RetryPolicy | None = RetryPolicy(),
    options: Sequence[tuple[str, Any]] = (),
) -> aio.Channel:
    """An aio channel to target (``host:port``, ``dns:///name:port``, ``ipv4:a:p,b:p``): round_robin over what it
    resolves to, ``retry`` on the idempotent services (None: no retries); a CA file turns on TLS, a client
    cert/key on mTLS."""
    channel_options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.service_config", json.dumps(service_config(retry))),
        ("grpc.enable_retries", 1 if retry is not None else 0),
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
