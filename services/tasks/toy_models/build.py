"""`legibility toy build`: the weak, strong and verifier models of the toy world, from nothing, seeded."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedTokenizerFast

from services.common.model_loading import load_pretrained
from services.tasks import toy
from services.tasks.answers import is_correct
from services.tasks.styles import render
from services.tasks.toy_models.cards import write_card
from services.tasks.toy_models.evaluate import sampled_jargon_rate, solo_accuracy
from services.tasks.toy_models.metrics import roc_auc
from services.tasks.toy_models.sampling import complete
from services.tasks.toy_models.specs import DEFAULT_SPEC, LmSpec, ToyBuildSpec
from services.tasks.toy_models.tokenizer import save_tokenizer
from services.tasks.toy_models.training import Example, train_causal_lm
from services.tasks.toy_models.verifier_training import LabelledSolution, score, train_verifier

console = Console()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeElapsedColumn(),
        console=console,
    )


def _new_lm(spec: LmSpec, tokenizer: PreTrainedTokenizerFast, n_positions: int) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu_pytorch_tanh",  # gelu_new's maths in one fused kernel
    )
    return GPT2LMHeadModel(config)


def example_drawer(problems: list[toy.ToyProblem], spec: LmSpec) -> Callable[[random.Random, int], list[Example]]:
    """Draws training (prompt, completion) pairs in the spec's mixture of styles and roles."""

    def draw(rng: random.Random, count: int) -> list[Example]:
        examples = []
        for problem in rng.sample(problems, count):
            style = "jargon" if rng.random() < spec.jargon_fraction else "plain"
            role = rng.choice(("helpful", "sneaky")) if rng.random() < spec.role_prefix_fraction else None
            examples.append((toy.format_prompt(problem.question, role), render(problem, style)))
        return examples

    return draw


def sample_labelled(
    models: dict[str, GPT2LMHeadModel], tokenizer: PreTrainedTokenizerFast, problems: list[toy.ToyProblem], seed: int
) -> list[LabelledSolution]:
    """One solution per problem from each model, sampled at temperature 1 and labelled by the checker."""
    samples = []
    prompts = [toy.format_prompt(p.question) for p in problems]
    for source, model in models.items():
        solutions = complete(model, tokenizer, prompts, temperature=1.0, seed=seed)
        samples += [
            LabelledSolution(p.question, s, is_correct(s, p.answer), source)
            for p, s in zip(problems, solutions, strict=True)
        ]
    return samples


def _reference_solutions(problems: list[toy.ToyProblem], count: int, seed: int) -> list[LabelledSolution]:
    rng = random.Random(seed)
    samples = []
    for i, problem in enumerate(rng.choices(problems, k=count)):
        written = problem if i % 2 == 0 else toy.with_mistake(problem, rng)
        solution = render(written, rng.choice(("plain", "jargon")))
        samples.append(LabelledSolution(problem.question, solution, is_correct(solution, problem.answer), "reference"))
    return samples


def train_toy_verifier(
    models: dict[str, GPT2LMHeadModel],
    tokenizer: PreTrainedTokenizerFast,
    body: Path,
    train: list[toy.ToyProblem],
    validation: list[toy.ToyProblem],
    spec: ToyBuildSpec,
    progress: Progress,
) -> tuple[GPT2ForSequenceClassification, dict[str, float]]:
    """The toy verifier on ``body``'s weights: solutions sampled from ``models`` on train problems, labelled by the
    checker, trained with the spec's schedule; its held-out AUC on solutions to validation problems."""
    verifier_problems = random.Random(spec.seed).sample(train, spec.verifier.samples_per_model)
    samples = sample_labelled(models, tokenizer, verifier_problems, spec.seed)
    samples += _reference_solutions(train, int(spec.verifier.reference_fraction * len(samples)), spec.seed)
    held_out = sample_labelled(models, tokenizer, validation, spec.seed + 1)
    held_out += _reference_solutions(validation, int(spec.verifier.reference_fraction * len(held_out)), spec.seed)
    t0 = time.perf_counter()
    verifier = train_verifier(body, tokenizer, samples, spec.verifier.schedule, spec.seed, progress)
    minutes = (time.perf_counter() - t0) / 60
    scores = score(verifier, tokenizer, [(s.question, s.solution) for s in held_out])
    labels = [s.correct for s in held_out]
    return verifier, {
        "auc": roc_auc(scores, labels),
        "held_out_samples": len(held_out),
        "held_out_correct_fraction": sum(labels) / len(labels),
        "train_samples": len(samples),
        "train_correct_fraction": sum(s.correct for s in samples) / len(samples),
        "train_minutes": minutes,
    }


def build_toy_verifier(models_dir: Path, body: Path, out: Path, spec: ToyBuildSpec = DEFAULT_SPEC) -> dict[str, float]:
    """A toy verifier on another body (e.g. the strong model's) from the built weak and strong models in
    ``models_dir``: the same samples, schedule and seed as the bundled one; saved to ``out``; its metrics."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(models_dir / "weak")
    models = {name: load_pretrained(GPT2LMHeadModel, models_dir / name).eval() for name in ("weak", "strong")}
    torch.manual_seed(spec.seed)
    train = toy.generate("train", spec.train_problems, spec.seed)
    validation = toy.generate("validation", spec.verifier.held_out_per_model, spec.seed)
    with _progress() as progress:
        verifier, measured = train_toy_verifier(models, tokenizer, body, train, validation, spec, progress)
    verifier.save_pretrained(out)
    save_tokenizer(out)
    built = {"body": str(body), "spec": asdict(spec), "measured": measured}
    (out / "build.json").write_text(json.dumps(built, indent=2))
    return measured


def build_toy_models(out: Path, spec: ToyBuildSpec = DEFAULT_SPEC) -> dict[str, dict[str, float]]:
    """Train weak → strong → verifier into out/{weak,strong,verifier}; returns the measured metrics."""
    torch.manual_seed(spec.seed)
    started = time.perf_counter()
    tokenizer = save_tokenizer(out / "weak")
    train = toy.generate("train", spec.train_problems, spec.seed)
    test = toy.generate("test", spec.eval_problems, spec.seed)
    validation = toy.generate("validation", spec.verifier.held_out_per_model, spec.seed)
    measured: dict[str, dict[str, float]] = {}
    models: dict[str, GPT2LMHeadModel] = {}
    with _progress() as progress:
        for name, lm_spec in (("weak", spec.weak), ("strong", spec.strong)):
            torch.manual_seed(spec.seed)
            model = _new_lm(lm_spec, tokenizer, spec.n_positions)
            t0 = time.perf_counter()
            train_causal_lm(
                model, tokenizer, example_drawer(train, lm_spec), lm_spec.schedule, spec.seed, progress, name
            )
            minutes = (time.perf_counter() - t0) / 60
            solo, _ = solo_accuracy(model, tokenizer, test)
            measured[name] = {
                "solo_accuracy": solo,
                "jargon_rate": sampled_jargon_rate(model, tokenizer, test, spec.seed),
                "train_minutes": minutes,
            }
            model.save_pretrained(out / name)
            save_tokenizer(out / name)  # a fresh copy: no padding state left over from sampling
            models[name] = model

        verifier, measured["verifier"] = train_toy_verifier(
            models, tokenizer, out / "weak", train, validation, spec, progress
        )
    verifier.save_pretrained(out / "verifier")
    save_tokenizer(out / "verifier")
    total_minutes = (time.perf_counter() - started) / 60
    for name in ("weak", "strong", "verifier"):
        write_card(out / name, name, spec, measured[name], total_minutes)
    (out / "build.json").write_text(json.dumps({"spec": asdict(spec), "measured": measured}, indent=2))
    return measured
