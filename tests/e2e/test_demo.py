"""The README's demo command, as a newcomer runs it (quick variant): real processes, a real local Redis, a report."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

LEGIBILITY = shutil.which("legibility") or str(Path(os.sys.executable).parent / "legibility")


def _demo(out: Path, *flags: str) -> Path:
    result = subprocess.run(
        [LEGIBILITY, "demo", "--quick", "--out", str(out), *flags], capture_output=True, text=True, timeout=560
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (root,) = out.glob("demo-*")
    return root


def _report(root: Path) -> dict:
    return json.loads((root / "report" / "report.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_demo_writes_the_report_and_a_retraining_worker_gives_the_same_one(tmp_path: Path) -> None:
    root = _demo(tmp_path / "in_process")
    (run_dir,) = (root / "runs").glob("run-*")
    # The report the learner stored as an artifact, fetched by the demo from the store.
    report = _report(root)
    assert (root / "artifacts" / f"{run_dir.name}-report" / "v000001" / "report.json").is_file()
    # 4 tandem steps, then 2 rounds of 1 or 2 game steps each (a round ends early once sneaky-incorrect solutions
    # score as high as helpful-correct ones); each round record holds the step it started at.
    first, second = (r["step"] for r in report["rounds"])
    assert first == 4 and 5 <= second <= 6
    assert second < report["counts"]["train_steps"] <= second + 2
    assert [r["metrics"]["verifier_version"] for r in report["rounds"]] == [2.0, 3.0]
    # The round verifiers' held-out AUC exists thanks to the base data (the prover alone rarely errs), and each
    # round's verifier was attacked once by a sneaky-only prover (a 1-step budget: 0, 1, or 2 = not exploited).
    for r in report["rounds"]:
        assert 0 < r["metrics"]["verifier_auc"] <= 1 and 0 < r["metrics"]["verifier_auc_base"] <= 1
    assert all(r["metrics"]["attack_steps_to_exploit"] in (0.0, 1.0, 2.0) for r in report["rounds"])
    assert (root / "verifier_base_samples.jsonl").stat().st_size > 0
    for metric in ("eval/solo_accuracy", "eval/handoff_accuracy", "eval/jargon_rate", "eval/sneaky_fool_rate"):
        assert 0 <= report["before_after"][metric]["after"] <= 1
    markdown = (root / "report" / "report.md").read_text()
    assert "| jargon rate (greedy) |" in markdown and "## Verifier rounds" in markdown
    for plot in ("accuracy", "jargon_rate", "legibility", "game", "verifier_version", "rounds"):
        assert (root / "report" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({plot}.png)" in markdown
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "state" and "succeeded" in events[-1]["message"]
    # The services and the embedded Redis are gone with the demo.
    where = json.loads((root / "demo.json").read_text())
    assert set(where["services"]) == {"weak-model", "verifier", "learner"}
    for name, target in where["services"].items():
        assert (root / "logs" / f"{name}.log").is_file()
        host, port = target.rsplit(":", 1)
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=1).close()
    redis_port = where["redis_url"].rsplit(":", 1)[1].split("/")[0]
    assert subprocess.run(["pgrep", "-f", f"redis-server.*:{redis_port}"], capture_output=True).returncode == 1
    _check_queue_mode_gives(report, tmp_path / "queue")


TIMINGS = ("_s", "_minutes", "wall_seconds")


def _without_timings(report: dict) -> dict:
    """The report's numbers that do not depend on how fast the machine was (nor the run id in the title)."""
    if isinstance(report, dict):
        return {
            k: _without_timings(v)
            for k, v in report.items()
            if not k.endswith(TIMINGS) and k not in ("title", "events")
        }
    if isinstance(report, list):
        return [_without_timings(v) for v in report]
    return report


def _check_queue_mode_gives(in_process: dict, out: Path) -> None:
    """The same quick demo with `--retrain queue`: a worker process trains the rounds' verifiers, same report."""
    root = _demo(out, "--retrain", "queue")
    queued = _report(root)
    assert _without_timings(queued) == _without_timings(in_process)
    assert [r["metrics"]["verifier_version"] for r in queued["rounds"]] == [2.0, 3.0]
    (run_dir,) = (root / "runs").glob("run-*")
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    published = [e["message"] for e in events if e["kind"] == "round" and "published" in e["message"]]
    assert len(published) == 2 and all("(trained by " in m and "in_process" not in m for m in published)
    assert sum("retraining queued on legibility:retrain" in e["message"] for e in events) == 2
    log = (root / "logs" / "worker.log").read_text()
    assert log.count(": published (v") == 2, log[-2000:]
    assert _processes_mentioning(str(root)) == {}  # the worker stopped with the demo


def _processes_mentioning(text: str) -> dict[int, str]:
    """Pid -> command line of the processes whose command line mentions ``text`` (the demo's folder is in every
    service's flags)."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in (line := cmdline.read_bytes()):
                found[int(cmdline.parent.name)] = line.replace(b"\0", b" ").decode(errors="replace")[:300]
        except OSError:
            continue  # gone meanwhile
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_terminated_demo_stops_its_services_and_redis(tmp_path: Path) -> None:
    output = tmp_path / "demo.out"
    with output.open("wb") as sink:
        demo = subprocess.Popen(
            [LEGIBILITY, "demo", "--quick", "--out", str(tmp_path / "out")], stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 200
        while not list(tmp_path.glob("out/demo-*/demo.json")):  # written once every service is started
            assert demo.poll() is None and time.monotonic() < deadline, "the demo never got its services up"
            time.sleep(0.5)
        assert len(_processes_mentioning(str(tmp_path))) >= 3  # the demo, the verifier, the learner (their flags)
        demo.terminate()
        returncode = demo.wait(60)
        # At once: the demo itself waited for what it started (its reaper would catch a leftover only later).
        left = _processes_mentioning(str(tmp_path))
    finally:
        demo.kill()
    said = output.read_text(errors="replace")[-3000:]
    assert left == {}, said
    assert returncode == 143, said  # SIGTERM cancelled the run and the demo's cleanup ran to its end
    assert "stopped by SIGTERM; the processes it started are stopped" in said
    (where_file,) = tmp_path.glob("out/demo-*/demo.json")
    where = json.loads(where_file.read_text())
    for target in where["services"].values():  # the weak model's flags do not name the folder: its port does
        host, port = target.rsplit(":", 1)
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=1).close()
    redis_port = where["redis_url"].rsplit(":", 1)[1].split("/")[0]
    assert subprocess.run(["pgrep", "-f", f"redis-server.*:{redis_port}"], capture_output=True).returncode == 1
