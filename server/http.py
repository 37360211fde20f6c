"""HTTP plumbing shared by the routes: request ids and escalator headers on every response,
bounded body reading, error responses, and responses that notice a client going away."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import EscalatorError, InvalidRequest, PayloadTooLarge, RequestTimeout
from server.metrics import Metrics
from server.tenancy import Caller
from server.tenants.usage import UsageTally
from server.trace import StepTrace

log = logging.getLogger("escalator.http")

_WATCH_AFTER_S = 0.05
REQUEST_ID_PREFIX = "req_"
T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready."""


class StepHeaders:
    """ASGI middleware: gives each request a trace and id, and stamps every response (errors
    and streams included) with `x-request-id` and, on /v1/ paths, the escalator headers read
    off the step's trace. Counts each answered /v1/ request, and each step in its tenant's
    usage."""

    def __init__(self, app: ASGIApp, metrics: Metrics, usage: UsageTally | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.usage = usage
        # Request ids: a random per-process prefix and a counter. Unique across replicas
        # and restarts, and far cheaper than a uuid4 (a getrandom syscall) per request.
        self._id_prefix = f"{REQUEST_ID_PREFIX}{secrets.token_hex(6)}"
        self._ids = itertools.count()

    def _next_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):010x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = StepTrace(request_id=self._next_request_id())
        scope.setdefault("state", {})["trace"] = trace
        api_path = scope["path"].startswith("/v1/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", trace.request_id.encode()))
                if api_path:
                    headers.extend(trace.headers())
                    self.metrics.requests.labels(
                        trace.tenant or "unknown",
                        trace.route or ("passthrough" if trace.upstream else "none"),
                        trace.action,
                        str(message["status"]),
                    ).inc()
                    if self.usage is not None:
                        self.usage.count(trace)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def trace_of(request: Request) -> StepTrace:
    trace: StepTrace = request.state.trace
    return trace


def caller_of(request: Request) -> Caller:
    """The tenant the request's API key belongs to (401 otherwise), noted on its trace."""
    caller: Caller = request.app.state.tenancy.authenticate(request.headers.get("authorization"))
    trace_of(request).tenant = caller.tenant
    return caller


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(error: EscalatorError) -> Response:
    return json_response(error.body(), error.status, error.headers)


async def read_json_object(
    request: Request, max_bytes: int, *, non_finite: bool = False
) -> tuple[dict[str, Any], bytes]:
    """The request body as a JSON object, refusing bodies over `max_bytes` before reading them.

    `non_finite` also reads `NaN` and `Infinity` (which JSON lacks but Python's clients
    send), so that validation can name the field holding one; a slower path, off the step's.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than the limit of {max_bytes} bytes.")
    timeout_s: float = request.app.state.settings.server.body_timeout_s
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(
                        f"The request body is larger than the limit of {max_bytes} bytes."
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {timeout_s:g}s.",
            headers={"connection": "close"},
        ) from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidRequest("The request body is empty: send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        body = _loads_non_finite(raw) if non_finite else None
        if body is None:
            raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body, raw


def _loads_non_finite(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work` in this task, cancelling it if the client disconnects first.

    The watcher starts only once the work has taken `_WATCH_AFTER_S`: a quick answer never
    pays for a second task, and a model call that takes seconds is still cancelled promptly.
    """
    this = asyncio.current_task()
    assert this is not None
    loop = asyncio.get_running_loop()
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        await _wait_for_disconnect(request.receive)
        gone = True
        this.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(_WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            raise ClientDisconnected() from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class SseBody(Protocol):
    """A streamed step's body (`SseRelay`, or events made from one): bytes to send, and
    `finish`, called once however the stream ends."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def finish(self) -> None: ...


class SseResponse(Response):
    """A streamed step: relays the upstream's SSE bytes, and stops the relay (closing the
    upstream request) the moment the client disconnects, even while the upstream is silent."""

    media_type = "text/event-stream"

    def __init__(self, relay: SseBody) -> None:
        # No body and so no content-length: the length is unknown until the stream ends.
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streaming = asyncio.ensure_future(self._send_stream(send))
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({streaming, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if streaming.done():
                streaming.result()  # a bug in relaying must surface, not vanish
            else:  # the client went away: stop relaying
                streaming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await streaming
        finally:
            watcher.cancel()
            self.relay.finish()

    async def _send_stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        iterator = aiter(self.relay)
        try:
            async for chunk in iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away while we wrote
        finally:
            await iterator.aclose()  # type: ignore[attr-defined]
