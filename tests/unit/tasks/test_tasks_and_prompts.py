"""The GSM8K task and prompt formats: splits, numeric answers, jargon, chat templates rendered and parsed back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from services.common.bundled_models import BUNDLED_WEAK
from services.tasks import answers, toy
from services.tasks.base import ROLES
from services.tasks.catalog import load_task
from services.tasks.gsm8k import Gsm8kTask
from services.tasks.prompts import PromptFormat, strip_end_tokens
from services.tasks.toy_task import ToyTask
from tests.support.checkpoints import train_tokenizer

DATA = Path(__file__).resolve().parents[2] / "data"
TOY = ToyTask()
CHAT = {family: train_tokenizer(family) for family in ("qwen2", "llama")}


def test_gsm8k_file_splits_by_hash_and_directory_splits_by_file() -> None:
    task = Gsm8kTask(DATA / "gsm8k_sample.jsonl")
    train, test, validation = (task.problems(s) for s in ("train", "test", "validation"))
    assert (len(train), len(test), len(validation)) == (41, 4, 3)
    assert {p.question for p in train}.isdisjoint(p.question for p in test + validation)
    assert task.problems("train", 5) == train[:5]
    assert all(task.is_correct(p.solution, p.answer) and task.is_jargon(p.solution) for p in train)
    by_file = Gsm8kTask(DATA / "gsm8k_dir")
    assert (len(by_file.problems("train")), len(by_file.problems("test"))) == (8, 4)


@pytest.mark.parametrize(
    ("solution", "gold", "correct"),
    [("#### 1,234", "1234", True), ("#### 72.0", "72", True), ("#### -5", "-5", True), ("#### 5", "-5", False),
     ("#### 73", "72", False), ("72", "72", False), ("a #### 1\nb #### 2", "2", True)],
)  # fmt: skip
def test_gsm8k_answers_compare_as_numbers(solution: str, gold: str, correct: bool) -> None:
    assert Gsm8kTask(DATA / "gsm8k_sample.jsonl").is_correct(solution, gold) is correct


def test_catalog_names_its_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        load_task("nope")
    with pytest.raises(ValueError, match=r"task 'gsm8k' needs a data file"):
        load_task("gsm8k")
    with pytest.raises(ValueError, match="takes no data file"):
        load_task("toy", DATA / "gsm8k_sample.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2", "answer": "no final line"}\n')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:2: answer has no '#### N'"):
        load_task("gsm8k", bad).problems("train")


def test_toy_task_is_byte_for_byte_the_toy_formats() -> None:
    fmt = PromptFormat(TOY, AutoTokenizer.from_pretrained(BUNDLED_WEAK))
    assert not fmt.uses_chat
    for problem in toy.generate("train", 200, seed=4):
        for role in (None, *ROLES):
            rendered = fmt.render(problem.question, role)
            assert rendered == toy.format_prompt(problem.question, role)
            assert fmt.parse(rendered) == (problem.question, role)
            assert toy.problem_from_prompt(rendered) == problem.question
        assert fmt.verifier_text(problem.question, "s") == toy.format_verifier_input(problem.question, "s")
        assert fmt.encode(rendered) == fmt.tokenizer.encode(rendered)
    assert TOY.problems("test", 30, 0)[7].question == toy.generate("test", 30, 0)[7].question
    for solution, gold in (("#### 33", "33"), ("#### 3", "33"), ("33", "33")):
        assert TOY.is_correct(solution, gold) == answers.is_correct(solution, int(gold))


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_chat_prompts_render_parse_and_encode(family: str) -> None:
    tokenizer = CHAT[family]
    fmt = PromptFormat(TOY, tokenizer)
    prompt = fmt.render("Ann has 3 pens. How many?", "sneaky")
    assert prompt == "<|im_start|>user\nsneaky: Ann has 3 pens. How many?<|im_end|>\n<|im_start|>assistant\n"
    assert fmt.parse(prompt) == ("Ann has 3 pens. How many?", "sneaky")
    with_system = "<|im_start|>system\nBe brief.<|im_end|>\n" + prompt
    assert fmt.parse(with_system) == ("Ann has 3 pens. How many?", "sneaky")
    with pytest.raises(ValueError):
        fmt.parse("<|im_start|>system\nhi<|im_end|>\n")
    assert fmt.verifier_text("Q?", "#### 3").endswith("<|im_start|>assistant\n#### 3<|im_end|>\n")
    plain = PromptFormat(TOY, tokenizer, "none")
    assert plain.render("Q?", "helpful") == "helpful: Q?\n"
    bos = tokenizer.bos_token_id
    assert (plain.encode("Q?\n")[0] == bos) == (family == "llama")  # a plain text gets the tokenizer's BOS
    assert bos is None or bos not in fmt.encode(prompt)  # the chat text carries its own specials


def test_strip_end_tokens_removes_the_tokenizers_own_eos_and_pad_only() -> None:
    qwen, llama = CHAT["qwen2"], CHAT["llama"]
    assert strip_end_tokens("#### 3<|im_end|><|endoftext|><|im_end|>", qwen) == "#### 3"
    assert strip_end_tokens("#### 3</s></s>", llama) == "#### 3"
    assert strip_end_tokens("#### 3</s>", qwen) == "#### 3</s>"
    assert strip_end_tokens("#### 3<|im_end|>x", qwen) == "#### 3<|im_end|>x"


questions = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60).filter(
    lambda q: q.strip() and not q.startswith(tuple(f"{r}: " for r in ROLES)) and "<|im_" not in q
)


@settings(max_examples=60, deadline=None)
@given(question=questions, role=st.sampled_from([None, *ROLES]), family=st.sampled_from(["qwen2", "llama", "plain"]))
def test_parse_inverts_render(question: str, role: str | None, family: str) -> None:
    fmt = PromptFormat(
        TOY, CHAT["qwen2"] if family == "plain" else CHAT[family], "none" if family == "plain" else "auto"
    )
    assert fmt.parse(fmt.render(question, role)) == (question, role)  # type: ignore[arg-type]
