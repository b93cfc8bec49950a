"""The reaper: a process killed with SIGKILL has its descendants stopped (SIGTERM, then SIGKILL after the grace);
a clean exit leaves nothing to do; a process that is no longer the one seen (a reused pid) is never signalled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from services.common.reaper import still_running

ROOT = Path(__file__).resolve().parents[3]
PARENT = """
import signal, subprocess, sys, time
from services.common.reaper import guard_descendants
guard_descendants()
guard_descendants()  # once per process
py = sys.executable
child = subprocess.Popen([py, "-c", "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"])
stubborn = subprocess.Popen(
    [py, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"]
)
time.sleep(1.5)  # the reaper notes descendants every 0.5 s
print("ready", flush=True)
if sys.argv[1] == "clean":  # stops everything it started, then exits
    import psutil
    for process in psutil.Process().children(recursive=True):
        if "services.common.reaper" not in " ".join(process.cmdline()):
            process.kill()
    for process in (child, stubborn):
        process.wait()
    sys.exit(0)
time.sleep(300)
"""


def _start_parent(mode: str, stderr: Path) -> tuple[subprocess.Popen[str], list[psutil.Process], psutil.Process]:
    """The parent running PARENT; its descendants (child, grandchild, stubborn); its reaper."""
    with stderr.open("w") as log:
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, mode], cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    assert parent.stdout is not None and parent.stdout.readline() == "ready\n"
    tree = psutil.Process(parent.pid).children(recursive=True)
    reapers = [p for p in tree if "services.common.reaper" in " ".join(p.cmdline())]
    assert len(reapers) == 1, [p.cmdline() for p in tree]
    return parent, [p for p in tree if p.pid != reapers[0].pid], reapers[0]


def _wait_gone(processes: list[psutil.Process], within_s: float) -> list[psutil.Process]:
    """Those still running after ``within_s`` (a bound against a hang, not a speed)."""
    _, alive = psutil.wait_procs(processes, timeout=within_s)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_a_killed_process_has_its_descendants_stopped(tmp_path: Path) -> None:
    parent, descendants, reaper = _start_parent("kill", tmp_path / "stderr")
    assert len(descendants) == 3  # child, its grandchild, the one that ignores SIGTERM
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # SIGTERM stops two; the one that ignores it gets SIGKILL after the grace.
        assert _wait_gone(descendants, within_s=60) == []
        assert _wait_gone([reaper], within_s=10) == []  # and the reaper is gone too
        said = (tmp_path / "stderr").read_text()
        assert f"process {parent.pid} ended; stopped 3 of its processes left running" in said
    finally:
        for process in [*descendants, reaper]:
            if process.is_running():
                process.kill()


def test_a_clean_exit_leaves_the_reaper_nothing_to_do(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "300"])  # not a descendant of the parent: never touched
    try:
        parent, descendants, reaper = _start_parent("clean", tmp_path / "stderr")
        assert parent.wait(60) == 0
        assert _wait_gone([reaper], within_s=10) == []
        assert _wait_gone(descendants, within_s=1) == []
        assert "stopped" not in (tmp_path / "stderr").read_text()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_reused_pid_is_not_the_process_seen() -> None:
    me = psutil.Process()
    assert still_running({me.pid: me.create_time()}) == [me]
    assert still_running({me.pid: me.create_time() - 10}) == []  # another process that had this pid
