"""The retraining job's task settings (``--task``, ``--data``, ``--chat-template`` and ``LEGIBILITY_*``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.jobs.verifier_training.settings import TrainVerifierSettings

DATA = Path(__file__).resolve().parents[3] / "data" / "gsm8k_sample.jsonl"


def test_task_settings_come_from_flags_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = ["--samples", "s.jsonl", "--task", "gsm8k", "--data", str(DATA), "--chat-template", "none"]
    settings = TrainVerifierSettings.from_cli(flags, prog="train-verifier")
    assert (settings.task, settings.data, settings.chat_template) == ("gsm8k", DATA, "none")
    assert settings.load_task().name == "gsm8k"
    assert TrainVerifierSettings(samples=["s.jsonl"]).task == "toy"  # the default
    monkeypatch.setenv("LEGIBILITY_TASK", "gsm8k")
    monkeypatch.setenv("LEGIBILITY_DATA", str(DATA))
    from_env = TrainVerifierSettings(samples=["s.jsonl"])
    assert (from_env.task, from_env.data, from_env.chat_template) == ("gsm8k", DATA, "auto")


def test_an_unknown_task_is_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGIBILITY_TASK", "chess")
    with pytest.raises(ValidationError) as info:
        TrainVerifierSettings(samples=["s.jsonl"])
    assert info.value.errors()[0]["loc"] == ("task",) and "chess" in str(info.value)
