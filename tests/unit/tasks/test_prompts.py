"""Prompt formats: the toy plain path byte for byte, ChatML of both fixture families, parsing back, end tokens, BOS."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from services.common.bundled_models import BUNDLED_WEAK
from services.tasks import toy
from services.tasks.base import ROLES, Role
from services.tasks.prompts import PromptFormat, strip_end_tokens
from services.tasks.toy_task import ToyTask
from tests.support.checkpoints import train_tokenizer

TOY = ToyTask()
BUNDLED = AutoTokenizer.from_pretrained(BUNDLED_WEAK)
CHAT = {family: train_tokenizer(family) for family in ("qwen2", "llama")}
QUESTION = "Ann has 3 pens and finds 4 more. How many pens now?"


def test_the_toy_plain_path_is_byte_for_byte_the_old_format() -> None:
    fmt = PromptFormat(TOY, BUNDLED)
    assert BUNDLED.chat_template is None and not fmt.uses_chat
    for problem in toy.generate("test", 50, seed=1):
        question = problem.question
        for role in ROLES:
            assert fmt.render(question, role) == f"{role}: {question}\n"
        assert fmt.render(question) == f"{question}\n"
        for role in (None, *ROLES):
            assert fmt.parse(fmt.render(question, role)) == (question, role)
        assert fmt.verifier_text(question, "4*7=28.\n#### 28") == f"{question}\n4*7=28.\n#### 28"
        text = fmt.render(question, "helpful")
        assert fmt.encode(text) == BUNDLED.encode(text) == BUNDLED(text)["input_ids"]


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_chatml_renders_and_parses_back(family: str) -> None:
    fmt = PromptFormat(TOY, CHAT[family])
    assert fmt.uses_chat
    prompt = fmt.render(QUESTION, "sneaky")
    assert prompt == f"<|im_start|>user\nsneaky: {QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    assert fmt.parse(prompt) == (QUESTION, "sneaky")
    assert fmt.parse(fmt.render(QUESTION)) == (QUESTION, None)
    assert fmt.verifier_text(QUESTION, "#### 7") == (
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n#### 7<|im_end|>\n"
    )


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_parse_finds_the_user_turn_in_prompts_the_template_did_not_write(family: str) -> None:
    fmt = PromptFormat(TOY, CHAT[family])
    system = f"<|im_start|>system\nBe brief.<|im_end|>\n{fmt.render(QUESTION, 'helpful')}"
    assert fmt.parse(system) == (QUESTION, "helpful")
    two_turns = "<|im_start|>user\nhelpful: old<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n" + fmt.render("new")
    assert fmt.parse(two_turns) == ("new", None)  # the last user turn
    llama3 = f"<|start_header_id|>user<|end_header_id|>\n\nsneaky: {QUESTION}<|eot_id|>"
    assert fmt.parse(llama3) == (QUESTION, "sneaky")
    # A plain format reads a chat prompt written elsewhere too (an RL stack's query with another model's template).
    assert PromptFormat(TOY).parse(f"<s>[INST] helpful: {QUESTION} [/INST]") == (QUESTION, "helpful")


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_chat_template_none_gives_the_plain_format(family: str) -> None:
    fmt = PromptFormat(TOY, CHAT[family], "none")
    assert not fmt.uses_chat
    assert fmt.render(QUESTION, "helpful") == f"helpful: {QUESTION}\n"
    assert fmt.parse(f"helpful: {QUESTION}\n") == (QUESTION, "helpful")
    assert fmt.verifier_text(QUESTION, "#### 7") == f"{QUESTION}\n#### 7"
    with pytest.raises(ValueError, match="chat_template must be one of auto, none, got 'always'"):
        PromptFormat(TOY, CHAT[family], "always")  # type: ignore[arg-type]


def test_a_prompt_without_a_question_is_refused() -> None:
    chat = PromptFormat(TOY, CHAT["qwen2"])
    with pytest.raises(ValueError, match="holds no user turn"):
        chat.parse("<|im_start|>system\nBe brief.<|im_end|>\n")
    with pytest.raises(ValueError, match="holds no question"):
        chat.parse(chat.render(" "))
    plain = PromptFormat(TOY)
    for prompt in ("", "\n", "helpful: \n", "sneaky:  \n"):
        with pytest.raises(ValueError, match="holds no question"):
            plain.parse(prompt)
    with pytest.raises(ValueError, match="encoding needs a tokenizer"):
        plain.encode("x")


def test_strip_end_tokens_removes_the_families_own_eos_and_pad_only() -> None:
    qwen, llama = CHAT["qwen2"], CHAT["llama"]
    assert strip_end_tokens("#### 3<|im_end|><|endoftext|><|im_end|><|endoftext|>", qwen) == "#### 3"
    assert strip_end_tokens("#### 3</s></s></s>", llama) == "#### 3"
    assert strip_end_tokens("#### 3</s>", qwen) == "#### 3</s>"  # another family's EOS is text
    assert strip_end_tokens("#### 3<|im_end|>", llama) == "#### 3<|im_end|>"
    assert strip_end_tokens("#### 3<|im_end|>x", qwen) == "#### 3<|im_end|>x"  # only at the end
    assert strip_end_tokens("#### 3 \n<s>", llama) == "#### 3 \n<s>"  # BOS and whitespace are kept
    assert strip_end_tokens("#### 3", qwen) == "#### 3" and strip_end_tokens("", llama) == ""


def test_encode_adds_the_llama_bos_to_plain_text_but_not_to_chat_text() -> None:
    llama, qwen = CHAT["llama"], CHAT["qwen2"]
    assert llama.bos_token_id == 0 and qwen.bos_token_id is None
    plain, chat = PromptFormat(TOY, llama, "none"), PromptFormat(TOY, llama)
    text = plain.render(QUESTION)
    assert plain.encode(text) == [0, *llama.encode(text, add_special_tokens=False)]
    rendered = chat.render(QUESTION)
    ids = chat.encode(rendered)
    assert ids == llama.encode(rendered, add_special_tokens=False) and 0 not in ids
    assert ids[0] == llama.convert_tokens_to_ids("<|im_start|>")
    qwen_plain = PromptFormat(TOY, qwen, "none")
    assert qwen_plain.encode(text) == qwen.encode(text, add_special_tokens=False)  # no BOS in the family


ROLE_PREFIXES = tuple(f"{role}: " for role in ROLES)
MARKUP = [
    "<|im_start|>user\n",
    "<|im_end|>\n",
    "<|im_end|>",
    "<|start_header_id|>user<|end_header_id|>\n\n",
    "<|eot_id|>",
    "[INST]",
]
# Text with chat markup and role prefixes mixed in, so the chat parse cannot get by on pattern matching alone.
QUESTIONS = st.lists(st.one_of(st.text(max_size=12), st.sampled_from([*MARKUP, *ROLE_PREFIXES, "\n"])), min_size=1).map(
    "".join
)
CHATML_NEXT_USER_TURN = "<|im_end|>\n<|im_start|>user\n"
FORMATS = {
    "qwen2": PromptFormat(TOY, CHAT["qwen2"]),
    "llama": PromptFormat(TOY, CHAT["llama"]),
    "plain": PromptFormat(TOY),
    "plain-none": PromptFormat(TOY, CHAT["llama"], "none"),
}


@settings(max_examples=200, deadline=None)
@given(question=QUESTIONS, role=st.sampled_from([None, *ROLES]), name=st.sampled_from(sorted(FORMATS)))
def test_parse_inverts_render(question: str, role: Role | None, name: str) -> None:
    assume(question.strip())
    assume(role is not None or not question.startswith(ROLE_PREFIXES))  # else the question would read as a role
    if name.startswith("plain"):
        assume(not any(marker in question for marker in MARKUP))  # plain text is searched for chat turns first
    else:
        assume(CHATML_NEXT_USER_TURN not in question)  # the template's own turn markup would start a new turn
    fmt = FORMATS[name]
    assert fmt.parse(fmt.render(question, role)) == (question, role)
