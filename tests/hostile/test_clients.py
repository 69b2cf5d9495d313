"""Clients that misbehave on the wire: their mistakes are theirs (4xx, or 499 when they left),
never a server fault."""

from __future__ import annotations

import socket

import httpx

from tests.hostile.conftest import TOKEN, Server, wait_for


def raw_request(server: Server, head: bytes, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(head + body)
    return sock


def test_a_client_that_leaves_mid_body_is_logged_as_499(server: Server) -> None:
    for path in (b"/evaluate", b"/evaluate/batch", b"/webhooks/example-crm"):
        head = (
            b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 1000\r\n\r\n"
        )
        raw_request(server, head, b'{"request": {').close()

    def left() -> list[dict[str, object]]:
        return [e for e in server.events() if e["event"] == "request" and e["status"] == 499]

    assert len(wait_for(lambda: len(left()) == 3 and left(), 10) or []) == 3, server.output()[
        -3000:
    ]
    metrics = httpx.get(server.url + "/metrics", timeout=5).text
    assert 'status="499"' in metrics
    assert 'status="500"' not in metrics
