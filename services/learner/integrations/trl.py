"""TRL ``GRPOTrainer`` adapters: a verifier reward function and tandem rollouts with ``env_mask``.

    trainer = GRPOTrainer(model, reward_funcs=[VerifierReward()], rollout_func=TandemRolloutFunc(), ...)

:class:`VerifierReward` scores each (problem, completion) with the verifier service (and/or checks the dataset's
answer column); :class:`TandemRolloutFunc` writes every completion in tandem with the weak-model service, the
policy segments sampled from the trainer's own model, and returns ``env_mask`` = 0 on the weak model's tokens so
TRL leaves them out of the loss. Settings come from ``LEGIBILITY_*`` variables (:class:`IntegrationSettings`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from services.learner.integrations.rewards import BlockingClients, RewardClient, ServiceClients
from services.learner.integrations.settings import IntegrationSettings, RewardMode
from services.learner.integrations.tandem_agent import RolloutSeeds
from services.learner.rl.policy import TransformersPolicy
from services.learner.rl.rollout import RolloutOptions, new_rollout, run_tandem


def _text(message: Any) -> str:
    """A plain string, or the last message's content of a conversational prompt/completion."""
    if isinstance(message, str):
        return message
    if isinstance(message, list) and message and isinstance(message[-1], dict):
        return str(message[-1].get("content", ""))
    raise ValueError(f"expected a string or a list of chat messages, got {type(message).__name__}")


class VerifierReward:
    """A TRL reward function: the verifier's score, correctness against ``label_key``, or their sum.

    The problem is the dataset's ``problem_key`` column when there is one, else the task's parse of the prompt (a
    conversational prompt's last user message; a chat-templated or plain prompt string). Extra numbers go to TRL's
    ``log_metric`` (mean verifier version, accuracy).
    """

    def __init__(
        self,
        mode: RewardMode | None = None,
        label_key: str = "answer",
        problem_key: str = "problem",
        settings: IntegrationSettings | None = None,
    ) -> None:
        self.client = RewardClient(settings)
        self.mode: RewardMode = mode or self.client.settings.reward
        self.label_key = label_key
        self.problem_key = problem_key
        self.__name__ = f"legibility_{self.mode.replace('+', '_')}"  # TRL's column name for this reward

    def _problem(self, prompt: Any) -> str:
        """The question of a prompt string (chat-templated or plain) or of a conversation's last user message."""
        if isinstance(prompt, str):
            return self.client.prompts.parse(prompt)[0]
        return self.client.prompts.task.parse_user_message(_text(prompt))[0]

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **kwargs: Any
    ) -> list[float]:
        problems = kwargs.get(self.problem_key) or [self._problem(p) for p in prompts]
        labels = kwargs.get(self.label_key)
        rewards = self.client.rewards(problems, [_text(c) for c in completions], labels, self.mode)
        if log_metric := kwargs.get("log_metric"):
            parts = [r.logs() for r in rewards]
            for key in parts[0] if parts else ():
                log_metric(f"legibility/{key}", sum(p[key] for p in parts) / len(parts))
        return [r.value for r in rewards]


class TandemRolloutFunc:
    """A TRL ``rollout_func``: one tandem completion per prompt it is given, weak tokens masked by ``env_mask``.

    Policy segments are sampled from the trainer's model with the learner's decoding loop (temperature and
    ``max_completion_length`` from the trainer's config); TRL's vLLM generation is not used for them.
    """

    def __init__(self, settings: IntegrationSettings | None = None) -> None:
        self.settings = settings or IntegrationSettings()
        self.seeds = RolloutSeeds(self.settings.seed)
        self._clients = BlockingClients(self.settings)
        self._policy: TransformersPolicy | None = None

    def _policy_of(self, trainer: Any) -> TransformersPolicy:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if self._policy is None or self._policy.model is not model:
            self._policy = TransformersPolicy(model, trainer.processing_class, torch.get_num_threads())
        return self._policy

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[list[Any]]]:
        policy = self._policy_of(trainer)
        texts = [p if isinstance(p, str) else _chat_prompt(p, trainer) for p in prompts]
        options = RolloutOptions(
            schedule=self.settings.schedule,
            max_new_tokens=int(trainer.max_completion_length),
            policy_temperature=float(trainer.temperature),
            weak_temperature=self.settings.weak_temperature,
        )
        window = policy.context_window
        rollouts = [new_rollout(policy.encode(t), options, window, self.seeds.next(t)) for t in texts]

        async def work(clients: ServiceClients) -> None:
            await run_tandem(rollouts, policy, clients.weak, options)

        self._clients.call(work)
        out: dict[str, list[list[Any]]] = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": []}
        for rollout in rollouts:
            # As the OpenRLHF agent: the tokenizer's EOS ends a finished completion (TRL's own ones end with it).
            ids, by_policy, logprobs = rollout.completion(policy.tokenizer.eos_token_id)
            out["prompt_ids"].append(list(rollout.prompt_ids))
            out["completion_ids"].append(ids)
            out["logprobs"].append(logprobs)
            out["env_mask"].append([int(flag) for flag in by_policy])
        return out


def _chat_prompt(messages: Any, trainer: Any) -> str:
    """A conversational prompt rendered with the trainer's chat template (generation prompt added)."""
    render: Callable[..., Any] = trainer.processing_class.apply_chat_template
    return str(render(messages, tokenize=False, add_generation_prompt=True))
