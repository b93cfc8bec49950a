"""`legibility toy build | build-verifier | eval`: rebuild the bundled models, a verifier on another body, and
measure them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.common.bundled_models import BUNDLED_MODELS_DIR
from services.common.model_loading import load_pretrained

app = typer.Typer(help="The toy world: bundled tiny weak, strong and verifier models.")


@app.callback()
def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


console = Console()


@app.command()
def build(
    out: Annotated[Path, typer.Option(help="Folder that receives weak/, strong/ and verifier/.")] = BUNDLED_MODELS_DIR,
    shortened: Annotated[bool, typer.Option(help="Tiny schedules: checks the pipeline in a minute.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of problems, initialisation and sampling.")] = 0,
) -> None:
    """Train the three toy models from nothing (fixed seed, progress bars) and write their model cards."""
    import dataclasses

    from services.tasks.toy_models.build import build_toy_models
    from services.tasks.toy_models.specs import DEFAULT_SPEC

    spec = dataclasses.replace(DEFAULT_SPEC, seed=seed)
    measured = build_toy_models(out, spec.shortened() if shortened else spec)
    table = Table(title=f"toy models in {out}")
    table.add_column("model")
    table.add_column("measured")
    for name, values in measured.items():
        table.add_row(name, ", ".join(f"{k}={v:.3f}" for k, v in values.items()))
    console.print(table)


@app.command("build-verifier")
def build_verifier(
    out: Annotated[Path, typer.Option(help="Folder that receives the verifier checkpoint.")],
    body: Annotated[
        Path, typer.Option(help="Causal LM whose weights the verifier starts from (e.g. models/strong).", exists=True)
    ],
    models: Annotated[
        Path, typer.Option(help="Folder holding the weak/ and strong/ models that write its training data.")
    ] = BUNDLED_MODELS_DIR,
    shortened: Annotated[bool, typer.Option(help="Tiny schedule: checks the pipeline in a minute.")] = False,
) -> None:
    """A toy verifier on another body, trained as the bundled one is (same samples, schedule and seed): e.g. one of
    the prover's own size for `legibility demo --verifier`."""
    from services.tasks.toy_models.build import build_toy_verifier
    from services.tasks.toy_models.specs import DEFAULT_SPEC

    measured = build_toy_verifier(models, body, out, DEFAULT_SPEC.shortened() if shortened else DEFAULT_SPEC)
    console.print(f"verifier on {body} in {out}: " + ", ".join(f"{k}={v:.3f}" for k, v in measured.items()))


@app.command("eval")
def evaluate(
    models: Annotated[Path, typer.Option(help="Folder holding weak/, strong/ and verifier/.")] = BUNDLED_MODELS_DIR,
    problems: Annotated[int, typer.Option(help="Test problems to measure on.")] = 300,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Solo accuracy, jargon rate and handoff accuracy after plain vs jargon starts."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.tasks import toy
    from services.tasks.jargon import jargon_rate
    from services.tasks.toy_models.evaluate import handoff_accuracy, sampled_jargon_rate, solo_accuracy

    tokenizer = AutoTokenizer.from_pretrained(models / "weak")
    weak = load_pretrained(AutoModelForCausalLM, models / "weak").eval()
    strong = load_pretrained(AutoModelForCausalLM, models / "strong").eval()
    test = toy.generate("test", problems, seed)
    with console.status("measuring"):
        strong_accuracy, strong_solutions = solo_accuracy(strong, tokenizer, test)
        rows = [
            ("weak solo accuracy", solo_accuracy(weak, tokenizer, test)[0]),
            ("strong solo accuracy", strong_accuracy),
            ("strong jargon rate (greedy)", jargon_rate(strong_solutions)),
            ("strong jargon rate (sampled)", sampled_jargon_rate(strong, tokenizer, test, seed)),
            ("handoff accuracy, plain start", handoff_accuracy(strong, weak, tokenizer, test, "plain").accuracy),
            ("handoff accuracy, jargon start", handoff_accuracy(strong, weak, tokenizer, test, "jargon").accuracy),
        ]
    table = Table(title=f"toy world, {problems} test problems (seed {seed})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in rows:
        table.add_row(label, f"{value:.1%}")
    console.print(table)


@app.command()
def samples(
    out: Annotated[Path, typer.Option(help="JSON-lines file to write (one labelled sample per line).")],
    problems: Annotated[int, typer.Option(help="Training-split problems to solve.")] = 200,
    per_model: Annotated[int, typer.Option(help="Solutions per problem from each of weak and strong.")] = 4,
    models: Annotated[Path, typer.Option(help="Folder holding weak/ and strong/.")] = BUNDLED_MODELS_DIR,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Sample labelled solutions from the weak and strong models: data for `legibility train-verifier`."""
    from services.common.samples import write_jsonl
    from services.tasks import toy
    from services.tasks.toy_models.round_samples import sample_from_models

    drawn = toy.generate("train", problems, seed)
    with console.status(f"sampling {per_model} solutions per problem from weak and strong"):
        labelled = sample_from_models({"weak": models / "weak", "strong": models / "strong"}, drawn, per_model, seed)
    write_jsonl(out, labelled)
    correct = sum(s.correct for s in labelled)
    console.print(f"wrote {len(labelled)} samples ({correct / len(labelled):.1%} correct) to {out}")
