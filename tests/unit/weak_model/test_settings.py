"""Weak-model settings: the batching delay's default and its flag."""

from __future__ import annotations

from services.weak_model.settings import WeakModelSettings


def test_a_lone_call_is_not_held_back_by_default_and_the_delay_is_a_flag() -> None:
    assert WeakModelSettings().max_delay_ms == 0.0  # 5 ms held every lone call back (0.8x the tokens/s at 1 client)
    settings = WeakModelSettings.from_cli(["--max-delay-ms", "5"], prog="serve weak-model")
    assert settings.max_delay_ms == 5.0
