"""Labelled solutions sampled from the bundled toy models: the verifier's round-0 data outside a game run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from services.common.model_loading import load_pretrained
from services.common.samples import LabelledSample
from services.tasks import toy
from services.tasks.answers import is_correct
from services.tasks.toy_models.sampling import complete


def sample_from_models(
    model_dirs: dict[str, Path],
    problems: Sequence[toy.ToyProblem],
    solutions_per_model: int,
    seed: int,
    round_: int = 0,
) -> list[LabelledSample]:
    """``solutions_per_model`` solutions per problem from each model at temperature 1, labelled by the checker."""
    samples = []
    prompts = [toy.format_prompt(p.question) for p in problems for _ in range(solutions_per_model)]
    targets = [p for p in problems for _ in range(solutions_per_model)]
    for offset, (name, path) in enumerate(model_dirs.items()):
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = load_pretrained(AutoModelForCausalLM, path).eval()
        solutions = complete(model, tokenizer, prompts, temperature=1.0, seed=seed + offset)
        samples += [
            LabelledSample(problem=p.question, solution=s, correct=is_correct(s, p.answer), round=round_, source=name)
            for p, s in zip(targets, solutions, strict=True)
        ]
    return samples
