"""Limits that keep one client from taking the proxy down.

uvicorn bounds neither the number of open connections nor the time a client may take to
send a request's headers (its keep-alive timer is disarmed by the first byte of the next
request), and its own `limit_concurrency` answers every path, `/healthz` included, with a
plain-text 503. So, with the `[server]` settings:

- `guarded_protocol` subclasses uvicorn's httptools protocol: a connection with no request
  in flight is closed `header_timeout_s` after it opened or after its last response (a
  client that trickles its headers, or sends nothing), and at most `max_connections` are
  open: one more evicts the open connection that has waited longest without a request in
  flight (or without reading its answer), or, if every one is busy, is answered 503 and
  closed. A client that stops reading its answer is cut off after `send_timeout_s`, so
  pipelined requests it never reads cannot hold a connection (and /healthz) for ever.
- `RequestLimit` (ASGI middleware) answers requests beyond `max_requests_in_flight` with a
  503 envelope and `retry-after`; the operations endpoints are not counted and always
  answer. As `max_requests_in_flight < max_connections`, some open connection is always
  free to be evicted for a health check.
- A request body must arrive within `body_timeout_s` (`read_json_object` in server/http.py).

The same protocol answers a request line or header it cannot parse with a 400 envelope,
where uvicorn answers in plain text.
"""

from __future__ import annotations

import asyncio
import http
import logging
import resource
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.errors import EscalatorError, InvalidRequest, ServiceUnavailable
from server.http import error_response
from server.metrics import Metrics
from server.settings import ServerSettings, Settings

log = logging.getLogger("escalator.limits")

OPERATIONS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
RETRY_AFTER_S = "1"
_MALFORMED = "The request line or a header could not be parsed as HTTP/1.1."
_FILES_BESIDE_CONNECTIONS = 256  # log segments, the SQLite file, listening sockets, ...


def overloaded(what: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"The proxy is at its limit of {what}; retry shortly.",
        code="overloaded",
        headers={"retry-after": RETRY_AFTER_S},
    )


class RequestLimit:
    """ASGI middleware: at most `limit` requests in flight, the operations endpoints aside."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.in_flight = 0
        metrics.requests_in_flight.set_function(lambda: self.in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPERATIONS_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.overload_rejections.labels("requests").inc()
            refusal = overloaded(f"{self.limit} requests in flight")
            await error_response(refusal)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def guarded_protocol(limits: ServerSettings, metrics: Metrics) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol with a header timeout and a connection limit (see above)."""
    open_connections: set[GuardedConnection] = set()
    metrics.open_connections.set_function(lambda: len(open_connections))
    refused_response = _raw_response(overloaded(f"{limits.max_connections} connections"))

    class GuardedConnection(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _stall: asyncio.TimerHandle | None = None  # the client stopped reading its answer
        _waiting_since = 0.0
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(open_connections) >= limits.max_connections and not _evict_one():
                self._refused = True
                metrics.overload_rejections.labels("connections").inc()
                transport.write(refused_response)
                transport.close()
                return
            super().connection_made(transport)
            open_connections.add(self)
            self._await_request()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return  # uvicorn never saw this connection
            self._cancel_deadline()
            self._cancel_stall()
            open_connections.discard(self)
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            """The client's receive window is full: it has that long to read on."""
            super().pause_writing()
            if self._stall is None:
                self._waiting_since = self.loop.time()
                self._stall = self.loop.call_later(
                    limits.send_timeout_s, self.close, "send_timeout"
                )

        def resume_writing(self) -> None:
            self._cancel_stall()
            super().resume_writing()

        def stalled(self) -> bool:
            """Whether the client has stopped reading what it asked for."""
            return self._stall is not None

        def send_400_response(self, msg: str) -> None:
            self.transport.write(_raw_response(InvalidRequest(f"{msg} {_MALFORMED}")))
            self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_request()

        def serving(self) -> bool:
            """Whether a request's headers have arrived and its response is not complete."""
            return self.cycle is not None and not self.cycle.response_complete

        def close(self, reason: str) -> None:
            metrics.connections_closed.labels(reason).inc()
            open_connections.discard(self)
            self._cancel_deadline()
            self._cancel_stall()
            # abort, not close: close keeps the socket until unsent output drains, which a
            # client that does not read never lets happen.
            self.transport.abort()

        def _await_request(self) -> None:
            # One timer per connection, moved lazily: a keep-alive connection answering
            # thousands of requests a second does not cancel and re-arm one per request.
            self._waiting_since = self.loop.time()
            if self._deadline is None:
                self._deadline = self.loop.call_later(limits.header_timeout_s, self._on_deadline)

        def _on_deadline(self) -> None:
            self._deadline = None
            if self.serving() or self.transport.is_closing():
                return  # on_response_complete arms it again
            left = self._waiting_since + limits.header_timeout_s - self.loop.time()
            if left > 0:
                self._deadline = self.loop.call_later(left, self._on_deadline)
            else:
                self.close("header_timeout")

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _cancel_stall(self) -> None:
            if self._stall is not None:
                self._stall.cancel()
                self._stall = None

    def _evict_one() -> bool:
        waiting = [c for c in open_connections if not c.serving() or c.stalled()]
        if not waiting:
            return False
        min(waiting, key=lambda c: c._waiting_since).close("evicted")
        return True

    return GuardedConnection


def _raw_response(error: EscalatorError) -> bytes:
    """An error envelope written straight to a connection, which is then closed."""
    body = error.body()
    lines = [
        f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in error.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def ensure_open_files(settings: Settings) -> None:
    """Raise the soft limit on open files to what the configured limits can use (client
    connections, upstream pools and the proxy's own files), as far as the hard limit allows."""
    wanted = (
        settings.server.max_connections
        + sum(u.max_connections for u in settings.upstreams.values())
        + _FILES_BESIDE_CONNECTIONS
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < wanted:
            log.warning(
                "open files are limited to %d (hard limit) but the configured limits may use "
                "%d: lower server.max_connections or raise the limit (ulimit -Hn)",
                raised,
                wanted,
            )


def uvicorn_options(settings: Settings, metrics: Metrics) -> dict[str, Any]:
    """The uvicorn settings the limits set."""
    return {
        "http": guarded_protocol(settings.server, metrics),
        "timeout_keep_alive": settings.server.keep_alive_s,
    }
