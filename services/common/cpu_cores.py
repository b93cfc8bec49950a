"""Pin a process (and every process it starts) to some CPU cores, as a pod with a static CPU policy is.

Two engines on one host otherwise share every core: vLLM's CPU workers bind their OpenMP threads to the first
cores the process may use (each engine the same ones), and its scheduler and workers poll while they wait, so a
policy and a weak model side by side slow each other down. A process pinned here passes its cores to its children
(vLLM's engine core and worker pick theirs among them).
"""

from __future__ import annotations

import logging
import os


def parse_cores(spec: str) -> frozenset[int]:
    """``"0-3,8"`` -> {0, 1, 2, 3, 8}; ValueError on anything else, or on a core this machine does not have.

    Checked against the machine's cores, not this process's: a process pinned to some cores may start one that
    is pinned to others (the tandem bench does)."""
    cores: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{spec!r} is not a list of cores like 0-3,8")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"{part!r}: a range goes from low to high")
        cores.update(range(low, high + 1))
    machine = frozenset(range(os.cpu_count() or 1))
    if not cores <= machine:
        raise ValueError(f"cores {sorted(cores - machine)} are not among this machine's cores {format_cores(machine)}")
    return frozenset(cores)


def available_cores() -> frozenset[int]:
    """The cores this process may run on (its affinity; every core where the OS has no affinity calls)."""
    if hasattr(os, "sched_getaffinity"):
        return frozenset(os.sched_getaffinity(0))
    return frozenset(range(os.cpu_count() or 1))


def format_cores(cores: frozenset[int] | set[int]) -> str:
    return ",".join(str(core) for core in sorted(cores))


def pin_to(cores: frozenset[int] | set[int]) -> None:
    """Run this process, and the processes it starts from now on, on ``cores`` only."""
    if not hasattr(os, "sched_setaffinity"):
        raise NotImplementedError("pinning to cores needs Linux (os.sched_setaffinity)")
    try:
        os.sched_setaffinity(0, cores)
    except OSError as error:  # e.g. cores outside the container's cpuset
        raise ValueError(f"cannot run on cores {format_cores(cores)}: {error.strerror}") from None


def halves(cores: frozenset[int]) -> tuple[frozenset[int], frozenset[int]]:
    """Two disjoint halves (the first gets the extra core of an odd count); ValueError with fewer than 2 cores."""
    ordered = sorted(cores)
    if len(ordered) < 2:
        raise ValueError(f"splitting needs at least 2 cores; this process has {len(ordered)}")
    half = (len(ordered) + 1) // 2
    return frozenset(ordered[:half]), frozenset(ordered[half:])


def pin_service(cpu_cores: str, log: logging.Logger) -> bool:
    """A service's ``cpu_cores`` setting applied before it starts anything; False (logged) when the cores cannot be
    had, for the caller to exit non-zero."""
    if not cpu_cores:
        return True
    try:
        pin_to(parse_cores(cpu_cores))
    except (ValueError, NotImplementedError) as error:  # NotImplementedError: no sched_setaffinity (not Linux)
        log.error("refusing to start: cpu_cores: %s", error)
        return False
    log.info("running on CPU cores %s", cpu_cores)
    return True
