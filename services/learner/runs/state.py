"""A run's durable state: where it is (phase, step, round) and the policy + optimizer to resume from."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from services.learner.rl.trainer import PolicyTrainer

STATE_FILE = "state.json"
POLICY_DIR = "policy"
OPTIMIZER_FILE = "optimizer.pt"


@dataclass
class RunState:
    step: int = 0
    """Policy updates done (tandem and game steps together)."""
    tandem_steps_done: int = 0
    round: int = 0
    """The game round in progress (or next)."""
    round_steps_done: int = 0
    verifier_versions: dict[str, int] = field(default_factory=dict)
    """Version published for each round (keys are round numbers as text)."""
    attacks: dict[str, float] = field(default_factory=dict)
    """Steps to exploit each round's verifier by the sneaky-only attack, once measured (keys as above)."""
    evaluated_at_step: int = -1
    finished: bool = False


def save_checkpoint(run_dir: Path, state: RunState, trainer: PolicyTrainer) -> None:
    """Write state, policy and optimizer to a new directory, then swap it in: a kill leaves one complete checkpoint."""
    new, current, old = run_dir / "checkpoint.new", run_dir / "checkpoint", run_dir / "checkpoint.old"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    trainer.policy.model.save_pretrained(new / POLICY_DIR)
    trainer.policy.tokenizer.save_pretrained(new / POLICY_DIR)
    torch.save(trainer.optimizer.state_dict(), new / OPTIMIZER_FILE)
    (new / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
    shutil.rmtree(old, ignore_errors=True)
    if current.exists():
        os.rename(current, old)
    os.rename(new, current)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_dir(run_dir: Path) -> Path | None:
    """The complete checkpoint to resume from (``checkpoint.old`` if a kill fell between the two renames)."""
    for name in ("checkpoint", "checkpoint.old"):
        if (run_dir / name / STATE_FILE).is_file():
            return run_dir / name
    return None


def load_state(run_dir: Path) -> RunState | None:
    """The last saved state, None for a new run."""
    found = checkpoint_dir(run_dir)
    return None if found is None else RunState(**json.loads((found / STATE_FILE).read_text()))


def load_optimizer(checkpoint: Path, trainer: PolicyTrainer) -> None:
    trainer.optimizer.load_state_dict(torch.load(checkpoint / OPTIMIZER_FILE))
