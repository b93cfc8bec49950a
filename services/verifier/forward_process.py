"""The transformers engine's forward passes in a child process (``--hf-worker process``).

In the service's own process a forward pass shares one interpreter lock with gRPC's call handling, the event loop
and the batcher: every torch op's Python glue waits for it, so on a few CPU cores the model runs below its raw rate
while 64 clients keep the service busy. A child process holds only the model: it receives encoded rows over a pipe,
runs :func:`~services.verifier.scorers.forward_rows` (the same length-sorted chunks as in-process) and sends back
the logits. The service keeps tokenising, validating and batching. One child per loaded checkpoint, so a hot swap
starts the new checkpoint's child beside the old one and the old one ends when its model is closed.

Children are forked by multiprocessing's fork server, a clean interpreter (no gRPC threads) that imports torch and
transformers' auto classes once: a spawned child spent ~6 s importing them before loading anything, which every
hot swap paid; a forked one is ready in ~0.5 s after the first (2-core machine, bundled verifier).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import multiprocessing
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0
"""How long the child may take to import torch and load the checkpoint before the load fails."""
PRELOAD = ("services.verifier.scorers", "transformers.models.auto.modeling_auto")
"""What the fork server imports once for every child (torch; ``from transformers import AutoModel…`` alone ~4 s)."""


def _context() -> multiprocessing.context.BaseContext:
    """Fork from the fork server (never fork this process: it runs gRPC's threads); spawn where there is none."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # takes effect when the server starts (the first child)
    return context


def _serve(conn: Connection, path: str, pad_id: int, torch_threads: int, device: str) -> None:
    """The child: load the checkpoint, say ready (or why not), then answer rows with logits until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides when to stop
    preloaded = all(module in sys.modules for module in PRELOAD)
    try:
        from transformers.utils import logging as hf_logging

        from services.verifier.scorers import forward_rows, load_classifier

        hf_logging.disable_progress_bar()
        model = load_classifier(Path(path), torch_threads=torch_threads, device=device)
    except Exception as error:  # reported to the parent, which raises it where the load was asked
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    conn.send(("ready", (model.num_parameters(), preloaded)))
    while True:
        try:
            rows = conn.recv()
        except EOFError:  # the parent is gone
            return
        if rows is None:
            return
        try:
            conn.send(("ok", forward_rows(model, pad_id, rows)))
        except Exception as error:  # one bad batch fails its calls, not the worker
            conn.send(("error", f"{type(error).__name__}: {error}"))


class ProcessTorchScorer:
    """The transformers model in a child process, fed over a pipe; batches answered in the order sent."""

    engine = "hf"
    concurrent_batches = 2
    """Two batches in flight: the child starts the next one as soon as it sends a result back, while the service
    hands that result out and gathers the batch after (with one, the child idled through both: ~20 % of its time
    at 64 clients × 1 item on 2 cores)."""

    def __init__(
        self, process: multiprocessing.process.BaseProcess, conn: Connection, parameters: int, preloaded: bool = False
    ) -> None:
        self._process = process
        self._conn = conn
        self.parameters = parameters
        self.preloaded = preloaded
        """Whether the child started with torch and transformers already imported (forked from the fork server)."""
        self._send_lock = threading.Lock()
        self._waiting: collections.deque[Future[list[float]]] = collections.deque()
        self._gone: str | None = None
        """Why no batch can be sent any more (set once the child has exited or been told to stop)."""
        self._reaping = threading.Lock()
        """Held while asking after the child's exit: a fork server's child has its exit code read off a pipe,
        once, so of two threads asking at once the second reads end of file and reports code 255."""
        self._reader = threading.Thread(target=self._read, name=f"{process.name}-reader", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, path: Path, *, pad_id: int, torch_threads: int, device: str) -> ProcessTorchScorer:
        """Start the child and wait until it has loaded ``path`` (blocking); raises RuntimeError when it cannot."""
        context = _context()
        parent, child = context.Pipe()
        process = context.Process(
            target=_serve,
            args=(child, str(path), pad_id, torch_threads, device),
            name=f"verifier-forward-{path.name}",
            daemon=True,
        )
        process.start()
        child.close()
        if not parent.poll(START_TIMEOUT_S):
            process.kill()
            raise RuntimeError(f"verifier forward process for {path} did not load it within {START_TIMEOUT_S:.0f}s")
        try:
            status, detail = parent.recv()
        except EOFError:
            process.join(5)
            raise RuntimeError(f"verifier forward process for {path} exited (code {process.exitcode})") from None
        if status != "ready":
            process.join(5)
            raise RuntimeError(f"verifier forward process could not load {path}: {detail}")
        parameters, preloaded = detail
        return cls(process, parent, int(parameters), bool(preloaded))

    def submit(self, rows: Sequence[list[int]]) -> Future[list[float]]:
        """Send ``rows`` to the child (blocking while the pipe is full); the future gets their logits."""
        future: Future[list[float]] = Future()
        with self._send_lock:
            if self._gone is not None:
                raise RuntimeError(self._gone)
            self._waiting.append(future)
            try:
                self._conn.send(list(rows))
            except (OSError, ValueError) as error:
                self._waiting.pop()
                raise RuntimeError(self._exited()) from error
        return future

    def forward(self, rows: Sequence[list[int]]) -> list[float]:
        """Logits of ``rows`` from the child (blocking; callers off the event loop)."""
        return self.submit(rows).result()

    async def score(self, rows: Sequence[list[int]]) -> list[float]:
        future = await asyncio.to_thread(self.submit, rows)  # a send may wait for the child to read
        return await asyncio.wrap_future(future)

    def _read(self) -> None:
        """Hand each answer to the oldest waiting batch; when the child is gone, fail every batch still waiting."""
        while True:
            try:
                status, detail = self._conn.recv()
            except (EOFError, OSError):
                break
            future = self._waiting.popleft()
            if status == "ok":
                future.set_result(detail)
            else:
                future.set_exception(RuntimeError(f"verifier forward pass failed: {detail}"))
        with self._send_lock:
            self._gone = self._gone or self._exited()
            while self._waiting:
                self._waiting.popleft().set_exception(RuntimeError(self._gone))

    def _exited(self) -> str:
        # The pipe broke, so the child is dead or dying; a loaded machine may take seconds to reap it, and its exit
        # code is what the caller is told.
        with self._reaping:
            self._process.join(30)
            return f"verifier forward process exited (code {self._process.exitcode})"

    async def close(self) -> None:
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        with self._send_lock:
            if self._gone is None:
                self._gone = "verifier forward process stopped"
                with contextlib.suppress(OSError, ValueError):
                    self._conn.send(None)
        with self._reaping:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._reader.join(10)  # the child's exit ends its read
        self._conn.close()
