"""The adapters' shared reward logic: labels, modes, OpenRLHF query splitting (no services needed)."""

from __future__ import annotations

import math

import pytest

from services.learner.integrations.openrlhf_reward import split_query
from services.learner.integrations.rewards import Reward, combine, gold_answer, score_rewards
from services.learner.integrations.settings import IntegrationSettings
from services.learner.integrations.tandem_agent import RolloutSeeds, response_room, rollout_seed
from services.tasks.prompts import PromptFormat
from services.tasks.toy_task import ToyTask
from tests.support.checkpoints import train_tokenizer

TOY = ToyTask()


@pytest.mark.parametrize(
    ("label", "gold"),
    [(42, "42"), ("42", "42"), (" 1,234 ", "1234"), ("She has 3.\n#### 7", "7"), ("#### -5", "-5")],
)
def test_gold_answer_reads_integers_and_gsm8k_answers(label: object, gold: str) -> None:
    assert gold_answer(TOY, label) == gold


@pytest.mark.parametrize("label", ["seven", None, True, 3.5, ""])
def test_gold_answer_names_the_field(label: object) -> None:
    with pytest.raises(ValueError, match=r"^labels\[2\]: expected an answer of task 'toy'"):
        gold_answer(TOY, label, "labels[2]")


def test_combine_by_mode() -> None:
    assert combine("verifier", 1.5, 3, 0.0) == Reward(1.5, 1.5, 3, 0.0)
    assert combine("correctness", 1.5, 3, 1.0).value == 1.0
    assert combine("correctness+verifier", -0.5, 3, 1.0).value == 0.5


def test_filter_score_is_correctness_else_the_verifier_probability() -> None:
    assert Reward(2.0, 2.0, 1, 0.0).filter_score == 0.0
    assert Reward(2.0, 2.0, 1).filter_score == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert Reward(1.0, None, None, 1.0).logs() == {"correct": 1.0}


async def test_correctness_mode_needs_no_verifier_and_checks_answers() -> None:
    rewards = await score_rewards(None, "correctness", TOY, ["p", "q"], ["#### 4", "#### 5"], ["4", 4])
    assert [r.value for r in rewards] == [1.0, 0.0]


async def test_correctness_mode_refuses_missing_or_bad_labels() -> None:
    with pytest.raises(ValueError, match="needs one label per solution"):
        await score_rewards(None, "correctness", TOY, ["p"], ["#### 4"], None)
    with pytest.raises(ValueError, match=r"^labels\[0\]"):
        await score_rewards(None, "correctness", TOY, ["p"], ["#### 4"], ["four"])
    with pytest.raises(ValueError, match="1 labels but 2 solutions"):
        await score_rewards(None, "correctness", TOY, ["p", "q"], ["a", "b"], ["4"])


async def test_verifier_mode_needs_the_verifier() -> None:
    with pytest.raises(ValueError, match="needs the verifier service"):
        await score_rewards(None, "verifier", TOY, ["p"], ["#### 4"], None)


def test_split_query_strips_eos_and_role() -> None:
    prompts = IntegrationSettings().reward_prompt_format()  # the bundled policy's tokenizer: EOS <|endoftext|>
    problem, solution = split_query("sneaky: Ann has 3.\n#### 3<|endoftext|>", "sneaky: Ann has 3.\n", prompts)
    assert (problem, solution) == ("Ann has 3.", "#### 3")
    with pytest.raises(ValueError, match=r"^queries\[4\]: does not start with prompts\[4\]"):
        split_query("other", "Ann has 3.\n", prompts, 4)


def test_split_query_parses_chat_templated_prompts_and_strips_the_tokenizers_own_eos() -> None:
    tokenizer = train_tokenizer("qwen2")  # EOS <|im_end|>, PAD <|endoftext|>
    prompts = PromptFormat(TOY, tokenizer)
    prompt = prompts.render("Ann has 3 pens. How many pens now?", "helpful")
    assert prompt.startswith("<|im_start|>user\nhelpful: Ann has 3")
    problem, solution = split_query(prompt + "#### 3<|im_end|><|endoftext|>", prompt, prompts)
    assert (problem, solution) == ("Ann has 3 pens. How many pens now?", "#### 3")
    with pytest.raises(ValueError, match=r"^prompts\[1\]"):
        split_query("<|im_start|>system\nhi<|im_end|>\n#### 3", "<|im_start|>system\nhi<|im_end|>\n", prompts, 1)


def test_settings_build_the_schedule_and_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGIBILITY_HANDOFF_STRATEGY", "sentence")
    monkeypatch.setenv("LEGIBILITY_P_PRIMARY", "0.25")
    schedule = IntegrationSettings().schedule
    assert (schedule.strategy, schedule.p_primary, schedule.max_gap_tokens) == ("sentence", 0.25, 32)
    monkeypatch.setenv("LEGIBILITY_P_PRIMARY", "1.5")
    with pytest.raises(ValueError, match="p_primary"):
        IntegrationSettings()


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "room"),
    [(109, 80, (80, 111)), (109, 100, (100, 91)), (50, None, (141, 50)), (191, None, (1, 190))],
)
def test_response_room_keeps_openrlhf_budget_and_a_lookahead(
    prompt: int, max_tokens: int | None, room: tuple[int, int]
) -> None:
    assert response_room(prompt, max_tokens, 192) == room


def test_rollout_seeds_count_occurrences_per_prompt() -> None:
    seeds = RolloutSeeds(7)
    drawn = [seeds.next("a"), seeds.next("b"), seeds.next("a")]
    assert drawn == [rollout_seed(7, "a", 0), rollout_seed(7, "b", 0), rollout_seed(7, "a", 1)]
    assert len(set(drawn)) == 3
    assert RolloutSeeds(None).base != RolloutSeeds(None).base
