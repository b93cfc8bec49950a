"""An OpenRLHF remote-reward request (``{"query", "prompts", "labels"}``) checked and split into what is scored.

Each query is the prompt followed by the response, as OpenRLHF decodes it (special tokens kept): the serving
tokenizer's own EOS / PAD strings are stripped from its end, the prompt is cut off the front, and the prompt is parsed
back to its question by the task through the verifier tokenizer's :class:`PromptFormat` (chat-templated or plain).
A label is the gold answer, needed only by the correctness reward modes. Every bad input raises InvalidArgument naming
the first bad field: ``query[i]``, ``prompts[i]`` or ``labels[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from services.common.errors import InvalidArgument
from services.tasks.base import Task, stated_answer
from services.tasks.prompts import PromptFormat, strip_end_tokens
from services.verifier.model import Pair, Scorable
from services.verifier.validation import TextWindow, check_pair

RewardMode = Literal["verifier", "correctness", "correctness+verifier"]


@dataclass(frozen=True)
class RewardItem:
    """One query: the pair the verifier scores, and the gold answer (None when the mode needs none)."""

    pair: Pair
    gold: str | None = None
    ids: list[int] | None = None
    """The pair's token ids as validated (None in ``correctness`` mode, which never scores it)."""

    @property
    def scorable(self) -> Scorable:
        """What the verifier scores: the ids when validation encoded the pair, else the pair."""
        return self.ids if self.ids is not None else self.pair


def _string_list(body: dict[str, Any], field: str) -> list[str]:
    if field not in body:
        raise InvalidArgument(field, "is required")
    value = body[field]
    if not isinstance(value, list):
        raise InvalidArgument(field, f"must be a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidArgument(f"{field}[{i}]", f"must be a string, got {type(item).__name__}")
    return value


def gold_answer(task: Task, label: str) -> str:
    """The gold answer a label gives (:func:`~services.tasks.base.stated_answer`), else the label itself."""
    stated = stated_answer(task, label)
    return stated if stated is not None else label.strip()


def _labels(body: dict[str, Any], count: int, mode: RewardMode) -> list[str] | None:
    labels = body.get("labels")
    if mode == "verifier":
        if labels is not None and not isinstance(labels, list):
            raise InvalidArgument("labels", f"must be a list, got {type(labels).__name__}")
        return None  # the verifier's score needs no gold answer
    if labels is None:
        raise InvalidArgument("labels", f"is required: http_reward is {mode!r}, which checks answers against labels")
    if not isinstance(labels, list):
        raise InvalidArgument("labels", f"must be a list of gold answers, got {type(labels).__name__}")
    if len(labels) > count:
        raise InvalidArgument("labels", f"has {len(labels)} items, query has {count}")
    texts = []
    for i in range(count):
        field = f"labels[{i}]"
        if i >= len(labels):
            raise InvalidArgument(field, f"is missing: labels has {len(labels)} items, query has {count}")
        label = labels[i]
        if isinstance(label, int) and not isinstance(label, bool):
            label = str(label)
        if not isinstance(label, str):
            raise InvalidArgument(field, f"must be the gold answer as a string, got {type(label).__name__}")
        if not label.strip():
            raise InvalidArgument(field, "is empty: the correctness reward needs the gold answer")
        texts.append(label)
    return texts


def parse_reward_request(
    body: Any, prompts: PromptFormat, window: TextWindow, *, mode: RewardMode, max_items: int
) -> list[RewardItem]:
    """The items of a valid request; raises InvalidArgument naming the first bad field.

    ``prompts`` parses the prompts (its tokenizer's EOS / PAD are stripped from the queries); ``window`` bounds the
    pairs the verifier scores (not checked in the ``correctness`` mode, which scores nothing).
    """
    if not isinstance(body, dict):
        raise InvalidArgument("body", "must be a JSON object")
    queries = _string_list(body, "query")
    texts = _string_list(body, "prompts")
    if not queries:
        raise InvalidArgument("query", "must not be empty")
    if len(queries) > max_items:
        raise InvalidArgument("query", f"at most {max_items} items per request, got {len(queries)}")
    if len(texts) != len(queries):
        raise InvalidArgument("prompts", f"has {len(texts)} items, query has {len(queries)}")
    labels = _labels(body, len(queries), mode)
    items = []
    for i, (query, prompt) in enumerate(zip(queries, texts, strict=True)):
        query = strip_end_tokens(query, prompts.tokenizer)
        if not query.startswith(prompt):
            raise InvalidArgument(f"query[{i}]", f"does not start with prompts[{i}]")
        try:
            question, _role = prompts.parse(prompt)  # the verifier scores the question, whatever role led it
        except ValueError as exc:
            raise InvalidArgument(f"prompts[{i}]", f"not a {prompts.task.name} prompt: {exc}") from None
        solution = query[len(prompt) :]
        ids = None if mode == "correctness" else check_pair(f"query[{i}]", question, solution, window)
        gold = None if labels is None else gold_answer(prompts.task, labels[i])
        items.append(RewardItem((question, solution), gold, ids))
    return items
