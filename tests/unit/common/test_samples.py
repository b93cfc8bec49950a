"""Sample sets: JSON lines, stored per round in the artifact store, verified on load."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.artifacts import ArtifactStore
from services.common.errors import ArtifactError, InvalidArgument
from services.common.samples import (
    SAMPLES_FILE,
    LabelledSample,
    load_samples,
    put_samples,
    read_jsonl,
    samples_uri,
    write_jsonl,
)

SAMPLES = [
    LabelledSample(problem="Ann has 3 pens.", solution="3+4=7.\n#### 7", correct=True, role="helpful", round=1),
    LabelledSample(problem="Ann has 3 pens.", solution="3+4=8.\n#### 8", correct=False, role="sneaky", round=1),
]


def test_round_trip_through_the_store(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    stored = put_samples(store, "run1-samples", 1, SAMPLES)
    assert stored.uri == samples_uri("run1-samples", 1) == "artifact://run1-samples/v000002"
    loaded, sha256 = load_samples(store, stored.uri)
    assert loaded == SAMPLES and sha256 == stored.sha256
    with pytest.raises(ArtifactError, match="immutable"):
        put_samples(store, "run1-samples", 1, SAMPLES)


def test_a_changed_sample_set_is_refused(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    stored = put_samples(store, "run1-samples", 0, SAMPLES)
    path = stored.path / SAMPLES_FILE
    path.write_text(path.read_text().replace('"correct":false', '"correct":true'))
    with pytest.raises(ArtifactError, match=r"samples\.jsonl"):
        load_samples(store, stored.uri)


def test_local_files_and_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    assert write_jsonl(path, SAMPLES) == 2
    assert read_jsonl(path) == SAMPLES
    path.write_text(path.read_text() + '{"problem": "x", "solution": "y"}\n')
    with pytest.raises(InvalidArgument, match=r"s.jsonl:3"):
        read_jsonl(path)
    with pytest.raises(InvalidArgument, match="samples"):
        load_samples(ArtifactStore(tmp_path / "store"), str(tmp_path / "missing.jsonl"))
