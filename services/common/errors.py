"""Domain errors raised by business code; each carries its gRPC status code, and :data:`HTTP_STATUS` is the one
table from those codes to HTTP statuses (the verifier's ``/get_reward``), so both protocols answer the same error
the same way.

Business code never calls ``context.abort``: it raises one of these and the mapping lives in one place
(``services.common.interceptors`` for gRPC, :func:`http_status` for HTTP).
"""

from __future__ import annotations

import grpc


class DomainError(Exception):
    """Base of every error that maps to a gRPC status other than INTERNAL."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class InvalidArgument(DomainError):
    """Bad input. ``field`` names the offending field, e.g. ``items[3].max_new_tokens``."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotReady(DomainError):
    """The model (or a dependency) is not loaded yet; the client should retry elsewhere or later."""

    code = grpc.StatusCode.UNAVAILABLE


class Overloaded(DomainError):
    """Admission refused: the queue is full. Clients should back off."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class VersionNotReached(DomainError):
    """The client pinned ``min_version`` and this replica still serves an older one."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, min_version: int, serving_version: int) -> None:
        super().__init__(f"min_version: replica serves version {serving_version}, {min_version} was required")
        self.min_version = min_version
        self.serving_version = serving_version


class VersionConflict(DomainError):
    """A publish was refused because the registry already holds an equal or higher version."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, name: str, offered: int, current: int) -> None:
        super().__init__(f"version: {name} is at version {current}; refusing {offered} (must be higher)")
        self.name = name
        self.offered = offered
        self.current = current


class ArtifactError(DomainError):
    """An artifact is missing, corrupt, or its path escapes the store's root."""

    code = grpc.StatusCode.FAILED_PRECONDITION


HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}
"""gRPC status → HTTP status, as in Google's API design guide; anything else is 500."""

RETRY_LATER = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})
"""Statuses a client should retry after a pause (HTTP adds ``Retry-After``)."""


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)
