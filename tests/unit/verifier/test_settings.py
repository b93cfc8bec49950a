"""Verifier settings: the task settings and the /get_reward mode from flags and ``LEGIBILITY_*``."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.verifier.settings import VerifierSettings

DATA = Path(__file__).resolve().parents[2] / "data" / "gsm8k_sample.jsonl"


def test_task_and_reward_mode_from_flags() -> None:
    flags = ["--task", "gsm8k", "--data", str(DATA), "--chat-template", "none", "--http-reward", "correctness"]
    settings = VerifierSettings.from_cli([*flags, "--model-path", "some/dir"], prog="serve verifier")
    assert (settings.task, settings.data, settings.chat_template) == ("gsm8k", DATA, "none")
    assert settings.http_reward == "correctness" and settings.model_path == Path("some/dir")
    assert settings.prompt_format(None).task.name == "gsm8k"
    defaults = VerifierSettings()
    assert (defaults.task, defaults.chat_template, defaults.http_reward) == ("toy", "auto", "verifier")


def test_task_and_reward_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGIBILITY_TASK", "gsm8k")
    monkeypatch.setenv("LEGIBILITY_DATA", str(DATA))
    monkeypatch.setenv("LEGIBILITY_HTTP_REWARD", "correctness+verifier")
    settings = VerifierSettings()
    assert (settings.task, settings.data, settings.http_reward) == ("gsm8k", DATA, "correctness+verifier")
    monkeypatch.setenv("LEGIBILITY_HTTP_REWARD", "accuracy")
    with pytest.raises(ValidationError) as info:
        VerifierSettings()
    assert info.value.errors()[0]["loc"] == ("http_reward",)


def test_the_hf_worker_is_a_child_process_on_the_cpu_and_a_thread_on_a_gpu() -> None:
    from services.verifier.model import resolve_hf_worker

    assert VerifierSettings().hf_worker == "auto"
    assert [resolve_hf_worker("auto", device) for device in ("cpu", "cuda")] == ["process", "thread"]
    assert [resolve_hf_worker(worker, "cpu") for worker in ("thread", "process")] == ["thread", "process"]
    assert [resolve_hf_worker(worker, "cuda") for worker in ("thread", "process")] == ["thread", "process"]
