"""The verifier load generator on the real server: bounded runs over gRPC and HTTP, a mid-run publish, bad bounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from services.common.artifacts import ArtifactStore
from services.common.publish import publish_checkpoint
from services.common.registry import VersionRegistry
from services.tools.loadtest_verifier import LoadConfig, LoadReport, loadtest_verifier, run_loadtest
from tests.integration.verifier.conftest import VERIFIER_MODEL, RunningVerifier, VerifierFactory

REQUESTS = 60
BATCH = 4


def grpc_target(verifier: RunningVerifier) -> str:
    return f"127.0.0.1:{verifier.app.server.port}"


def assert_clean_count_bounded_run(report: LoadReport, version: int | str) -> None:
    assert report.requests_ok == REQUESTS
    assert report.requests_failed == 0 and report.errors == {}
    assert report.items_scored == REQUESTS * BATCH
    assert report.versions == {version: REQUESTS}
    p50, p95, p99 = (report.latency_ms[p] for p in ("p50", "p95", "p99"))
    assert 0 < p50 <= p95 <= p99
    assert report.requests_per_s > 0 and report.items_per_s == pytest.approx(report.requests_per_s * BATCH)


async def test_count_bounded_grpc_run_scores_every_item_on_version_0(start_server: VerifierFactory) -> None:
    verifier = await start_server()
    config = LoadConfig(target=grpc_target(verifier), requests=REQUESTS, concurrency=4, batch_size=BATCH)
    report = await run_loadtest(config)
    assert_clean_count_bounded_run(report, 0)  # a checkpoint loaded from a path reports version 0
    assert report.first_seen_s[0] > 0


async def test_warmup_calls_reach_the_server_but_not_the_report(start_server: VerifierFactory) -> None:
    verifier = await start_server()

    def scored() -> float:
        return REGISTRY.get_sample_value("legibility_verifier_items_total", {"rpc": "Score"}) or 0.0

    before = scored()
    config = LoadConfig(target=grpc_target(verifier), requests=10, concurrency=3, batch_size=2, warmup_calls=4)
    report = await run_loadtest(config)
    assert (report.requests_ok, report.items_scored, report.versions) == (10, 20, {0: 10})
    assert scored() - before == (10 + 3 * 4) * 2  # 4 warm-up calls from each of 3 workers, 2 items each


async def test_http_route_run_reads_the_version_from_extra_logs(start_server: VerifierFactory) -> None:
    verifier = await start_server(http_port=0)
    url = f"http://127.0.0.1:{verifier.app.http_port}/get_reward"
    report = await run_loadtest(LoadConfig(http_url=url, requests=REQUESTS, concurrency=4, batch_size=BATCH))
    assert_clean_count_bounded_run(report, 0)


async def test_errors_are_counted_by_code_not_raised(start_server: VerifierFactory) -> None:
    verifier = await start_server()
    config = LoadConfig(target=grpc_target(verifier), requests=10, concurrency=2, min_version=5)
    report = await run_loadtest(config)
    assert report.requests_ok == 0
    assert report.errors == {"FAILED_PRECONDITION": 10}
    assert report.latency_ms == {"p50": 0.0, "p95": 0.0, "p99": 0.0}


@pytest.mark.slow
async def test_mid_run_publish_swaps_with_no_failed_call(
    start_server: VerifierFactory, redis_server, redis_client, tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path / "store")
    await publish_checkpoint(VersionRegistry(redis_client), store, "verifier", VERIFIER_MODEL)
    verifier = await start_server(
        registry_version=0,
        watch_registry=True,
        reconcile_interval_s=0.5,
        redis_url=redis_server.url,
        artifact_root=store.root,
    )
    config = LoadConfig(
        target=grpc_target(verifier),
        duration_s=4.0,
        concurrency=8,
        publish_checkpoint=VERIFIER_MODEL,
        publish_after_s=1.0,
        redis_url=redis_server.url,
        artifact_root=store.root,
    )
    report = await run_loadtest(config)
    assert report.requests_failed == 0 and report.errors == {}
    assert set(report.versions) == {1, 2} and min(report.versions.values()) >= 8
    swap = report.swap
    assert swap is not None and swap.error is None and swap.version == 2
    assert swap.failures_after_publish == 0
    assert swap.latency_s is not None and swap.latency_s > 0
    assert swap.first_seen_at_s == report.first_seen_s[2] > report.first_seen_s[1]
    # Once a response from version 2 has arrived, the swap is done: every call sent after that reports version 2.
    # (A call sent earlier may still finish on version 1 and arrive later: in-flight calls drain on the old model.)
    after = [r.version for r in report.responses if r.sent_s >= swap.first_seen_at_s]
    assert len(after) >= 8 and set(after) == {2}
    assert [r.received_s for r in report.responses] == sorted(r.received_s for r in report.responses)


@pytest.mark.parametrize(
    ("fields", "option"),
    [
        ({}, "--duration and/or --requests"),
        ({"requests": 10, "concurrency": 0}, "--concurrency"),
        ({"requests": 0}, "--requests"),
        ({"duration_s": -1.0}, "--duration"),
        ({"requests": 10, "batch_size": 0}, "--batch-size"),
        ({"requests": 10, "warmup_calls": -1}, "--warmup"),
        ({"duration_s": 2.0, "publish_checkpoint": VERIFIER_MODEL, "publish_after_s": 3.0}, "--publish-after"),
    ],
)
def test_bad_bounds_raise_naming_the_option(fields: dict, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        LoadConfig(target="127.0.0.1:1", **fields)


def test_cli_reports_bad_bounds_as_a_usage_error() -> None:
    app = typer_app()
    result = CliRunner().invoke(app, ["--target", "127.0.0.1:1", "--concurrency", "0", "--requests", "5"])
    assert result.exit_code == 2
    assert "--concurrency" in result.output


async def test_json_out_holds_the_report(start_server: VerifierFactory, tmp_path: Path) -> None:
    verifier = await start_server()
    report = await run_loadtest(LoadConfig(target=grpc_target(verifier), requests=8, concurrency=2))
    data = json.loads(json.dumps(report.to_json()))
    assert data["requests_ok"] == 8 and data["versions"] == {"0": 8} and "responses" not in data


def typer_app():
    import typer

    app = typer.Typer()
    app.command()(loadtest_verifier)
    return app
