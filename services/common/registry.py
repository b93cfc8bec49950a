"""Model version records in Redis: a monotonic compare-and-set publish, and a watcher that misses no update.

Layout (see docs ARCHITECTURE "Versions and hot swap"):

- ``legibility:model:<name>:current`` holds the JSON of the current :class:`VersionRecord`;
- ``legibility:model:<name>:events`` is a pub/sub channel carrying the same JSON on every accepted publish.

Redis holds only these small records, never weights; the weights live in the artifact store.
Pub/sub is at-most-once (a subscriber that reconnects misses messages), so the key is the source of truth and
the watcher re-reads it periodically and after every reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Self

import redis.asyncio as aioredis
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from services.common.errors import InvalidArgument, VersionConflict
from services.common.tasks import NewCancels

log = logging.getLogger(__name__)

MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Lua numbers are doubles: above 2**53 two different versions could compare equal inside the script.
MAX_VERSION = 2**53

_BACKOFF_BASE_S = 0.1
PUBSUB_CLOSE_TIMEOUT_S = 5.0
"""Longest wait for a pub/sub to close before its connection is dropped (see ``_close_quietly``)."""
_BACKOFF_CAP_S = 2.0


def validate_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`InvalidArgument`."""
    if not isinstance(name, str) or not MODEL_NAME_RE.fullmatch(name):
        raise InvalidArgument("name", f"{name!r} must match {MODEL_NAME_RE.pattern}")
    return name


def current_key(name: str) -> str:
    """The Redis key holding the current record of model ``name``."""
    return f"legibility:model:{validate_model_name(name)}:current"


def events_channel(name: str) -> str:
    """The pub/sub channel announcing new records of model ``name``."""
    return f"legibility:model:{validate_model_name(name)}:events"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class VersionRecord(BaseModel):
    """What Redis knows about one published version of a model (never the weights themselves)."""

    # extra="ignore": a reader must accept records written by a newer writer with more fields.
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    version: Annotated[int, Field(strict=True, ge=1, le=MAX_VERSION)]
    uri: Annotated[str, Field(min_length=1)]
    sha256: str
    created_at: AwareDatetime = Field(default_factory=_utcnow)
    metrics: dict[str, float | int | str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not MODEL_NAME_RE.fullmatch(value):
            raise ValueError(f"must match {MODEL_NAME_RE.pattern}")
        return value

    @field_validator("sha256")
    @classmethod
    def _check_sha256(cls, value: str) -> str:
        value = value.lower()
        if not _SHA256_RE.fullmatch(value):
            raise ValueError("must be 64 hex characters")
        return value

    @field_validator("created_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("metrics")
    @classmethod
    def _finite_metrics(cls, value: dict[str, Any]) -> dict[str, Any]:
        # NaN/inf do not survive JSON (pydantic writes null), so the record would not read back.
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"metrics[{key!r}] must be finite, got {item}")
        return value

    def to_json(self) -> str:
        """The record as compact JSON (what is stored in Redis and published)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> Self:
        """Parse a record from JSON; raises ``pydantic.ValidationError`` (a ValueError) if invalid."""
        return cls.model_validate_json(data)


# KEYS[1] current key, KEYS[2] events channel; ARGV[1] record JSON, ARGV[2] offered version.
# Returns {1, offered} when accepted, {0, current} when refused. One script = one atomic step in Redis, so
# concurrent publishers cannot interleave between the read and the write.
_CAS_LUA = """
local offered = tonumber(ARGV[2])
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, cur = pcall(cjson.decode, raw)
  if not ok or type(cur) ~= 'table' or type(cur['version']) ~= 'number' then
    return redis.error_reply('current record at ' .. KEYS[1] .. ' is not a valid version record')
  end
  if offered <= cur['version'] then
    return {0, cur['version']}
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return {1, offered}
"""


def connect(url: str, password: str | None = None) -> aioredis.Redis:
    """An asyncio Redis client for ``url`` with timeouts suited to the registry.

    Short connect timeout so an unreachable Redis fails fast (the watcher then backs off on its own);
    a health check so idle pub/sub connections are verified before use; a few quick retries on
    connection errors and timeouts so one dropped connection (e.g. a Redis restart) is not an error.
    """
    return aioredis.Redis.from_url(
        url,
        **({"password": password} if password else {}),
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        socket_keepalive=True,
        health_check_interval=10,
        # Retry's default supported errors are ConnectionError and TimeoutError (retry on timeout included).
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=3),
    )


class _ReconnectFlag:
    """Connect callback for the pub/sub connection.

    redis-py reconnects and re-subscribes a pub/sub connection by itself inside ``get_message``; anything
    published during the gap is lost, so we must learn about it and re-read the key.
    """

    def __init__(self) -> None:
        self.reconnected = False

    def on_connect(self, _connection: object) -> None:
        self.reconnected = True


class Backoff:
    """Exponential backoff with jitter: 0.1 s doubling to ~2 s, each delay drawn from [d/2, d]."""

    def __init__(self, base_s: float = _BACKOFF_BASE_S, cap_s: float = _BACKOFF_CAP_S) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.base_s * 2**self.failures)
        self.failures += 1
        # Jitter spreads the reconnects of many replicas after a Redis restart.
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


class VersionRegistry:
    """Publish and watch :class:`VersionRecord` s in Redis."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._cas = client.register_script(_CAS_LUA)

    async def publish(self, record: VersionRecord) -> VersionRecord:
        """Make ``record`` the current version of its model and announce it.

        Atomic compare-and-set: accepted only if ``record.version`` is higher than the current one, else
        raises :class:`VersionConflict`. Raises ``redis.ResponseError`` if the stored record is corrupt.
        """
        keys = [current_key(record.name), events_channel(record.name)]
        result = await self._cas(keys=keys, args=[record.to_json(), record.version])
        accepted, version = int(result[0]), int(result[1])
        if not accepted:
            raise VersionConflict(record.name, record.version, version)
        log.info("published %s version %d (%s)", record.name, record.version, record.uri)
        return record

    async def current(self, name: str) -> VersionRecord | None:
        """The current record of ``name``, or None if none was published (or Redis lost it)."""
        raw = await self._client.get(current_key(name))
        return None if raw is None else VersionRecord.from_json(raw)

    async def watch(
        self,
        name: str,
        *,
        reconcile_interval_s: float = 5.0,
        after_version: int = 0,
    ) -> AsyncIterator[VersionRecord]:
        """Yield every new record of ``name`` whose version is above the last one yielded.

        Starts after ``after_version`` (pass the version already loaded). Subscribes to the events channel,
        reads the key, then re-reads the key every ``reconcile_interval_s`` and after each reconnect, since
        pub/sub loses messages. Survives Redis being down or restarted (logs, backs off, retries forever).
        Records with a lower version (e.g. Redis lost its data and a publisher started over) are ignored.
        Close it with ``contextlib.aclosing`` or by cancelling the consuming task.
        """
        if reconcile_interval_s <= 0:
            raise InvalidArgument("reconcile_interval_s", "must be > 0")
        key, channel = current_key(name), events_channel(name)
        loop = asyncio.get_running_loop()
        last = after_version
        ignored: set[int] = set()  # lower versions already logged, so reconciling does not repeat the log
        backoff = Backoff()
        down_since: float | None = None
        consumer = NewCancels()

        def stop_if_cancelled() -> None:
            # A cancel of the consuming task that something below lost (a read timeout expiring in the same
            # instant can turn it into a timeout, then "no message"): without this the watch would run on and
            # whoever stops it (a verifier's shutdown) would wait forever.
            if consumer.arrived():
                raise asyncio.CancelledError

        def newer(raw: bytes | str | None, source: str) -> VersionRecord | None:
            if raw is None:
                return None
            try:
                record = VersionRecord.from_json(raw)
            except ValidationError as exc:
                log.warning("ignoring invalid %s record from %s: %s", name, source, exc)
                return None
            if record.name != name:
                log.warning("ignoring record for %r on the channel of %r", record.name, name)
                return None
            if record.version < last:
                if source == "channel":
                    # Normal: a message queued before the key read that already gave us something newer.
                    log.debug("skipping stale %s version %d from the channel", name, record.version)
                elif record.version not in ignored:
                    # The key itself went back: Redis lost its data and a publisher started over.
                    ignored.add(record.version)
                    log.warning(
                        "ignoring %s version %d in Redis: below version %d already seen (Redis lost data?)",
                        name,
                        record.version,
                        last,
                    )
            return record if record.version > last else None

        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            flag = _ReconnectFlag()
            try:
                await pubsub.subscribe(channel)
                assert pubsub.connection is not None
                pubsub.connection.register_connect_callback(flag.on_connect)
                # Read the key only after subscribing: a publish in between is then seen on one or the other.
                record = newer(await self._client.get(key), "key")
                if down_since is not None:
                    log.info("registry watch on %s: Redis is back after %.1f s", name, loop.time() - down_since)
                    down_since = None
                backoff.reset()
                if record is not None:
                    last = record.version
                    yield record
                next_reconcile = loop.time() + reconcile_interval_s
                while True:
                    remaining = max(0.0, next_reconcile - loop.time())
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
                    stop_if_cancelled()
                    if message is not None and message.get("type") == "message":
                        record = newer(message["data"], "channel")
                        if record is not None:
                            last = record.version
                            yield record
                    if flag.reconnected or loop.time() >= next_reconcile:
                        if flag.reconnected:
                            log.info("registry watch on %s: pub/sub reconnected; re-reading the key", name)
                        flag.reconnected = False
                        record = newer(await self._client.get(key), "key")
                        next_reconcile = loop.time() + reconcile_interval_s
                        if record is not None:
                            last = record.version
                            yield record
            except (RedisError, OSError) as exc:
                stop_if_cancelled()
                delay = backoff.next_delay()
                if down_since is None:
                    down_since = loop.time()
                # One warning per outage, then every 10th attempt, so a long outage does not flood the log.
                level = logging.WARNING if backoff.failures == 1 or backoff.failures % 10 == 0 else logging.DEBUG
                log.log(
                    level,
                    "registry watch on %s: Redis unavailable (%s: %s); retry %d in %.2f s",
                    name,
                    type(exc).__name__,
                    exc,
                    backoff.failures,
                    delay,
                )
                await _close_quietly(pubsub)
                await asyncio.sleep(delay)
            finally:
                await _close_quietly(pubsub)


async def _close_quietly(pubsub: aioredis.client.PubSub) -> None:
    """Close a pub/sub; shielded so a second cancellation cannot leave its connection half-released, and bounded:
    redis-py's ``PubSub.aclose`` can wait forever for the socket to close (redis/redis-py#3941), which would hang
    whoever stops the watch (a verifier's shutdown). Past the bound the connection is dropped without waiting."""
    try:
        async with asyncio.timeout(PUBSUB_CLOSE_TIMEOUT_S):  # not wait_for: see services.common.tasks
            await asyncio.shield(pubsub.aclose())
    except TimeoutError:
        log.warning("closing pub/sub took over %.0f s; dropping its connection", PUBSUB_CLOSE_TIMEOUT_S)
        if pubsub.connection is not None:
            await pubsub.connection.disconnect(nowait=True)
    except (RedisError, OSError) as exc:
        log.debug("closing pub/sub failed: %s", exc)
