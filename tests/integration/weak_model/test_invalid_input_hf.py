"""Every bad input gets INVALID_ARGUMENT naming the item and field; the server keeps serving."""

from __future__ import annotations

import grpc
import pytest

from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2

PROMPT = "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?\n"
TextOrTokens = common_pb2.TextOrTokens
OK = {"prefix": common_pb2.TextOrTokens(text=PROMPT), "max_new_tokens": 4}


def ids(*values: int) -> common_pb2.TextOrTokens:
    return common_pb2.TextOrTokens(token_ids=common_pb2.TokenIds(ids=values))


def text(value: str) -> common_pb2.TextOrTokens:
    return common_pb2.TextOrTokens(text=value)


def continue_request(*bad: dict[str, object], at: int = 0) -> weak_model_pb2.ContinueRequest:
    """Good items with the bad ones placed from index ``at``."""
    items = [weak_model_pb2.ContinueItem(**OK) for _ in range(at)]  # type: ignore[arg-type]
    items += [weak_model_pb2.ContinueItem(**(OK | fields)) for fields in bad]  # type: ignore[arg-type]
    return weak_model_pb2.ContinueRequest(items=items)


def logprobs_request(context: TextOrTokens, value: TextOrTokens) -> weak_model_pb2.LogProbsRequest:
    return weak_model_pb2.LogProbsRequest(items=[weak_model_pb2.LogProbsItem(context=context, text=value)])


CONTINUE_CASES = [
    (weak_model_pb2.ContinueRequest(), "items: must not be empty"),
    (continue_request({"prefix": None}), "items[0].prefix: must not be empty"),
    (continue_request({"prefix": text("")}, at=1), "items[1].prefix: must not be empty"),
    (continue_request({"prefix": ids()}), "items[0].prefix: must not be empty"),
    (continue_request({"max_new_tokens": 0}, at=2), "items[2].max_new_tokens: must be between 1 and 256"),
    (continue_request({"max_new_tokens": -5}), "items[0].max_new_tokens: must be between 1 and 256"),
    (continue_request({"max_new_tokens": 257}), "items[0].max_new_tokens: must be between 1 and 256"),
    (continue_request({"temperature": -0.1}), "items[0].temperature: must be a finite number >= 0"),
    (continue_request({"temperature": float("nan")}), "items[0].temperature: must be a finite number >= 0"),
    (continue_request({"temperature": float("inf")}), "items[0].temperature: must be a finite number >= 0"),
    (continue_request({"top_p": 0.0}), "items[0].top_p: must be in (0, 1]"),
    (continue_request({"top_p": 1.5}), "items[0].top_p: must be in (0, 1]"),
    (continue_request({"boundary": 9}, at=1), "items[1].boundary: unknown value 9"),
    (continue_request({"stop": ["\n", ""]}), "items[0].stop[1]: must not be empty"),
    (continue_request({"prefix": ids(3, 98)}), "items[0].prefix.token_ids[1]: 98 is outside the vocabulary (0..97)"),
    (continue_request({"prefix": ids(-1)}), "items[0].prefix.token_ids[0]: -1 is outside the vocabulary"),
    (continue_request({"prefix": text("é")}), "items[0].prefix.text: has no tokens"),
    (continue_request({"prefix": text("x" * 400)}), "items[0].prefix: 400 tokens leave no room"),
    (continue_request({"prefix": ids(*[3] * 192)}), "items[0].prefix: 192 tokens leave no room"),
    # Longer than 192 tokens of the longest piece (13 characters): refused before tokenising, 15 MB included.
    (continue_request({"prefix": text("x" * 2497)}), "items[0].prefix.text: 2497 characters cannot fit"),
    (continue_request({"prefix": text("x" * 15_000_000)}), "items[0].prefix.text: 15000000 characters cannot fit"),
    (continue_request(*[{}] * 257), "items: at most 256 items per request, got 257"),
]

LOGPROBS_CASES = [
    (weak_model_pb2.LogProbsRequest(), "items: must not be empty"),
    (logprobs_request(text(""), text("")), "items[0].text: must not be empty"),
    (logprobs_request(text(PROMPT), ids()), "items[0].text: must not be empty"),
    (logprobs_request(ids(500), text("4")), "items[0].context.token_ids[0]: 500 is outside the vocabulary"),
    (logprobs_request(text(PROMPT), ids(5, 2**31 - 1)), "items[0].text.token_ids[1]: 2147483647 is outside"),
    (logprobs_request(text(PROMPT * 3), text("4*7=28.")), "items[0].text: context and text are 193 tokens"),
    (logprobs_request(text(""), text("x" * 192)), "items[0].text: context and text are 193 tokens"),
    (logprobs_request(text("x" * 3000), text("4")), "items[0].context.text: 3000 characters cannot fit"),
]


async def expect_invalid(call, request, detail: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(detail), info.value.details()


async def test_every_bad_continue_input_is_invalid_argument_and_the_next_request_succeeds(weak) -> None:
    for request, detail in CONTINUE_CASES:
        await expect_invalid(weak.stub.Continue, request, detail)
        good = await weak.stub.Continue(continue_request({}), timeout=10)
        assert len(good.results) == 1 and len(good.results[0].token_ids) == 4


async def test_every_bad_logprobs_input_is_invalid_argument_and_the_next_request_succeeds(weak) -> None:
    for request, detail in LOGPROBS_CASES:
        await expect_invalid(weak.stub.LogProbs, request, detail)
        good = await weak.stub.LogProbs(logprobs_request(text(PROMPT), text("4*7=28.")), timeout=10)
        assert len(good.results[0].logprobs) == 7


async def test_limits_follow_the_settings(start_server) -> None:
    weak = await start_server(max_new_tokens_cap=16, max_queue_size=4)
    too_many = continue_request({"max_new_tokens": 17})
    await expect_invalid(weak.stub.Continue, too_many, "items[0].max_new_tokens: must be between 1 and 16")
    await expect_invalid(weak.stub.Continue, continue_request(*[{}] * 5), "items: at most 4 items per request, got 5")
    edge = await weak.stub.Continue(continue_request({"max_new_tokens": 16}, at=3), timeout=10)
    assert len(edge.results) == 4
