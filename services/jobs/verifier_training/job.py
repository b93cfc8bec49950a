"""The verifier retraining job: load samples → round mixture → train from the initialisation → evaluate → publish.

Outputs a transformers checkpoint (what ``legibility serve verifier`` loads) plus ``training.json`` with the
settings, the inputs and their sha256, the data counts and the held-out metrics. The metrics also go into the
published version record, so ``legibility registry show verifier`` says how good the served verifier is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from services.common.artifacts import ArtifactStore
from services.common.errors import ArtifactError
from services.common.model_loading import load_pretrained
from services.common.publish import publish_checkpoint
from services.common.registry import VersionRecord, VersionRegistry
from services.common.samples import BASE_ROUND, LabelledSample, load_samples
from services.decoding.tokens import context_window
from services.jobs.verifier_training.evaluation import held_out_metrics
from services.jobs.verifier_training.losses import bradley_terry_loss, cross_entropy_loss
from services.jobs.verifier_training.mixture import RoundMixture, build_mixture
from services.jobs.verifier_training.settings import TrainVerifierSettings
from services.tasks.toy_models.training import Schedule, train_steps
from services.tasks.verifier_input import VerifierInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedVerifier:
    checkpoint: Path
    metrics: dict[str, float]
    record: VersionRecord | None
    """The published version record; None when settings.publish is off."""


def _init_model(settings: TrainVerifierSettings) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, VerifierInput]:
    """The initialisation's body with a fresh one-logit score head, its tokenizer, and the task's verifier input.

    Any causal LM checkpoint works (GPT-2, Llama, Qwen2): transformers builds its sequence-classification class.
    """
    torch.manual_seed(settings.seed)  # the fresh score head is drawn from this seed
    tokenizer = AutoTokenizer.from_pretrained(settings.init_model_path)
    encoder = VerifierInput(settings.prompt_format(tokenizer))
    model = load_pretrained(AutoModelForSequenceClassification, settings.init_model_path, num_labels=1)
    # Scores are read at the EOS explicitly; the pad id is saved so HF's own forward can batch the checkpoint too.
    model.config.pad_token_id = encoder.pad_id
    return model.to(settings.torch_device()), tokenizer, encoder


def _fits(encoder: VerifierInput, window: int, sample: LabelledSample) -> bool:
    return encoder.token_count(sample.problem, sample.solution) <= window  # the EOS read-out included


def _loss_of_batch(
    settings: TrainVerifierSettings, mixture: RoundMixture, model: PreTrainedModel, encoder: VerifierInput
) -> Callable[[random.Random], torch.Tensor]:
    def loss_of_batch(rng: random.Random) -> torch.Tensor:
        groups = mixture.draw_batch(rng, settings.problems_per_batch, settings.solutions_per_problem)
        batch = [s for g in groups for s in g]
        scores = encoder.logits(model, [(s.problem, s.solution) for s in batch])
        correct = torch.tensor([float(s.correct) for s in batch], device=scores.device)
        if settings.loss == "cross-entropy":
            return cross_entropy_loss(scores, correct)
        group = torch.tensor([i for i, g in enumerate(groups) for _ in g], device=scores.device)
        return bradley_terry_loss(scores, correct, group, settings.centering_lambda)

    return loss_of_batch


def _default_out_dir(settings: TrainVerifierSettings) -> Path:
    return Path("runs/train-verifier") / f"{settings.model_name}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}"


def _load_pinned(store: ArtifactStore, source: str, expected: dict[str, str]) -> tuple[list[LabelledSample], str]:
    loaded, sha256 = load_samples(store, source)
    if source in expected and expected[source] != sha256:
        raise ArtifactError(f"{source}: sha256 {sha256} differs from the pinned {expected[source]}")
    return loaded, sha256


def train_verifier_job(
    settings: TrainVerifierSettings,
    console: Console | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainedVerifier:
    """Run the whole job; publishes when settings.publish. Raises ValueError on unusable data.

    on_step(step, mean recent loss) is called after every optimiser step (a worker relays it as progress)."""
    console = console or Console(stderr=True)
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    torch.set_num_threads(settings.torch_threads)
    store = ArtifactStore(settings.artifact_root)
    samples: list[LabelledSample] = []
    inputs = []
    for source in settings.samples:
        loaded, sha256 = _load_pinned(store, source, settings.expected_sha256)
        samples += loaded
        inputs.append({"source": source, "sha256": sha256, "samples": len(loaded)})
    for source in settings.base_samples:
        loaded, sha256 = _load_pinned(store, source, settings.expected_sha256)
        samples += [s.model_copy(update={"round": BASE_ROUND}) for s in loaded]
        inputs.append({"source": source, "sha256": sha256, "samples": len(loaded), "base": True})

    model, tokenizer, encoder = _init_model(settings)
    window = context_window(model.config, tokenizer)
    fitting = [s for s in samples if _fits(encoder, window, s)]
    mixture = build_mixture(fitting, settings.held_out_fraction)
    log.info("training on %s", mixture.summary())

    schedule = Schedule(
        settings.steps,
        settings.problems_per_batch * settings.solutions_per_problem,
        settings.learning_rate,
        warmup_steps=settings.warmup_steps,
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        losses = train_steps(
            model,
            schedule,
            _loss_of_batch(settings, mixture, model, encoder),
            random.Random(settings.seed),
            progress,
            "train verifier",
            on_step,
        )

    scores = encoder.scores(model, [(s.problem, s.solution) for s in mixture.held_out])
    metrics = held_out_metrics(mixture.held_out, scores)
    metrics["final_loss"] = sum(losses[-50:]) / len(losses[-50:])
    metrics["train_minutes"] = (time.perf_counter() - started) / 60

    out = settings.out_dir or _default_out_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report: dict[str, Any] = {
        "settings": settings.model_dump(mode="json", exclude={"redis_password"}),
        "inputs": inputs,
        "data": mixture.summary() | {"samples": len(samples), "too_long_samples": len(samples) - len(fitting)},
        "metrics": metrics,
    }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")

    record = asyncio.run(_publish(settings, store, out, metrics)) if settings.publish else None
    return TrainedVerifier(out, metrics, record)


async def _publish(
    settings: TrainVerifierSettings, store: ArtifactStore, checkpoint: Path, metrics: dict[str, float]
) -> VersionRecord:
    client = settings.redis_client()
    try:
        published = {k: round(v, 6) for k, v in metrics.items()}
        return await publish_checkpoint(
            VersionRegistry(client), store, settings.model_name, checkpoint, version=settings.version, metrics=published
        )
    finally:
        await client.aclose()
