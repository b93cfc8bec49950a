"""Request validation: every bad input becomes InvalidArgument naming the item and field, before any model work.

Messages look like ``items[2].step_ends[1]: 7 does not come after 9``. Lengths are checked in tokens (the
model's tokenizer), the unit its context window counts in.
"""

from __future__ import annotations

from typing import Protocol

from services.common.errors import InvalidArgument, VersionNotReached
from services.common.genproto.legibility.v1 import verifier_pb2
from services.verifier.model import StepsItem


class TextWindow(Protocol):
    """What validation needs from a model: its window in tokens and the task's step splitter."""

    @property
    def context_window(self) -> int: ...

    @property
    def max_text_chars(self) -> int:
        """A problem + solution longer than this cannot fit the context window: refused before tokenising."""
        ...

    def token_count(self, problem: str, solution: str) -> int: ...

    def ids(self, problem: str, solution: str) -> list[int]:
        """The pair's token ids as scored (``token_count`` of them)."""
        ...

    def has_tokens(self, text: str) -> bool:
        """Whether ``text`` alone has any token (False when the tokenizer knows none of its characters)."""
        ...

    def step_ends(self, solution: str) -> list[int]: ...


def check_version(min_version: int, serving_version: int) -> None:
    """Raise VersionNotReached when the client pinned a version this replica has not reached."""
    if min_version > serving_version:
        raise VersionNotReached(min_version, serving_version)


def _check_batch(count: int, max_items: int) -> None:
    if count == 0:
        raise InvalidArgument("items", "must not be empty")
    if count > max_items:
        raise InvalidArgument("items", f"at most {max_items} items per request, got {count}")


def check_pair(field: str, problem: str, solution: str, model: TextWindow) -> list[int]:
    """The pair's token ids; raises InvalidArgument naming ``{field}.problem`` / ``.solution`` if it cannot be scored.

    The pair is tokenised once; the problem alone only when the pair overflows, to say which field is too long."""
    if not problem.strip():
        raise InvalidArgument(f"{field}.problem", "must not be empty")
    if not solution.strip():
        raise InvalidArgument(f"{field}.solution", "must not be empty")
    window = model.context_window
    limit = model.max_text_chars
    for name, size in (("problem", len(problem)), ("solution", len(problem) + len(solution))):
        if size > limit:
            raise InvalidArgument(
                f"{field}.{name}", f"{size} characters cannot fit the {window}-token context window (at most {limit})"
            )
    for name, text in (("problem", problem), ("solution", solution)):
        if not model.has_tokens(text):  # a lossy tokenizer dropped every character: nothing would be scored
            raise InvalidArgument(f"{field}.{name}", "has no tokens the verifier knows")
    ids = model.ids(problem, solution)
    if len(ids) <= window:
        return ids
    if (tokens := model.token_count(problem, "")) >= window:
        raise InvalidArgument(f"{field}.problem", f"{tokens} tokens leave no room in the {window}-token context window")
    raise InvalidArgument(
        f"{field}.solution",
        f"problem and solution are {len(ids)} tokens, more than the {window}-token context window",
    )


def validate_score(request: verifier_pb2.ScoreRequest, model: TextWindow, *, max_items: int) -> list[list[int]]:
    """The token ids of each pair of a valid Score request; raises InvalidArgument on the first bad field."""
    _check_batch(len(request.items), max_items)
    return [check_pair(f"items[{i}]", item.problem, item.solution, model) for i, item in enumerate(request.items)]


def validate_score_steps(
    request: verifier_pb2.ScoreStepsRequest, model: TextWindow, *, max_items: int
) -> list[StepsItem]:
    """The items of a valid ScoreSteps request; raises InvalidArgument on the first bad field.

    ``max_items`` bounds the step prefixes of the whole request too: each one is a pair waiting for the model.
    """
    _check_batch(len(request.items), max_items)
    items = []
    for i, item in enumerate(request.items):
        field = f"items[{i}]"
        check_pair(field, item.problem, item.solution, model)
        previous = 0
        for j, end in enumerate(item.step_ends):
            if not 1 <= end <= len(item.solution):
                raise InvalidArgument(f"{field}.step_ends[{j}]", f"{end} is outside 1..{len(item.solution)}")
            if end <= previous:
                raise InvalidArgument(
                    f"{field}.step_ends[{j}]", f"{end} does not come after {previous} (must be strictly increasing)"
                )
            previous = end
        items.append(StepsItem(item.problem, item.solution, tuple(item.step_ends)))
    prefixes = sum(len(item.ends(model.step_ends)) for item in items)
    if prefixes > max_items:
        raise InvalidArgument("items", f"{prefixes} step prefixes to score, at most {max_items} per request")
    return items
