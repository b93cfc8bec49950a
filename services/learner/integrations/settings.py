"""Settings of the adapters for external RL stacks: ``LEGIBILITY_*`` environment variables.

OpenRLHF, TRL and verl load our adapters by file path or import them; none passes arguments we choose, so the
adapters read where the services are and how to reward from the environment of the process that loads them (the
Ray actors' ``runtime_env`` for OpenRLHF and verl, the training script's environment for TRL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from services.common.bundled_models import BUNDLED_STRONG
from services.learner.rl.schedule import GapRule, HandoffSchedule, Strategy
from services.tasks.prompts import PromptFormat
from services.tasks.settings import TaskSettings

RewardMode = Literal["correctness", "verifier", "correctness+verifier"]


class IntegrationSettings(TaskSettings):
    """Where the services are, how to reward, the task, and the tandem handoff schedule."""

    verifier_target: str = "127.0.0.1:50051"
    """host:port of the verifier service (Score)."""
    weak_model_target: str = "127.0.0.1:50052"
    """host:port of the weak-model service (Continue), for tandem rollouts."""
    client_token: str | None = None
    """Bearer token sent to the services, when they require one."""
    tls_ca_file: Path | None = None
    """CA bundle of the services' TLS certificates; unset = plaintext."""
    timeout_s: float = Field(60.0, gt=0)
    """Deadline of each call to a service."""
    reward_deadline_s: float = Field(120.0, gt=0)
    """How long a reward keeps asking a verifier that is restarting or full (jittered backoff) before it raises an
    error naming the service, the status and the attempts; a failed scorer is never a reward of 0."""
    reward: RewardMode = "verifier"
    """What reward functions (OpenRLHF reward_func, TRL, verl) return: the verifier's score (a logit), task
    correctness against the label (1 or 0), or their sum."""
    agent_reward: RewardMode = "correctness"
    """What the OpenRLHF tandem AgentExecutor returns as the reward of a jointly written solution."""
    tokenizer_path: Path = BUNDLED_STRONG
    """The policy's tokenizer (its checkpoint directory): reward functions parse prompts with its chat template and
    strip its EOS / PAD strings from responses (OpenRLHF keeps special tokens in reward queries)."""
    verifier_min_version: int = Field(0, ge=0)
    """Refuse scores from verifier versions older than this (FAILED_PRECONDITION until the swap)."""
    handoff_strategy: Strategy = "word"
    """Where control passes and how (see services/learner/rl/schedule.py): word, sentence, chunk, alternating, ..."""
    p_primary: float = Field(0.5, ge=0.0, le=1.0)
    """Chance that the policy writes the next segment."""
    max_gap_tokens: int = Field(32, ge=1)
    """Most tokens one author writes in a row before the other is forced."""
    gap_rule: GapRule = "redraw"
    """At max_gap_tokens: redraw the author (the reference's) or switch to the other one."""
    chunk_tokens: int = Field(8, ge=1)
    """Segment length of the chunk strategy."""
    weak_temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature of the weak model's segments (0 = greedy)."""
    seed: int | None = None
    """Base seed of the handoff draws and segment sampling; each rollout derives its own from it (and the prompt and
    how often the prompt was seen). Unset: fresh entropy per process."""

    def reward_prompt_format(self) -> PromptFormat:
        """The task's prompts for the policy's tokenizer (what reward functions parse)."""
        from transformers import AutoTokenizer

        return self.prompt_format(AutoTokenizer.from_pretrained(self.tokenizer_path))

    @property
    def schedule(self) -> HandoffSchedule:
        return HandoffSchedule(
            self.handoff_strategy, self.p_primary, self.max_gap_tokens, self.chunk_tokens, self.gap_rule
        )
