"""The OpenRLHF agent path of ``legibility bench tandem``: rollouts as OpenRLHF's rollout actors run them.

OpenRLHF's ``RolloutRayActor.generate_responses`` calls the AgentExecutor's ``execute`` once per sample, all samples
concurrently, with itself as ``llm_engine``; its ``generate(prompt_token_ids, sampling_params)`` runs the policy on
the actor's vLLM ``AsyncLLM`` and returns the final ``RequestOutput``. Here :class:`RolloutEngine` is that
``generate``, line for line, over an ``AsyncLLM`` in this process (no Ray: its actor hop is the same for solo and
tandem), and :class:`~services.learner.integrations.tandem_agent.TandemAgent` (what ``openrlhf_agent.py`` is) runs
every rollout: solo with a schedule that never hands over, tandem with word handoffs at ``p_primary`` 0.5, its weak
segments from the weak-model service, its reward from the task's answer check (no verifier needed).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.decoding.vllm_shutdown import collect_engines, shut_down
from services.learner.integrations.settings import IntegrationSettings
from services.learner.integrations.tandem_agent import TandemAgent
from services.learner.rl.schedule import HandoffSchedule

AGENT = "openrlhf agent"
"""The ``path`` of rows measured through the agent."""
GPU_SHARE = 0.4
"""On one GPU the policy's engine and the weak-model service's vLLM engine each take this share of its memory."""


class RolloutEngine:
    """OpenRLHF's ``RolloutRayActor.generate`` over an in-process ``AsyncLLM``; counts the calls and prefix tokens."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.calls = 0
        self.prefix_tokens = 0
        self.computed_prefix_tokens = 0
        self._ids = itertools.count()

    @classmethod
    def start(cls, path: Path, context_window: int, max_num_seqs: int) -> RolloutEngine:
        """The policy on vLLM, configured as the weak model's vllm engine (CPU-safe, GPT-2 head padding), with
        :data:`GPU_SHARE` of a GPU; blocking."""
        from services.decoding.vllm_start import start_async_llm
        from services.weak_model.engines.vllm import engine_args

        args = engine_args(
            path, context_window=context_window, seed=0, max_num_seqs=max_num_seqs, gpu_memory_utilization=GPU_SHARE
        )
        return cls(start_async_llm(args))

    async def generate(self, prompt_token_ids: list[int], sampling_params: Any) -> Any:
        from vllm.inputs import tokens_input

        final = None
        prompt = tokens_input(prompt_token_ids)
        async for output in self.llm.generate(prompt, copy.deepcopy(sampling_params), f"policy-{next(self._ids)}"):
            final = output
        self.calls += 1
        self.prefix_tokens += len(prompt_token_ids)
        self.computed_prefix_tokens += len(prompt_token_ids) - (final.num_cached_tokens or 0)
        return final

    async def shutdown(self) -> None:
        llm, self.llm = self.llm, None
        await shut_down(llm)
        del llm
        await collect_engines()


@dataclass(frozen=True)
class AgentBatch:
    """What one batch through the agent produced and cost."""

    seconds: float
    response_tokens: int
    weak_tokens: int
    policy_calls: int
    policy_prefix_tokens: int
    policy_computed_prefix_tokens: int
    continue_calls: int
    weak_prefix_tokens: float
    weak_computed_prefix_tokens: float


def agent_settings(weak_target: str, schedule: HandoffSchedule, tokenizer_path: Path) -> IntegrationSettings:
    return IntegrationSettings(
        weak_model_target=weak_target,
        agent_reward="correctness",
        tokenizer_path=tokenizer_path,
        handoff_strategy=schedule.strategy,
        p_primary=schedule.p_primary,
        max_gap_tokens=schedule.max_gap_tokens,
        chunk_tokens=schedule.chunk_tokens,
        gap_rule=schedule.gap_rule,
        weak_temperature=1.0,
        seed=0,
    )


@dataclass(frozen=True)
class WeakCounters:
    """What the weak-model service counted so far (all its models), from its /metrics."""

    continue_calls: float
    prefix_tokens: float
    computed_prefix_tokens: float


def weak_service_counters(metrics_url: str) -> WeakCounters:
    """The weak-model service's Continue calls and prefix tokens looked up / computed so far."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    calls = sent = computed = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "legibility_grpc_request_duration_seconds_count":
                calls += sample.value if sample.labels.get("method") == "Continue" else 0.0
            elif sample.name == "legibility_prefix_cache_tokens_total":
                sent += sample.value
                computed += sample.value if sample.labels.get("source") == "computed" else 0.0
    return WeakCounters(calls, sent, computed)


async def run_agent_batch(
    engine: RolloutEngine,
    settings: IntegrationSettings,
    tokenizer: Any,
    prompts: list[str],
    labels: list[str],
    max_new_tokens: int,
    context_window: int,
    metrics_url: str,
) -> AgentBatch:
    """Every prompt's rollout through ``TandemAgent.execute``, all at once (as ``generate_responses`` runs them)."""
    from vllm import SamplingParams

    agent = TandemAgent(settings)
    lengths = [len(tokenizer(text=p, add_special_tokens=False)["input_ids"]) for p in prompts]
    # The learner path's budget: up to max_new_tokens, within the window less the position the agent keeps for the
    # boundary lookahead (response_room); one more token and the agent cuts the prompt's first token.
    params = [SamplingParams(temperature=1.0, max_tokens=min(max_new_tokens, context_window - n - 1)) for n in lengths]
    before = await asyncio.to_thread(weak_service_counters, metrics_url)
    calls, sent, computed = engine.calls, engine.prefix_tokens, engine.computed_prefix_tokens
    try:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                agent.execute(prompt, label, param, context_window, tokenizer, engine)
                for prompt, label, param in zip(prompts, labels, params, strict=True)
            )
        )
        seconds = time.perf_counter() - started
    finally:
        await agent._clients.close()
    after = await asyncio.to_thread(weak_service_counters, metrics_url)
    response_tokens = sum(
        len(r["observation_tokens"]) - n - (0 if r["truncated"] else 1)  # the agent appends EOS to a finished text
        for r, n in zip(results, lengths, strict=True)
    )
    return AgentBatch(
        seconds=seconds,
        response_tokens=response_tokens,
        weak_tokens=int(sum(r["extra_logs"]["weak_tokens"] for r in results)),
        policy_calls=engine.calls - calls,
        policy_prefix_tokens=engine.prefix_tokens - sent,
        policy_computed_prefix_tokens=engine.computed_prefix_tokens - computed,
        continue_calls=int(after.continue_calls - before.continue_calls),
        weak_prefix_tokens=after.prefix_tokens - before.prefix_tokens,
        weak_computed_prefix_tokens=after.computed_prefix_tokens - before.computed_prefix_tokens,
    )
