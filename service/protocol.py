"""uvicorn's HTTP/1.1 protocol (httptools), bounded: what one client can cost a worker.

Stock `HttpToolsProtocol` (uvicorn 0.54.0) has no deadline before a request's head is
complete, none for the body, no limit on the request head's size or on pipelined requests, and
it resumes reading after every response and on every `receive()` even while requests are
queued or the client is not reading its answers: a client that pipelines without reading grew
a worker by ~100 MiB/s. Each bound and what happens at it: docs/operations.md, "Bounds";
why a subclass and not another server: docs/adr/0013-bounded-connections.md. It leans on
uvicorn's internals, which the lock pins: tests/hostile/test_clients.py checks every bound
against a real server, so an upgrade that breaks one fails there.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httptools
import structlog
from uvicorn._types import ASGI3Application
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

__all__ = ["BoundedHttpToolsProtocol", "Limits"]

_log = structlog.get_logger("handshake")


class _PipelineFullError(Exception):
    """Raised from a parser callback: httptools cannot pause, only stop on a callback error."""


class _GatedFlow(FlowControl):
    """Refuses to resume reading while requests are queued, the client is not reading our
    answers (write buffer above the transport's high-water mark) or input is shut; a refused
    resume is remembered and done once the gate opens. Stock calls resume_reading() after every
    response and on every receive() (httptools_impl.py:337, :573) regardless of either."""

    def __init__(self, transport: asyncio.Transport, protocol: BoundedHttpToolsProtocol) -> None:
        super().__init__(transport)
        self._protocol = protocol
        self._wanted = False

    def pause_reading(self) -> None:
        self._wanted = False
        super().pause_reading()

    def resume_reading(self) -> None:
        self._wanted = True
        if self._protocol.pipeline or self.write_paused or self._protocol.input_closed:
            return
        self._wanted = False
        super().resume_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._wanted:
            self.resume_reading()


@dataclass(frozen=True)
class Limits:
    header_seconds: float = 10.0  # connection made / first byte of a request -> head complete
    body_seconds: float = 30.0  # head complete -> body complete (408 if still answerable)
    response_seconds: float = 30.0  # a client not reading its answers (buffer above high-water)
    max_head_bytes: int = 64 * 1024  # request line + headers (llhttp has no limit)
    max_pipeline: int = 16  # requests queued behind the one in flight; then close after them
    max_connections: int = 512  # open connections per worker; past it, new ones are closed


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Pass as `http=functools.partial(BoundedHttpToolsProtocol, limits=Limits(...))`."""

    problem_type_prefix: str = "urn:handshake:problem:"

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        limits: Limits = Limits(),
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.input_closed = False  # we stopped parsing; later bytes are discarded
        self._deadline: asyncio.TimerHandle | None = None  # header or body deadline
        self._write_deadline: asyncio.TimerHandle | None = None
        self._in_head = False  # a request has begun and its head is not complete
        self._head_bytes = 0
        self._running: RequestResponseCycle | None = None  # stock only knows the newest parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _GatedFlow(transport, self)
        if len(self.connections) > self.limits.max_connections:
            # uvicorn's limit_concurrency only answers 503 to requests (and counts silent
            # sockets, so idle ones make every request a 503); it never closes a socket.
            _log.warning(
                "connection_refused",
                reason="too many connections",
                limit=self.limits.max_connections,
            )
            self._close(abort=True)
            return
        # A connection that never sends must not live forever (keep-alive starts after a response).
        self._arm(self.limits.header_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadlines()
        self.input_closed = True
        # Stock marks only self.cycle (httptools_impl.py:123), the newest *parsed* request; with
        # pipelining the running one is older, and its send() would write to a closed transport.
        self._disconnect_cycles()
        super().connection_lost(exc)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def data_received(self, data: bytes) -> None:
        # Stock logic (httptools_impl.py:170) plus: drop input once we stopped parsing, a head
        # deadline even for bytes that begin no request (llhttp skips CRLFs), a head size cap,
        # and no "400 Invalid HTTP request" when the parse error is our own _PipelineFullError.
        if self.input_closed:
            return
        if self._deadline is None:
            self._arm(self.limits.header_seconds)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _PipelineFullError):
                self._stop_input()
                return
            _log.info("invalid_http", error=str(exc))
            self.send_400_response(f"malformed HTTP: {exc}")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self._cancel_deadlines()  # the websocket protocol owns the transport now
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_head:  # after parsing: the chunk a head began in counts too
            self._head_bytes += len(data)
        if self._in_head and self._head_bytes > self.limits.max_head_bytes:
            self._refuse(
                431,
                "request-header-fields-too-large",
                "Request header fields too large",
                f"the request line and headers exceed {self.limits.max_head_bytes:,} bytes",
            )

    def on_message_begin(self) -> None:
        if (
            self.cycle is not None
            and not self.cycle.response_complete
            and len(self.pipeline) >= self.limits.max_pipeline
        ):
            # Answer what is queued, then close: RFC 9112 §9.3.2 lets clients retry the rest.
            raise _PipelineFullError
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._deadline is None:
            self._arm(self.limits.header_seconds)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.limits.body_seconds)  # cancelled by on_message_complete, at once if no body
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        super().on_message_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(
                self.limits.response_seconds, self._write_timed_out
            )

    def resume_writing(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None
        super().resume_writing()

    # Internals

    def _arm(self, delay: float) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(delay, self._timed_out)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cancel_deadlines(self) -> None:
        self._cancel_deadline()
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        phase = (
            "head"
            if self._in_head
            else "body"
            if self.cycle is not None and self.cycle.more_body
            else "idle"
        )
        _log.info(
            "connection_timed_out",
            phase=phase,
            seconds=self.limits.header_seconds if phase != "body" else self.limits.body_seconds,
        )
        self._refuse(
            408, "request-timeout", "Request timeout", "the request did not arrive in time"
        )

    def _write_timed_out(self) -> None:
        self._write_deadline = None
        _log.info("connection_timed_out", phase="response", seconds=self.limits.response_seconds)
        self._close(abort=True)  # close() would wait for a buffer that never drains

    def _refuse(self, status: int, code: str, title: str, detail: str) -> None:
        """Answer `status` if it would be the next response on the wire, then close; else close."""
        cycle = self.cycle
        if self._in_head:  # a request has begun: answerable if no response is due before it
            answerable = cycle is None or cycle.response_complete
        else:  # in a body, self.cycle is the request being served unless others are queued
            answerable = (
                cycle is not None
                and cycle.more_body
                and not self.pipeline
                and not cycle.response_started
            )
        self._disconnect_cycles()
        if answerable and not self.transport.is_closing():
            self._write_problem(status, code, title, detail)
        self._close(abort=False)

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP: a problem document, as every error answer is, then close."""
        self._write_problem(400, "invalid-request", "The request is not valid", msg)
        self.transport.close()

    def _write_problem(self, status: int, code: str, title: str, detail: str) -> None:
        body = json.dumps(
            {
                "type": self.problem_type_prefix + code,
                "title": title,
                "status": status,
                "detail": detail,
                "code": code,
            }
        ).encode()
        head = [
            STATUS_LINE[status],
            *(n + b": " + v + b"\r\n" for n, v in self.server_state.default_headers),
            b"content-type: application/problem+json\r\ncontent-length: %d\r\n" % len(body),
        ]
        self.transport.write(b"".join(head) + b"connection: close\r\n\r\n" + body)

    def _disconnect_cycles(self) -> None:
        """The app's receive() returns http.disconnect and its send()s are dropped from now on."""
        for cycle in (self._running, self.cycle):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()

    def _stop_input(self) -> None:
        """Stop reading; answer what is already accepted, then close (last accepted gets close)."""
        self.input_closed = True
        self._in_head = False
        self._cancel_deadline()
        self.flow.pause_reading()
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        else:
            self.cycle.keep_alive = False  # the newest cycle is answered last

    def _close(self, *, abort: bool) -> None:
        self.input_closed = True
        self._cancel_deadline()
        if abort:
            self.transport.abort()
        elif not self.transport.is_closing():
            self.transport.close()
