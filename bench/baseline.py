"""The stack's physical limit for the benchmark: a bare FastAPI POST endpoint that reads and parses the
body (orjson) and returns pre-serialised bytes of a given size (PGX_BENCH_RESPONSE_BYTES; 0: an empty
card list, what most distinct-traffic answers are)."""

from __future__ import annotations

import os

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response


def create_app() -> FastAPI:
    size = int(os.environ.get("PGX_BENCH_RESPONSE_BYTES", "4000"))
    payload = b'{"cards":[{"summary":"' + b"x" * max(size - 26, 0) + b'"}]}' if size else b'{"cards":[]}'
    app = FastAPI()

    @app.post("/cds-services/{service_id}")
    async def baseline(service_id: str, request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(payload, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app
