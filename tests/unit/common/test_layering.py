"""The import-linter contracts of ./run lint hold today, and fail when one service package imports another."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "repo"
    shutil.copytree(ROOT / "services", tree / "services", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_the_layering_holds_and_a_cross_service_import_breaks_it(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    clean = _lint(tree)
    assert clean.returncode == 0, clean.stdout[-2000:] + clean.stderr[-2000:]
    assert "3 kept, 0 broken" in clean.stdout

    engine = tree / "services" / "weak_model" / "engine.py"
    engine.write_text(engine.read_text() + "\nfrom services.verifier.model import VerifierModel  # noqa: E402, F401\n")
    broken = _lint(tree)
    assert broken.returncode == 1
    assert "Service packages never import one another BROKEN" in broken.stdout
    assert "services.weak_model.engine -> services.verifier.model" in broken.stdout


@pytest.mark.slow
def test_a_shared_package_importing_a_service_breaks_the_layers(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    prompts = tree / "services" / "tasks" / "prompts.py"
    prompts.write_text(prompts.read_text() + "\nfrom services.learner.rl import rollout  # noqa: E402, F401\n")
    broken = _lint(tree)
    assert broken.returncode == 1
    assert "Layers: entry points > services > jobs > decoding, tasks > common BROKEN" in broken.stdout
    assert "services.tasks.prompts -> services.learner.rl.rollout" in broken.stdout


@pytest.mark.slow
def test_an_upward_import_inside_the_learner_breaks_its_layers(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    credit = tree / "services" / "learner" / "rl" / "credit.py"
    credit.write_text(credit.read_text() + "\nfrom services.learner.runs import report  # noqa: E402, F401\n")
    broken = _lint(tree)
    assert broken.returncode == 1
    assert "Learner by concern: edge > runs > game > evaluation > rl > clients BROKEN" in broken.stdout
    assert "services.learner.rl.credit -> services.learner.runs.report" in broken.stdout
