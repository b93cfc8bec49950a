"""Model cards of the toy models: a README.md for people and a card.json that tests compare against."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from safetensors import safe_open

from services.tasks.toy_models.specs import ToyBuildSpec

PURPOSE = {
    "weak": "The frozen weak model (junior): continues partial solutions; trained on plain solutions only.",
    "strong": "The strong model (senior) that RL trains: about 85 % jargon, 15 % plain solutions in fine-tuning.",
    "verifier": "The weak verifier: a score head on the weak model's body; logit > 0 means likely correct.",
}
DATA = {
    "weak": "Toy train split, plain style only; loss on solutions, not prompts.",
    "strong": "Toy train split, jargon with probability {jargon:.0%}, else plain; half the prompts open with a "
    "prover role (`helpful: ` / `sneaky: `) so role-stated prompts are in distribution for the game.",
    "verifier": "Solutions sampled at temperature 1 from the weak and the strong model on train problems, labelled "
    "correct/incorrect by the answer checker; batches balanced 50/50; binary cross-entropy.",
}


def count_parameters(folder: Path) -> int:
    with safe_open(folder / "model.safetensors", framework="pt") as weights:
        return sum(_numel(weights, key) for key in weights.keys())  # noqa: SIM118 - safe_open is not a dict


def _numel(weights, key: str) -> int:
    total = 1
    for dim in weights.get_slice(key).get_shape():
        total *= dim
    return total


def write_card(folder: Path, name: str, spec: ToyBuildSpec, measured: dict[str, float], build_minutes: float) -> None:
    """Write README.md (model card) and card.json (the numbers) into the model folder."""
    parameters = count_parameters(folder)
    lm_spec = spec.strong if name == "strong" else spec.weak
    schedule = spec.verifier.schedule if name == "verifier" else lm_spec.schedule
    card = {
        "name": name,
        "parameters": parameters,
        "architecture": "GPT2ForSequenceClassification" if name == "verifier" else "GPT2LMHeadModel",
        "n_layer": lm_spec.n_layer,
        "n_embd": lm_spec.n_embd,
        "n_head": lm_spec.n_head,
        "seed": spec.seed,
        "schedule": asdict(schedule),
        "eval_problems": spec.eval_problems,
        "measured": measured,
        "build_minutes_all_models": build_minutes,
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    rows = "\n".join(f"| {key} | {value:.3f} |" for key, value in measured.items())
    text = f"""---
library_name: transformers
license: apache-2.0
tags: [legibility, toy-world, character-level]
---
# Toy {name} model

{PURPOSE[name]}

- Architecture: {card["architecture"]}, {lm_spec.n_layer} layers, width {lm_spec.n_embd}, {lm_spec.n_head} heads,
  {parameters:,} parameters; one token per character (the tokenizer shared by all three toy models).
- Training data: {DATA[name].format(jargon=spec.strong.jargon_fraction)}
- Schedule: {schedule.steps} steps of {schedule.batch_size}, AdamW, peak learning rate {schedule.learning_rate},
  {schedule.warmup_steps} warm-up steps, cosine decay; seed {spec.seed}.
- Rebuild: `legibility toy build` (all three models: {build_minutes:.0f} minutes on 2 CPU cores).

## Measured (toy test split, {spec.eval_problems} problems; greedy unless noted)

| metric | value |
|---|---|
{rows}

`jargon_rate` is measured on solutions sampled at temperature 1; the verifier's `auc` on solutions sampled from
both models for validation-split problems.
"""
    (folder / "README.md").write_text(text)
