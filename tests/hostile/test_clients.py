"""Clients that misbehave on the wire (docs/operations.md, "Bounds"): each costs a bounded
amount of memory and time, gets a problem document where an answer can still be sent, and is
never counted as a server fault (4xx, or 499 when it left). The server runs with short
timeouts here; the defaults are 10 s (head) and 30 s (body)."""

from __future__ import annotations

import select
import socket
import time

import httpx

from bench.attacks import pipeline
from tests.api.conftest import sample
from tests.hostile.conftest import AUTH, TOKEN, Server, wait_for

HEAD_SECONDS, BODY_SECONDS, MAX_CONNECTIONS = 1, 2, 40
SERVER_ENV = {
    "HANDSHAKE_HEADER_TIMEOUT_SECONDS": str(HEAD_SECONDS),
    "HANDSHAKE_BODY_TIMEOUT_SECONDS": str(BODY_SECONDS),
    "HANDSHAKE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
}
EVALUATE = (
    b"POST /evaluate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: %d\r\n\r\n"
)


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def closed_within(sock: socket.socket, seconds: float) -> tuple[float | None, bytes]:
    """(seconds until the server closed, what it sent), or (None, …) if still open."""
    started, got = time.monotonic(), b""
    while (elapsed := time.monotonic() - started) < seconds:
        if select.select([sock], [], [], 0.1)[0]:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return elapsed, got
            if not chunk:
                return elapsed, got
            got += chunk
    return None, got


def problem_status(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), answer
    return int(head.split(b" ", 2)[1]), body


def test_a_client_that_pipelines_without_reading_costs_a_bounded_amount(server: Server) -> None:
    body = b'{"request": %s}' % httpx.Request("POST", "/", json=sample()).content
    answered: list[int] = []

    def meanwhile(elapsed: float) -> None:  # others are served during the attack
        if not answered and elapsed > 3:
            response = httpx.post(
                server.url + "/evaluate", json={"request": sample()}, headers=AUTH
            )
            answered.append(response.status_code)

    before = server.rss_mib()
    sent, connections = pipeline(server.port, EVALUATE % len(body) + body, 6, meanwhile)
    grown = server.rss_mib() - before
    assert answered == [200], (sent, connections)
    assert grown < 50, f"+{grown:.0f} MiB for one pipelining client"
    assert sent > 1_000_000, (sent, connections)  # it did pipeline, under real pressure


def test_a_silent_connection_is_closed(server: Server) -> None:
    with connect(server) as sock:
        seconds, got = closed_within(sock, HEAD_SECONDS + 3)
    assert seconds is not None
    assert seconds >= HEAD_SECONDS - 0.2
    assert got == b""  # nothing began: nothing to answer


def test_a_trickled_head_gets_a_408(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /evaluate HTTP/1.1\r\nHost: x\r\n")
        time.sleep(HEAD_SECONDS / 2)
        sock.sendall(b"X-Slow: 1\r\n")  # trickling: still within the head's time
        seconds, got = closed_within(sock, HEAD_SECONDS + 3)
    assert seconds is not None
    status, body = problem_status(got)
    assert status == 408
    assert b'"code": "request-timeout"' in body


def test_an_unfinished_body_gets_a_408(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(EVALUATE % 1000 + b'{"request": ')
        seconds, got = closed_within(sock, BODY_SECONDS + 3)
    assert seconds is not None
    assert seconds >= BODY_SECONDS - 0.2
    assert problem_status(got)[0] == 408


def test_an_endless_header_gets_a_431(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nX-Big: " + b"a" * 70_000)
        seconds, got = closed_within(sock, 3)
    assert seconds is not None
    assert problem_status(got)[0] == 431


def test_connections_past_the_bound_are_closed_and_the_rest_time_out(server: Server) -> None:
    idle = [connect(server) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        refused = [s for s in idle if closed_within(s, 0.05)[0] is not None]
        assert len(refused) >= 10  # past the bound: closed at once
        assert all(closed_within(s, HEAD_SECONDS + 3)[0] is not None for s in idle)
    finally:
        for sock in idle:
            sock.close()
    assert httpx.get(server.url + "/health/live").status_code == 200  # and then served


def test_a_client_that_leaves_mid_body_is_logged_as_499(server: Server) -> None:
    paths = (b"/evaluate", b"/evaluate/batch", b"/webhooks/example-crm")
    for path in paths:
        head = EVALUATE.replace(b"/evaluate", path) % 1000
        head = head.replace(
            b"Host: x", b"Host: x\r\nX-Request-ID: leaves-" + path.replace(b"/", b"-")
        )
        with connect(server) as sock:
            sock.sendall(head + b'{"request": {')
    ids = {"leaves-" + p.replace(b"/", b"-").decode() for p in paths}

    def left() -> dict[str, object]:
        events = server.events()
        return {e["request_id"]: e["status"] for e in events if e.get("request_id") in ids}

    assert wait_for(lambda: len(left()) == 3, 10), server.output()[-3000:]
    assert set(left().values()) == {499}
    metrics = httpx.get(server.url + "/metrics", timeout=5).text
    assert 'status="499"' in metrics
    assert 'status="500"' not in metrics


def test_malformed_http_gets_a_400_problem(server: Server) -> None:
    for garbage in (b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nHost x\r\n\r\n"):
        with connect(server) as sock:
            sock.sendall(garbage)
            seconds, got = closed_within(sock, 3)
        assert seconds is not None
        status, body = problem_status(got)
        assert status == 400
        assert b'"code": "invalid-request"' in body
