"""CDS Hooks HTTP endpoints: discovery, service calls, feedback. Thin: parse, authenticate, delegate."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from service.auth.jwt import MAX_TOKEN_BYTES, AuthError, Principal
from service.auth.tenancy import card_owner
from service.hooks.discovery import SERVICES
from service.feedback.store import FeedbackUnavailable, batch_too_large
from service.hooks.bodies import check_depth
from service.hooks.errors import HookError
from service.hooks.order_plan import ORDER_HOOKS, decide_for_request
from service.hooks.pipeline import run_hook
from service.cdshooks.models import FeedbackRequest, HookRequest
from service.observability import metrics
from service.observability.logging import bind_request

log = structlog.get_logger("pgx_cds.hooks")
router = APIRouter()

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
MAX_HOOK_INSTANCE_CHARS = 128  # a UUID is 36; the value goes on every log line of the request
MAX_LOGGED_INDICATORS = 20


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _called_url(request: Request) -> str | None:
    """The `aud` a token must carry: `public_base_url` + the path called. Only in the dev profile is it
    taken from the request (Host, trusted X-Forwarded-* headers), which the caller controls; in production
    without `public_base_url` (allowed when every issuer lists its audiences) there is none."""
    settings = request.app.state.settings
    base = settings.public_base_url
    if base:
        return base.rstrip("/") + request.url.path
    if settings.profile == "dev":
        return str(request.url.replace(query=None, fragment=None))
    return None


async def authenticate(request: Request) -> Principal | None:
    """None in dev mode (no issuers configured); otherwise a verified Principal or HookError(401)."""
    state = request.app.state
    if state.settings.dev_mode:
        return None
    header = request.headers.get("authorization", "")
    if len(header) > MAX_TOKEN_BYTES + 16:  # refused unparsed
        metrics.AUTH_FAILURES.labels(reason="too_large").inc()
        raise HookError(401, "Unauthorized", code="login")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        metrics.AUTH_FAILURES.labels(reason="missing").inc()
        raise HookError(401, "Unauthorized", code="login")
    try:
        return await state.verifier.verify(token.strip(), _called_url(request))
    except AuthError:
        raise HookError(401, "Unauthorized", code="login") from None


def _field_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


async def _json_body(request: Request) -> Any:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() not in ("application/json", "application/fhir+json"):
        raise HookError(415, "Content-Type must be application/json", code="not-supported")
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HookError(413, f"Request body larger than {limit} bytes", code="too-costly")
    body = bytearray()
    more = True
    while more:  # straight from the ASGI receive channel (Request.stream adds an async generator per request)
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise HookError(400, "Client disconnected before the request body was read", code="incomplete")
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            raise HookError(413, f"Request body larger than {limit} bytes", code="too-costly")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HookError(400, "Request body is not valid JSON", code="structure") from None


def _orders_name_no_drug(hook: str, raw: Any, knowledge) -> bool:
    """An order hook whose draft orders certainly name no drug the knowledge knows: answered with no cards
    before the prefetch is read or serialised (the pipeline concludes the same from the same memo), so
    the body's nesting depth is not checked (nothing of it is serialised)."""
    if hook not in ORDER_HOOKS or not isinstance(raw, dict):
        return False
    ctx = raw.get("context")
    if not isinstance(ctx, dict):
        return False
    selections = ctx.get("selections") if hook == "order-select" else None
    if hook == "order-select" and not selections:
        return False
    return decide_for_request(knowledge, ctx.get("draftOrders"), selections, raw.get("prefetch"))


async def get_discovery(request: Request) -> Response:
    await authenticate(request)
    return Response(request.app.state.discovery_json, media_type="application/json")


def _bounded_join(items: tuple[str, ...], limit: int = MAX_LOGGED_INDICATORS) -> str | None:
    if not items:
        return None
    shown = ",".join(items[:limit])
    return shown if len(items) <= limit else f"{shown},...(+{len(items) - limit})"


def _unknown_service(service_id: str) -> HookError:
    shown = service_id if len(service_id) <= 64 else service_id[:64] + "..."
    return HookError(404, f"Unknown CDS service '{shown}'", code="not-found")


async def call_service(request: Request) -> Response:
    service_id = request.path_params["service_id"]
    principal = await authenticate(request)  # first: service ids cannot be probed without a token
    service = SERVICES.get(service_id)
    if service is None:
        raise _unknown_service(service_id)
    raw = await _json_body(request)
    if not _orders_name_no_drug(service.hook, raw, request.app.state.knowledge):
        check_depth(raw)  # the request will be serialised (keys, digests): refuse what cannot be
    if not isinstance(raw, dict):
        raise HookError(400, "Request body must be a JSON object", code="structure")
    for required in ("hook", "hookInstance", "context"):
        if required not in raw:
            raise HookError(400, f"Missing required field '{required}'", code="required")
    hook_instance = raw.get("hookInstance")
    if isinstance(hook_instance, str) and len(hook_instance) > MAX_HOOK_INSTANCE_CHARS:
        raise HookError(400, f"Field 'hookInstance' must be at most {MAX_HOOK_INSTANCE_CHARS} characters "
                        "(CDS Hooks: a UUID)", code="structure")
    if raw.get("hook") != service.hook:
        raise HookError(400, f"Field 'hook' is '{raw.get('hook')}' but service '{service_id}' serves '{service.hook}'")
    if raw.get("fhirAuthorization") is not None and not raw.get("fhirServer"):
        raise HookError(400, "Field 'fhirAuthorization' requires 'fhirServer' (cds-r-1)", code="required")
    try:
        req = HookRequest.model_validate(raw)
    except ValidationError as exc:
        raise HookError(400, "Invalid request: " + _field_errors(exc), code="structure") from None
    bind_request(hook_instance=req.hookInstance)
    outcome = await run_hook(service, req, request.app.state.deps, principal)
    # one log line per request: the access-log middleware adds these fields to it
    bind_request(
        event_kind="hook_evaluated",
        patient_hash=outcome.patient_key,
        cards=len(outcome.indicators),
        indicators=_bounded_join(outcome.indicators),
        source=outcome.source,
        fhir_calls=outcome.fhir_calls,
    )
    return Response(outcome.body, media_type="application/json")


async def post_feedback(request: Request) -> Response:
    service_id = request.path_params["service_id"]
    principal = await authenticate(request)  # first: service ids cannot be probed without a token
    if service_id not in SERVICES:
        raise _unknown_service(service_id)
    raw = check_depth(await _json_body(request))
    if too_large := batch_too_large(raw):
        raise HookError(413, too_large, code="too-costly")
    try:
        fb = FeedbackRequest.model_validate(raw)
    except ValidationError as exc:
        raise HookError(400, "Invalid feedback: " + _field_errors(exc), code="structure") from None
    try:
        stored = await request.app.state.feedback.store(service_id, fb, issuer=principal.iss if principal else None,
                                                        owner=card_owner(principal))
    except FeedbackUnavailable as exc:
        raise HookError(503, str(exc), code="transient") from None
    bind_request(event_kind="feedback_stored", feedback_items=stored)
    return json_response({"stored": stored})


# Plain Starlette routes (no FastAPI dependency solving on the hot path): the handlers parse and
# validate the body themselves, so the framework has nothing to add.
router.add_route("/cds-services", get_discovery, methods=["GET"], include_in_schema=False)
router.add_route("/cds-services/{service_id}", call_service, methods=["POST"], include_in_schema=False)
router.add_route("/cds-services/{service_id}/feedback", post_feedback, methods=["POST"], include_in_schema=False)
