"""Upstream model servers: one pooled aiohttp client each, and the mapping of their failures
onto the proxy's errors.

aiohttp is on the hot path because it holds 500 req/s where httpx 0.28 collapses (see the
gateway benchmark in bench/).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from server.errors import (
    EscalatorError,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
)
from server.settings import UpstreamSettings

log = logging.getLogger("escalator.upstreams")

_PASSED_HEADERS = ("retry-after", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
REDACTED = "[redacted]"
# A word of an upstream's message that shares this many characters in a row with its key is
# the key, however masked ("sk-upstr****cret").
_KEY_RUN = 8
_WORD = re.compile(r"[^\s\"',;()\[\]{}<>]+")


@dataclass(slots=True)
class UpstreamReply:
    """A complete (non-streamed) upstream answer."""

    body: bytes
    data: dict[str, Any]
    latency_ms: float


class UpstreamStream:
    """An open streamed answer: the status was 200; iterate `chunks()` for the body."""

    def __init__(self, upstream: Upstream, response: aiohttp.ClientResponse, started: float):
        self.upstream = upstream
        self._response = response
        self.started = started

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives. Raises UpstreamError/UpstreamTimeout if it breaks off."""
        try:
            key = self.upstream._key_bytes
            async for chunk in self._response.content.iter_any():
                # A key split across two reads is not caught: a model that streams its own
                # credentials back token by token is out of reach of this check.
                yield self.upstream.redact_bytes(chunk) if key and key in chunk else chunk
        except TimeoutError:
            raise UpstreamTimeout(
                f"upstream {self.upstream.name!r} stalled for more than "
                f"{self.upstream.settings.timeout_s:g}s in the middle of a stream"
            ) from None
        except aiohttp.ClientError as exc:
            log.warning("upstream %r broke off a stream: %s", self.upstream.name, _describe(exc))
            raise UpstreamError(f"upstream {self.upstream.name!r} broke off the stream") from None

    def close(self) -> None:
        self._response.close()


class Upstream:
    """One OpenAI-compatible model server."""

    def __init__(self, name: str, settings: UpstreamSettings) -> None:
        self.name = name
        self.settings = settings
        self._headers = {"content-type": "application/json"}
        api_key = settings.api_key()
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._key = api_key or ""
        self._key_bytes = self._key.encode()
        self._session: aiohttp.ClientSession | None = None
        # Built once: URL parsing and timeout objects cost more than they look per request.
        self._urls = {
            path: URL(self._url(path)) for path in ("chat/completions", "completions", "responses")
        }
        self._complete_timeout = aiohttp.ClientTimeout(
            total=settings.timeout_s, sock_connect=settings.connect_timeout_s
        )
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.timeout_s
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.settings.max_connections, ttl_dns_cache=300, keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(
                connector=connector, skip_auto_headers=("User-Agent",), auto_decompress=True
            )
        return self._session

    def _url(self, path: str) -> str:
        return f"{self.settings.url}/{path.lstrip('/')}"

    async def complete(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> UpstreamReply:
        """POST a request and read the whole JSON answer. `headers` are sent besides the
        upstream's own (a trace's `traceparent`)."""
        started = time.perf_counter()
        sent = self._headers if headers is None else {**self._headers, **headers}
        try:
            async with self.session.post(
                self._urls[path], data=body, headers=sent, timeout=self._complete_timeout
            ) as response:
                raw = await response.read()
                if response.status != 200:
                    raise self._status_error(response, raw)
        except TimeoutError:
            raise self._timeout() from None
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamError(
                f"upstream {self.name!r} answered 200 with a body that is not JSON",
                code="upstream_bad_answer",
            )
        if self._key_bytes and self._key_bytes in raw:  # a search in C, nearly free
            raw = self.redact_bytes(raw)
            data = orjson.loads(raw)
        return UpstreamReply(raw, data, (time.perf_counter() - started) * 1000)

    async def open_stream(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> UpstreamStream:
        """POST a streamed request and wait for its status; the body is read later."""
        started = time.perf_counter()
        sent = self._headers if headers is None else {**self._headers, **headers}
        try:
            response = await self.session.post(
                self._urls[path], data=body, headers=sent, timeout=self._stream_timeout
            )
        except TimeoutError:
            raise self._timeout() from None
        except aiohttp.ClientError as exc:
            raise self._unreachable(exc) from None
        if response.status != 200:
            try:
                raw = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                response.release()
            raise self._status_error(response, raw)
        return UpstreamStream(self, response, started)

    async def list_models(self, timeout_s: float = 2.0) -> list[str]:
        """The models the upstream serves (`GET /models`): the readiness probe."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self.session.get(
            self._url("models"), headers=self._headers, timeout=timeout
        ) as response:
            response.raise_for_status()
            data = await response.json(loads=orjson.loads, content_type=None)
        return [m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- failures ---------------------------------------------------------------------------

    def _timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(
            f"upstream {self.name!r} did not answer within {self.settings.timeout_s:g}s"
        )

    def _unreachable(self, exc: BaseException) -> UpstreamError:
        # Where it is and why is for the operator; the tenant learns which upstream failed.
        log.warning("upstream %r unreachable: %s", self.name, self.redact(_describe(exc)))
        return UpstreamError(f"upstream `{self.name}` unreachable")

    def redact_bytes(self, raw: bytes) -> bytes:
        """A 200 body with this upstream's API key (whole) replaced, still valid JSON."""
        return raw.replace(self._key_bytes, REDACTED.encode())

    def redact(self, text: str) -> str:
        """`text` with this upstream's API key taken out, whole or masked."""
        key = self._key
        if not key:
            return text
        text = text.replace(key, REDACTED)
        if len(key) < _KEY_RUN:
            return text
        runs = {key[i : i + _KEY_RUN] for i in range(len(key) - _KEY_RUN + 1)}

        def masked(match: re.Match[str]) -> str:
            word = match.group()
            bare = word.replace("*", "")
            if any(bare[i : i + _KEY_RUN] in runs for i in range(len(bare) - _KEY_RUN + 1)):
                return REDACTED + word[len(word.rstrip(".:!?")) :]  # the sentence goes on
            return word

        return _WORD.sub(masked, text)

    def _status_error(self, response: aiohttp.ClientResponse, raw: bytes) -> EscalatorError:
        status = response.status
        message = self.redact(_upstream_message(raw))
        if 400 <= status < 500:
            headers = {
                h: self.redact(response.headers[h])
                for h in _PASSED_HEADERS
                if h in response.headers
            }
            return UpstreamRejected(
                status, message or f"upstream {self.name!r} answered {status}", headers=headers
            )
        detail = f": {message}" if message else ""
        return UpstreamError(
            f"upstream {self.name!r} answered {status}{detail}", code=f"upstream_{status}"
        )


def _upstream_message(raw: bytes) -> str:
    """The error message inside an upstream's body, if it is OpenAI-shaped JSON."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""  # e.g. an HTML error page from a load balancer: not worth relaying
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return ""


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Upstreams(dict[str, Upstream]):
    """All configured upstreams by name."""

    @classmethod
    def from_settings(cls, settings: dict[str, UpstreamSettings]) -> Upstreams:
        return cls({name: Upstream(name, s) for name, s in settings.items()})

    async def any_ready(self) -> bool:
        async def probe(upstream: Upstream) -> bool:
            try:
                await upstream.list_models()
            except (TimeoutError, aiohttp.ClientError, ValueError):
                return False
            return True

        if not self:
            return False
        results = await asyncio.gather(*(probe(u) for u in self.values()))
        return any(results)

    async def close(self) -> None:
        await asyncio.gather(*(u.close() for u in self.values()))
