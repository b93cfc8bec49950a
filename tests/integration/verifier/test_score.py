"""Score and ScoreSteps on the real server (bundled models/verifier): scores against a direct forward pass of the
same checkpoint, correct above mistaken, step prefixes, ModelInfo."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from services.common.artifacts import directory_sha256
from services.common.genproto.legibility.v1 import verifier_pb2
from services.tasks.steps import step_ends
from services.tasks.styles import render
from services.tasks.toy import format_verifier_input, generate, with_mistake
from tests.integration.verifier.conftest import VERIFIER_MODEL

PROBLEMS = generate("test", 48, seed=0)
_rng = random.Random(0)
_WRONG = [with_mistake(p, _rng) for p in PROBLEMS]  # one wrong step result, carried to a wrong answer
CORRECT = [(p.question, render(p, style)) for style in ("plain", "jargon") for p in PROBLEMS]
MISTAKEN = [(p.question, render(p, style)) for style in ("plain", "jargon") for p in _WRONG]


def score_request(pairs: list[tuple[str, str]], **fields: object) -> verifier_pb2.ScoreRequest:
    items = [verifier_pb2.ScoreItem(problem=q, solution=s) for q, s in pairs]
    return verifier_pb2.ScoreRequest(items=items, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reference() -> tuple[AutoModelForSequenceClassification, AutoTokenizer]:
    model = AutoModelForSequenceClassification.from_pretrained(VERIFIER_MODEL, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(VERIFIER_MODEL)


def direct_score(reference, problem: str, solution: str) -> float:
    """The logit at the EOS read-out from one unpadded forward pass."""
    model, tokenizer = reference
    ids = [*tokenizer.encode(format_verifier_input(problem, solution)), tokenizer.eos_token_id]
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


async def test_scores_equal_a_direct_forward_pass_and_correct_beats_mistaken(verifier, reference) -> None:
    pairs = [pair for both in zip(CORRECT, MISTAKEN, strict=True) for pair in both]  # one padded batch, mixed
    response = await verifier.stub.Score(score_request(pairs), timeout=30)
    assert len(response.results) == 192  # three forward passes of max_batch_size 64
    for (problem, solution), result in zip(pairs, response.results, strict=True):
        assert result.score == pytest.approx(direct_score(reference, problem, solution), abs=1e-4)
        assert result.probability == pytest.approx(1 / (1 + math.exp(-result.score)), abs=1e-6)
    correct = [r.score for r in response.results[0::2]]  # 48 plain, then 48 jargon
    mistaken = [r.score for r in response.results[1::2]]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    # The bundled verifier (held-out AUC 0.89 on solutions sampled from both models) largely reads style: correct
    # jargon scores about +5.2, correct plain about -1.2, as the strong model's jargon samples were mostly right and
    # the weak model's plain ones mostly wrong. A single wrong step carried through consistently is the hardest
    # mistake for it: measured on these pairs, mistaken plain solutions score 0.068 lower on average, jargon ones
    # 0.008 lower. Inputs and weights are deterministic, so these margins are fixed.
    assert mean(correct[:48]) - mean(mistaken[:48]) > 0.05
    assert mean(correct[48:]) > mean(correct[:48]) + 5


async def test_score_steps_scores_every_prefix_and_the_last_equals_score(verifier, reference) -> None:
    pairs = CORRECT[:4] + MISTAKEN[:4]
    items = [verifier_pb2.ScoreStepsItem(problem=q, solution=s) for q, s in pairs]
    response = await verifier.stub.ScoreSteps(verifier_pb2.ScoreStepsRequest(items=items), timeout=30)
    full = await verifier.stub.Score(score_request(pairs), timeout=30)
    assert response.model == full.model
    for (problem, solution), result, whole in zip(pairs, response.results, full.results, strict=True):
        ends = [step.end for step in result.steps]
        assert ends == step_ends(solution) and len(ends) == solution.count("\n") + 1
        assert ends[-1] == len(solution)
        assert result.steps[-1].score == pytest.approx(whole.score, abs=1e-4)
        for step in result.steps:
            assert step.score == pytest.approx(direct_score(reference, problem, solution[: step.end]), abs=1e-4)
            assert step.probability == pytest.approx(1 / (1 + math.exp(-step.score)), abs=1e-6)


async def test_explicit_step_ends_choose_the_prefixes(verifier, reference) -> None:
    problem, solution = CORRECT[1]
    ends = [3, 10, len(solution)]
    item = verifier_pb2.ScoreStepsItem(problem=problem, solution=solution, step_ends=ends)
    default = verifier_pb2.ScoreStepsItem(problem=problem, solution=solution)
    response = await verifier.stub.ScoreSteps(verifier_pb2.ScoreStepsRequest(items=[item, default]), timeout=30)
    explicit, split = response.results
    assert [s.end for s in explicit.steps] == ends
    assert [s.end for s in split.steps] == step_ends(solution)
    for step in explicit.steps:
        assert step.score == pytest.approx(direct_score(reference, problem, solution[: step.end]), abs=1e-4)
    assert explicit.steps[-1].score == pytest.approx(split.steps[-1].score, abs=1e-4)


async def test_model_info_reports_the_verified_weights(verifier) -> None:
    info = (await verifier.stub.GetModelInfo(verifier_pb2.VerifierServiceGetModelInfoRequest(), timeout=5)).model
    assert info.sha256 == directory_sha256(VERIFIER_MODEL)
    assert (info.name, info.version, info.uri) == ("verifier", 0, str(VERIFIER_MODEL.resolve()))
    assert abs(info.loaded_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=5)
    assert (await verifier.stub.Score(score_request(CORRECT[:1]), timeout=10)).model == info
    assert (await verifier.stub.Score(score_request(CORRECT[:1], min_version=0), timeout=10)).model == info
