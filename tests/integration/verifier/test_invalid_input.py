"""Every bad input gets INVALID_ARGUMENT naming the item and field; a pinned version not reached gets
FAILED_PRECONDITION; the server keeps serving."""

from __future__ import annotations

import grpc
import pytest

from services.common.genproto.legibility.v1 import verifier_pb2

PROBLEM = "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?"
SOLUTION = "4*7=28.\n28+3=31.\n#### 31"  # 24 characters
OK = {"problem": PROBLEM, "solution": SOLUTION}


def score_request(*bad: dict[str, object], at: int = 0, **fields: object) -> verifier_pb2.ScoreRequest:
    """Good items with the bad ones placed from index ``at``."""
    items = [verifier_pb2.ScoreItem(**OK) for _ in range(at)]  # type: ignore[arg-type]
    items += [verifier_pb2.ScoreItem(**(OK | b)) for b in bad]  # type: ignore[arg-type]
    return verifier_pb2.ScoreRequest(items=items, **fields)  # type: ignore[arg-type]


def steps_request(*bad: dict[str, object], at: int = 0, **fields: object) -> verifier_pb2.ScoreStepsRequest:
    items = [verifier_pb2.ScoreStepsItem(**OK) for _ in range(at)]  # type: ignore[arg-type]
    items += [verifier_pb2.ScoreStepsItem(**(OK | b)) for b in bad]  # type: ignore[arg-type]
    return verifier_pb2.ScoreStepsRequest(items=items, **fields)  # type: ignore[arg-type]


# The bundled verifier's window is 192 tokens, one per character, plus the newline and the EOS read-out.
SHARED_CASES = [
    ({"problem": ""}, "items[{i}].problem: must not be empty"),
    ({"problem": "  \n"}, "items[{i}].problem: must not be empty"),
    ({"solution": ""}, "items[{i}].solution: must not be empty"),
    ({"solution": "\n\n"}, "items[{i}].solution: must not be empty"),
    ({"problem": "ééé∑"}, "items[{i}].problem: has no tokens the verifier knows"),  # the weak model refuses it too
    ({"problem": "x" * 191}, "items[{i}].problem: 193 tokens leave no room in the 192-token context window"),
    ({"solution": "1" * 130}, "items[{i}].solution: problem and solution are 193 tokens, more than the 192-token"),
    # Longer than 192 tokens of the longest piece (13 characters): refused by length, never tokenised.
    ({"problem": "x" * 2497}, "items[{i}].problem: 2497 characters cannot fit the 192-token context window"),
    ({"solution": "1" * 15_000_000}, "items[{i}].solution: 15000061 characters cannot fit"),
]
SCORE_CASES = [
    (verifier_pb2.ScoreRequest(), "items: must not be empty"),
    (score_request(*[{}] * 1025), "items: at most 1024 items per request, got 1025"),
    *[(score_request(bad, at=at), detail.format(i=at)) for at, (bad, detail) in enumerate(SHARED_CASES)],
]
STEPS_CASES = [
    (verifier_pb2.ScoreStepsRequest(), "items: must not be empty"),
    (steps_request(*[{}] * 1025), "items: at most 1024 items per request, got 1025"),
    (steps_request(*[{}] * 342), "items: 1026 step prefixes to score, at most 1024 per request"),
    *[(steps_request(bad, at=at), detail.format(i=at)) for at, (bad, detail) in enumerate(SHARED_CASES)],
    (steps_request({"step_ends": [0]}), "items[0].step_ends[0]: 0 is outside 1..24"),
    (steps_request({"step_ends": [8, 25]}, at=1), "items[1].step_ends[1]: 25 is outside 1..24"),
    (steps_request({"step_ends": [-3]}), "items[0].step_ends[0]: -3 is outside 1..24"),
    (steps_request({"step_ends": [8, 8]}), "items[0].step_ends[1]: 8 does not come after 8"),
    (steps_request({"step_ends": [8, 17, 12]}), "items[0].step_ends[2]: 12 does not come after 17"),
]


async def expect(call, request, code: grpc.StatusCode, detail: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(request, timeout=10)
    assert info.value.code() == code
    assert info.value.details().startswith(detail), info.value.details()


async def test_every_bad_score_input_is_invalid_argument_and_the_next_request_succeeds(verifier) -> None:
    for request, detail in SCORE_CASES:
        await expect(verifier.stub.Score, request, grpc.StatusCode.INVALID_ARGUMENT, detail)
        good = await verifier.stub.Score(score_request({}), timeout=10)
        assert len(good.results) == 1 and 0 < good.results[0].probability < 1


async def test_every_bad_score_steps_input_is_invalid_argument_and_the_next_request_succeeds(verifier) -> None:
    for request, detail in STEPS_CASES:
        await expect(verifier.stub.ScoreSteps, request, grpc.StatusCode.INVALID_ARGUMENT, detail)
        good = await verifier.stub.ScoreSteps(steps_request({}), timeout=10)
        assert [s.end for s in good.results[0].steps] == [8, 17, 24]


async def test_the_longest_texts_that_fit_are_scored(verifier) -> None:
    edge = {"solution": "1" * 129}  # 61 + 1 + 129 + EOS = 192 tokens
    assert len((await verifier.stub.Score(score_request(edge), timeout=10)).results) == 1
    steps = await verifier.stub.ScoreSteps(steps_request(*[{}] * 341, {"step_ends": [24]}), timeout=30)
    assert sum(len(r.steps) for r in steps.results) == 1024


async def test_a_pinned_version_not_reached_is_failed_precondition(verifier) -> None:
    detail = "min_version: replica serves version 0, 3 was required"
    await expect(verifier.stub.Score, score_request({}, min_version=3), grpc.StatusCode.FAILED_PRECONDITION, detail)
    detail = "min_version: replica serves version 0, 1 was required"
    await expect(
        verifier.stub.ScoreSteps, steps_request({}, min_version=1), grpc.StatusCode.FAILED_PRECONDITION, detail
    )
    assert len((await verifier.stub.Score(score_request({}, min_version=0), timeout=10)).results) == 1


async def test_limits_follow_the_settings(start_server) -> None:
    verifier = await start_server(max_queue_size=4)
    await expect(verifier.stub.Score, score_request(*[{}] * 5), grpc.StatusCode.INVALID_ARGUMENT, "items: at most 4")
    detail = "items: 6 step prefixes to score, at most 4 per request"
    await expect(verifier.stub.ScoreSteps, steps_request({}, {}), grpc.StatusCode.INVALID_ARGUMENT, detail)
    assert len((await verifier.stub.Score(score_request(*[{}] * 4), timeout=10)).results) == 4
