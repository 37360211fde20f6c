"""`/v1/responses`: a response on a route is an agent step, run by the chat step's service.

1. chain: `previous_response_id` → the stored conversation (404 if unknown, expired, deleted
   or another tenant's), its session, and the items before this request's input
2. session: `X-Session-Id` or `metadata.session_id`, else the chain's session; a response that
   starts a chain (stored, no session named) starts a session named by its own id
3. step: the request as a chat step (its transcript is what the helper reads and the log
   keeps); a target whose upstream serves Responses is sent the Responses request itself
4. answer: a chat answer translated back (events included), a native one with the proxy's id
5. store: the conversation and the response, before the client can chain on it
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from server.errors import InvalidRequest, NotFound, ServiceUnavailable
from server.responses.answers import listed_item, new_id, response_from_chat, response_shell
from server.responses.events import FromChat, FromResponses, ResponsesRelay
from server.responses.native import ResponsesWire, speaks_responses
from server.responses.store import ResponseStore
from server.responses.translate import chat_request, input_items
from server.service import ChatService
from server.settings import Settings
from server.tenancy import Caller
from server.trace import StepTrace
from server.validation import check_routed_step

log = logging.getLogger("escalator.responses")

# Each stored response holds its whole conversation (so a chain survives the eviction or
# expiry of its older responses), and a session's storage grows with the square of its
# length: a stored record is compressed (JSON of a transcript shrinks about fivefold).
_PACKED = b"z"
_PACK_FROM_BYTES = 2048


def pack(record: bytes) -> bytes:
    if len(record) < _PACK_FROM_BYTES:
        return record
    return _PACKED + zlib.compress(record, 1)


def unpack(blob: bytes) -> bytes:
    return zlib.decompress(blob[1:]) if blob.startswith(_PACKED) else blob


@dataclass(slots=True)
class ResponsesReply:
    body: bytes | None = None
    stream: ResponsesRelay | None = None


@dataclass(frozen=True, slots=True)
class ItemsPage:
    """`GET /v1/responses/{id}/input_items` query: OpenAI's defaults."""

    limit: int = 20
    order: str = "desc"
    after: str | None = None


@dataclass(frozen=True, slots=True)
class Chain:
    """What a stored response gives the next one: its session and the conversation so far."""

    session: str
    items: list[dict[str, Any]]


class ResponsesService:
    def __init__(self, settings: Settings, chat: ChatService, store: ResponseStore) -> None:
        self.settings = settings
        self.chat = chat
        self.store = store
        self.ttl_s = settings.storage.response_ttl_s

    async def create(
        self,
        caller: Caller,
        body: dict[str, Any],
        raw: bytes,
        trace: StepTrace,
        session: str | None,
    ) -> ResponsesReply:
        chain = await self._chain(caller, body.get("previous_response_id"))  # 1. chain
        chained = chain.items if chain else []
        items = [*chained, *input_items(body)]
        keep = body.get("store") is not False
        response_id = new_id("resp")
        session = session or (chain.session if chain else None)  # 2. session
        if session is None and keep:
            session = response_id

        step = self._chat_step(body, items, len(chained), raw)  # 3. step
        wire = ResponsesWire(self.settings, {**body, "input": items})
        reply = await self.chat.chat(caller, step, orjson.dumps(step), trace, session, wire)

        async def kept(response: dict[str, Any]) -> None:  # 5. store
            if keep:
                record = {"session": trace.session, "input": items, "response": response}
                blob = pack(orjson.dumps(record))
                await self.store.put(caller.tenant, response_id, blob, self.ttl_s)

        shell = response_shell(body, response_id, body["model"])
        if reply.stream is not None:  # 4. answer
            source = FromResponses(shell) if reply.native else FromChat(shell)
            return ResponsesReply(stream=ResponsesRelay(reply.stream, source, kept))
        assert reply.body is not None
        answer = orjson.loads(reply.body)
        if reply.native:  # the upstream was sent store=false: the proxy keeps it
            response = {**answer, "id": response_id, "store": keep}
            response["previous_response_id"] = body.get("previous_response_id")
        else:
            response = response_from_chat(answer, body, response_id)
        try:
            await kept(response)
        except Exception:  # the step was served and paid for: answer it; chaining on it fails
            log.exception("could not store response %s", response_id)
        return ResponsesReply(body=orjson.dumps(response))

    async def get(self, caller: Caller, response_id: str) -> bytes:
        record = await self._load(caller, response_id, "response_id")
        return orjson.dumps(record["response"])

    async def input_items(self, caller: Caller, response_id: str, page: ItemsPage) -> bytes:
        """The response's input items (its chain's included), as OpenAI pages them."""
        record = await self._load(caller, response_id, "response_id")
        items = [listed_item(item, i) for i, item in enumerate(record["input"])]
        if page.order == "desc":
            items.reverse()
        if page.after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(page.after) + 1 :] if page.after in ids else []
        data = items[: page.limit]
        listing = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(items) > page.limit,
        }
        return orjson.dumps(listing)

    async def delete(self, caller: Caller, response_id: str) -> bytes:
        try:
            deleted = await self.store.delete(caller.tenant, response_id)
        except Exception:
            log.exception("response store failed to delete")
            raise ServiceUnavailable("the response store is unavailable; retry later") from None
        if not deleted:
            raise self._not_found(response_id, "response_id")
        return orjson.dumps({"id": response_id, "object": "response", "deleted": True})

    # -- steps ------------------------------------------------------------------------------

    def _chat_step(
        self, body: dict[str, Any], items: list[dict[str, Any]], chained: int, raw: bytes
    ) -> dict[str, Any]:
        """The chat step carrying the request (`items`: the chain's `chained` items, then the
        request's own). Items and tools chat cannot say are refused where a chat upstream may
        have to take the step; where every upstream the step may go to speaks Responses,
        they pass through and the helper reads the rest."""
        model = body["model"]
        route = self.chat.routes.get(model)
        if route is not None:
            targets = [route.base, *(target for target, _ in route.interventions.values())]
            native = not route.after_draft and all(
                speaks_responses(self.settings, t) for t in targets
            )
        else:
            upstream = self.settings.upstreams.get(self.chat.passthrough.get(model, ""))
            native = upstream is None or upstream.responses == "native"
        step = chat_request(body, items, strict=not native, chained=chained)
        if route is not None:
            instructions = 1 if body.get("instructions") else 0  # a leading system message
            if len(step["messages"]) <= instructions:
                raise InvalidRequest(
                    "The step cannot be read: the input holds no message, function call or "
                    "function call output.",
                    param="input",
                )
            check_routed_step(step, raw, max_n=self.settings.routes[model].max_n)
        return step

    # -- the store --------------------------------------------------------------------------

    async def _chain(self, caller: Caller, previous: str | None) -> Chain | None:
        if previous is None:
            return None
        record = await self._load(caller, previous, "previous_response_id")
        output = record["response"].get("output") or []
        return Chain(record["session"], [*record["input"], *output])

    async def _load(self, caller: Caller, response_id: str, param: str) -> dict[str, Any]:
        try:
            blob = await self.store.get(caller.tenant, response_id)
        except Exception:  # the store's client raises its own error types
            log.exception("response store failed to read")
            raise ServiceUnavailable("the response store is unavailable; retry later") from None
        if blob is None:
            raise self._not_found(response_id, param)
        record: dict[str, Any] = orjson.loads(unpack(blob))
        return record

    def _not_found(self, response_id: str, param: str) -> NotFound:
        what = "Previous response" if param == "previous_response_id" else "Response"
        return NotFound(
            f"{what} with id '{response_id}' not found for this API key: it is unknown, was "
            f"deleted, was created with store=false, or expired (responses are kept for "
            f"{self.ttl_s}s).",
            param=param,
            code="response_not_found",
        )
