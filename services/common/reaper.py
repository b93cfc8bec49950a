"""Stop this process's descendants when it dies without stopping them (``python -m services.common.reaper PID``).

vLLM's engine core watches no parent (vllm-project/vllm#55510): SIGKILL a service that runs a vLLM engine (an OOM
kill, a supervisor that signals only the main process) and the engine core and its worker run on under pid 1,
holding their memory; on a GPU, the KV cache the restarted service then cannot allocate. :func:`guard_descendants`
starts, once per process, a small watcher beside it (the vLLM engines, and every command that starts processes:
the demo, the benches; see :mod:`services.common.lifetime`):

- in a session of its own, so a signal to the service's process group leaves it to clean up after the group;
- every ``POLL_S`` it notes the service's descendants (pid and start time, so a reused pid is never signalled);
- when its parent pid changes (the service has died, however), it sends SIGTERM to those it last saw that are still
  alive, SIGKILL to any left after ``GRACE_S``, and exits.

After a clean stop the engine's processes are already gone and it finds nothing to do. It polls instead of reading
a pipe's end of file: vLLM forks workers, and a fork would inherit the pipe's write end and keep it open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import psutil

log = logging.getLogger(__name__)

POLL_S = 0.5
GRACE_S = 5.0

_started: dict[int, subprocess.Popen[bytes]] = {}
_lock = threading.Lock()


def guard_descendants() -> None:
    """Start this process's reaper, if it has none yet (idempotent; cheap: psutil is all it imports)."""
    pid = os.getpid()
    with _lock:
        if pid in _started and _started[pid].poll() is None:
            return
        _started[pid] = subprocess.Popen(
            [sys.executable, "-m", "services.common.reaper", str(pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # stderr stays the service's, for its one line
            start_new_session=True,
        )
    log.debug("reaper %d watches process %d's descendants", _started[pid].pid, pid)


Seen = dict[int, float]
"""pid -> create_time of the descendants seen last."""


def descendants(parent: int, exclude: int) -> Seen:
    """The living descendants of ``parent`` (all generations), less ``exclude`` (the reaper itself)."""
    try:
        children = psutil.Process(parent).children(recursive=True)
    except psutil.Error:
        return {}
    seen = {}
    for child in children:
        if child.pid != exclude:
            try:
                seen[child.pid] = child.create_time()
            except psutil.Error:
                continue
    return seen


def still_running(seen: Seen) -> list[psutil.Process]:
    """Those of ``seen`` alive now as the same process (same start time), zombies left out."""
    alive = []
    for pid, created in seen.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            continue
    return alive


def reap(seen: Seen, grace_s: float = GRACE_S) -> int:
    """SIGTERM every process of ``seen`` still running, SIGKILL those left after ``grace_s``; how many were found."""
    alive = still_running(seen)
    for process in alive:
        _signal(process, signal.SIGTERM)
    _, left = psutil.wait_procs(alive, timeout=grace_s)
    for process in left:
        _signal(process, signal.SIGKILL)
    psutil.wait_procs(left, timeout=grace_s)
    return len(alive)


def _signal(process: psutil.Process, signum: int) -> None:
    with contextlib.suppress(psutil.Error):  # it ended meanwhile
        process.send_signal(signum)


def watch(parent: int, poll_s: float = POLL_S) -> int:
    """Note ``parent``'s descendants until it dies, then reap them; how many were still running."""
    me = os.getpid()
    seen: Seen = {}
    while os.getppid() == parent:
        seen = descendants(parent, exclude=me) or seen
        time.sleep(poll_s)
    return reap(seen)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the service's group; this one outlives it
    parent = int(sys.argv[1])
    if os.getppid() != parent:
        return
    reaped = watch(parent)
    if reaped:
        print(f"reaper: process {parent} ended; stopped {reaped} of its processes left running", file=sys.stderr)


if __name__ == "__main__":
    main()
