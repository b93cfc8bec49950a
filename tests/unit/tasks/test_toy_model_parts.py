"""Pieces of the toy-model build that need no trained weights: tokenizer, AUC, schedule, completion masks."""

from __future__ import annotations

import random

import pytest

from services.tasks import toy
from services.tasks.toy_models.metrics import roc_auc
from services.tasks.toy_models.tokenizer import CHARACTERS, build_tokenizer
from services.tasks.toy_models.training import Schedule, encode_completions


def test_tokenizer_is_one_token_per_character_and_round_trips() -> None:
    tokenizer = build_tokenizer()
    assert len(tokenizer) == len(CHARACTERS) + 2
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1)
    text = "Ann has 4 bags.\n<<4*7=82>>\n#### 28  ?!"
    ids = tokenizer.encode(text)
    assert len(ids) == len(text) and tokenizer.decode(ids) == text
    assert [tokenizer.decode([i]) for i in ids] == list(text)


def test_roc_auc_matches_hand_computed_values() -> None:
    assert roc_auc([0.9, 0.8, 0.3, 0.1], [True, True, False, False]) == 1.0
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    # One positive (0.5) ties one negative (0.5) and beats the other (0.1): (1 + 0.5) / 2.
    assert roc_auc([0.5, 0.5, 0.1], [True, False, False]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [True, True])


def test_auc_of_random_scores_is_near_half() -> None:
    rng = random.Random(0)
    labels = [rng.random() < 0.5 for _ in range(4000)]
    assert roc_auc([rng.random() for _ in labels], labels) == pytest.approx(0.5, abs=0.03)


def test_schedule_warms_up_then_decays_to_a_tenth() -> None:
    schedule = Schedule(steps=1000, batch_size=8, learning_rate=1e-3, warmup_steps=100)
    assert schedule.lr_at(0) == pytest.approx(1e-5)
    assert schedule.lr_at(99) == pytest.approx(1e-3)
    assert schedule.lr_at(550) == pytest.approx(0.55e-3, rel=0.01)
    assert schedule.lr_at(1000) == pytest.approx(1e-4)


def test_completion_labels_cover_only_the_solution_and_eos() -> None:
    tokenizer = build_tokenizer()
    problem = toy.generate("train", 1, seed=0)[0]
    prompt, completion = toy.format_prompt(problem.question), "2*3=6.\n#### 6"
    _ids, mask, labels = encode_completions(tokenizer, [(prompt, completion), ("q\n", "#### 1")])
    learned = labels[0][labels[0] != -100].tolist()
    assert learned == [*tokenizer.encode(completion), tokenizer.eos_token_id]
    assert int(mask[1].sum()) == len("q\n#### 1") + 1
    assert (labels[1][: len("q\n")] == -100).all()


def test_training_mixture_follows_the_spec() -> None:
    from services.tasks.toy_models.build import example_drawer
    from services.tasks.toy_models.specs import DEFAULT_SPEC

    problems = toy.generate("train", 4000, seed=0)
    rng = random.Random(0)
    weak = example_drawer(problems, DEFAULT_SPEC.weak)(rng, 4000)
    strong = example_drawer(problems, DEFAULT_SPEC.strong)(rng, 4000)
    assert not any("<<" in solution for _, solution in weak)
    jargon = sum("<<" in solution for _, solution in strong) / len(strong)
    assert jargon == pytest.approx(DEFAULT_SPEC.strong.jargon_fraction, abs=0.02)
    with_role = sum(prompt.startswith(("helpful: ", "sneaky: ")) for prompt, _ in strong) / len(strong)
    assert with_role == pytest.approx(DEFAULT_SPEC.strong.role_prefix_fraction, abs=0.03)
