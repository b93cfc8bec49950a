"""Equivalence of two LaTeX answers by ``math-verify``, in worker processes that a hard timeout can kill.

Why not in-process: math-verify bounds its sympy work with ``signal.alarm``, which Python allows on the main thread
only; called from a worker thread (as services do) it raises ValueError unless the timeouts are turned off
(``parsing_timeout=None``, ``timeout_seconds=None``), and then one short answer such as ``10^{10^{10}}`` keeps a
thread busy, holding the GIL, for minutes or more. Here each worker process runs math-verify on its own main thread
with its timeouts on (the soft bound); the caller waits at most ``timeout_s`` (the hard bound) and kills a worker
that overruns it. An answer that times out or kills its worker counts as not equal, as math-verify itself counts a
timeout. Workers start on first use (about two seconds: sympy's import) and are shared by every caller of a process.

Run as ``python -m services.tasks.math_equivalence``, this module is the worker: one JSON request per stdin line.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

SOFT_TIMEOUT_S = 5
"""math-verify's own bound per parse and per comparison inside a worker (its default)."""
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
_START_TIMEOUT_S = 120.0
_MODULE = "services.tasks.math_equivalence"


class _Worker:
    """One worker process and its pipes; used by one caller at a time."""

    def __init__(self, soft_timeout_s: int) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_PROJECT_ROOT, os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", _MODULE, str(soft_timeout_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            bufsize=0,
            start_new_session=True,  # a Ctrl-C meant for the service does not reach it; it exits on stdin EOF
        )
        self._buffer = b""
        if self._read_line(_START_TIMEOUT_S) != b"ready":
            self.kill()
            raise RuntimeError("the math-verify worker did not start (see its stderr)")

    def _read_line(self, timeout_s: float) -> bytes | None:
        """The next line from the worker, or None when it did not come within ``timeout_s`` or the worker died."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.process.stdout], [], [], remaining)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def ask(self, gold: str, answer: str, timeout_s: float) -> bool | None:
        """Whether ``answer`` equals ``gold``; None when the worker overran ``timeout_s`` or died."""
        assert self.process.stdin is not None
        request = memoryview(json.dumps({"gold": gold, "answer": answer}).encode() + b"\n")
        try:
            while request:  # a raw pipe may take part of a long request per write
                request = request[self.process.stdin.write(request) or 0 :]
        except BrokenPipeError:
            return None
        line = self._read_line(timeout_s)
        return None if line is None else bool(json.loads(line)["equal"])

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


class LatexEquivalence:
    """Checks answers in up to ``workers`` processes, each check bounded by ``timeout_s`` seconds; thread-safe."""

    def __init__(self, workers: int = 2, timeout_s: float = 30.0, soft_timeout_s: int = SOFT_TIMEOUT_S) -> None:
        self.workers, self.timeout_s, self.soft_timeout_s = workers, timeout_s, soft_timeout_s
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._closed = False

    def _acquire(self) -> _Worker:
        """An idle worker, a new one while fewer than ``workers`` run, else the next one released."""
        while True:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                if self._closed:
                    raise RuntimeError("the math answer checker is closed")
                spawn = self._started < self.workers
                if spawn:
                    self._started += 1
            if spawn:
                try:
                    return _Worker(self.soft_timeout_s)
                except BaseException:
                    with self._lock:
                        self._started -= 1
                    raise
            try:  # all busy: wait for one, and look again (a killed one frees a start)
                return self._idle.get(timeout=0.1)
            except queue.Empty:
                continue

    def _release(self, worker: _Worker, healthy: bool) -> None:
        if healthy and not self._closed:
            self._idle.put(worker)
            return
        worker.kill()
        with self._lock:
            self._started -= 1

    def equal(self, gold: str, answer: str) -> bool:
        """math-verify's ``verify(parse($gold$), parse($answer$))``; False when the check overran or crashed."""
        worker = self._acquire()
        result = None
        try:
            result = worker.ask(gold, answer, self.timeout_s)
        finally:
            self._release(worker, healthy=result is not None)
        if result is None:
            log.warning("no math check result in %.0fs for %.80r (gold %.80r): wrong", self.timeout_s, answer, gold)
            return False
        return result

    def close(self) -> None:
        """Stops the idle workers; a busy one stops when its check returns."""
        with self._lock:
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                return


_shared: LatexEquivalence | None = None
_shared_lock = threading.Lock()


def shared_checker() -> LatexEquivalence:
    """The process-wide checker (started lazily, closed at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LatexEquivalence()
            atexit.register(_shared.close)
        return _shared


def _serve(soft_timeout_s: int) -> None:
    """The worker loop: ``{"gold", "answer"}`` per stdin line → ``{"equal": bool}`` per stdout line."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints (sympy, math-verify) cannot corrupt replies
    logging.basicConfig(level=logging.ERROR)  # math-verify logs each soft timeout as a warning; not useful here
    from math_verify import parse, verify

    protocol.write("ready\n")
    for line in sys.stdin:
        request = json.loads(line)
        gold = parse(f"${request['gold']}$", parsing_timeout=soft_timeout_s)
        answer = parse(f"${request['answer']}$", parsing_timeout=soft_timeout_s)
        protocol.write(json.dumps({"equal": bool(verify(gold, answer, timeout_seconds=soft_timeout_s))}) + "\n")


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
