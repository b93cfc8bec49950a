"""The sneaky-only attack against the real verifier service: its budget, its bar, and a prover left untouched."""

from __future__ import annotations

from pathlib import Path

import torch

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import verifier_pb2_grpc
from services.learner.clients.verifier import VerifierClient
from services.learner.game.attack import AttackResult, sneaky_attack
from services.learner.rl.policy import TransformersPolicy
from services.learner.rl.trainer import OptimizerOptions
from services.tasks.prompts import PromptFormat
from services.tasks.toy_task import ToyTask
from tests.integration.learner.conftest import Dependencies
from tests.integration.learner.test_policy_step import NoWeakModel

MODELS = Path(__file__).resolve().parents[3] / "models"


async def test_attack_spends_its_budget_and_leaves_the_prover_alone(dependencies: Dependencies) -> None:
    prover = TransformersPolicy.load(MODELS / "strong", torch_threads=1)
    before = {k: v.clone() for k, v in prover.model.state_dict().items()}
    channel = open_channel(dependencies.verifier.server.address)
    try:
        verifier = VerifierClient(verifier_pb2_grpc.VerifierServiceStub(channel))
        optimizer = OptimizerOptions(group_size=4, problems_per_step=2, max_new_tokens=100, learning_rate=1e-4)
        problems = ToyTask().problems("train", 8, 2)
        prompts = PromptFormat(ToyTask(), prover.tokenizer)
        # A rate of 1.0 is out of reach in 2 steps here: every look is recorded, the count is censored.
        result = await sneaky_attack(prover, NoWeakModel(), verifier, prompts, problems, optimizer, 0, 5, 2, 1.0)
        # A rate of 0 is met by the untrained copy at once.
        at_once = await sneaky_attack(prover, NoWeakModel(), verifier, prompts, problems, optimizer, 0, 5, 2, 0.0)
    finally:
        await channel.close()
    assert result.steps_to_exploit is None and len(result.fool_rates) == 3
    assert all(0.0 <= rate < 1.0 for rate in result.fool_rates)
    assert result.bar != 0.0  # the bundled prover solves the toy problems: a real helpful-correct mean
    assert at_once.steps_to_exploit == 0 and len(at_once.fool_rates) == 1
    assert all(torch.equal(before[k], v) for k, v in prover.model.state_dict().items())


def test_metrics_say_when_the_count_is_censored() -> None:
    assert AttackResult(None, [0.1, 0.2], 1.5).metrics(4)["attack_steps_to_exploit"] == 5.0
    assert AttackResult(None, [0.1, 0.2], 1.5).metrics(4)["attack_exploited"] == 0.0
    exploited = AttackResult(2, [0.1, 0.3, 0.6], 1.5).metrics(4)
    assert (exploited["attack_steps_to_exploit"], exploited["attack_exploited"]) == (2.0, 1.0)
    assert exploited["attack_last_fool_rate"] == 0.6
