"""The alert rules and the Grafana dashboard under deploy/monitoring name only metrics the services export."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
METRIC = re.compile(r"\blegibility_[a-z_]+\b")
# Every module that defines a metric; importing them registers the metrics in the default registry.
METRIC_MODULES = [
    "services.common.metrics",
    "services.common.batching",
    "services.common.admission",
    "services.decoding.vllm_supervisor",
    "services.verifier.service",
    "services.weak_model.service",
    "services.jobs.verifier_training.worker",
]


def exported_series() -> set[str]:
    """Series names as Prometheus scrapes them (counters end in _total, histograms have _bucket/_sum/_count)."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {
        metric.name + suffix
        for metric in REGISTRY.collect()
        if metric.name.startswith("legibility_")
        for suffix in suffixes.get(metric.type, [""])
    }


def alert_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_alerts_cover_queue_depth_refused_versions_lag_behind_the_registry_and_errors() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "LegibilityQueueBacklog",
        "LegibilityRefusedVersions",
        "LegibilityReplicaBehindRegistry",
        "LegibilityErrorRate",
        "LegibilityRetrainDeadLetters",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}  # type: ignore[index]
        assert rule["annotations"]["summary"]  # type: ignore[index]


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_named_is_exported(source: str) -> None:
    exprs = [str(rule["expr"]) for rule in alert_rules()] if source == "alerts" else dashboard_exprs()
    named = {name for expr in exprs for name in METRIC.findall(expr)}
    assert named, "no metric named at all"
    assert sorted(named - exported_series()) == []
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr


def test_a_misspelt_metric_would_be_caught() -> None:
    """The check above is not vacuous."""
    assert "legibility_batch_queue_depths" not in exported_series()
    assert "legibility_batch_queue_depth" in exported_series()
    assert "legibility_grpc_requests_total" in exported_series()
    assert "legibility_retrain_requests_total" in exported_series()
