"""run_command: SIGTERM cancels the command at an await, so its whole cleanup runs (a second SIGTERM cannot cut it
short) and it exits 143; SIGKILL leaves its reaper to stop the processes it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[3]
COMMAND = """
import asyncio, subprocess, sys
from pathlib import Path
from services.common.lifetime import run_command

marker, mode = Path(sys.argv[1]), sys.argv[2]

async def main() -> None:
    if mode == "child":
        subprocess.Popen(["sleep", "300"])
        await asyncio.sleep(1.5)  # the reaper notes descendants every 0.5 s
    try:
        print("ready", flush=True)
        await asyncio.sleep(300)
    finally:
        marker.write_text("stopping")
        print("stopping", flush=True)
        await asyncio.sleep(1.0)  # a cleanup that awaits, as closing channels and stopping services do
        marker.write_text("stopped")

run_command(main())
print("returned", flush=True)
"""


def _start(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    command = subprocess.Popen(
        [sys.executable, "-c", COMMAND, str(tmp_path / "marker"), mode],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert command.stdout is not None and command.stderr is not None
    if command.stdout.readline() != "ready\n":
        command.kill()
        pytest.fail(command.stderr.read())
    return command


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_runs_the_whole_cleanup_and_exits_143(tmp_path: Path, signals: int) -> None:
    command = _start(tmp_path, "plain")
    try:
        command.send_signal(signal.SIGTERM)
        if signals == 2:  # again, while the cleanup awaits: ignored, where a KeyboardInterrupt would cut it short
            assert command.stdout is not None and command.stdout.readline() == "stopping\n"
            command.send_signal(signal.SIGTERM)
        out, err = command.communicate(timeout=60)
    finally:
        command.kill()
    assert command.returncode == 143, err
    assert (tmp_path / "marker").read_text() == "stopped"
    assert "returned" not in out
    assert "stopped by SIGTERM; the processes it started are stopped" in err


@pytest.mark.slow
def test_a_killed_command_has_the_processes_it_started_stopped(tmp_path: Path) -> None:
    command = _start(tmp_path, "child")
    tree = psutil.Process(command.pid).children(recursive=True)
    started = [p for p in tree if p.cmdline()[:1] == ["sleep"]]
    try:
        assert len(started) == 1 and any("services.common.reaper" in " ".join(p.cmdline()) for p in tree)
        command.send_signal(signal.SIGKILL)
        command.wait()
        _, alive = psutil.wait_procs(started, timeout=60)  # a bound against a hang, not a speed
        assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        command.kill()
        for process in tree:
            if process.is_running():
                process.kill()
