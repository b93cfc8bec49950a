"""The committed toy models load offline with transformers and measure what their model cards say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from services.common.bundled_models import BUNDLED_MODELS_DIR
from services.tasks import toy
from services.tasks.toy_models.build import sample_labelled
from services.tasks.toy_models.evaluate import handoff_accuracy, sampled_jargon_rate, solo_accuracy
from services.tasks.toy_models.metrics import roc_auc
from services.tasks.toy_models.verifier_training import score

MODELS = Path(__file__).resolve().parents[3] / "models"
SAMPLE = 200  # test problems: enough for ±0.1 on a rate, small enough for CI
TOLERANCE = 0.1


@cache
def load(name: str):
    tokenizer = AutoTokenizer.from_pretrained(MODELS / name)
    if name == "verifier":
        return AutoModelForSequenceClassification.from_pretrained(MODELS / name).eval(), tokenizer
    return AutoModelForCausalLM.from_pretrained(MODELS / name).eval(), tokenizer


def card(name: str) -> dict:
    return json.loads((MODELS / name / "card.json").read_text())


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_committed_weights_are_small_and_share_one_tokenizer() -> None:
    total = sum(f.stat().st_size for f in MODELS.rglob("*.safetensors"))
    assert total < 30 * 1024 * 1024
    tokenizers = {(MODELS / n / "tokenizer.json").read_text() for n in ("weak", "strong", "verifier")}
    assert len(tokenizers) == 1
    _, tokenizer = load("weak")
    text = "Ann has 4 bags of 7 pens.\n<<4*7=82>>\n#### 28"
    assert tokenizer.decode(tokenizer.encode(text)) == text and len(tokenizer.encode(text)) == len(text)


@pytest.mark.slow
def test_solo_accuracy_and_jargon_rate_match_the_cards() -> None:
    problems = toy.generate("test", SAMPLE, seed=0)
    weak, tokenizer = load("weak")
    strong, _ = load("strong")
    weak_accuracy, _ = solo_accuracy(weak, tokenizer, problems)
    strong_accuracy, _ = solo_accuracy(strong, tokenizer, problems)
    jargon = sampled_jargon_rate(strong, tokenizer, problems)
    assert weak_accuracy == pytest.approx(card("weak")["measured"]["solo_accuracy"], abs=TOLERANCE)
    assert strong_accuracy == pytest.approx(card("strong")["measured"]["solo_accuracy"], abs=TOLERANCE)
    assert jargon == pytest.approx(card("strong")["measured"]["jargon_rate"], abs=TOLERANCE)
    # The toy world's targets.
    assert 0.3 <= weak_accuracy <= 0.7 + TOLERANCE / 2
    assert strong_accuracy >= 0.8 - TOLERANCE / 2 and jargon >= 0.8 - TOLERANCE / 2
    assert sampled_jargon_rate(weak, tokenizer, problems) == 0.0


@pytest.mark.slow
def test_verifier_auc_matches_the_card() -> None:
    weak, tokenizer = load("weak")
    strong, _ = load("strong")
    verifier, _ = load("verifier")
    problems = toy.generate("validation", SAMPLE // 2, seed=0)
    samples = sample_labelled({"weak": weak, "strong": strong}, tokenizer, problems, seed=7)
    auc = roc_auc(score(verifier, tokenizer, [(s.question, s.solution) for s in samples]), [s.correct for s in samples])
    assert auc == pytest.approx(card("verifier")["measured"]["auc"], abs=0.08)
    assert auc >= 0.75


@pytest.mark.slow
def test_handoff_is_robust_after_plain_starts_and_fails_after_jargon_starts() -> None:
    problems = toy.generate("test", SAMPLE // 2, seed=0)
    weak, tokenizer = load("weak")
    strong, _ = load("strong")
    plain = handoff_accuracy(strong, weak, tokenizer, problems, "plain")
    jargon = handoff_accuracy(strong, weak, tokenizer, problems, "jargon")
    assert all(s.startswith("<<") for s in jargon.solutions)
    assert not any(s.startswith("<") for s in plain.solutions)
    assert plain.accuracy >= jargon.accuracy + 0.2


def run_toy(*args: str) -> None:
    """``legibility toy ARGS`` as a user runs it, offline; fails the test with its stderr when it fails."""
    legibility = str(Path(sys.executable).parent / "legibility")
    result = subprocess.run(
        [legibility, "toy", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_shortened_build_writes_loadable_models_with_cards(tmp_path: Path) -> None:
    run_toy("build", "--shortened", "--out", str(tmp_path))
    for name in ("weak", "strong", "verifier"):
        model_card = json.loads((tmp_path / name / "card.json").read_text())
        assert model_card["seed"] == 0 and model_card["parameters"] > 0
        assert (tmp_path / name / "README.md").read_text().startswith("---\nlibrary_name: transformers")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "verifier")
    assert model.config.num_labels == 1
    built = json.loads((tmp_path / "build.json").read_text())
    assert 0.0 <= built["measured"]["verifier"]["auc"] <= 1.0


@pytest.mark.slow
def test_a_verifier_on_the_strong_body_is_built_from_the_bundled_models(tmp_path: Path) -> None:
    run_toy(
        "build-verifier",
        "--shortened",
        "--body",
        str(BUNDLED_MODELS_DIR / "strong"),
        "--out",
        str(tmp_path / "verifier"),
    )
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "verifier")
    strong = AutoConfig.from_pretrained(BUNDLED_MODELS_DIR / "strong")
    assert model.config.num_labels == 1
    assert (model.config.n_layer, model.config.n_embd) == (strong.n_layer, strong.n_embd) == (4, 128)
    built = json.loads((tmp_path / "verifier" / "build.json").read_text())
    assert built["body"] == str(BUNDLED_MODELS_DIR / "strong")
    assert built["measured"]["train_samples"] == 2 * 64 * 2  # 64 problems x weak and strong, plus as many references
    assert 0.0 <= built["measured"]["auc"] <= 1.0
