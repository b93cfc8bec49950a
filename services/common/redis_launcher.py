"""A real ``redis-server`` child process on loopback, for the local demo and the tests.

We run Debian's ``redis-server`` rather than a fake so that tests see real pub/sub, Lua, reconnects and
restarts.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import quote

from services.common.ports import HOST, free_port

_LOG_NAME = "redis.log"
_CONF_NAME = "redis.conf"
# An auto-picked port can be taken by someone else between our probe and redis binding it; try a few.
_PORT_ATTEMPTS = 3


def _conf_quote(value: str) -> str:
    # redis.conf double-quoted strings understand backslash escapes; this keeps paths and passwords with
    # spaces or quotes intact.
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _resp(*args: str) -> bytes:
    """One command in the Redis wire protocol (RESP2)."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _ping(port: int, password: str | None, timeout_s: float = 0.5) -> bool:
    """True if the server on ``port`` answers PING with PONG (after AUTH when a password is set).

    A raw socket rather than redis-py: redis-py keeps the last connection error (and with it our frames)
    alive, which would keep the EmbeddedRedis referenced and defeat its garbage-collection finalizer.
    """
    commands = ([_resp("AUTH", password)] if password else []) + [_resp("PING")]
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            sock.sendall(b"".join(commands))
            data = b""
            # Each reply here is a single line: +OK, +PONG, or an error such as -LOADING.
            while data.count(b"\r\n") < len(commands):
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
    except OSError:
        return False
    return data.split(b"\r\n")[len(commands) - 1] == b"+PONG"


def _terminate(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL; always reaps the child so no zombie or orphan is left."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


class EmbeddedRedis:
    """One ``redis-server`` process bound to 127.0.0.1.

    Usage::

        with EmbeddedRedis() as server:
            client = redis.asyncio.Redis.from_url(server.url)

    ``restart()`` keeps the port (and, with ``persistence=True``, the data), so it can stand in for a Redis
    restart seen by clients. Without persistence the restarted server is empty.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        persistence: bool = False,
        data_dir: Path | None = None,
        start_timeout_s: float = 10.0,
        executable: str | None = None,
    ) -> None:
        self._requested_port = port
        self._port: int | None = port
        self.password = password
        self.persistence = persistence
        self._given_dir = Path(data_dir) if data_dir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.start_timeout_s = start_timeout_s
        self._executable = executable
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._finalizer: weakref.finalize[..., None] | None = None

    # -- properties --

    @property
    def port(self) -> int:
        """The TCP port; known once the server has been started (or was given)."""
        if self._port is None:
            raise RuntimeError("EmbeddedRedis has no port yet: call start() first")
        return self._port

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def data_dir(self) -> Path:
        """The server's ``--dir`` (holds its log, config and, with persistence, its data)."""
        if self._given_dir is not None:
            return self._given_dir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="legibility-redis-")
        return Path(self._tmp.name)

    # -- lifecycle --

    def start(self) -> Self:
        """Start the server and wait until it answers PING. Idempotent while running."""
        if self.running:
            return self
        executable = self._executable or shutil.which("redis-server")
        if executable is None:
            raise RuntimeError(
                "redis-server not found on PATH; install the Debian package 'redis-server' "
                "(apt-get install redis-server)"
            )
        # Only a port we picked ourselves may be re-picked; a given port, or the port of a restart, is fixed.
        attempts = _PORT_ATTEMPTS if self._port is None else 1
        for attempt in range(attempts):
            if self._port is None:
                self._port = free_port()
            try:
                self._launch(executable)
                return self
            except RuntimeError:
                if attempt + 1 < attempts and self._requested_port is None:
                    self._port = None
                    continue
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its temp dir if we made one."""
        self._stop_process()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def restart(self) -> Self:
        """Stop and start again on the same port, as a Redis restart looks to its clients."""
        port = self.port
        self._stop_process()
        self._port = port
        return self.start()

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The last ``max_bytes`` of the server's log, for error messages."""
        path = self.data_dir / _LOG_NAME
        try:
            with path.open("rb") as fh:
                fh.seek(0, 2)
                fh.seek(max(0, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --

    def _write_config(self, directory: Path) -> Path:
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            "protected-mode yes",
            "daemonize no",
            f"dir {_conf_quote(str(directory))}",
            'logfile ""',
        ]
        if self.persistence:
            lines += ["appendonly yes", "appendfsync everysec"]
        else:
            lines += ['save ""', "appendonly no"]
        if self.password:
            lines.append(f"requirepass {_conf_quote(self.password)}")
        conf = directory / _CONF_NAME
        # The file may hold the password (kept out of argv so `ps` does not show it): owner-only.
        conf.touch(mode=0o600, exist_ok=True)
        conf.chmod(0o600)
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return conf

    def _launch(self, executable: str) -> None:
        directory = self.data_dir
        directory.mkdir(parents=True, exist_ok=True)
        conf = self._write_config(directory)
        self._log = (directory / _LOG_NAME).open("ab")
        self._proc = subprocess.Popen(
            [executable, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            close_fds=True,
        )
        # Kills the child if this object is garbage-collected or the interpreter exits without stop().
        self._finalizer = weakref.finalize(self, _terminate, self._proc)
        try:
            self._wait_ready()
        except BaseException:
            self._stop_process()
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while not _ping(self.port, self.password):
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with code {self._proc.returncode} while starting on port "
                    f"{self.port}; log tail:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within {self.start_timeout_s} s; "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _stop_process(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._proc is not None:
            _terminate(self._proc)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
