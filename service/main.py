"""The FastAPI application: wiring only (settings, knowledge, stores, clients, routers, middleware)."""

from __future__ import annotations

import itertools
import os
import time
from contextlib import asynccontextmanager

import httpx
import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.auth.jwt import JwtVerifier
from service.cache.store import RedisKV, make_kv
from service.config import Settings, get_settings
from service.feedback.store import FeedbackStore
from service.fhir.client import FhirClient
from service.hooks.discovery import SERVICES, discovery
from service.hooks.errors import HookError, error_response, hook_error_response, operation_outcome
from service.hooks.pipeline import Deps
from service.hooks.fastpath import HookFastPath, route_path
from service.hooks.router import router as hooks_router
from service.observability import metrics
from service.observability.logging import configure_logging, end_request, start_request
from service.observability.tracing import setup_tracing
from service.smart.router import router as smart_router
from service.pgx.knowledge import load_knowledge

log = structlog.get_logger("pgx_cds")


_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)
_KNOWN_ROUTES = {*SERVICES, "healthz", "readyz", "metrics", "cds-services", "app", "docs", "openapi.json"}


def _route_label(path: str) -> str:
    """A bounded metric/log label for a path (never an unbounded value an attacker could choose)."""
    parts = path.strip("/").split("/")
    if parts[0] == "cds-services" and len(parts) >= 2:
        label = parts[1] if parts[1] in SERVICES else "unknown-service"
        return label + "/feedback" if len(parts) == 3 and parts[2] == "feedback" else label
    return parts[0] if parts[0] in _KNOWN_ROUTES else ("root" if not parts[0] else "other")


class _Observe:
    """ASGI middleware: request id, latency histogram per service and status, one access log line, and
    the last line of defence: an unexpected exception becomes a 500 OperationOutcome here (type logged,
    never a traceback or message, which could carry data), so nothing reaches the server's error log."""

    def __init__(self, app) -> None:
        self.app = app
        self.log = log.bind()  # a concrete logger for the configuration in force (no per-call proxy)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        state = {"status": 500, "started": False}
        request_id = f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"
        token = start_request(request_id=request_id)

        async def _send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, _send)
        except Exception as exc:  # noqa: BLE001 - fail safe: a clear 500, never a hang or a trace
            self.log.error("unhandled_error", error=type(exc).__name__)
            if not state["started"]:
                body = orjson.dumps(operation_outcome("Internal error; the request was not evaluated", "exception"))
                await _send({"type": "http.response.start", "status": 500,
                             "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
        finally:
            path = route_path(scope)
            label = _route_label(path)
            elapsed = time.perf_counter() - started
            metrics.child(metrics.REQUEST_LATENCY, label, str(state["status"])).observe(elapsed)
            if path not in ("/healthz", "/readyz", "/metrics"):
                self.log.info("request", method=scope.get("method"), route=label, status=state["status"],
                              ms=round(elapsed * 1000, 2))
            end_request(token)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    knowledge = load_knowledge(settings.knowledge_dir)
    kv = make_kv(settings.redis_url, timeout_ms=settings.redis_timeout_ms, max_entries=settings.cache.max_entries)
    fhir = FhirClient(settings)
    jwks_http = httpx.AsyncClient(timeout=2.0, follow_redirects=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.dev_mode:
            log.warning(
                "DEV_MODE_UNAUTHENTICATED",
                message="No issuers configured: every caller is trusted. Bind to loopback only; "
                "configure PGX_CDS_ISSUERS for anything else.",
            )
        if isinstance(kv, RedisKV):
            await kv.start()  # a Cluster's slot map now, not inside a request's time budget
            await app.state.feedback.drain()  # feedback left in the spool by a previous run
        log.info("started", version=__version__, knowledge=knowledge.version, cache=kv.backend)
        yield
        if app.state.tracer_provider is not None:
            app.state.tracer_provider.shutdown()
        await deps.close()  # queued snapshot, de-duplication and card -> rule writes
        await app.state.feedback.close()
        await fhir.aclose()
        await jwks_http.aclose()
        await kv.close()

    app = FastAPI(
        title="pgx-cds",
        version=__version__,
        description="Pharmacogenomics CDS Hooks 2.0 service applying CPIC guidelines",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        # FastAPI's own OpenTelemetry hooks stay off: traces go only through observability/tracing.py,
        # which records server spans and nothing that could carry an identifier (no logs or exception
        # records exported to whatever global provider a host has set up). Also a per-request check less.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.knowledge = knowledge
    app.state.kv = kv
    app.state.fhir = fhir
    app.state.verifier = JwtVerifier(settings, kv, jwks_http)
    app.state.deps = deps = Deps(settings=settings, knowledge=knowledge, fhir=fhir, kv=kv)
    app.state.feedback = FeedbackStore(kv, settings.feedback_file, card_rules=deps.card_rules)
    app.state.discovery_json = discovery().model_dump_json(exclude_none=True).encode()

    @app.exception_handler(HookError)
    async def _hook_error(_request: Request, exc: HookError) -> JSONResponse:
        return hook_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "Invalid request", "structure")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), "processing")

    app.include_router(hooks_router)  # first: the hook routes are matched on every hook call

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(strict: bool = False) -> Response:
        """Ready once the knowledge is loaded. Redis down is reported as `degraded` but stays ready
        (hooks are answered without the cache, and a shared Redis outage must not take every replica
        out of the load balancer); `?strict=true` makes Redis reachability a readiness condition."""
        checks = {"knowledge": knowledge.version}
        status, code = "ok", 200
        if settings.redis_url:
            up = await kv.ping()
            checks["redis"] = "up" if up else "down"
            if not up:
                status, code = ("unavailable", 503) if strict else ("degraded", 200)
        return Response(orjson.dumps({"status": status, **checks}), status_code=code, media_type="application/json")

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    app.include_router(smart_router, prefix=settings.smart_app_path)

    origins = settings.cors_origins or (["*"] if settings.dev_mode or settings.profile == "dev" else [])
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials="*" not in origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            allow_private_network=settings.private_network_cors,
            max_age=600,
        )
    if settings.hook_fast_path:  # outside CORS: it hands browser (Origin) requests to the full stack
        app.add_middleware(HookFastPath, handlers=app.exception_handlers)
    app.add_middleware(_Observe)
    app.state.tracer_provider = setup_tracing(app, settings.otlp_endpoint, service_version=__version__)
    return app
