"""The SMART on FHIR app: launch, callback, profile page, print view, logout, static files.

Mounted by ``service.main`` under ``settings.smart_app_path`` (default ``/app``):

- ``GET  /app/launch``    EHR launch (``iss`` + ``launch``) or standalone launch (``iss`` only, or the
  configured default); optional ``drug`` / ``rule`` to open focused on a drug.
- ``GET  /app/callback``  authorization code redirect: state, PKCE, nonce checked; tokens stored server-side.
- ``GET  /app/``          the PGx profile page (optional ``?drug=`` focus).
- ``GET  /app/print``     printable consult-note view.
- ``POST /app/logout``    ends the session.
- ``GET  /app/static/{name}`` CSS / JS.

Every failure renders a clear HTML page (never a stack trace); tokens and patient ids are never logged.

One browser may hold several launches at once (two patients in two tabs): each launch gets its own
cookie ``<cookie_name>_<key>`` and its pages carry ``?k=<key>``, so reloading a tab can never show
another launch's patient. The key is a non-secret handle; the cookie value is the secret session id.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from service.smart import oauth
from service.smart.config import SmartSettings
from service.smart.data import TokenRejected, drug_genes, load_profile, med_matcher
from service.smart.oauth import SmartError
from service.smart.session import SessionStore, SmartSession, new_session_id
from service.smart.view import build_view

log = structlog.get_logger("pgx_cds.smart")

router = APIRouter(include_in_schema=False)

_HERE = Path(__file__).resolve().parent
_STATIC_DIR = _HERE / "static"
_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".png": "image/png"}
_env = Environment(
    loader=FileSystemLoader(str(_HERE / "templates")),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_KEY_RE = re.compile(r"^[0-9a-f]{12}$")
_MAX_LAUNCH_COOKIES = 20
_FOCUS_RE = re.compile(r"^[a-z0-9][a-z0-9 ._/-]{0,119}$")
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; connect-src 'self'"
)


# ------------------------------------------------------------------------------------- plumbing


def _smart(request: Request) -> SmartSettings:
    return getattr(request.app.state, "smart_settings", None) or request.app.state.settings.smart


def _store(request: Request) -> SessionStore:
    s = _smart(request)
    return SessionStore(request.app.state.kv, ttl_s=s.session_ttl_s, max_s=s.session_max_s)


def _app_path(request: Request) -> str:
    return request.app.state.settings.smart_app_path.rstrip("/")


def _app_base(request: Request) -> str:
    """Absolute URL of the app prefix (public_base_url when set, else derived from the request)."""
    settings = request.app.state.settings
    base = settings.public_base_url or str(request.base_url)
    return base.rstrip("/") + _app_path(request)


def _http(request: Request) -> httpx.AsyncClient:
    """A short-lived client for discovery and token calls (tests may provide app.state.smart_http)."""
    injected = getattr(request.app.state, "smart_http", None)
    if injected is not None:
        return _NoClose(injected)
    return httpx.AsyncClient(timeout=_smart(request).http_timeout_s, follow_redirects=False)


class _NoClose:
    """Wraps an injected client so `async with` does not close it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._c = client

    async def __aenter__(self) -> httpx.AsyncClient:
        return self._c

    async def __aexit__(self, *exc: Any) -> None:
        return None


def _render(request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    html = _env.get_template(template).render(app_path=_app_path(request), **ctx)
    resp = HTMLResponse(html, status_code=status)
    _secure_headers(resp)
    return resp


def _secure_headers(resp: Response) -> None:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = _CSP


def _cookie(s: SmartSettings, key: str) -> str:
    return f"{s.cookie_name}_{key}"


def _launch_cookies(request: Request) -> list[tuple[str, str]]:
    """(key, session id) of every launch cookie this browser sent (bounded)."""
    prefix = _smart(request).cookie_name + "_"
    out = []
    for name, value in request.cookies.items():
        if name.startswith(prefix) and _KEY_RE.match(name[len(prefix):]) and value:
            out.append((name[len(prefix):], value))
    return out[:_MAX_LAUNCH_COOKIES]


def _set_cookie(request: Request, resp: Response, key: str, sid: str, max_age: int) -> None:
    s = _smart(request)
    resp.set_cookie(
        _cookie(s, key),
        sid,
        max_age=max_age,
        path=_app_path(request) or "/",
        secure=s.cookie_secure,
        httponly=True,
        samesite=s.cookie_samesite,
    )


def _clear_cookie(request: Request, resp: Response, key: str) -> None:
    s = _smart(request)
    resp.delete_cookie(
        _cookie(s, key), path=_app_path(request) or "/", secure=s.cookie_secure, httponly=True, samesite=s.cookie_samesite
    )


def _error_page(request: Request, err: SmartError, *, clear_key: str | None = None) -> HTMLResponse:
    log.warning("smart_error", kind=err.kind, status=err.status)
    resp = _render(request, "error.html", status=err.status, error=err)
    if clear_key:
        _clear_cookie(request, resp, clear_key)
    return resp


async def _guard(
    request: Request, fn: Callable[[dict[str, Any]], Awaitable[Response]], *, clear_on_error: bool = False
) -> Response:
    """Run a handler; any failure becomes an error page (SmartError) or a generic one (anything else).

    The handler records the launch key it works on in ``ctx["key"]``; that launch's cookie is cleared when
    the error ends the session (401) or when ``clear_on_error``.
    """
    ctx: dict[str, Any] = {"key": None}
    try:
        return await fn(ctx)
    except SmartError as err:
        clear = ctx["key"] if (clear_on_error or err.status == 401) else None
        return _error_page(request, err, clear_key=clear)
    except Exception as exc:  # noqa: BLE001 - never a stack trace to the user
        log.error("smart_unhandled_error", error=type(exc).__name__)
        err = SmartError(
            "internal",
            "Something went wrong",
            "The PGx profile could not be shown because of an internal error. It has been logged. "
            "Please try again; if it persists, contact the team that runs PGx decision support.",
            500,
        )
        return _error_page(request, err)


def _clean_focus(value: str | None) -> str | None:
    if not value:
        return None
    v = value.strip().lower()
    return v if _FOCUS_RE.match(v) else None


def _allowed_servers(request: Request) -> list[str]:
    settings = request.app.state.settings
    return [fs for i in settings.issuers for fs in i.fhir_servers] + list(_smart(request).allowed_fhir_servers)


def _check_iss(request: Request, iss: str | None) -> str:
    """The normalised iss, or a SmartError when it is missing, malformed or not allowlisted."""
    from service.fhir.client import validate_fhir_server

    settings = request.app.state.settings
    iss = iss or _smart(request).default_iss
    if not iss:
        raise SmartError(
            "missing_iss",
            "The app was opened without an EHR",
            "This app must be launched from the EHR (or with ?iss=<FHIR server>).",
            400,
            relaunch=True,
        )
    try:
        norm = validate_fhir_server(iss, allowed=None, allow_http=settings.fhir.allow_http)
    except ValueError:
        raise SmartError(
            "bad_iss", "The EHR address is not valid", "The FHIR server address given at launch is not usable.", 400
        ) from None
    for base in _allowed_servers(request):
        b = oauth.normalize_base(base).lower()
        if norm.lower() == b or norm.lower().startswith(b + "/"):
            return norm
    if (settings.profile == "dev" or settings.dev_mode) and settings.fhir.allow_http:
        return norm
    raise SmartError(
        "iss_not_allowed",
        "This EHR is not registered",
        "The FHIR server that launched the app is not on this service's list of allowed servers. "
        "Ask the team that runs PGx decision support to register it.",
        403,
        relaunch=False,
    )


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


# ---------------------------------------------------------------------------------------- launch


@router.get("/launch")
async def launch(
    request: Request,
    iss: str | None = None,
    launch: str | None = None,
    drug: str | None = None,
    rule: str | None = None,
) -> Response:
    """Start the authorization: discover the EHR's endpoints, then redirect with PKCE, state and nonce."""

    async def _run(ctx: dict[str, Any]) -> Response:
        s = _smart(request)
        settings = request.app.state.settings
        fhir_base = _check_iss(request, iss)
        if launch is not None and (not launch.strip() or len(launch) > 4096):
            raise SmartError("bad_launch", "The launch request is not valid", "The EHR sent an empty launch id.", 400)
        async with _http(request) as http:
            config = await oauth.discover(
                http, fhir_base, allow_http=settings.fhir.allow_http, timeout=s.http_timeout_s
            )
        verifier, challenge = oauth.make_pkce()
        state = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(24)
        ehr_launch = launch is not None
        scope = s.scope_for(ehr_launch=ehr_launch)
        redirect_uri = _app_base(request) + s.redirect_path
        sess = SmartSession(
            iss=fhir_base,
            token_endpoint=config.token_endpoint,
            revocation_endpoint=config.revocation_endpoint,
            jwks_uri=config.jwks_uri,
            issuer=config.issuer,
            state=state,
            code_verifier=verifier,
            nonce=nonce,
            redirect_uri=redirect_uri,
            scope_requested=scope,
            ehr_launch=ehr_launch,
            focus_drug=_clean_focus(drug),
            focus_rule=_clean_focus(rule),
        )
        sid = new_session_id()
        key = secrets.token_hex(6)
        await _store(request).save(sid, sess, ttl_s=s.launch_ttl_s)
        url = oauth.authorize_url(
            config,
            client_id=s.client_id,
            redirect_uri=redirect_uri,
            scope=scope,
            state=state,
            code_challenge=challenge,
            aud=fhir_base,
            launch=launch,
            nonce=nonce if "openid" in scope.split() else None,
        )
        log.info("smart_launch", ehr_launch=ehr_launch, fhir_host=_host(fhir_base))
        resp = RedirectResponse(url, status_code=302)
        _secure_headers(resp)
        _set_cookie(request, resp, key, sid, s.launch_ttl_s)
        return resp

    return await _guard(request, _run)


# -------------------------------------------------------------------------------------- callback


_DENIED_TEXT = {
    "access_denied": (
        "Access was not granted",
        "Permission to read this patient's record was declined, so nothing was read. "
        "To see the PGx profile, launch the app again from the EHR and allow access.",
        403,
    ),
}


@router.get("/callback")
async def callback(
    request: Request,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    """Finish the authorization: check state, exchange the code (PKCE), check the id_token nonce."""
    store = _store(request)
    s = _smart(request)

    async def _run(ctx: dict[str, Any]) -> Response:
        pending: list[tuple[str, str, SmartSession]] = []
        for key, cookie_sid in _launch_cookies(request):
            cand = await store.load(cookie_sid)
            if cand is not None and cand.phase == "pending":
                pending.append((key, cookie_sid, cand))
        if not pending:
            raise SmartError(
                "no_pending_launch",
                "This sign-in has expired",
                "The app could not find the launch this sign-in belongs to: it took too long, it was already "
                "used, or the browser blocked the app's cookie. Please launch the app again from the EHR.",
                400,
            )
        match = [p for p in pending if state and secrets.compare_digest(state.encode(), p[2].state.encode())]
        if not match:
            if len(pending) == 1:  # the usual case: this browser's only launch is spoiled; end it
                ctx["key"] = pending[0][0]
                await store.delete(pending[0][1])
            raise SmartError(
                "bad_state",
                "The sign-in could not be verified",
                "The answer from the EHR's authorization server does not match this launch (state mismatch). "
                "For your safety nothing was read. Please launch the app again from the EHR.",
                400,
            )
        key, sid, sess = match[0]
        ctx["key"] = key
        await store.delete(sid)  # the pending record is single-use, whatever happens next
        if error:
            title, text, status = _DENIED_TEXT.get(
                error,
                (
                    "The EHR did not authorize the app",
                    f"The authorization server answered with an error ({error[:60]}). Nothing was read. "
                    "Please launch the app again; if it keeps failing, contact your EHR support team.",
                    401,
                ),
            )
            raise SmartError("denied" if error == "access_denied" else "authorize_error", title, text, status)
        if not code:
            raise SmartError("no_code", "The sign-in did not complete", "No authorization code was received.", 400)

        async with _http(request) as http:
            tok, id_token = await oauth.exchange_code(
                http,
                token_endpoint=sess.token_endpoint,
                code=code,
                redirect_uri=sess.redirect_uri,
                code_verifier=sess.code_verifier,
                client_id=s.client_id,
                client_secret=s.client_secret.get_secret_value() if s.client_secret else None,
                timeout=s.http_timeout_s,
            )
            claims: dict[str, Any] = {}
            if "openid" in sess.scope_requested.split():
                if not id_token:
                    raise SmartError(
                        "id_token_missing",
                        "The sign-in could not be verified",
                        "The EHR did not return an identity token for this launch. Please launch the app again.",
                        401,
                    )
                claims = await oauth.check_id_token(
                    http,
                    id_token,
                    nonce=sess.nonce,
                    client_id=s.client_id,
                    issuer=sess.issuer,
                    jwks_uri=sess.jwks_uri,
                    timeout=s.http_timeout_s,
                )
        if not tok.patient:
            raise SmartError(
                "no_patient",
                "No patient was selected",
                "The EHR did not tell the app which patient to show. Open a patient's chart and launch the app "
                "from there.",
                400,
            )
        if tok.scope and not oauth.scope_allows_read(tok.scope, "Observation"):
            raise SmartError(
                "scope_denied",
                "Access to lab results was not granted",
                "The EHR granted the app access without permission to read the patient's lab results "
                "(Observation), so the PGx profile cannot be shown.",
                403,
            )
        app_ctx = tok.app_context or {}
        focus_drug = sess.focus_drug or _clean_focus(str(app_ctx.get("drug") or "")) or None
        focus_rule = sess.focus_rule or _clean_focus(str(app_ctx.get("rule") or "")) or None
        active = sess.model_copy(
            update={
                "phase": "active",
                "state": "",
                "code_verifier": "",
                "nonce": "",
                "created_at": time.time(),
                "access_token": tok.access_token,
                "refresh_token": tok.refresh_token,
                "expires_at": tok.expires_at,
                "scope": tok.scope or sess.scope_requested,
                "patient": tok.patient,
                "encounter": tok.encounter,
                "fhir_user": claims.get("fhirUser") if isinstance(claims.get("fhirUser"), str) else None,
                "need_patient_banner": tok.need_patient_banner,
                "smart_style_url": tok.smart_style_url,
                "app_context": tok.app_context,
                "fhir_context": tok.fhir_context,
                "focus_drug": focus_drug,
                "focus_rule": focus_rule,
            }
        )
        new_sid = new_session_id()  # a fresh id after sign-in (no session fixation)
        await store.save(new_sid, active)
        log.info("smart_authorized", fhir_host=_host(sess.iss), refresh=bool(tok.refresh_token))
        resp = RedirectResponse(f"{_app_path(request)}/?k={key}", status_code=303)
        _secure_headers(resp)
        _set_cookie(request, resp, key, new_sid, s.session_ttl_s)
        return resp

    return await _guard(request, _run, clear_on_error=True)


# ------------------------------------------------------------------------------------ the page


async def _refresh(request: Request, sid: str, sess: SmartSession) -> SmartSession:
    s = _smart(request)
    if not sess.refresh_token:
        await _store(request).delete(sid)
        raise _expired()
    try:
        async with _http(request) as http:
            tok = await oauth.refresh(
                http,
                token_endpoint=sess.token_endpoint,
                refresh_token=sess.refresh_token,
                client_id=s.client_id,
                client_secret=s.client_secret.get_secret_value() if s.client_secret else None,
                timeout=s.http_timeout_s,
            )
    except SmartError:
        await _store(request).delete(sid)
        raise _expired() from None
    updated = sess.model_copy(
        update={
            "access_token": tok.access_token,
            "expires_at": tok.expires_at,
            "refresh_token": tok.refresh_token or sess.refresh_token,
            "scope": tok.scope or sess.scope,
        }
    )
    await _store(request).save(sid, updated)
    log.info("smart_token_refreshed")
    return updated


def _expired() -> SmartError:
    return SmartError(
        "expired",
        "Your session has expired",
        "For security the app's access to the patient record is short-lived and has ended. "
        "Please launch the app again from the EHR.",
        401,
    )


def _resolve_key(request: Request, k: str | None) -> tuple[str | None, str | None]:
    """(launch key, session id) for a page request: ?k= picks the launch; without it, the only one."""
    launches = _launch_cookies(request)
    if k is not None:
        if not _KEY_RE.match(k):
            return None, None
        return k, dict(launches).get(k)
    if len(launches) == 1:
        return launches[0]
    return None, None


async def _load_for_page(
    request: Request, ctx: dict[str, Any], k: str | None, drug: str | None, rule: str | None
) -> tuple[str, str, SmartSession, Any]:
    s = _smart(request)
    store = _store(request)
    key, sid = _resolve_key(request, k)
    ctx["key"] = key
    sess = await store.load(sid)
    if key is None or sid is None or sess is None or sess.phase != "active" or not sess.access_token or not sess.patient:
        raise _expired()
    refreshed = False
    if sess.token_expired():
        sess = await _refresh(request, sid, sess)
        refreshed = True
    state = request.app.state
    for attempt in (0, 1):
        try:
            loaded = await load_profile(
                state, iss=sess.iss, patient_id=sess.patient or "", token=sess.access_token or "",
                budget_s=s.fhir_budget_s,
            )
            break
        except TokenRejected:
            if attempt == 0 and not refreshed and sess.refresh_token:
                sess = await _refresh(request, sid, sess)
                refreshed = True
                continue
            await store.delete(sid)
            raise SmartError(
                "fhir_unauthorized",
                "Access to the patient record has expired",
                "The EHR no longer accepts the app's access (it expired or was withdrawn). "
                "Please launch the app again from the EHR.",
                401,
            ) from None
    else:  # pragma: no cover - the loop always breaks or raises
        raise _expired()
    await store.save(sid, sess)  # sliding idle timeout
    knowledge = state.knowledge
    view = build_view(
        loaded.patient,
        loaded.profile,
        loaded.recommendations,
        knowledge_version=getattr(knowledge, "version", ""),
        med_matcher=med_matcher(knowledge),
        gene_defs=getattr(knowledge, "genes", None),
        drug_genes=drug_genes(knowledge),
        focus_drug=_clean_focus(drug) or sess.focus_drug,
        focus_rule=_clean_focus(rule) if drug else sess.focus_rule,
        patient_resource=loaded.patient_resource,
        show_banner=sess.need_patient_banner,
        conversions=getattr(loaded, "conversions", None),
    )
    if sess.need_patient_banner and view.banner is None:
        from service.smart.view import Banner

        view.banner = Banner(name="Patient details not available", birth_date=None, gender=None, identifier=None)
    return key, sid, sess, view


def _now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@router.get("/")
async def profile_page(
    request: Request, k: str | None = None, drug: str | None = None, rule: str | None = None
) -> Response:
    """The clinician's PGx profile for the launched patient (``k`` selects the launch)."""

    async def _run(ctx: dict[str, Any]) -> Response:
        key, sid, sess, view = await _load_for_page(request, ctx, k, drug, rule)
        resp = _render(
            request, "profile.html", view=view, generated=_now_text(), session_key=key,
            focus_query=view.focus.drug if view.focus else None,
        )
        _set_cookie(request, resp, key, sid, _smart(request).session_ttl_s)
        return resp

    return await _guard(request, _run)


@router.get("/print")
async def print_view(
    request: Request, k: str | None = None, drug: str | None = None, rule: str | None = None
) -> Response:
    """A print/PDF-friendly view of the same profile, for the pharmacist's consult note."""

    async def _run(ctx: dict[str, Any]) -> Response:
        key, sid, sess, view = await _load_for_page(request, ctx, k, drug, rule)
        resp = _render(
            request, "print.html", view=view, generated=_now_text(), fhir_user=sess.fhir_user, session_key=key
        )
        _set_cookie(request, resp, key, sid, _smart(request).session_ttl_s)
        return resp

    return await _guard(request, _run)


@router.post("/logout")
async def logout(request: Request, k: str | None = None) -> Response:
    """End the session (the EHR's own session is not affected)."""

    async def _run(ctx: dict[str, Any]) -> Response:
        key, sid = _resolve_key(request, k)
        await _store(request).delete(sid)
        resp = _render(request, "signed_out.html")
        if key:
            _clear_cookie(request, resp, key)
        return resp

    return await _guard(request, _run)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """The app's CSS and JS (a fixed allowlist of files in service/smart/static)."""
    path = (_STATIC_DIR / name).resolve()
    if path.parent != _STATIC_DIR or not path.is_file() or path.suffix not in _STATIC_TYPES:
        return Response(status_code=404)
    return FileResponse(
        path,
        media_type=_STATIC_TYPES[path.suffix],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
