"""SIMULATED model upstreams for the simulated world: an OpenAI-compatible HTTP server whose
models answer the world's steps with the world's competences, and no model at all.

`sim-weak` and `sim-strong` (any model name containing "strong" is strong) answer a chat
completion with the simulated model's tool call (demo/sim/world.py `sim_answer`), drawn
from a generator seeded by the request itself, so the same state asked of the same model
gets the same answer. A harness that knows how each model answers a state (the benchmark's
worlds) scripts those answers instead (`script`): the proxy's agreement checks then compare
what the world's models would say. It runs on a thread of its own with aiohttp, as a real server on
127.0.0.1, so the proxy in front of it is exercised exactly as in production.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from demo.sim.world import WorldConfig, sim_answer

MODELS = ("sim-weak", "sim-strong")
MAX_SCRIPTED = 10_000  # states whose answers are kept (the oldest go first)


class SimUpstream:
    def __init__(self, config: WorldConfig | None = None, seed: int = 0) -> None:
        self.config = config or WorldConfig()
        self.seed = seed
        self.port = 0
        self.requests = 0
        self._scripted: dict[str, dict[bool, dict[str, Any]]] = {}
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def script(self, messages: list[Any], weak: dict[str, Any], strong: dict[str, Any]) -> None:
        """Answer this state with these messages (from any thread), whatever the generator
        would draw."""
        self._scripted[_state_key(messages)] = {False: weak, True: strong}
        while len(self._scripted) > MAX_SCRIPTED:
            del self._scripted[next(iter(self._scripted))]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> SimUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _models(self, request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "simulation"} for m in MODELS
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            body = orjson.loads(await request.read())
            messages = body["messages"]
            model = str(body.get("model", "sim-weak"))
        except (ValueError, KeyError, TypeError):
            error = {"message": "expected a chat completion body", "type": "invalid_request_error"}
            return web.json_response({"error": error}, status=400)
        digest = hashlib.sha256(orjson.dumps([self.seed, model, messages])).hexdigest()
        scripted = self._scripted.get(_state_key(messages))
        message: Mapping[str, Any]
        if scripted is not None:
            message = scripted["strong" in model]
        else:
            rng = random.Random(digest)
            message, _ = sim_answer(messages, "strong" in model, self.config, rng)
        completion: dict[str, Any] = {
            "id": f"chatcmpl-sim-{digest[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls", "logprobs": None}
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62},
        }
        return web.Response(body=orjson.dumps(completion), content_type="application/json")


def _state_key(messages: list[Any]) -> str:
    return hashlib.sha256(orjson.dumps(messages)).hexdigest()
