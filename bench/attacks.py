"""Attacks shared by the hostile suite and bench/hostile.py (which records their figures)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

# The costliest policy the load-time memory budget lets through: a free-form attribute doubled
# seven times as variables, then twice more in each of two rules.
RUNAWAY_POLICY = (
    "apiVersion: handshake/v1\nkind: ConnectionPolicy\n"
    "variables:\n  a: request.attributes.s + request.attributes.s\n"
    + "".join(
        f"  {b}: variables.{a} + variables.{a}\n" for a, b in zip("abcdef", "bcdefg", strict=True)
    )
    + "rules:\n"
    + "".join(
        f"  - {{id: r{i}, when: 'size(variables.g + variables.g) == {i}', decision: accept,"
        " rationale: x}\n"
        for i in range(2)
    )
    + "default: {decision: ignore, rationale: x}\n"
)


def pipeline(
    port: int, requests: bytes, seconds: float, meanwhile: Callable[[float], None] = lambda _: None
) -> tuple[int, int]:
    """Send `requests` (whole HTTP requests) over and over without reading an answer, for
    `seconds`, reconnecting whenever the server closes; call `meanwhile(elapsed)` between sends.
    Returns (bytes sent, connections made). Bounded in time and in bytes (64 GiB)."""
    block = requests * max(1, 65_536 // len(requests))
    sock: socket.socket | None = None
    sent = connections = offset = 0
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds and sent < 2**36:
            meanwhile(elapsed)
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port))
                sock.setblocking(False)
                connections, offset = connections + 1, 0
            try:  # whole requests: a short send goes on where it stopped
                done = sock.send(block[offset:])
                sent, offset = sent + done, (offset + done) % len(block)
            except BlockingIOError:
                select.select([], [sock], [], 0.05)
            except OSError:
                sock.close()
                sock = None
    finally:
        if sock is not None:
            sock.close()
    return sent, connections
