"""Bad RunConfigs get INVALID_ARGUMENT naming the field; admission past max_concurrent_runs gets RESOURCE_EXHAUSTED."""

from __future__ import annotations

import grpc
import pytest

from services.common.genproto.legibility.v1 import learner_pb2
from tests.integration.learner.conftest import LearnerFactory, RunningLearner, tiny_tandem

K = learner_pb2


def _bad_configs() -> list[tuple[str, K.RunConfig]]:
    no_mode = tiny_tandem()
    no_mode.mode = K.RUN_MODE_UNSPECIFIED
    group_of_one = tiny_tandem()
    group_of_one.optimizer.group_size = 1
    no_steps = tiny_tandem(steps=0)
    no_eval_problems = tiny_tandem()
    no_eval_problems.evaluation.num_problems = 0
    negative_lr = tiny_tandem()
    negative_lr.optimizer.learning_rate = -1.0
    missing_policy = tiny_tandem(policy_model="/nonexistent/policy")

    def with_value(section: str, name: str, value: float) -> K.RunConfig:
        config = tiny_tandem()
        setattr(getattr(config, section), name, value)
        return config

    inf, nan = float("inf"), float("nan")
    # Each of these was accepted, then failed the run or was silently ignored (or, for the enum, gave INTERNAL).
    non_finite = [
        ("config.optimizer.learning_rate", with_value("optimizer", "learning_rate", inf)),
        ("config.optimizer.learning_rate", with_value("optimizer", "learning_rate", nan)),
        ("config.optimizer.kl_coef", with_value("optimizer", "kl_coef", nan)),
        ("config.optimizer.kl_coef", with_value("optimizer", "kl_coef", inf)),
        ("config.optimizer.clip_eps", with_value("optimizer", "clip_eps", inf)),
        ("config.optimizer.temperature", with_value("optimizer", "temperature", nan)),
        ("config.game.centering_lambda", with_value("game", "centering_lambda", nan)),
        ("config.game.reward", with_value("game", "reward", 99)),
        ("config.game.verifier_loss", with_value("game", "verifier_loss", 99)),
        ("config.handoff", with_value("handoff", "strategy", 99)),
        ("config.handoff", with_value("handoff", "p_primary", nan)),
        ("config.handoff", with_value("handoff", "gap_rule", 99)),
        ("config.optimizer.ppo_epochs", with_value("optimizer", "ppo_epochs", 0)),
        ("config.optimizer.mini_batches", with_value("optimizer", "mini_batches", -2)),
        ("config.optimizer.ppo_epochs", with_value("optimizer", "ppo_epochs", 1_000)),
        ("config.game.src_baseline", with_value("game", "src_baseline", 99)),
        ("config.game.attack_steps", with_value("game", "attack_steps", -1)),
        ("config.game.attack_fool_rate", with_value("game", "attack_fool_rate", nan)),
        ("config.game.attack_fool_rate", with_value("game", "attack_fool_rate", 0.0)),
        ("config.game.learning_rate", with_value("game", "learning_rate", 0.0)),
        ("config.game.kl_coef", with_value("game", "kl_coef", -0.1)),
        ("config.game.attack_learning_rate", with_value("game", "attack_learning_rate", nan)),
    ]
    return [
        *non_finite,
        ("config.mode", no_mode),
        ("config.optimizer.group_size", group_of_one),
        ("config.steps", no_steps),
        ("config.evaluation.num_problems", no_eval_problems),
        ("config.optimizer.learning_rate", negative_lr),
        ("config.policy_model", missing_policy),
    ]


async def test_bad_configs_name_their_field_and_the_server_keeps_serving(learner: RunningLearner) -> None:
    for field, config in _bad_configs():
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await learner.stub.StartRun(K.StartRunRequest(config=config))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert raised.value.details().startswith(f"{field}:"), raised.value.details()
    assert (await learner.stub.ListRuns(K.ListRunsRequest())).runs == []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await learner.stub.WatchRun(K.WatchRunRequest(run_id="run-x", after_sequence=-1)).read()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after_sequence" in raised.value.details()

    good = await learner.stub.StartRun(K.StartRunRequest(config=tiny_tandem(steps=1)))
    assert good.run.state in (K.RUN_STATE_PENDING, K.RUN_STATE_RUNNING)
    await learner.stub.StopRun(K.StopRunRequest(run_id=good.run.run_id))


async def test_runs_past_max_concurrent_runs_are_refused(start_learner_server: LearnerFactory, runs_dir) -> None:
    # No weak-model service anywhere: the learner still starts and serves; its runs fail, clearly.
    learner = await start_learner_server(weak_model_target="127.0.0.1:9", verifier_target="127.0.0.1:9")
    first = await learner.stub.StartRun(K.StartRunRequest(config=tiny_tandem()))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await learner.stub.StartRun(K.StartRunRequest(config=tiny_tandem()))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_concurrent_runs" in raised.value.details()

    events = [r.event async for r in learner.stub.WatchRun(K.WatchRunRequest(run_id=first.run.run_id), timeout=60)]
    assert events[-1].state == K.RUN_STATE_FAILED
    failed = (await learner.stub.GetRun(K.GetRunRequest(run_id=first.run.run_id))).run
    assert failed.state == K.RUN_STATE_FAILED
    assert "UNAVAILABLE" in failed.error and events[-1].message == f"failed: {failed.error}"
    # The slot is free again once the run has ended.
    second = await learner.stub.StartRun(K.StartRunRequest(config=tiny_tandem()))
    assert second.run.run_id != first.run.run_id
