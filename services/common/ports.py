"""Free loopback ports for processes this one starts (services, Redis servers)."""

from __future__ import annotations

import socket
import threading

HOST = "127.0.0.1"

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, and never handed out before by this process.

    The probe socket is released at once (the caller's process binds the port a moment later), so the kernel may
    pick the same port again for the next probe: two ports asked for in a row (a service's gRPC and metrics ports)
    then collided. Ports already handed out are skipped.
    """
    with _lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((HOST, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
