"""Prometheus metrics shared by every service, served on their own HTTP port (never the gRPC one)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

# Latency buckets from 1 ms to ~1 min: inference calls on CPU span that whole range.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

GRPC_REQUESTS = Counter(
    "legibility_grpc_requests_total",
    "gRPC calls by method and final status code.",
    ["service", "method", "code"],
)
GRPC_LATENCY = Histogram(
    "legibility_grpc_request_duration_seconds",
    "Wall time of gRPC calls, by method.",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
)
GRPC_IN_FLIGHT = Gauge(
    "legibility_grpc_in_flight_requests",
    "gRPC calls being handled now.",
    ["service", "method"],
)
MODEL_VERSION = Gauge(
    "legibility_model_version",
    "Registry version of the weights this replica serves (0 = loaded from a path).",
    ["model"],
)
REGISTRY_VERSION = Gauge(
    "legibility_registry_version",
    "Newest registry version this replica's watcher has seen; above legibility_model_version = behind the registry.",
    ["model"],
)
MODEL_SWAPS = Counter("legibility_model_swaps_total", "Hot swaps to a new version.", ["model"])
MODEL_REFUSED_VERSIONS = Counter(
    "legibility_model_refused_versions_total",
    "Versions refused (corrupt, mismatched or failing to load); the old one kept serving.",
    ["model", "reason"],
)


PREFIX_CACHE_LOOKUPS = Counter(
    "legibility_prefix_cache_lookups_total", "Prefix KV-cache lookups (one per continued prefix).", ["model"]
)
PREFIX_CACHE_HITS = Counter("legibility_prefix_cache_hits_total", "Lookups that found a cached prefix.", ["model"])
PREFIX_CACHE_TOKENS = Counter(
    "legibility_prefix_cache_tokens_total",
    "Prefix tokens looked up, by whether their KV states came from the cache (reused) or were computed.",
    ["model", "source"],
)


def count_prefix_cache(model: str, lookups: int, hits: int, reused_tokens: int, prefix_tokens: int) -> None:
    """Add one batch's prefix-cache lookups to the counters (prefix tokens split into reused and computed)."""
    PREFIX_CACHE_LOOKUPS.labels(model).inc(lookups)
    PREFIX_CACHE_HITS.labels(model).inc(hits)
    PREFIX_CACHE_TOKENS.labels(model, "reused").inc(reused_tokens)
    PREFIX_CACHE_TOKENS.labels(model, "computed").inc(prefix_tokens - reused_tokens)


@dataclass
class MetricsServer:
    """The running /metrics endpoint."""

    port: int
    _server: WSGIServer
    _thread: Thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(host: str, port: int) -> MetricsServer:
    """Serve the default registry at http://host:port/metrics on a daemon thread; port 0 picks one."""
    server, thread = start_http_server(port, addr=host)
    bound = server.server_address[1]
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return MetricsServer(port=bound, _server=server, _thread=thread)
