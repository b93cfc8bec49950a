"""Typed settings shared by every service: environment variables (``LEGIBILITY_*``) and CLI flags from one class.

Each service subclasses :class:`ServerSettings` and adds its own fields; the field docstrings are the ``--help``
text, and the same names (upper-cased, prefixed) are the Kubernetes ConfigMap keys.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis

from services.common.cpu_cores import parse_cores

MiB = 1024 * 1024


class LegibilitySettings(BaseSettings):
    """Base of every settings class: env prefix, docstrings as help, kebab-case flags."""

    model_config = SettingsConfigDict(
        env_prefix="LEGIBILITY_",
        use_attribute_docstrings=True,
        cli_kebab_case=True,
        cli_implicit_flags=True,
        extra="ignore",
    )

    @classmethod
    def from_cli(cls, args: list[str], prog: str) -> Self:
        """Settings from env vars overridden by CLI flags (``--help`` prints every field)."""
        return cls(_cli_parse_args=args, _cli_prog_name=prog)  # type: ignore[call-arg]

    @classmethod
    def from_cli_or_exit(cls, args: list[str], prog: str) -> Self:
        """:meth:`from_cli` for a process entry point: a bad setting prints which one and why, and exits 2."""
        try:
            return cls.from_cli(args, prog)
        except ValidationError as error:
            print(f"{prog}: {error}", file=sys.stderr)
            sys.exit(2)


class LoggingSettings(LegibilitySettings):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Minimum level of log records."""
    log_format: Literal["console", "json"] = "console"
    """console for people, json (one object per line) for log collectors."""


class StoreSettings(LegibilitySettings):
    """Where version records and artifacts live."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis holding version records (never weights). A password goes in the URL or in redis_password."""
    redis_password: SecretStr | None = None
    """Overrides the password in redis_url; read from a Secret in Kubernetes."""
    artifact_root: Path = Path("runs/artifacts")
    """Root of the artifact store (a shared volume in the cluster); artifact:// uris are relative to it."""
    reconcile_interval_s: float = Field(5.0, gt=0)
    """How often a watcher re-reads the current version record, in case a pub/sub message was lost."""

    def redis_client(self) -> Redis:
        """An asyncio client to redis_url (password from redis_password when set)."""
        from services.common.registry import connect

        password = self.redis_password.get_secret_value() if self.redis_password else None
        return connect(self.redis_url, password)


class ModelSourceSettings(StoreSettings):
    """Where a service's weights come from: a local checkpoint directory or a registry version."""

    model_path: Path = Path("models")
    """Checkpoint directory (transformers format) to serve when registry_version is not set."""
    model_name: str = "model"
    """Name reported in ModelInfo and looked up in the registry."""
    registry_version: int | None = Field(None, ge=0)
    """Load this version of model_name from the registry and artifact store instead of model_path; 0 = current."""
    expected_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    """Refuse the weights unless their manifest sha256 equals this."""


class ServerSettings(LoggingSettings):
    """Settings of the gRPC server bootstrap every service uses."""

    host: str = "127.0.0.1"
    """Address to bind; 0.0.0.0 in a container."""
    port: int = Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    metrics_port: int = Field(9090, ge=0, le=65535)
    """Prometheus /metrics HTTP port, separate from gRPC; 0 picks a free one."""
    metrics_enabled: bool = True
    """Serve Prometheus metrics."""
    max_message_bytes: int = Field(16 * MiB, gt=0)
    """Largest gRPC message accepted or sent; larger ones get RESOURCE_EXHAUSTED."""
    max_connection_age_s: float = Field(300.0, gt=0)
    """Clients reconnect after this long (GOAWAY), so those that pin one connection (pick_first, external stacks)
    spread over replicas as they scale; jittered by gRPC by +-10 %."""
    max_connection_age_grace_s: float = Field(30.0, ge=0)
    """Calls in flight on an aged connection get this long to finish."""
    keepalive_time_s: float = Field(30.0, gt=0)
    """Server pings an idle connection this often."""
    keepalive_timeout_s: float = Field(10.0, gt=0)
    """A ping not answered within this time closes the connection."""
    drain_delay_s: float = Field(1.0, ge=0)
    """On shutdown, health says NOT_SERVING this long before the server stops taking new calls."""
    grace_period_s: float = Field(10.0, ge=0)
    """In-flight calls get this long to finish after the server stops taking new ones."""
    reflection: bool = True
    """Serve gRPC server reflection (grpcurl, grpcui)."""
    tls_cert_file: Path | None = None
    """PEM server certificate; with tls_key_file turns TLS on."""
    tls_key_file: Path | None = None
    """PEM private key of tls_cert_file."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."""
    auth_token: SecretStr | None = None
    """Bearer token required on every RPC except health. Prefer auth_token_file in a cluster."""
    auth_token_file: Path | None = None
    """File holding the bearer token (a mounted Secret); read at start."""
    cpu_cores: str = ""
    """CPU cores the service and the processes it starts run on, e.g. "1" or "0-3,8" (empty: every core it may
    use), as a pod with Kubernetes' static CPU policy gets. For services sharing a host: vLLM's CPU worker binds to
    the first cores it may use and polls while it waits, so two engines (a policy's, the weak model's) or an engine
    and the learner's in-process policy otherwise crowd the same cores."""

    @field_validator("cpu_cores")
    @classmethod
    def _known_cores(cls, value: str) -> str:
        if value.strip():
            parse_cores(value)  # ValueError names the cores; pydantic names the field
        return value.strip()

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        if self.auth_token is not None and self.auth_token_file is not None:
            raise ValueError("set auth_token or auth_token_file, not both")
        return self

    def resolved_auth_token(self) -> str | None:
        """The bearer token from auth_token or auth_token_file; None when auth is off."""
        if self.auth_token_file is not None:
            token = self.auth_token_file.read_text().strip()
            if not token:
                raise ValueError(f"auth_token_file {self.auth_token_file} is empty")
            return token
        return self.auth_token.get_secret_value() if self.auth_token is not None else None
