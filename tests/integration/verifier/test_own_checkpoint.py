"""Your own verifier: a Qwen2 sequence classifier with a ChatML template served over gRPC and ``/get_reward``
(driven by OpenRLHF's own HTTP client), scores equal to exact one-row forwards, the tokenizer's hash in ModelInfo,
correctness rewards from labels, bad input naming ``query[i]`` / ``prompts[i]`` / ``labels[i]``, a GSM8K file, and
``legibility serve verifier --model-path`` with the task flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openrlhf.utils.agent import SingleTurnAgentExecutor
from transformers import AutoTokenizer

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import verifier_pb2, verifier_pb2_grpc
from services.decoding.tokens import tokenizer_sha256
from services.tasks.gsm8k import Gsm8kTask
from services.tasks.styles import render
from services.tasks.toy import generate
from services.tasks.toy_task import ToyTask
from tests.integration.verifier.conftest import RunningVerifier, VerifierFactory, exact_scores
from tests.support.cli_server import cli_server

GSM8K = Path(__file__).resolve().parents[2] / "data" / "gsm8k_sample.jsonl"
PROBLEMS = generate("test", 4, seed=7)
PAIRS = [(p.question, render(p, style)) for p in PROBLEMS for style in ("plain", "jargon")]


@pytest.fixture
def qwen2(own_checkpoint) -> Path:
    return own_checkpoint("qwen2", "classifier")


def chat_prompt(path: Path, question: str) -> str:
    """The checkpoint's own chat template with the generation prompt: what an RL stack conditions its policy on."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    messages = [{"role": "user", "content": question}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


async def grpc_scores(verifier: RunningVerifier, pairs: list[tuple[str, str]]) -> tuple[list[float], Any]:
    items = [verifier_pb2.ScoreItem(problem=q, solution=s) for q, s in pairs]
    response = await verifier.stub.Score(verifier_pb2.ScoreRequest(items=items), timeout=30)
    return [r.score for r in response.results], response.model


async def post(verifier: RunningVerifier, body: Any) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{verifier.app.http_port}/get_reward"
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url, json=body) as response:
        return response.status, await response.json()


def chatml_body(path: Path, pairs: list[tuple[str, str]], labels: list[Any] | None = None) -> dict[str, Any]:
    prompts = [chat_prompt(path, q) for q, _ in pairs]
    body: dict[str, Any] = {"query": [p + s + "<|im_end|>" for p, (_, s) in zip(prompts, pairs, strict=True)]}
    body["prompts"] = prompts
    if labels is not None:
        body["labels"] = labels
    return body


async def test_score_and_score_steps_equal_exact_forwards_with_the_tokenizer_hash(start_server, qwen2) -> None:
    verifier = await start_server(model_path=qwen2)
    scores, info = await grpc_scores(verifier, PAIRS)
    assert scores == pytest.approx(exact_scores(qwen2, PAIRS), abs=1e-5)
    assert info.tokenizer_sha256 == tokenizer_sha256(AutoTokenizer.from_pretrained(qwen2))
    reply = await verifier.stub.GetModelInfo(verifier_pb2.VerifierServiceGetModelInfoRequest(), timeout=5)
    assert reply.model.tokenizer_sha256 == info.tokenizer_sha256 and len(info.tokenizer_sha256) == 64

    problem, solution = PAIRS[0]
    items = [verifier_pb2.ScoreStepsItem(problem=problem, solution=solution)]
    steps = (await verifier.stub.ScoreSteps(verifier_pb2.ScoreStepsRequest(items=items), timeout=30)).results[0].steps
    ends = [step.end for step in ToyTask().split_steps(solution)]
    assert [s.end for s in steps] == ends and len(ends) == solution.count("\n") + 1
    prefixes = [(problem, solution[:end]) for end in ends]
    assert [s.score for s in steps] == pytest.approx(exact_scores(qwen2, prefixes), abs=1e-5)


async def test_openrlhf_client_with_chatml_queries_gets_the_grpc_scores(start_server, qwen2) -> None:
    verifier = await start_server(model_path=qwen2)
    body = chatml_body(qwen2, PAIRS, [str(p.answer) for p in PROBLEMS for _ in range(2)])
    assert body["prompts"][0].endswith("<|im_start|>assistant\n")
    executor = SingleTurnAgentExecutor(remote_rm_url=f"http://127.0.0.1:{verifier.app.http_port}/get_reward")
    (reply,) = await executor._fetch_rewards_via_http(body["query"], body["prompts"], body["labels"])
    expected, info = await grpc_scores(verifier, PAIRS)
    assert reply["rewards"] == pytest.approx(expected, abs=1e-5)
    assert all(0 < s < 1 for s in reply["scores"])
    assert reply["extra_logs"] == {"verifier_version": [float(info.version)] * len(PAIRS)}
    # The serving tokenizer's PAD after the EOS (as a padded batch decodes) is stripped too.
    padded = body | {"query": [q + "<|endoftext|><|endoftext|>" for q in body["query"]]}
    status, again = await post(verifier, padded)
    assert status == 200 and again["rewards"] == pytest.approx(expected, abs=1e-5)


async def test_bad_queries_and_prompts_are_400_naming_the_item(start_server, qwen2) -> None:
    verifier = await start_server(model_path=qwen2)
    good = chatml_body(qwen2, PAIRS[:2])
    not_prefixed = good | {"query": [good["query"][0], "<|im_start|>user\nsomething else<|im_end|>"]}
    plain = f"{PAIRS[1][0]}\n"  # the toy task's plain prompt: not this tokenizer's chat template, no user turn
    unparsable = {"query": [good["query"][0], plain + PAIRS[1][1]], "prompts": [good["prompts"][0], plain]}
    empty_user_turn = chat_prompt(qwen2, "")
    no_question = {"query": [empty_user_turn + "2<|im_end|>"], "prompts": [empty_user_turn]}
    for body, field in [(not_prefixed, "query[1]"), (unparsable, "prompts[1]"), (no_question, "prompts[0]")]:
        status, reply = await post(verifier, body)
        assert status == 400 and reply["error"].startswith(f"{field}: "), reply
    status, reply = await post(verifier, good)
    assert status == 200 and len(reply["rewards"]) == 2


async def test_correctness_rewards_from_labels(start_server, qwen2) -> None:
    verifier = await start_server(model_path=qwen2, http_reward="correctness")
    problem = PROBLEMS[0]
    pairs = [(problem.question, render(problem, "plain"))] * 4
    labels: list[Any] = [str(problem.answer), str(problem.answer + 1), f"#### {problem.answer}", problem.answer]
    status, reply = await post(verifier, chatml_body(qwen2, pairs, labels))
    assert status == 200, reply
    assert reply["rewards"] == [1.0, 0.0, 1.0, 1.0] and reply["scores"] == reply["rewards"]
    assert reply["extra_logs"]["correct"] == [1.0, 0.0, 1.0, 1.0]
    bad: list[tuple[list[Any] | None, str]] = [
        (None, "labels"),
        (labels[:3], "labels[3]"),
        ([*labels[:2], "  ", labels[3]], "labels[2]"),
        ([*labels[:3], None], "labels[3]"),
    ]
    for bad_labels, field in bad:
        status, reply = await post(verifier, chatml_body(qwen2, pairs, bad_labels))
        assert status == 400 and reply["error"].startswith(f"{field}: "), (field, reply)


async def test_correctness_plus_verifier_is_their_sum(start_server, qwen2) -> None:
    verifier = await start_server(model_path=qwen2, http_reward="correctness+verifier")
    labels = [str(p.answer) for p in PROBLEMS for _ in range(2)]
    labels[1] = "0"  # a wrong gold answer: that item is incorrect
    status, reply = await post(verifier, chatml_body(qwen2, PAIRS, labels))
    assert status == 200, reply
    scores, _ = await grpc_scores(verifier, PAIRS)
    correct = [0.0 if i == 1 else 1.0 for i in range(len(PAIRS))]
    assert reply["extra_logs"]["correct"] == correct
    assert reply["extra_logs"]["verifier_score"] == pytest.approx(scores, abs=1e-5)
    assert reply["rewards"] == pytest.approx([c + s for c, s in zip(correct, scores, strict=True)], abs=1e-5)
    assert all(0 <= s <= 1 for s in reply["scores"])


async def test_gsm8k_file_with_plain_prompts(start_server: VerifierFactory, qwen2) -> None:
    verifier = await start_server(
        model_path=qwen2, task="gsm8k", data=GSM8K, chat_template="none", http_reward="correctness+verifier"
    )
    problems = Gsm8kTask(GSM8K).problems("test")[:2]
    pairs = [(p.question, p.solution) for p in problems]
    scores, _ = await grpc_scores(verifier, pairs)
    # chat_template none: the verifier reads "question\nsolution" and the EOS, as the toy verifier does.
    assert scores == pytest.approx(exact_scores(qwen2, pairs, chat_template="none"), abs=1e-5)
    body = {
        "query": [f"{q}\n{s}<|im_end|>" for q, s in pairs],
        "prompts": [f"{q}\n" for q, _ in pairs],
        "labels": [problems[0].solution, "#### 1"],  # a label stating its final answer is read by the task
    }
    status, reply = await post(verifier, body)
    assert status == 200, reply
    assert reply["rewards"] == pytest.approx([scores[0] + 1.0, scores[1]], abs=1e-5)


@pytest.mark.slow
async def test_cli_serves_a_qwen2_classifier_with_task_flags(qwen2) -> None:
    flags = ["--model-path", str(qwen2), "--http-port", "0"]
    flags += ["--task", "gsm8k", "--data", str(GSM8K), "--chat-template", "none"]
    async with cli_server("verifier", *flags) as server:
        channel = open_channel(server.target)
        stub = verifier_pb2_grpc.VerifierServiceStub(channel)
        pairs = [(p.question, p.solution) for p in Gsm8kTask(GSM8K).problems("test")[:2]]
        items = [verifier_pb2.ScoreItem(problem=q, solution=s) for q, s in pairs]
        response = await stub.Score(verifier_pb2.ScoreRequest(items=items), timeout=30)
        await channel.close()
        assert [r.score for r in response.results] == pytest.approx(
            exact_scores(qwen2, pairs, chat_template="none"), abs=1e-5
        )
        assert response.model.tokenizer_sha256 == tokenizer_sha256(AutoTokenizer.from_pretrained(qwen2))
        assert await server.terminate() == 0


def test_the_no_known_token_check_tokenises_only_texts_without_a_token_character(qwen2: Path) -> None:
    """Byte-level BPE gives every text a token and so does a one-character token; the bundled tokenizer drops 'é'."""
    from services.common.bundled_models import BUNDLED_VERIFIER
    from services.verifier.model import load_verifier

    own, bundled = load_verifier(qwen2), load_verifier(BUNDLED_VERIFIER)
    assert own._lossless and not bundled._lossless
    assert (own.has_tokens("ééé∑"), own.has_tokens("")) == (True, False)
    assert (bundled.has_tokens("ééé∑"), bundled.has_tokens("ab"), bundled.has_tokens("éa")) == (False, True, True)
    encoded: list[str] = []
    bundled._tokenizer.encode = lambda text, **kwargs: encoded.append(text) or []  # type: ignore[method-assign]
    assert (bundled.has_tokens("ab"), bundled.has_tokens("éé")) == (True, False)
    assert encoded == ["éé"]  # the text with a token character was answered without tokenising
