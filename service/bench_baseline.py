"""The stack's physical limit for the benchmark: a bare FastAPI POST endpoint that reads the body and
returns pre-serialised bytes of the same size as the real order-select response."""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from fastapi.responses import Response


def create_app() -> FastAPI:
    size = int(os.environ.get("PGX_BENCH_RESPONSE_BYTES", "4000"))
    payload = b'{"cards":[{"summary":"' + b"x" * max(size - 26, 0) + b'"}]}'
    app = FastAPI()

    @app.post("/cds-services/{service_id}")
    async def baseline(service_id: str, request: Request) -> Response:
        await request.body()
        return Response(payload, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app
