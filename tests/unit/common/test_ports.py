"""free_port never hands out one port twice in a process, even when the kernel offers it again."""

from __future__ import annotations

import socket
from typing import ClassVar

import pytest

from services.common import ports


class _Probe:
    """A socket stand-in whose bind to port 0 gets the next of a fixed list of ports."""

    offered: ClassVar[list[int]] = []

    def __init__(self, *args: object) -> None:
        self.port = 0

    def __enter__(self) -> _Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        self.port = self.offered.pop(0)

    def getsockname(self) -> tuple[str, int]:
        return ports.HOST, self.port


def test_a_port_the_kernel_offers_again_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_handed_out", set())
    monkeypatch.setattr(ports.socket, "socket", _Probe)
    _Probe.offered = [41000, 41000, 41000, 41001, 41000, 41002]
    assert [ports.free_port(), ports.free_port(), ports.free_port()] == [41000, 41001, 41002]
    assert _Probe.offered == []


def test_ports_are_bindable_and_distinct() -> None:
    picked = [ports.free_port() for _ in range(50)]
    assert len(set(picked)) == 50
    with socket.socket() as sock:
        sock.bind((ports.HOST, picked[-1]))  # free when handed out
