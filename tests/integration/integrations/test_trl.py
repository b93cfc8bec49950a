"""TRL 1.16 ``GRPOTrainer`` trains the bundled strong model on CPU with our reward function and tandem rollouts.

TRL calls ``VerifierReward`` with its own arguments (prompts, completions, dataset columns, ``log_metric``) and
``TandemRolloutFunc`` as its ``rollout_func``; the weak model's tokens must reach TRL's loss with mask 0, and
TRL's logged rewards must be the verifier's scores of the completions it trained on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from services.learner.integrations.trl import TandemRolloutFunc, VerifierReward
from services.tasks import toy
from tests.integration.integrations.conftest import MODELS, PROBLEMS, Services

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

GENERATIONS = 4


class RecordingRollouts(TandemRolloutFunc):
    """Our rollout_func, keeping what it returned."""

    outputs: list[dict[str, Any]]

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        output = super().__call__(prompts, trainer)
        self.outputs = [*getattr(self, "outputs", []), output]
        return output


class RecordingTrainer(GRPOTrainer):
    """TRL's trainer, keeping the loss mask inputs of every loss computation."""

    tool_masks: list[torch.Tensor]

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        self.tool_masks = [*getattr(self, "tool_masks", []), inputs["tool_mask"].clone()]
        return super()._compute_loss(model, inputs)


async def test_grpo_trainer_masks_weak_tokens_and_logs_verifier_rewards(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    settings = services.settings(seed=5)
    rollouts = RecordingRollouts(settings)
    reward = VerifierReward(settings=settings)
    dataset = Dataset.from_list(
        [{"prompt": toy.format_prompt(p.question), "answer": str(p.answer)} for p in PROBLEMS[:4]]
    )
    model = AutoModelForCausalLM.from_pretrained(MODELS / "strong")
    before = [p.detach().clone() for p in model.parameters()]
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=GENERATIONS,
        num_generations=GENERATIONS,
        max_completion_length=40,
        max_steps=1,
        learning_rate=1e-4,
        beta=0.0,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    trainer = RecordingTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(MODELS / "strong"),
        rollout_func=rollouts,
    )
    # TRL's training loop is blocking; the services answer from this test's event loop, so run it beside it.
    await asyncio.to_thread(trainer.train)

    (output,) = rollouts.outputs
    masks = output["env_mask"]
    assert len(masks) == GENERATIONS
    assert all(len(m) == len(ids) for m, ids in zip(masks, output["completion_ids"], strict=True))
    assert sum(m.count(0) for m in masks) > 0  # the weak model wrote some tokens
    assert sum(m.count(1) for m in masks) > 0

    # TRL's loss mask = completion mask × our env_mask: weak positions are 0 in what the loss sees. TRL shuffles
    # the rows of a generation batch and pads env_mask with 1 (the completion mask zeroes the padding).
    (tool_mask,) = trainer.tool_masks
    width = tool_mask.shape[1]
    assert sorted(map(tuple, tool_mask.tolist())) == sorted(tuple(m + [1] * (width - len(m))) for m in masks)

    logs = next(entry for entry in trainer.state.log_history if "completions/mean_length" in entry)
    # TRL counts completion length over mask-1 tokens only: the policy's.
    assert logs["completions/mean_length"] == pytest.approx(sum(sum(m) for m in masks) / len(masks))
    tokenizer = trainer.processing_class
    texts = tokenizer.batch_decode(output["completion_ids"], skip_special_tokens=True)
    problem = toy.problem_from_prompt(tokenizer.decode(output["prompt_ids"][0]))
    expected = await services.scores([(problem, t) for t in texts])
    assert logs[f"rewards/{reward.__name__}/mean"] == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    assert logs["legibility/verifier_version"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # it trained
