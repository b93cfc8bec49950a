"""Sizes, data mixtures and schedules of the three toy models: one place to tune the toy world."""

from __future__ import annotations

from dataclasses import dataclass, replace

from services.tasks.toy_models.training import Schedule


@dataclass(frozen=True)
class LmSpec:
    n_layer: int
    n_embd: int
    n_head: int
    schedule: Schedule
    jargon_fraction: float
    """Share of training solutions written in jargon (the rest plain)."""
    role_prefix_fraction: float = 0.0
    """Share of prompts that start with a prover role, so role-stated prompts are in distribution later."""


@dataclass(frozen=True)
class VerifierSpec:
    schedule: Schedule
    samples_per_model: int
    """Solutions sampled (temperature 1) from each of weak and strong for training; labelled by the checker."""
    held_out_per_model: int
    reference_fraction: float = 0.0
    """Extra training solutions written from the task itself, as a share of the sampled ones: half correct, half
    with one wrong step. Keeps both labels present when the models are very good or (shortened build) very bad."""


@dataclass(frozen=True)
class ToyBuildSpec:
    seed: int
    train_problems: int
    weak: LmSpec
    strong: LmSpec
    verifier: VerifierSpec
    eval_problems: int
    n_positions: int = 192

    def shortened(self) -> ToyBuildSpec:
        """A minutes-long version for tests: same pipeline, tiny schedules (models will be inaccurate)."""

        def tiny(schedule: Schedule) -> Schedule:
            return replace(schedule, steps=20, batch_size=8, warmup_steps=5)

        return replace(
            self,
            train_problems=500,
            weak=replace(self.weak, n_layer=1, n_embd=32, schedule=tiny(self.weak.schedule)),
            strong=replace(self.strong, n_layer=1, n_embd=32, schedule=tiny(self.strong.schedule)),
            verifier=VerifierSpec(
                tiny(self.verifier.schedule), samples_per_model=64, held_out_per_model=32, reference_fraction=1.0
            ),
            eval_problems=32,
        )


DEFAULT_SPEC = ToyBuildSpec(
    seed=0,
    train_problems=40_000,
    weak=LmSpec(n_layer=2, n_embd=64, n_head=4, schedule=Schedule(1200, 64, 2e-3), jargon_fraction=0.0),
    strong=LmSpec(
        n_layer=4,
        n_embd=128,
        n_head=4,
        schedule=Schedule(3000, 64, 2e-3),
        jargon_fraction=0.85,
        role_prefix_fraction=0.5,
    ),
    verifier=VerifierSpec(Schedule(800, 64, 1e-3, warmup_steps=50), samples_per_model=4000, held_out_per_model=500),
    eval_problems=500,
)
