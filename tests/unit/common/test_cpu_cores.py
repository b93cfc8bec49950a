"""Core lists for pinning a service: parsed like taskset's, checked against the cores this process has, split."""

from __future__ import annotations

import logging
import os

import pytest
from pydantic import ValidationError

from services.common.cpu_cores import available_cores, format_cores, halves, parse_cores, pin_service, pin_to
from services.common.settings import ServerSettings
from services.learner.settings import LearnerSettings
from services.verifier.settings import VerifierSettings
from services.weak_model.settings import WeakModelSettings

CORES = available_cores()


def test_ranges_and_single_cores_parse_within_this_process_s_cores() -> None:
    assert parse_cores(format_cores(CORES)) == CORES
    assert parse_cores(f"{min(CORES)}-{min(CORES)}, {max(CORES)}") == {min(CORES), max(CORES)}


@pytest.mark.parametrize("spec", ["", "a", "1-", "-1", "3-1", "1;2"])
def test_malformed_lists_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_cores(spec)


def test_a_core_the_machine_does_not_have_is_refused_by_name() -> None:
    missing = os.cpu_count() or 1
    with pytest.raises(ValueError, match=rf"\[{missing}\] are not among this machine's cores"):
        parse_cores(str(missing))


@pytest.mark.parametrize("settings", [WeakModelSettings, VerifierSettings, LearnerSettings])
def test_every_service_has_the_setting_and_a_bad_one_names_the_field(settings: type[ServerSettings]) -> None:
    with pytest.raises(ValidationError, match="cpu_cores"):
        settings(cpu_cores=str(os.cpu_count() or 1))
    assert settings(cpu_cores=f" {max(CORES)} ").cpu_cores == str(max(CORES))


def test_a_service_that_cannot_have_its_cores_says_so_and_does_not_start(caplog: pytest.LogCaptureFixture) -> None:
    assert pin_service("", logging.getLogger("test")) is True  # the default: every core, nothing pinned
    assert os.sched_getaffinity(0) == CORES
    assert pin_service(str(os.cpu_count() or 1), logging.getLogger("test")) is False
    assert "refusing to start: cpu_cores: cores" in caplog.text and os.sched_getaffinity(0) == CORES


def test_halves_are_disjoint_and_cover_every_core() -> None:
    assert halves(frozenset({0, 1})) == ({0}, {1})
    first, second = halves(frozenset({4, 5, 6, 7, 9}))
    assert (first, second) == ({4, 5, 6}, {7, 9})
    with pytest.raises(ValueError, match="at least 2 cores"):
        halves(frozenset({3}))


def test_pinning_moves_this_process_and_a_pinned_process_may_widen_again() -> None:
    try:
        pin_to({max(CORES)})
        assert os.sched_getaffinity(0) == {max(CORES)}
        assert parse_cores(str(min(CORES))) == {min(CORES)}  # not this process's core now, but the machine's
    finally:
        pin_to(CORES)
    assert os.sched_getaffinity(0) == CORES
