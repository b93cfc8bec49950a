"""Tandem rollouts inside an RL stack's rollout worker: OpenRLHF's AgentExecutor contract, without OpenRLHF.

:class:`TandemAgent` has the ``execute`` signature and return dict of ``openrlhf.utils.agent.AgentExecutorBase``;
``openrlhf_agent.py`` (the file ``--train.agent_func_path`` names) only adds the base class. Each call runs one
tandem rollout with the learner's own loop (:func:`~services.learner.rl.rollout.run_tandem`): policy segments from the
stack's ``llm_engine``, weak segments from the weak-model service, handoffs from the same seeded schedule. Only
the policy's spans are returned in ``action_ranges``, so OpenRLHF's action mask leaves the weak tokens out of the
loss; an EOS is appended when the text ended, inside the action span when the policy wrote it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from typing import Any

from services.decoding.tokens import tokenizer_sha256
from services.decoding.vllm_segments import BoundaryVocabulary
from services.learner.clients.vocabulary import check_same_vocabulary
from services.learner.integrations.llm_engine import LlmEngineWriter, sampling_extras
from services.learner.integrations.rewards import ServiceClients, needs_verifier, score_rewards
from services.learner.integrations.settings import IntegrationSettings
from services.learner.rl.authorship import true_spans
from services.learner.rl.rollout import Rollout, RolloutOptions, derive_seed, new_rollout, run_tandem
from services.tasks.prompts import PromptFormat

log = logging.getLogger(__name__)


def rollout_seed(base_seed: int, prompt: str, occurrence: int) -> int:
    """The seed of the ``occurrence``-th rollout (0-based) of ``prompt`` in one process."""
    return derive_seed(base_seed, prompt, occurrence)


def response_room(prompt_tokens: int, max_tokens: int | None, max_length: int) -> tuple[int, int]:
    """(most response tokens, most prompt tokens kept) for a prompt within OpenRLHF's ``max_length``.

    Like OpenRLHF: no ``max_tokens`` means whatever room is left, and a prompt too long to leave ``max_tokens`` is
    cut on the left. One position stays free for the boundary lookahead.
    """
    max_new_tokens = max_tokens or max(1, max_length - prompt_tokens - 1)
    return max_new_tokens, max_length - min(max_new_tokens, max_length - 2) - 1


class RolloutSeeds:
    """Seeds per rollout from a base seed (fresh entropy when None), the prompt, and how often it was seen."""

    def __init__(self, seed: int | None) -> None:
        self.base = seed if seed is not None else random.SystemRandom().getrandbits(62)
        self._occurrences: collections.Counter[str] = collections.Counter()

    def next(self, prompt: str) -> int:
        occurrence = self._occurrences[prompt]
        self._occurrences[prompt] += 1
        return rollout_seed(self.base, prompt, occurrence)


class TandemAgent:
    """Runs one tandem rollout per ``execute`` call and rewards it (correctness and/or the verifier)."""

    def __init__(self, settings: IntegrationSettings | None = None) -> None:
        self.settings = settings or IntegrationSettings()
        self.seeds = RolloutSeeds(self.settings.seed)
        self._clients = ServiceClients(self.settings)
        self._prepared: asyncio.Future[tuple[BoundaryVocabulary, PromptFormat]] | None = None

    async def _prepare(self, hf_tokenizer: Any) -> tuple[BoundaryVocabulary, PromptFormat]:
        """Once per rollout worker (one tokenizer), however many rollouts start at once; a failure is retried by
        the next call.

        OpenRLHF starts every sample's ``execute`` at once: each one asking the weak model and hashing and decoding
        the vocabulary itself (~3.5 us per token here, ~0.5 s for a 150k-token vocabulary, on the event loop) stalled
        the first batch for the batch size times that.
        """
        prepared = self._prepared
        if prepared is None or (prepared.done() and (prepared.cancelled() or prepared.exception() is not None)):
            prepared = self._prepared = asyncio.ensure_future(self._read_vocabulary(hf_tokenizer))
        return await asyncio.shield(prepared)  # one caller's cancellation does not cancel the others' preparation

    async def _read_vocabulary(self, hf_tokenizer: Any) -> tuple[BoundaryVocabulary, PromptFormat]:
        """Check the weak model shares the vocabulary, then decode it for the boundary rules.

        On the event loop, once: the stack may use the same tokenizer from the loop meanwhile, and a fast
        tokenizer entered from two threads at once can fail ("Already borrowed").
        """
        weak_info = await self._clients.weak.model_info()
        policy = getattr(hf_tokenizer, "name_or_path", "") or "the policy"
        check_same_vocabulary(policy, tokenizer_sha256(hf_tokenizer), weak_info, "llm_engine tokenizer")
        return BoundaryVocabulary.from_tokenizer(hf_tokenizer), self.settings.prompt_format(hf_tokenizer)

    async def execute(
        self,
        prompt: str,
        label: Any,
        sampling_params: Any,
        max_length: int,
        hf_tokenizer: Any,
        llm_engine: Any,
        images: Any = None,
    ) -> dict[str, Any]:
        if images:
            raise ValueError("tandem rollouts are text-only: the weak model cannot continue an image prompt")
        # The seed before any await: OpenRLHF runs a prompt's samples concurrently, and the k-th call must get the
        # k-th occurrence's seed whichever call resumes first.
        seed = self.seeds.next(prompt)
        vocab, prompts = await self._prepare(hf_tokenizer)
        prompt_ids = list(hf_tokenizer(text=prompt, add_special_tokens=False)["input_ids"])
        max_new_tokens, keep = response_room(len(prompt_ids), sampling_params.max_tokens, max_length)
        if len(prompt_ids) > keep:
            log.warning("prompt of %d tokens truncated to its last %d", len(prompt_ids), keep)
            prompt_ids = prompt_ids[-keep:]
        options = RolloutOptions(
            schedule=self.settings.schedule,
            max_new_tokens=max_new_tokens,
            policy_temperature=float(sampling_params.temperature),
            weak_temperature=self.settings.weak_temperature,
        )
        rollout = new_rollout(prompt_ids, options, max_length, seed)
        policy = LlmEngineWriter(
            llm_engine,
            vocab,
            max_length,
            top_p=float(getattr(sampling_params, "top_p", 1.0)),
            extras=sampling_extras(sampling_params),
        )
        await run_tandem([rollout], policy, self._clients.weak, options)
        return await self._result(rollout, prompt, label, sampling_params, hf_tokenizer, prompts)

    async def _result(
        self, rollout: Rollout, prompt: str, label: Any, sampling_params: Any, hf_tokenizer: Any, prompts: PromptFormat
    ) -> dict[str, Any]:
        authorship, start = rollout.authorship, len(rollout.prompt_ids)
        response, by_policy, response_log_probs = rollout.completion(hf_tokenizer.eos_token_id)
        solution = hf_tokenizer.decode(authorship.token_ids, skip_special_tokens=True)
        mode = self.settings.agent_reward
        verifier = self._clients.verifier if needs_verifier(mode) else None
        labels = None if label is None else [label]
        problem, _ = prompts.parse(prompt)
        (reward,) = await score_rewards(
            verifier,
            mode,
            prompts.task,
            [problem],
            [solution],
            labels,
            self.settings.verifier_min_version,
            self.settings.reward_deadline_s,
        )
        extra_logs = {
            "senior_token_frac": authorship.senior_token_frac,
            "num_handoffs": float(authorship.num_handoffs),
            "weak_tokens": float(len(authorship) - sum(b - a for a, b in authorship.action_ranges)),
            **reward.logs(),
        }
        return {
            "prompt": prompt,
            "label": label,
            "images": None,
            "mm_train_inputs": None,
            "reward": reward.value,
            "scores": reward.filter_score,
            "observation_tokens": [*rollout.prompt_ids, *response],
            "action_ranges": true_spans(by_policy, offset=start),
            "rollout_log_probs": [0.0] * start + response_log_probs if sampling_params.logprobs is not None else None,
            "truncated": not rollout.ended_by_eos,
            "extra_logs": extra_logs,
        }
