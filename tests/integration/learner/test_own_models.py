"""The learner on your own checkpoints and data: Llama-architecture policy and weak model, a GSM8K-format file.

The checkpoints are built here (random weights, a locally trained BPE tokenizer with a ChatML template): the run
cannot learn much, but every part — the task's problems, chat-templated prompts, the weak model's handoffs on a
subword tokenizer, checking, evaluation — runs on them, and a pair whose tokenizers differ is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from services.common.bundled_models import BUNDLED_VERIFIER
from services.common.genproto.legibility.v1 import learner_pb2
from services.verifier.app import start_verifier
from services.verifier.settings import VerifierSettings
from services.weak_model.app import start_weak_model
from services.weak_model.settings import WeakModelSettings
from tests.integration.learner.conftest import Dependencies, LearnerFactory, tiny_tandem, watch
from tests.support.running import QUICK

K = learner_pb2
GSM8K_SAMPLE = Path(__file__).resolve().parents[2] / "data" / "gsm8k_sample.jsonl"


async def _dependencies(weak_model: Path) -> Dependencies:
    weak = await start_weak_model(WeakModelSettings(**QUICK, model_path=weak_model, max_delay_ms=2.0, torch_threads=1))
    verifier = await start_verifier(
        VerifierSettings(**QUICK, model_path=BUNDLED_VERIFIER, http_enabled=False, torch_threads=1)
    )
    return Dependencies(weak, verifier)


@pytest.fixture
async def llama_weak(own_checkpoint: Callable[..., Path]) -> AsyncIterator[Dependencies]:
    deps = await _dependencies(own_checkpoint("llama", "causal"))
    yield deps
    await deps.stop()


@pytest.fixture
async def qwen2_weak(own_checkpoint: Callable[..., Path]) -> AsyncIterator[Dependencies]:
    deps = await _dependencies(own_checkpoint("qwen2", "causal"))
    yield deps
    await deps.stop()


def _gsm8k_run(policy: Path, steps: int = 2) -> learner_pb2.RunConfig:
    config = tiny_tandem(steps=steps, every_steps=2, policy_model=str(policy))
    config.task.CopyFrom(K.TaskConfig(name="gsm8k", data=str(GSM8K_SAMPLE)))
    config.optimizer.max_new_tokens = 24
    return config


@pytest.mark.slow
async def test_tandem_run_on_a_gsm8k_file_with_llama_policy_and_weak_model(
    start_learner_server: LearnerFactory, llama_weak: Dependencies, own_checkpoint: Callable[..., Path]
) -> None:
    learner = await start_learner_server(**llama_weak.targets)
    run = (await learner.stub.StartRun(K.StartRunRequest(config=_gsm8k_run(own_checkpoint("llama", "causal"))))).run
    events = await watch(learner.stub, run.run_id, deadline_s=300)
    final = (await learner.stub.GetRun(K.GetRunRequest(run_id=run.run_id))).run
    assert final.state == K.RUN_STATE_SUCCEEDED, final.error

    (task_line,) = [e.message for e in events if e.kind == K.RUN_EVENT_KIND_LOG and e.message.startswith("task ")]
    assert task_line.startswith("task gsm8k: ") and "chat template" in task_line
    train = [e for e in events if e.kind == K.RUN_EVENT_KIND_TRAIN_STEP]
    assert [e.step for e in train] == [1, 2]
    for event in train:
        # Both authors wrote: word handoffs at p_primary 0.5 on a subword tokenizer.
        assert 0.0 < event.metrics["train/senior_token_frac"] < 1.0
        assert event.metrics["train/response_tokens"] > 0
        assert 0.0 <= event.metrics["train/jargon_rate"] <= 1.0  # GSM8K's <<…>> annotations are its jargon
    evals = [e for e in events if e.kind == K.RUN_EVENT_KIND_EVALUATION]
    assert [e.step for e in evals] == [0, 2]
    for event in evals:
        assert 0.0 <= event.metrics["eval/solo_accuracy"] <= 1.0
        assert event.metrics["eval/legibility_ce"] > 0  # the weak model's cross-entropy on the policy's text


async def test_a_policy_whose_tokenizer_differs_from_the_weak_models_is_refused(
    start_learner_server: LearnerFactory, qwen2_weak: Dependencies, own_checkpoint: Callable[..., Path]
) -> None:
    learner = await start_learner_server(**qwen2_weak.targets)
    policy = own_checkpoint("llama", "causal")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await learner.stub.StartRun(K.StartRunRequest(config=_gsm8k_run(policy)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details()
    assert details.startswith("config.policy_model:")
    assert str(policy) in details and str(own_checkpoint("qwen2", "causal")) in details
    assert (await learner.stub.ListRuns(K.ListRunsRequest())).runs == []
    # The same weak model takes a policy with its own tokenizer.
    same = _gsm8k_run(own_checkpoint("qwen2", "causal"), steps=1)
    started = (await learner.stub.StartRun(K.StartRunRequest(config=same))).run
    await learner.stub.StopRun(K.StopRunRequest(run_id=started.run_id))


async def test_bad_task_settings_name_their_field(
    start_learner_server: LearnerFactory, llama_weak: Dependencies, tmp_path: Path
) -> None:
    learner = await start_learner_server(**llama_weak.targets)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "How many?", "answer": "#### 3"}\n{"question": "no answer"}\n')
    cases = [
        ("config.task.name", K.TaskConfig(name="nope")),
        ("config.task.data", K.TaskConfig(name="gsm8k")),
        ("config.task.data", K.TaskConfig(name="gsm8k", data=str(tmp_path / "missing.jsonl"))),
        ("config.task.data", K.TaskConfig(name="toy", data=str(GSM8K_SAMPLE))),
    ]
    for field, task in cases:
        config = tiny_tandem()
        config.task.CopyFrom(task)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await learner.stub.StartRun(K.StartRunRequest(config=config))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert raised.value.details().startswith(f"{field}:"), raised.value.details()
    config = tiny_tandem()
    config.task.CopyFrom(K.TaskConfig(name="gsm8k", data=str(broken)))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await learner.stub.StartRun(K.StartRunRequest(config=config))
    assert f"{broken}:2" in raised.value.details()
