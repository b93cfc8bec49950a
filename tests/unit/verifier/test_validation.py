"""Validation and small helpers of the verifier service, without a model or a server."""

from __future__ import annotations

import math

import grpc
import pytest

from services.common.errors import InvalidArgument, VersionNotReached
from services.common.genproto.legibility.v1 import verifier_pb2
from services.tasks.steps import step_ends
from services.verifier.model import StepsItem
from services.verifier.service import probability
from services.verifier.validation import check_version, validate_score, validate_score_steps


class CharWindow:
    """One token per character plus the newline and EOS, like the bundled tokenizer."""

    context_window = 20
    max_text_chars = 100  # 20 tokens of at most 5 characters each
    counted: list[int]

    def __init__(self) -> None:
        self.counted = []

    def token_count(self, problem: str, solution: str) -> int:
        return len(self.ids(problem, solution))

    def ids(self, problem: str, solution: str) -> list[int]:
        self.counted.append(len(problem) + len(solution))
        return [ord(c) for c in f"{problem}\n{solution}"] + [0]

    def has_tokens(self, text: str) -> bool:
        return any(character.isascii() for character in text)  # a tokenizer that drops what it does not know

    def step_ends(self, solution: str) -> list[int]:
        return step_ends(solution)


class CharSteps(CharWindow):
    """A task whose steps are single characters: the prefix bound must count with the task's splitter."""

    def step_ends(self, solution: str) -> list[int]:
        return list(range(1, len(solution) + 1))


@pytest.mark.parametrize(
    ("problem", "solution", "field"),
    [
        ("Q" * 101, "x", "items[0].problem"),
        ("Q?", "x" * 99, "items[0].solution"),
        ("Q?", "x" * 16_000_000, "items[0].solution"),
    ],
)
def test_text_that_cannot_fit_is_refused_by_its_length_before_it_is_tokenised(
    problem: str, solution: str, field: str
) -> None:
    window = CharWindow()
    request = verifier_pb2.ScoreRequest(items=[verifier_pb2.ScoreItem(problem=problem, solution=solution)])
    with pytest.raises(InvalidArgument) as raised:
        validate_score(request, window, max_items=4)
    assert raised.value.field == field and "cannot fit the 20-token context window (at most 100)" in str(raised.value)
    assert window.counted == []  # never tokenised


def steps(*items: tuple[str, str, list[int]]) -> verifier_pb2.ScoreStepsRequest:
    return verifier_pb2.ScoreStepsRequest(
        items=[verifier_pb2.ScoreStepsItem(problem=p, solution=s, step_ends=e) for p, s, e in items]
    )


def test_valid_requests_become_token_ids_and_steps_items() -> None:
    request = verifier_pb2.ScoreRequest(items=[verifier_pb2.ScoreItem(problem="Q?", solution="1+1=2.\n#### 2")])
    window = CharWindow()
    assert validate_score(request, window, max_items=4) == [[ord(c) for c in "Q?\n1+1=2.\n#### 2"] + [0]]
    assert window.counted == [len("Q?") + len("1+1=2.\n#### 2")]  # tokenised once
    items = validate_score_steps(steps(("Q?", "1+1=2.\n#### 2", []), ("Q?", "abc", [1, 3])), CharWindow(), max_items=4)
    assert items == [StepsItem("Q?", "1+1=2.\n#### 2", ()), StepsItem("Q?", "abc", (1, 3))]
    assert [item.ends(CharWindow().step_ends) for item in items] == [[7, 13], [1, 3]]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (steps(("Q?", "x" * 17, [])), "items[0].solution"),  # 2 + 1 + 17 + 1 = 21 > 20
        (steps(("Q" * 18, "x", [])), "items[0].problem"),
        (steps(("ééé", "x", [])), "items[0].problem"),  # no known character: nothing to score
        (steps(("Q?", "ab", []), ("Q?", "—", [])), "items[1].solution"),
        (steps(("Q?", "ab", []), ("Q?", "abc", [2, 2])), "items[1].step_ends[1]"),
        (steps(("Q?", "a\nb\nc\nd", []), ("Q?", "a\nb", [])), "items"),  # 6 prefixes > 5
    ],
)
def test_bad_items_name_their_field(request_: verifier_pb2.ScoreStepsRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_score_steps(request_, CharWindow(), max_items=5)
    assert info.value.field == field
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_the_prefix_bound_counts_the_tasks_steps() -> None:
    request = steps(("Q?", "abcd", []))  # one line: 1 prefix by lines, 4 by characters
    assert [item.ends(CharSteps().step_ends) for item in validate_score_steps(request, CharSteps(), max_items=4)] == [
        [1, 2, 3, 4]
    ]
    assert len(validate_score_steps(request, CharWindow(), max_items=1)) == 1
    with pytest.raises(InvalidArgument) as info:
        validate_score_steps(request, CharSteps(), max_items=3)
    assert info.value.field == "items" and "4 step prefixes" in info.value.problem


def test_min_version_above_the_served_one_is_failed_precondition() -> None:
    check_version(0, 0)
    check_version(2, 3)
    check_version(-1, 0)  # not pinned
    with pytest.raises(VersionNotReached) as info:
        check_version(4, 3)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_probability_is_a_stable_sigmoid() -> None:
    assert probability(0.0) == 0.5
    assert probability(2.0) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert probability(-2.0) == pytest.approx(1 - probability(2.0))
    assert probability(-1000.0) == 0.0 and probability(1000.0) == 1.0
