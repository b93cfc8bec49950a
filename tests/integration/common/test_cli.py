"""`legibility publish` and `legibility registry show` against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LEGIBILITY = str(Path(sys.executable).parent / "legibility")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEGIBILITY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_publish_then_show_then_refuse_stale(redis_server, tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "weights.bin").write_bytes(b"\x00\x01" * 100)
    env = {"LEGIBILITY_REDIS_URL": redis_server.url, "LEGIBILITY_ARTIFACT_ROOT": str(tmp_path / "store")}

    published = run_cli("publish", "verifier", str(checkpoint), "--metric", "auc=0.91", "--metric", "round=2", env=env)
    assert published.returncode == 0, published.stderr
    shown = run_cli("registry", "show", "verifier", env=env)
    record = json.loads(shown.stdout)
    assert (record["version"], record["uri"], record["metrics"]) == (
        1,
        "artifact://verifier/v000001",
        {"auc": 0.91, "round": 2},
    )
    assert (tmp_path / "store" / "verifier" / "v000001" / "weights.bin").read_bytes() == b"\x00\x01" * 100

    again = run_cli("publish", "verifier", str(checkpoint), env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["version"] == 2
    stale = run_cli("publish", "verifier", str(checkpoint), "--version", "2", env=env)
    assert stale.returncode == 1 and "refused" in stale.stdout
    assert run_cli("registry", "show", "missing-model", env=env).returncode == 1


def test_redis_password_setting(tmp_path: Path) -> None:
    from services.common.redis_launcher import EmbeddedRedis

    with EmbeddedRedis(password="pw-123", data_dir=tmp_path / "redis") as server:
        url = f"redis://127.0.0.1:{server.port}/0"  # no password in the URL
        env = {"LEGIBILITY_REDIS_URL": url, "LEGIBILITY_ARTIFACT_ROOT": str(tmp_path / "store")}
        refused = run_cli("registry", "show", "verifier", env=env)
        assert refused.returncode != 0 and "Authentication" in refused.stderr + refused.stdout
        allowed = run_cli("registry", "show", "verifier", env=env | {"LEGIBILITY_REDIS_PASSWORD": "pw-123"})
        assert allowed.returncode == 1 and "no version of 'verifier' published" in allowed.stdout


def test_the_command_line_starts_without_importing_torch_or_vllm() -> None:
    # Every `legibility` call (registry show, publish, --help) paid ~8 s of torch and transformers imports when the
    # bench modules imported the policy at the top; only the verbs that run a model may import them.
    probe = "import sys, services.cli; print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "[]"


def test_a_bad_setting_exits_2_naming_it_without_a_traceback() -> None:
    missing_core = str(os.cpu_count() or 1)
    for service in ("weak-model", "verifier", "learner"):
        refused = run_cli("serve", service, "--cpu-cores", missing_core, env={})
        assert refused.returncode == 2, (service, refused.stderr[-500:])
        assert "cpu_cores" in refused.stderr and "not among this machine's cores" in refused.stderr
        assert "Traceback" not in refused.stderr
