"""EmbeddedRedis starts a real redis-server and never leaves one behind."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.common import redis_launcher
from services.common.redis_launcher import EmbeddedRedis


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_ping_stop_leaves_no_process() -> None:
    with EmbeddedRedis() as server:
        pid = server.pid
        assert pid is not None and process_exists(pid)
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        assert client.ping() is True
        assert client.set("k", "v") is True
        assert client.get("k") == b"v"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.close()
        data_dir = server.data_dir
        assert data_dir.is_dir()
    assert server.pid is None
    assert not process_exists(pid)
    assert not data_dir.exists()  # the temp dir we made is gone too


def test_restart_keeps_port_and_loses_data_without_persistence() -> None:
    with EmbeddedRedis() as server:
        port, pid = server.port, server.pid
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.restart()
        assert server.port == port
        assert server.pid is not None and server.pid != pid
        assert pid is not None and not process_exists(pid)
        assert client.get("k") is None  # redis-py reconnects; the new server is empty
        assert client.dbsize() == 0
        client.close()


def test_restart_keeps_data_with_persistence(tmp_path: Path) -> None:
    with EmbeddedRedis(persistence=True, data_dir=tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.restart()
        assert client.get("k") == b"v"
        client.close()
    assert tmp_path.is_dir()  # a given data dir is left in place


def test_password_is_required() -> None:
    with EmbeddedRedis(password="s3cret pa:ss") as server:
        assert server.url == f"redis://:s3cret%20pa%3Ass@127.0.0.1:{server.port}/0"
        authed = redis.Redis.from_url(server.url)
        assert authed.ping() is True
        authed.close()
        # No retries: redis-py would otherwise retry the auth failure (a ConnectionError) with backoff.
        no_retry = Retry(NoBackoff(), 0)
        anonymous = redis.Redis(host=server.host, port=server.port, retry=no_retry)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        wrong = redis.Redis(host=server.host, port=server.port, password="nope", retry=no_retry)
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        wrong.close()


def test_given_port_in_use_fails_with_log_tail() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = EmbeddedRedis(port=port, start_timeout_s=5.0)
        with pytest.raises(RuntimeError) as info:
            server.start()
        assert f"port {port}" in str(info.value)
        assert "log tail" in str(info.value)
        assert server.pid is None
        server.stop()


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_launcher.shutil, "which", lambda _name: None)
    with pytest.raises(RuntimeError, match="apt-get install redis-server"):
        EmbeddedRedis().start()


def test_garbage_collected_server_is_killed() -> None:
    server = EmbeddedRedis().start()
    pid = server.pid
    assert pid is not None and process_exists(pid)
    del server  # the weakref finalizer terminates and reaps the child
    assert not process_exists(pid)
