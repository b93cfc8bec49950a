"""A RunConfig (proto) resolved into plain options: unset fields take the defaults, bad values name their field."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from google.protobuf import json_format

from services.common.errors import InvalidArgument
from services.common.genproto.legibility.v1 import learner_pb2
from services.learner.game.rewards import GameRewardKind, SrcBaseline, reward_kind_from_proto
from services.learner.rl.schedule import HandoffSchedule
from services.learner.rl.trainer import OptimizerOptions
from services.tasks.base import Task
from services.tasks.catalog import TASK_NAMES, load_task
from services.tasks.prompts import ChatTemplateMode

Mode = Literal["tandem", "game", "tandem_game"]
_MODES: dict[int, Mode] = {
    learner_pb2.RUN_MODE_TANDEM: "tandem",
    learner_pb2.RUN_MODE_GAME: "game",
    learner_pb2.RUN_MODE_TANDEM_GAME: "tandem_game",
}


_CHAT_TEMPLATES: dict[int, ChatTemplateMode] = {
    learner_pb2.CHAT_TEMPLATE_UNSPECIFIED: "auto",
    learner_pb2.CHAT_TEMPLATE_AUTO: "auto",
    learner_pb2.CHAT_TEMPLATE_NONE: "none",
}


@dataclass(frozen=True)
class TaskOptions:
    """The task a run trains and evaluates on: its name, its data path, and whether prompts use a chat template."""

    name: str = "toy"
    data: Path | None = None
    chat_template: ChatTemplateMode = "auto"

    def load(self) -> Task:
        return load_task(self.name, self.data)


@dataclass(frozen=True)
class GameOptions:
    reward: GameRewardKind = "src"
    rounds: int = 3
    steps_per_round: int = 20
    verifier_loss: Literal["bradley-terry", "cross-entropy"] = "bradley-terry"
    centering_lambda: float = 0.01
    dca: bool = False
    src_baseline: SrcBaseline = "problem_role"
    tandem_rollouts: bool = False
    """tandem_game runs: the game's rollouts and round samples written jointly with the weak model too."""
    attack_steps: int = 0
    """Sneaky-only attack on each round's verifier, at most this many steps (0: off)."""
    attack_fool_rate: float = 0.5
    learning_rate: float | None = None
    """The prover's learning rate in game steps; None: the optimizer's."""
    attack_learning_rate: float | None = None
    """The sneaky-only attacker's learning rate; None: the game's."""
    kl_coef: float | None = None
    """KL penalty to the initial policy in game steps; None: the optimizer's."""


@dataclass(frozen=True)
class RunOptions:
    name: str
    mode: Mode
    steps: int
    """Tandem steps (tandem and tandem_game); game runs count rounds × steps_per_round."""
    seed: int
    policy_model: Path
    handoff: HandoffSchedule
    optimizer: OptimizerOptions
    game: GameOptions = field(default_factory=GameOptions)
    eval_every_steps: int = 10
    eval_problems: int = 64
    format_bonus: float = 0.0
    task: TaskOptions = field(default_factory=TaskOptions)

    @property
    def plays_game(self) -> bool:
        return self.mode in ("game", "tandem_game")

    @property
    def tandem_steps(self) -> int:
        return self.steps if self.mode in ("tandem", "tandem_game") else 0


def _opt(message: object, name: str, default: float) -> float:
    return getattr(message, name) if message.HasField(name) else default  # type: ignore[attr-defined]


def _positive(field_name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise InvalidArgument(field_name, f"must be a finite number > 0, got {value}")


def _non_negative(field_name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise InvalidArgument(field_name, f"must be a finite number >= 0, got {value}")


LIMITS: dict[str, int] = {
    "config.steps": 1_000_000,
    "config.optimizer.group_size": 1_024,
    "config.optimizer.problems_per_step": 4_096,
    "config.optimizer.max_new_tokens": 32_768,
    "config.optimizer.ppo_epochs": 64,
    "config.optimizer.mini_batches": 4_096,
    "config.handoff.max_gap_tokens": 32_768,
    "config.handoff.chunk_tokens": 32_768,
    "config.game.rounds": 1_000,
    "config.game.steps_per_round": 100_000,
    "config.game.attack_steps": 10_000,
    "config.evaluation.every_steps": 1_000_000,
    "config.evaluation.num_problems": 10_000,
}
"""Upper bounds: a run sized past them would hold the learner for hours or exhaust its memory (a test split of
2e9 problems is drawn when the run is created), so StartRun refuses it instead."""


def _at_most(field_name: str, value: float) -> None:
    if value > LIMITS[field_name]:
        raise InvalidArgument(field_name, f"must be at most {LIMITS[field_name]:,}, got {value}")


_SRC_BASELINES: dict[int, SrcBaseline] = {
    learner_pb2.SRC_BASELINE_UNSPECIFIED: "problem_role",
    learner_pb2.SRC_BASELINE_PROBLEM_ROLE: "problem_role",
    learner_pb2.SRC_BASELINE_PROBLEM: "problem",
}

_VERIFIER_LOSSES: dict[int, str] = {
    learner_pb2.VERIFIER_LOSS_UNSPECIFIED: "bradley-terry",
    learner_pb2.VERIFIER_LOSS_BRADLEY_TERRY: "bradley-terry",
    learner_pb2.VERIFIER_LOSS_CROSS_ENTROPY: "cross-entropy",
}


def config_document(config: learner_pb2.RunConfig) -> dict[str, Any]:
    """A RunConfig as the JSON document run.json keeps (proto field names; unset fields left out)."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def config_message(document: dict[str, Any]) -> learner_pb2.RunConfig:
    return json_format.ParseDict(document, learner_pb2.RunConfig())


def resolve_document(document: dict[str, Any], default_policy: Path) -> RunOptions:
    """:func:`resolve` of a config kept as its JSON document."""
    try:
        config = config_message(document)
    except json_format.ParseError as error:
        raise InvalidArgument("config", str(error)) from error
    return resolve(config, default_policy)


def resolve(config: learner_pb2.RunConfig, default_policy: Path) -> RunOptions:
    """Validate and resolve; raises InvalidArgument naming ``config.<field>``."""
    if config.mode not in _MODES:
        raise InvalidArgument("config.mode", "must be RUN_MODE_TANDEM, RUN_MODE_GAME or RUN_MODE_TANDEM_GAME")
    mode = _MODES[config.mode]
    if config.steps < 0 or (mode != "game" and config.steps == 0):
        raise InvalidArgument("config.steps", f"must be > 0 for a {mode} run, got {config.steps}")
    _at_most("config.steps", config.steps)
    try:
        handoff = HandoffSchedule.from_proto(config.handoff)
    except ValueError as error:
        raise InvalidArgument("config.handoff", str(error)) from error
    _at_most("config.handoff.max_gap_tokens", handoff.max_gap_tokens)
    _at_most("config.handoff.chunk_tokens", handoff.chunk_tokens)
    o, d = config.optimizer, OptimizerOptions()
    optimizer = OptimizerOptions(
        learning_rate=_opt(o, "learning_rate", d.learning_rate),
        group_size=int(_opt(o, "group_size", d.group_size)),
        problems_per_step=int(_opt(o, "problems_per_step", d.problems_per_step)),
        clip_eps=_opt(o, "clip_eps", d.clip_eps),
        kl_coef=_opt(o, "kl_coef", d.kl_coef),
        junior_token_weight=_opt(o, "junior_token_weight", d.junior_token_weight),
        temperature=_opt(o, "temperature", d.temperature),
        max_new_tokens=int(_opt(o, "max_new_tokens", d.max_new_tokens)),
        ppo_epochs=int(_opt(o, "ppo_epochs", d.ppo_epochs)),
        mini_batches=int(_opt(o, "mini_batches", d.mini_batches)),
    )
    positive = ("learning_rate", "group_size", "problems_per_step", "clip_eps", "temperature", "max_new_tokens")
    for name in (*positive, "ppo_epochs", "mini_batches"):
        _positive(f"config.optimizer.{name}", getattr(optimizer, name))
    for name in ("group_size", "problems_per_step", "max_new_tokens", "ppo_epochs", "mini_batches"):
        _at_most(f"config.optimizer.{name}", getattr(optimizer, name))
    if optimizer.group_size < 2:
        raise InvalidArgument("config.optimizer.group_size", "must be >= 2: advantages are normalised in a group")
    if not 0 <= optimizer.junior_token_weight <= 1:
        raise InvalidArgument("config.optimizer.junior_token_weight", "must be in [0, 1]")
    _non_negative("config.optimizer.kl_coef", optimizer.kl_coef)
    g, gd = config.game, GameOptions()
    try:
        reward = reward_kind_from_proto(g.reward)
    except ValueError:
        raise InvalidArgument("config.game.reward", f"unknown value {g.reward}") from None
    if g.src_baseline not in _SRC_BASELINES:
        raise InvalidArgument("config.game.src_baseline", f"unknown value {g.src_baseline}")
    if g.verifier_loss not in _VERIFIER_LOSSES:
        raise InvalidArgument("config.game.verifier_loss", f"unknown value {g.verifier_loss}")
    game = GameOptions(
        reward=reward,
        rounds=int(_opt(g, "rounds", gd.rounds)),
        steps_per_round=int(_opt(g, "steps_per_round", gd.steps_per_round)),
        verifier_loss=_VERIFIER_LOSSES[g.verifier_loss],  # type: ignore[arg-type]
        centering_lambda=_opt(g, "centering_lambda", gd.centering_lambda),
        dca=g.dca,
        src_baseline=_SRC_BASELINES[g.src_baseline],
        tandem_rollouts=g.tandem_rollouts,
        attack_steps=int(_opt(g, "attack_steps", gd.attack_steps)),
        attack_fool_rate=_opt(g, "attack_fool_rate", gd.attack_fool_rate),
        learning_rate=g.learning_rate if g.HasField("learning_rate") else None,
        attack_learning_rate=g.attack_learning_rate if g.HasField("attack_learning_rate") else None,
        kl_coef=g.kl_coef if g.HasField("kl_coef") else None,
    )
    if mode != "tandem":
        _positive("config.game.rounds", game.rounds)
        _positive("config.game.steps_per_round", game.steps_per_round)
        _at_most("config.game.rounds", game.rounds)
        _at_most("config.game.steps_per_round", game.steps_per_round)
    _non_negative("config.game.centering_lambda", game.centering_lambda)
    _non_negative("config.game.attack_steps", game.attack_steps)
    if game.kl_coef is not None:
        _non_negative("config.game.kl_coef", game.kl_coef)
    for name in ("learning_rate", "attack_learning_rate"):
        if getattr(game, name) is not None:
            _positive(f"config.game.{name}", getattr(game, name))
    _at_most("config.game.attack_steps", game.attack_steps)
    if not 0 < game.attack_fool_rate <= 1:
        raise InvalidArgument("config.game.attack_fool_rate", f"must be in (0, 1], got {game.attack_fool_rate}")
    e = config.evaluation
    eval_every = int(_opt(e, "every_steps", 10))
    eval_problems = int(_opt(e, "num_problems", 64))
    _positive("config.evaluation.every_steps", eval_every)
    _positive("config.evaluation.num_problems", eval_problems)
    _at_most("config.evaluation.every_steps", eval_every)
    _at_most("config.evaluation.num_problems", eval_problems)
    format_bonus = _opt(config, "format_bonus", 0.0)
    if not 0 <= format_bonus < 1:
        raise InvalidArgument("config.format_bonus", "must be in [0, 1): below the reward of a correct answer")
    task = _task_options(config.task)
    policy = Path(config.policy_model) if config.policy_model else default_policy
    if not (policy / "config.json").is_file():
        raise InvalidArgument("config.policy_model", f"{policy} is not a checkpoint directory")
    return RunOptions(
        name=config.name or mode,
        mode=mode,
        steps=config.steps,
        seed=config.seed,
        policy_model=policy,
        handoff=handoff,
        optimizer=optimizer,
        game=game,
        eval_every_steps=eval_every,
        eval_problems=eval_problems,
        format_bonus=format_bonus,
        task=task,
    )


def _task_options(config: learner_pb2.TaskConfig) -> TaskOptions:
    """The task of a RunConfig, loaded once to check it: a bad name or data file names its field."""
    name = config.name or "toy"
    if name not in TASK_NAMES:
        raise InvalidArgument("config.task.name", f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
    if config.chat_template not in _CHAT_TEMPLATES:
        raise InvalidArgument("config.task.chat_template", "must be CHAT_TEMPLATE_AUTO or CHAT_TEMPLATE_NONE")
    options = TaskOptions(name, Path(config.data) if config.data else None, _CHAT_TEMPLATES[config.chat_template])
    try:
        task = options.load()
        if not task.problems("train", 1) or not task.problems("test", 1):
            raise ValueError("needs train and test problems")
    except ValueError as error:
        raise InvalidArgument("config.task.data", str(error)) from error
    return options
