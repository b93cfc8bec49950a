"""Labelled toy samples from the bundled weak and strong models, sampled once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.samples import LabelledSample
from services.tasks import toy
from services.tasks.toy_models.round_samples import sample_from_models

MODELS = Path(__file__).resolve().parents[4] / "models"


@pytest.fixture(scope="session")
def toy_samples() -> list[LabelledSample]:
    """300 training problems x 2 solutions from each model: about half correct, mixed labels per problem."""
    problems = toy.generate("train", 300, seed=3)
    return sample_from_models({"weak": MODELS / "weak", "strong": MODELS / "strong"}, problems, 2, seed=3)


# The job's test serves what it published with the verifier service's own fixture.
from tests.integration.verifier.conftest import start_server  # noqa: E402, F401
