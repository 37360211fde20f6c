"""An OTLP/HTTP trace receiver that only counts what it is sent, for the gateway benchmark's
`--telemetry` run: `POST /v1/traces` answers 200 at once, `GET /count` says how many
export requests and bytes arrived.

    python bench/otlp_sink.py PORT
"""

from __future__ import annotations

import sys

from aiohttp import web

_EMPTY_EXPORT_RESPONSE = b""  # ExportTraceServiceResponse with no partial_success: no bytes


def main() -> None:
    received = {"requests": 0, "bytes": 0}

    async def traces(request: web.Request) -> web.Response:
        received["requests"] += 1
        received["bytes"] += len(await request.read())
        return web.Response(body=_EMPTY_EXPORT_RESPONSE, content_type="application/x-protobuf")

    async def count(request: web.Request) -> web.Response:
        return web.json_response(received)

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
