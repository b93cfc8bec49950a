"""One training run: a tandem phase, then prover–verifier rounds; evaluations, checkpoints, events, report.

The run is resumable: state, policy and optimizer are checkpointed after every evaluation and round boundary,
each round's samples are stored before the verifier trains on them, and a restarted run with the same run
directory continues from the last checkpoint, reusing stored samples and published verifier versions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from services.common.artifacts import ArtifactStore
from services.common.model_loading import load_pretrained
from services.common.registry import VersionRecord, VersionRegistry
from services.common.samples import samples_uri
from services.decoding.tokens import tokenizer_sha256
from services.jobs.verifier_training.requests import RetrainRequest, TrainingOptions, pin_checkpoint, pin_samples
from services.learner.clients.verifier import VerifierClient
from services.learner.clients.vocabulary import check_same_vocabulary
from services.learner.clients.weak_model import WeakModelClient
from services.learner.evaluation.evaluate import evaluate_policy
from services.learner.game.attack import sneaky_attack
from services.learner.game.retraining import InProcessRetrainer, QueueRetrainer, Retrainer
from services.learner.game.rounds import (
    collect_round_samples,
    dca_credit,
    game_reward,
    sneaky_caught_up,
    store_round_samples,
)
from services.learner.rl.policy import TransformersPolicy
from services.learner.rl.policy_step import correctness_reward, policy_step
from services.learner.rl.rollout import RolloutOptions, derive_seed
from services.learner.rl.schedule import SOLO
from services.learner.rl.trainer import PolicyTrainer
from services.learner.runs.config import RunOptions
from services.learner.runs.events import EVENTS_FILE, EventKind, RunEvent, append_event
from services.learner.runs.state import RunState, checkpoint_dir, load_optimizer, load_state, save_checkpoint
from services.learner.settings import LearnerSettings
from services.tasks.base import Problem
from services.tasks.prompts import PromptFormat

log = logging.getLogger(__name__)

GAME_REFERENCE_DIR = "game_reference"
"""The policy as it entered the game phase: the KL anchor of game steps (``game.kl_coef``)."""
ATTACK_PROBLEMS = 64
"""Prover-half problems the sneaky-only attacker draws its batches from (and the helpful bar is measured on)."""
RETRAIN_PROGRESS_EVERY_S = 10.0
"""How often a round relays its verifier training's progress as a log event."""
ROUND_HELD_OUT_FRACTION = 0.15
"""Share of a round's problems the retraining job holds out (round data is small: more than its 0.1 default)."""


def prover_half(question: str) -> bool:
    """Prover and verifier train on disjoint halves of the problems (by hash of the text)."""
    return hashlib.sha256(b"prover-half:" + question.encode()).digest()[0] < 128


def retrainer_for(settings: LearnerSettings) -> Retrainer:
    if settings.retrain == "queue":
        return QueueRetrainer(settings, settings.retrain_stream, settings.retrain_timeout_s)
    return InProcessRetrainer(settings, settings.torch_threads)


class StopRequested(Exception):
    """StopRun: the run ends after its current step, checkpointed."""


class Run:
    """Executes :class:`RunOptions` against the weak-model and verifier services."""

    def __init__(
        self,
        run_id: str,
        options: RunOptions,
        settings: LearnerSettings,
        weak: WeakModelClient,
        verifier: VerifierClient | None,
        on_event: Callable[[RunEvent], None] = lambda event: None,
    ) -> None:
        if options.plays_game and verifier is None:
            raise ValueError("a game run needs the verifier service")
        self.run_id = run_id
        self.options = options
        self.settings = settings
        self.weak = weak
        self.verifier = verifier
        self.on_event = on_event
        self.dir = settings.runs_dir / run_id
        self.store = ArtifactStore(settings.artifact_root)
        self.stop_requested = False
        self.state = RunState()
        self.latest: dict[str, float] = {}
        self.task = options.task.load()
        problems = self.task.problems("train", None, options.seed)
        self.prover_problems = [p for p in problems if prover_half(p.question)]
        self.verifier_problems = [p for p in problems if not prover_half(p.question)]
        self.tandem_problems = problems
        self.test_problems = self.task.problems("test", options.eval_problems, 0)
        self.prompts = PromptFormat(self.task)  # bound to the policy's tokenizer when the policy loads
        self.retrainer = retrainer_for(settings)

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def _load(self) -> PolicyTrainer:
        torch.manual_seed(self.options.seed)
        torch.set_num_threads(self.settings.torch_threads)
        found = checkpoint_dir(self.dir)
        source = found / "policy" if found is not None else self.options.policy_model
        policy = TransformersPolicy.load(source, self.settings.torch_threads)
        self.prompts = PromptFormat(self.task, policy.tokenizer, self.options.task.chat_template)
        reference = None
        if self.options.optimizer.kl_coef > 0:
            reference = load_pretrained(AutoModelForCausalLM, self.options.policy_model)
        trainer = PolicyTrainer(policy, self.options.optimizer, reference)
        if found is not None:
            load_optimizer(found, trainer)
            self.state = load_state(self.dir) or RunState()
        return trainer

    async def execute(self) -> dict[str, float]:
        """Run to the end (or to a stop request); returns the latest metrics."""
        self.dir.mkdir(parents=True, exist_ok=True)
        trainer = await asyncio.to_thread(self._load)  # model loading and saving stay off the event loop
        weak_info = await self.weak.model_info()
        policy_sha256 = tokenizer_sha256(trainer.policy.tokenizer)
        check_same_vocabulary(self.options.policy_model, policy_sha256, weak_info, "config.policy_model")
        prompts = "the policy tokenizer's chat template" if self.prompts.uses_chat else "the task's plain format"
        self._emit(
            "log",
            {},
            f"task {self.task.name}: {len(self.tandem_problems)} train / {len(self.test_problems)} test problems; "
            f"prompts in {prompts}",
        )
        if self.state.step or self.state.evaluated_at_step >= 0:
            self._emit("log", {}, f"resumed from step {self.state.step}, round {self.state.round}")
        if self.state.evaluated_at_step < 0:
            await self._evaluate(trainer, trainer.policy)
            await self._checkpoint(trainer)
        try:
            await self._tandem_phase(trainer)
            if self.options.plays_game:
                await self._game_phase(trainer)
            if self.state.evaluated_at_step != self.state.step:
                await self._evaluate(trainer, trainer.policy)
            self.state.finished = True
        except StopRequested:
            self._emit("log", {}, f"stopped at step {self.state.step}")
        await self._checkpoint(trainer)
        return self.latest

    async def _checkpoint(self, trainer: PolicyTrainer) -> None:
        await asyncio.to_thread(save_checkpoint, self.dir, self.state, trainer)

    # ---- phases ------------------------------------------------------------------------------------------------

    async def _tandem_phase(self, trainer: PolicyTrainer) -> None:
        options = RolloutOptions(
            self.options.handoff,
            self.options.optimizer.max_new_tokens,
            policy_temperature=self.options.optimizer.temperature,
        )
        reward = correctness_reward(self.options.format_bonus)
        while self.state.tandem_steps_done < self.options.tandem_steps:
            self._check_stop()
            problems = self._draw(self.tandem_problems, "tandem")
            seed = self._seed("tandem")
            metrics, _ = await policy_step(trainer, self.weak, self.prompts, problems, options, reward, seed)
            self.state.tandem_steps_done += 1
            await self._after_step(trainer, "tandem", metrics)

    async def _game_phase(self, trainer: PolicyTrainer) -> None:
        assert self.verifier is not None
        game = self.options.game
        # The prover alone by default: the verifier trains, and the game rewards, on the prover's own solutions.
        tandem = self.options.mode == "tandem_game" and game.tandem_rollouts
        schedule = self.options.handoff if tandem else SOLO
        options = RolloutOptions(
            schedule, self.options.optimizer.max_new_tokens, policy_temperature=self.options.optimizer.temperature
        )
        if game.learning_rate is not None:
            trainer.set_learning_rate(game.learning_rate)
        if game.kl_coef is not None:
            await self._anchor_game_reference(trainer, game.kl_coef)
        while self.state.round < game.rounds:
            round_ = self.state.round
            version = await self._prepare_verifier(trainer, round_, options)
            if game.attack_steps and str(round_) not in self.state.attacks:
                await self._attack(trainer, round_, version)
            reward = game_reward(self.verifier, game.reward, version, game.src_baseline)
            credit = dca_credit(self.verifier, trainer.policy, version) if game.dca else None
            while self.state.round_steps_done < game.steps_per_round:
                self._check_stop()
                problems = self._draw(self.prover_problems, f"game{round_}")
                metrics, _ = await policy_step(
                    trainer,
                    self.weak,
                    self.prompts,
                    problems,
                    options,
                    reward,
                    self._seed("game"),
                    with_roles=True,
                    credit_fn=credit,
                    baseline_by_role=game.src_baseline == "problem_role",
                )
                self.state.round_steps_done += 1
                await self._after_step(trainer, "game", metrics)
                if sneaky_caught_up(metrics):
                    self._emit("log", metrics, f"round {round_}: sneaky-incorrect scores caught up; round ends")
                    break
            if self.state.evaluated_at_step != self.state.step:
                await self._evaluate(trainer, trainer.policy)
            self.state.round += 1
            self.state.round_steps_done = 0
            await self._checkpoint(trainer)

    async def _prepare_verifier(self, trainer: PolicyTrainer, round_: int, options: RolloutOptions) -> int:
        """Samples of this round's prover → stored → verifier retrained on all rounds → published → served."""
        assert self.verifier is not None
        key = str(round_)
        if key not in self.state.verifier_versions:
            started = time.perf_counter()
            dataset = f"{self.run_id}-samples"
            problems = self._rng_sample(self.verifier_problems, self.settings.round_sample_problems, f"v{round_}")
            samples = await collect_round_samples(
                trainer.policy, self.weak, self.prompts, problems, options, round_, self._seed(f"samples{round_}")
            )
            store_round_samples(self.store, dataset, round_, samples)
            request = await self._retrain_request(round_, dataset)
            counts = {
                "round_samples": float(len(samples)),
                "round_samples_correct": sum(s.correct for s in samples) / len(samples),
            }
            out_dir = self.dir / "verifier" / f"round{round_}"
            result = await self.retrainer.retrain(request, out_dir, self._relay_retraining(round_))
            if result.version is None:
                # A prover that solves none (or all) of its problems gives no correct/incorrect pairs: the game
                # goes on against the verifier already served rather than failing the run.
                version = await self.verifier.version()
                self.state.verifier_versions[key] = version
                await self._checkpoint(trainer)
                message = f"round {round_}: verifier not retrained ({result.not_retrained}); v{version} stays"
                self._emit("round", {**counts, "verifier_version": float(version)}, message)
            else:
                self.state.verifier_versions[key] = result.version
                await self._checkpoint(trainer)
                metrics = {f"verifier_{k}": v for k, v in result.metrics.items()}
                metrics |= {
                    "verifier_version": float(result.version),
                    **counts,
                    "verifier_train_s": time.perf_counter() - started,
                }
                by = f" (trained by {result.trained_by})" if result.trained_by else ""
                self._emit("round", metrics, f"round {round_}: verifier v{result.version} published{by}")
        version = self.state.verifier_versions[key]
        waited = await self.verifier.wait_for_version(version, self.settings.version_wait_s)
        self._emit(
            "round",
            {"verifier_wait_s": waited, "verifier_version": float(version)},
            f"round {round_}: the verifier service serves v{version}",
        )
        return version

    async def _retrain_request(self, round_: int, dataset: str) -> RetrainRequest:
        """The round's retraining request: every round's samples so far, pinned, and the version it must become."""
        settings, game, task = self.settings, self.options.game, self.options.task
        name = settings.verifier_model_name
        client = settings.redis_client()
        try:
            current = await VersionRegistry(client).current(name)
        finally:
            await client.aclose()
        target = max(0 if current is None else current.version, self.store.latest_version(name)) + 1
        return RetrainRequest(
            request_id=RetrainRequest.id_for(self.run_id, round_),
            run_id=self.run_id,
            round=round_,
            model_name=name,
            target_version=target,
            samples=[pin_samples(self.store, samples_uri(dataset, r)) for r in range(round_ + 1)],
            base_samples=[pin_samples(self.store, s) for s in settings.verifier_base_samples],
            init_model=pin_checkpoint(self.store, self._round_verifier_init(round_, current)),
            training=TrainingOptions(
                loss=game.verifier_loss,
                centering_lambda=game.centering_lambda,
                steps=settings.verifier_train_steps,
                seed=self.options.seed + round_,
                held_out_fraction=ROUND_HELD_OUT_FRACTION,
                task=task.name,
                data=task.data,
                chat_template=task.chat_template,
            ),
        )

    def _relay_retraining(self, round_: int) -> Callable[[dict[str, str]], None]:
        """Turn the trainer's status into log events: when it is queued, taken, fails, and every 10 s of progress."""
        last = {"at": 0.0, "who": ""}

        def relay(status: dict[str, str]) -> None:
            if "queued" in status:
                self._emit("log", {}, f"round {round_}: verifier retraining queued on {status['queued']}")
                return
            who = f"{status.get('worker', '?')} (attempt {status.get('attempt', '?')})"
            now = time.monotonic()
            if who == last["who"] and now - last["at"] < RETRAIN_PROGRESS_EVERY_S and "error" not in status:
                return
            last.update(at=now, who=who)
            progress = f"step {status.get('step', 0)}/{status.get('steps', '?')}"
            progress += f", loss {status['loss']}" if "loss" in status else ""
            progress += f"; last error: {status['error']}" if "error" in status else ""
            self._emit("log", {}, f"round {round_}: verifier retraining by {who}: {progress}")

        return relay

    async def _attack(self, trainer: PolicyTrainer, round_: int, version: int) -> None:
        """The sneaky-only attack on this round's verifier (:mod:`services.learner.game.attack`), measured once."""
        assert self.verifier is not None
        game, started = self.options.game, time.perf_counter()
        problems = self._rng_sample(self.prover_problems, ATTACK_PROBLEMS, f"attack{round_}")
        result = await sneaky_attack(
            trainer.policy,
            self.weak,
            self.verifier,
            self.prompts,
            problems,
            replace(self.options.optimizer, learning_rate=self._attack_learning_rate()),
            version,
            self._seed(f"attack{round_}"),
            game.attack_steps,
            game.attack_fool_rate,
        )
        metrics = result.metrics(game.attack_steps) | {"verifier_version": float(version)}
        metrics["attack_s"] = time.perf_counter() - started
        self.state.attacks[str(round_)] = metrics["attack_steps_to_exploit"]
        await self._checkpoint(trainer)
        found = "never" if result.steps_to_exploit is None else f"after {result.steps_to_exploit} steps"
        self._emit("round", metrics, f"round {round_}: a sneaky-only attacker fooled v{version} {found}")

    async def _anchor_game_reference(self, trainer: PolicyTrainer, kl_coef: float) -> None:
        """The game's KL reference is the policy as it entered the game, not the initial one: a tandem_game run's
        tandem phase moved it on purpose (a KL to the initial policy pulled the jargon back: 0 % → 83.6 % greedy).
        Saved once at the game's start, so a resumed run keeps the same anchor."""
        anchor = self.dir / GAME_REFERENCE_DIR
        if not (anchor / "config.json").is_file():
            await asyncio.to_thread(trainer.policy.model.save_pretrained, anchor)
        reference = await asyncio.to_thread(load_pretrained, AutoModelForCausalLM, anchor)
        trainer.reference = reference.eval()
        trainer.options = replace(trainer.options, kl_coef=kl_coef)

    def _attack_learning_rate(self) -> float:
        game = self.options.game
        return game.attack_learning_rate or game.learning_rate or self.options.optimizer.learning_rate

    def _round_verifier_init(self, round_: int, current: VersionRecord | None) -> str | Path:
        """The checkpoint a round's verifier training starts from (see ``LearnerSettings.round_verifier_start``):
        the version the previous round ended with (an artifact every worker can read), round 0 the registry's."""
        settings = self.settings
        if settings.round_verifier_start == "fresh":
            return settings.verifier_init_path
        if round_ > 0:
            previous = self.state.verifier_versions[str(round_ - 1)]
            return ArtifactStore.uri_for(settings.verifier_model_name, previous)
        if settings.verifier_base_path is not None:
            return settings.verifier_base_path
        if current is None:
            raise RuntimeError(
                f"round {round_}: no {settings.verifier_model_name!r} version in the registry to warm-start from; "
                "publish one, set verifier_base_path, or use round_verifier_start=fresh"
            )
        return current.uri

    # ---- helpers -----------------------------------------------------------------------------------------------

    async def _after_step(self, trainer: PolicyTrainer, phase: str, metrics: dict[str, Any]) -> None:
        self.state.step += 1
        self._emit("train", {f"train/{k}": float(v) for k, v in metrics.items()}, phase)
        if self.state.step % self.options.eval_every_steps == 0:
            await self._evaluate(trainer, trainer.policy)
            await self._checkpoint(trainer)
        self._check_stop()

    def _check_stop(self) -> None:
        if self.stop_requested:
            raise StopRequested

    async def _evaluate(self, trainer: PolicyTrainer, policy: TransformersPolicy) -> None:
        verifier = self.verifier if self.options.plays_game else None
        max_new_tokens, seed = self.options.optimizer.max_new_tokens, self._seed("eval")
        metrics = await evaluate_policy(
            policy, self.weak, self.prompts, self.test_problems, max_new_tokens, seed, verifier
        )
        self.state.evaluated_at_step = self.state.step
        self._emit("eval", {f"eval/{k}": v for k, v in metrics.items()})

    def _seed(self, purpose: str) -> int:
        return derive_seed(self.options.seed, purpose, self.state.step, self.state.round)

    def _draw(self, problems: list[Problem], purpose: str) -> list[Problem]:
        return self._rng_sample(problems, self.options.optimizer.problems_per_step, purpose)

    def _rng_sample(self, problems: list[Problem], count: int, purpose: str) -> list[Problem]:
        return random.Random(self._seed(purpose)).sample(problems, min(count, len(problems)))

    def _emit(self, kind: EventKind, metrics: dict[str, float], message: str = "") -> None:
        event = RunEvent(kind, self.state.step, self.state.round, dict(metrics), message, time.time())
        self.latest.update(metrics)
        append_event(self.dir / EVENTS_FILE, event)
        self.on_event(event)
