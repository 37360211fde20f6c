"""The reference point for the gateway benchmark: a minimal Starlette pass-through proxy on
aiohttp, doing nothing but forwarding (no auth, decision, budget, log or metrics). Escalator's
added latency is compared against this and against calling the upstream directly.

    python bench/baseline_proxy.py UPSTREAM_BASE_URL PORT
"""

from __future__ import annotations

import sys

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM, PORT = sys.argv[1].rstrip("/"), int(sys.argv[2])
session: aiohttp.ClientSession | None = None


async def chat(request: Request) -> Response:
    global session
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
    body = await request.body()
    upstream = await session.post(
        f"{UPSTREAM}/chat/completions", data=body, headers={"content-type": "application/json"}
    )
    if b'"stream":true' in body:

        async def relay():  # type: ignore[no-untyped-def]
            async for chunk in upstream.content.iter_any():
                yield chunk
            upstream.release()

        return StreamingResponse(relay(), media_type="text/event-stream")
    data = await upstream.read()
    upstream.release()
    return Response(data, status_code=upstream.status, media_type="application/json")


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning", access_log=False)
