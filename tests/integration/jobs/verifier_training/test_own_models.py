"""The retraining job from your own causal LM (Llama with PAD == EOS, Qwen2) under the task settings: it writes a
sequence classifier of the same family whose held-out metrics are the scores the verifier service then gives."""

from __future__ import annotations

import json
import random
from pathlib import Path
from statistics import fmean

import pytest
from transformers import AutoConfig, AutoTokenizer

from services.common.samples import LabelledSample, write_jsonl
from services.jobs.verifier_training.job import train_verifier_job
from services.jobs.verifier_training.mixture import is_held_out
from services.jobs.verifier_training.settings import TrainVerifierSettings
from services.tasks.styles import render
from services.tasks.toy import generate, with_mistake
from services.verifier.model import load_verifier
from tests.integration.verifier.conftest import exact_scores

HELD_OUT = 0.3


def labelled_samples(count: int = 40) -> list[LabelledSample]:
    """A right and a wrong plain solution to each of ``count`` toy problems (no model sampling: fast)."""
    rng = random.Random(0)
    samples = []
    for problem in generate("train", count, seed=9):
        samples.append(LabelledSample(problem=problem.question, solution=render(problem, "plain"), correct=True))
        wrong = render(with_mistake(problem, rng), "plain")
        samples.append(LabelledSample(problem=problem.question, solution=wrong, correct=False))
    return samples


@pytest.mark.parametrize(
    ("family", "chat_template", "architecture"),
    [("llama", "auto", "LlamaForSequenceClassification"), ("qwen2", "none", "Qwen2ForSequenceClassification")],
)
def test_job_trains_any_causal_lm_and_the_service_scores_what_it_evaluated(
    own_checkpoint, tmp_path: Path, family: str, chat_template: str, architecture: str
) -> None:
    init = own_checkpoint(family, "causal")
    samples = labelled_samples()
    data = tmp_path / "samples.jsonl"
    write_jsonl(data, samples)
    settings = TrainVerifierSettings(
        samples=[str(data)],
        init_model_path=init,
        task="toy",
        chat_template=chat_template,  # type: ignore[arg-type]
        steps=3,
        warmup_steps=1,
        problems_per_batch=4,
        solutions_per_problem=2,
        held_out_fraction=HELD_OUT,
        out_dir=tmp_path / "checkpoint",
        publish=False,
        artifact_root=tmp_path / "store",
    )
    trained = train_verifier_job(settings)

    config = AutoConfig.from_pretrained(trained.checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(trained.checkpoint)
    assert config.architectures == [architecture] and config.num_labels == 1
    # PAD from the tokenizer (Llama: PAD == EOS), so transformers can batch the checkpoint too.
    assert config.pad_token_id == tokenizer.pad_token_id is not None
    report = json.loads((trained.checkpoint / "training.json").read_text())
    assert report["settings"]["task"] == "toy" and report["settings"]["chat_template"] == chat_template
    assert report["data"]["too_long_samples"] == 0

    held_out = [s for s in samples if is_held_out(s.problem, HELD_OUT)]
    assert trained.metrics["held_out_samples"] == len(held_out) > 0
    verifier = load_verifier(trained.checkpoint, prompts=settings.prompt_format)
    served = verifier.forward([(s.problem, s.solution) for s in held_out])
    exact = exact_scores(trained.checkpoint, [(s.problem, s.solution) for s in held_out], chat_template)
    assert served == pytest.approx(exact, abs=1e-5)
    # The job evaluated with the encoder the service scores with: its metrics are the served scores' means.
    correct = [v for v, s in zip(served, held_out, strict=True) if s.correct]
    incorrect = [v for v, s in zip(served, held_out, strict=True) if not s.correct]
    assert trained.metrics["mean_score_correct"] == pytest.approx(fmean(correct), abs=1e-5)
    assert trained.metrics["mean_score_incorrect"] == pytest.approx(fmean(incorrect), abs=1e-5)
