"""The retraining job on toy data: trains, reports held-out metrics, publishes, and the verifier then serves it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import torch
from safetensors.torch import load_file

from services.common.artifacts import ArtifactStore
from services.common.genproto.legibility.v1 import verifier_pb2
from services.common.redis_launcher import EmbeddedRedis
from services.common.registry import VersionRegistry
from services.common.samples import LabelledSample, put_samples, write_jsonl
from services.jobs.verifier_training.job import train_verifier_job
from services.jobs.verifier_training.mixture import is_held_out
from services.jobs.verifier_training.settings import TrainVerifierSettings
from services.tasks.toy_models.verifier_training import score
from tests.integration.verifier.conftest import VerifierFactory

pytestmark = pytest.mark.slow


def _as_round(samples: list[LabelledSample], round_: int) -> list[LabelledSample]:
    return [s.model_copy(update={"round": round_}) for s in samples]


@pytest.mark.timeout(400)  # 200 training steps: about 30 s alone, several times that on a busy 2-core machine
async def test_trained_verifier_is_published_with_metrics_and_then_served(
    toy_samples: list[LabelledSample],
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    start_server: VerifierFactory,
    tmp_path: Path,
) -> None:
    store = ArtifactStore(tmp_path / "store")
    # Two rounds split by problem, each with both models' solutions (as a game round has both labels).
    problems = sorted({s.problem for s in toy_samples})
    later = set(problems[::2])
    round0 = put_samples(store, "game-samples", 0, [s for s in toy_samples if s.problem not in later])
    round1 = put_samples(store, "game-samples", 1, _as_round([s for s in toy_samples if s.problem in later], 1))
    settings = TrainVerifierSettings(
        samples=[round0.uri, round1.uri],
        steps=200,
        out_dir=tmp_path / "checkpoint",
        redis_url=redis_server.url,
        artifact_root=store.root,
        held_out_fraction=0.2,
    )
    trained = await _in_thread(train_verifier_job, settings)

    assert trained.record is not None and trained.record.version == 1
    assert trained.record.metrics["auc"] == pytest.approx(trained.metrics["auc"], abs=1e-6)
    assert trained.metrics["auc"] > 0.7, trained.metrics  # well above chance on problems it never saw
    assert trained.metrics["mean_score_correct"] > trained.metrics["mean_score_incorrect"]
    assert {"auc_round0", "auc_round1"} <= trained.metrics.keys()
    current = await VersionRegistry(redis_client).current("verifier")
    assert current is not None and current.sha256 == trained.record.sha256

    verifier = await start_server(registry_version=0, redis_url=redis_server.url, artifact_root=store.root)
    held_out = [s for s in toy_samples if is_held_out(s.problem, 0.2)][:8]
    reply = await verifier.stub.Score(
        verifier_pb2.ScoreRequest(
            items=[verifier_pb2.ScoreItem(problem=s.problem, solution=s.solution) for s in held_out]
        )
    )
    assert reply.model.version == 1 and reply.model.sha256 == trained.record.sha256
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    direct = score(
        AutoModelForSequenceClassification.from_pretrained(trained.checkpoint).eval(),
        AutoTokenizer.from_pretrained(trained.checkpoint),
        [(s.problem, s.solution) for s in held_out],
    )
    assert [r.score for r in reply.results] == pytest.approx(direct, abs=1e-4)


async def _in_thread(fn, *args):
    import asyncio

    return await asyncio.to_thread(fn, *args)


def test_same_seed_same_weights_other_seed_other_weights(toy_samples: list[LabelledSample], tmp_path: Path) -> None:
    data = tmp_path / "samples.jsonl"
    write_jsonl(data, toy_samples)

    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        settings = TrainVerifierSettings(
            samples=[str(data)], steps=5, seed=seed, out_dir=tmp_path / name, publish=False, artifact_root=tmp_path
        )
        return load_file(train_verifier_job(settings).checkpoint / "model.safetensors")

    first, again, other = weights(0, "a"), weights(0, "b"), weights(1, "c")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["score.weight"], other["score.weight"])


@pytest.mark.timeout(400)  # 100 training steps: under a minute alone, longer on a busy 2-core machine
def test_cross_entropy_loss_trains_too(toy_samples: list[LabelledSample], tmp_path: Path) -> None:
    data = tmp_path / "samples.jsonl"
    write_jsonl(data, toy_samples)
    settings = TrainVerifierSettings(
        samples=[str(data)],
        steps=100,
        loss="cross-entropy",
        out_dir=tmp_path / "ce",
        publish=False,
        artifact_root=tmp_path,
        held_out_fraction=0.2,
    )
    assert train_verifier_job(settings).metrics["auc"] > 0.65


def test_command_line_runs_and_refuses_bad_flags(toy_samples: list[LabelledSample], tmp_path: Path) -> None:
    data = tmp_path / "samples.jsonl"
    write_jsonl(data, toy_samples)
    command = [sys.executable, "-m", "services.jobs.verifier_training", "--samples", str(data), "--no-publish"]
    bad = subprocess.run([*command, "--solutions-per-problem", "3"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "solutions_per_problem" in bad.stderr and "even" in bad.stderr
    missing = subprocess.run(
        [*command[:3], "--samples", str(tmp_path / "nope.jsonl")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1 and "nope.jsonl" in missing.stderr
    ok = subprocess.run(
        [*command, "--steps", "3", "--out-dir", str(tmp_path / "out"), "--artifact-root", str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "training.json").is_file() and (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.timeout(400)
def test_base_samples_join_the_mixture_as_their_own_round(toy_samples: list[LabelledSample], tmp_path: Path) -> None:
    # Round data with one label only (a prover that never errs) trains nothing alone; with base data beside it the
    # job trains, the base is a round of its own in the mixture and in the held-out metrics.
    round_data, base = tmp_path / "round0.jsonl", tmp_path / "base.jsonl"
    write_jsonl(round_data, [s for s in toy_samples[:300] if s.correct])
    write_jsonl(base, toy_samples[300:])
    common = {"steps": 5, "publish": False, "artifact_root": tmp_path, "held_out_fraction": 0.2}
    with pytest.raises(ValueError, match="both a correct and an incorrect"):
        train_verifier_job(TrainVerifierSettings(samples=[str(round_data)], out_dir=tmp_path / "a", **common))
    settings = TrainVerifierSettings(
        samples=[str(round_data)], base_samples=[str(base)], out_dir=tmp_path / "b", **common
    )
    trained = train_verifier_job(settings)
    report = json.loads((trained.checkpoint / "training.json").read_text())
    assert report["data"]["base_problems"] > 0 and report["data"]["round0_one_label_problems"] > 0
    assert [i.get("base", False) for i in report["inputs"]] == [False, True]
    assert "auc_base" in trained.metrics and "auc_round0" not in trained.metrics  # round 0 has no incorrect sample
