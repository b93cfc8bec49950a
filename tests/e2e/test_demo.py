"""The README's demo command, as a newcomer runs it: a real process, a real local Redis, a report on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

LEGIBILITY = shutil.which("legibility") or str(Path(os.sys.executable).parent / "legibility")


@pytest.mark.slow
def test_demo_publishes_watches_verifies_and_reports(tmp_path: Path) -> None:
    result = subprocess.run(
        [LEGIBILITY, "demo", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = tmp_path.glob("demo-*")
    report = json.loads((run_dir / "report.json").read_text())
    assert [v["version"] for v in report["versions"]] == [1, 2, 3]
    assert all(v["verified"] for v in report["versions"])
    assert max(v["watcher_latency_ms"] for v in report["versions"]) < 1000
    assert "refusing 1 (must be higher)" in report["refused_stale_publish"]
    assert "round.txt" in report["refused_tampered_artifact"]
    assert "must not contain '..'" in report["refused_escaping_uri"]
    assert (run_dir / "report.md").read_text().startswith("# Demo report")
    # The embedded Redis is gone with the demo.
    port = report["redis_url"].rsplit(":", 1)[1].split("/")[0]
    assert subprocess.run(["pgrep", "-f", f"redis-server.*:{port}"], capture_output=True).returncode == 1
