"""A task's prompts for one tokenizer: chat-templated when the tokenizer has a template and it is asked for.

Every service renders, parses and encodes prompts through :class:`PromptFormat`, so a prompt the learner wrote,
the query OpenRLHF posts to ``/get_reward`` and the text the verifier scores agree on one format:

- ``render``: the task's user message inside the tokenizer's chat template (generation prompt added), or the
  task's plain prompt when there is no template or ``chat_template="none"``;
- ``parse``: a rendered prompt back to (question, role) — through the template's own frame (the last user message
  when the prompt holds several turns), then the last user turn of the common chat markups (ChatML, Llama 3,
  Llama 2), then the task's plain format;
- ``verifier_text``: the (question, solution) conversation the verifier reads;
- ``encode``: token ids of a rendered text: a chat-templated text carries its own special tokens, so the tokenizer
  adds none; a plain text gets the tokenizer's usual ones (a Llama tokenizer's BOS).
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any, Literal

from services.tasks.base import Role, Task

ChatTemplateMode = Literal["auto", "none"]
CHAT_TEMPLATE_MODES: tuple[ChatTemplateMode, ...] = ("auto", "none")

_SENTINEL = "\u2063LEGIBILITY-USER-MESSAGE\u2063"
_USER_TURNS = (
    re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S),  # ChatML (Qwen2, many fine-tunes)
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S),  # Llama 3
    re.compile(r"\[INST\]\s*(.*?)\s*\[/INST\]", re.S),  # Llama 2 / Mistral
)


def end_token_strings(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's EOS and PAD as text: what RL stacks leave at the end of a decoded response."""
    strings = [getattr(tokenizer, "eos_token", None), getattr(tokenizer, "pad_token", None)]
    return tuple(s for s in dict.fromkeys(strings) if isinstance(s, str) and s)


def strip_end_tokens(text: str, tokenizer: Any) -> str:
    """``text`` without the trailing EOS / PAD strings of ``tokenizer`` (any number of them, in any order)."""
    ends = end_token_strings(tokenizer)
    stripped = True
    while stripped:
        stripped = False
        for end in ends:
            if text.endswith(end):
                text, stripped = text[: -len(end)], True
    return text


class PromptFormat:
    """How prompts of ``task`` look for ``tokenizer`` (None: plain prompts, encoding unavailable)."""

    def __init__(self, task: Task, tokenizer: Any | None = None, chat_template: ChatTemplateMode = "auto") -> None:
        if chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, got {chat_template!r}")
        self.task = task
        self.tokenizer = tokenizer
        self.chat_template: ChatTemplateMode = chat_template

    @property
    def uses_chat(self) -> bool:
        """Prompts go through the tokenizer's chat template."""
        return self.chat_template == "auto" and bool(getattr(self.tokenizer, "chat_template", None))

    def _chat(self, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
        assert self.tokenizer is not None
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return str(rendered)

    def render(self, question: str, role: Role | None = None) -> str:
        """The prompt the policy is conditioned on."""
        if not self.uses_chat:
            return self.task.format_prompt(question, role)
        message = self.task.user_message(question, role)
        return self._chat([{"role": "user", "content": message}], generation_prompt=True)

    @cached_property
    def _frame(self) -> tuple[str, str]:
        """What the template puts before and after a user message (a system prompt included)."""
        before, _, after = self._chat([{"role": "user", "content": _SENTINEL}], generation_prompt=True).partition(
            _SENTINEL
        )
        return before, after

    @cached_property
    def _next_user_turn(self) -> str | None:
        """What the template writes between an assistant's reply and the next user message (None if unknown).

        A conversation of several turns also starts and ends like :attr:`_frame`; its last user message follows the
        last of these separators.
        """
        reply, question = f"{_SENTINEL}reply", f"{_SENTINEL}question"
        turns = [{"role": "user", "content": _SENTINEL}, {"role": "assistant", "content": reply}]
        try:
            text = self._chat([*turns, {"role": "user", "content": question}], generation_prompt=True)
        except Exception:  # a template may refuse a conversation (jinja's raise_exception); the regexes remain
            return None
        start, end = text.find(reply), text.find(question)
        return (text[start + len(reply) : end] or None) if 0 <= start < end else None

    def user_message_of(self, prompt: str) -> str:
        """The user message inside a rendered prompt; raises ValueError when none is found."""
        if self.uses_chat:
            before, after = self._frame
            if prompt.startswith(before) and prompt.endswith(after) and len(prompt) >= len(before) + len(after):
                message = prompt[len(before) : len(prompt) - len(after)]
                separator = self._next_user_turn
                return message.rpartition(separator)[2] if separator else message
        for pattern in _USER_TURNS:
            turns = pattern.findall(prompt)
            if turns:
                return str(turns[-1])
        if self.uses_chat:
            raise ValueError("does not follow the chat template, and holds no user turn of a known chat format")
        return prompt.removesuffix("\n")

    def parse(self, prompt: str) -> tuple[str, Role | None]:
        """(question, role) of a rendered prompt; raises ValueError naming what is wrong."""
        return self.task.parse_user_message(self.user_message_of(prompt))

    def verifier_text(self, question: str, solution: str) -> str:
        """What the verifier reads for (question, solution): the task's text, or the conversation in the template."""
        if not self.uses_chat:
            return self.task.verifier_input(question, solution)
        conversation = [
            {"role": "user", "content": self.task.user_message(question)},
            {"role": "assistant", "content": solution},
        ]
        return self._chat(conversation, generation_prompt=False)

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered prompt or verifier text (see the module docstring for special tokens)."""
        if self.tokenizer is None:
            raise ValueError("encoding needs a tokenizer")
        if self._backend is not None:
            return self._backend.encode(text, add_special_tokens=not self.uses_chat).ids
        return list(self.tokenizer.encode(text, add_special_tokens=not self.uses_chat))

    @cached_property
    def _backend(self) -> Any | None:
        """The fast tokenizer's Rust ``Tokenizer`` when it encodes exactly as the transformers wrapper, else None.

        On the request path the wrapper's Python (BatchEncoding, conversions) costs several times the encoding of a
        short text; checked on a probe once, so a tokenizer whose wrapper adds tokens itself keeps the wrapper."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        probe = "Tom has 3 apples and buys 12 more.\n3+12=15.\n#### 15 é∑"
        special = not self.uses_chat
        same = backend.encode(probe, add_special_tokens=special).ids == list(
            self.tokenizer.encode(probe, add_special_tokens=special)
        )
        return backend if same else None
