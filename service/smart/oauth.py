"""SMART App Launch 2.x client side: discovery, PKCE, authorization request, code exchange, refresh,
and id_token checks. Pure protocol logic: no FastAPI, no templates, no session storage.

Every failure raises :class:`SmartError` with a user-facing title and message (shown on the error page)
and a machine `kind` (for logs and tests). Tokens, codes and verifiers never appear in messages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt

ID_TOKEN_ALGS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384"]
_MAX_JSON_BYTES = 512 * 1024


class SmartError(Exception):
    """A launch/auth/data failure to show on a clear error page (never a stack trace)."""

    def __init__(self, kind: str, title: str, message: str, status: int = 400, *, relaunch: bool = True) -> None:
        super().__init__(kind)
        self.kind = kind
        self.title = title
        self.message = message
        self.status = status
        self.relaunch = relaunch


@dataclass(frozen=True)
class SmartConfiguration:
    """The parts of `.well-known/smart-configuration` the app uses."""

    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None
    jwks_uri: str | None = None
    revocation_endpoint: str | None = None
    capabilities: tuple[str, ...] = ()
    code_challenge_methods: tuple[str, ...] = ()


@dataclass
class TokenResponse:
    """A validated token endpoint answer (SMART launch context included)."""

    access_token: str
    expires_at: float | None
    scope: str
    refresh_token: str | None = None
    id_token_claims: dict[str, Any] = field(default_factory=dict)
    patient: str | None = None
    encounter: str | None = None
    need_patient_banner: bool = True
    smart_style_url: str | None = None
    app_context: dict[str, Any] | None = None
    fhir_context: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- PKCE


def make_pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636."""
    verifier = secrets.token_urlsafe(64)  # 86 chars from the unreserved set
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
    return verifier, challenge


def normalize_base(url: str) -> str:
    """A FHIR base URL without trailing slash, for comparisons."""
    return url.strip().rstrip("/")


def check_url(url: str, *, allow_http: bool, what: str) -> str:
    """Reject anything but an absolute https (or, in dev/tests, http) URL without credentials."""
    parts = urlsplit(url)
    allowed = {"https", "http"} if allow_http else {"https"}
    if parts.scheme not in allowed or not parts.netloc or parts.username or parts.password:
        raise SmartError(
            "bad_endpoint",
            "The EHR's configuration cannot be used",
            f"The {what} advertised by the EHR is not an allowed https URL.",
            502,
        )
    return url


# ---------------------------------------------------------------------------------------- discovery


async def _get_json(http: httpx.AsyncClient, url: str, *, timeout: float) -> dict[str, Any] | None:
    try:
        resp = await http.get(url, headers={"Accept": "application/json"}, timeout=timeout)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200 or len(resp.content) > _MAX_JSON_BYTES:
        return None
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _from_capability_statement(cs: dict[str, Any]) -> dict[str, Any]:
    """SMART 1.0 fallback: the oauth-uris extension in CapabilityStatement.rest.security."""
    out: dict[str, Any] = {}
    for rest in cs.get("rest") or []:
        for ext in (rest.get("security") or {}).get("extension") or []:
            if not str(ext.get("url", "")).endswith("/oauth-uris"):
                continue
            for sub in ext.get("extension") or []:
                if sub.get("url") == "authorize":
                    out["authorization_endpoint"] = sub.get("valueUri")
                elif sub.get("url") == "token":
                    out["token_endpoint"] = sub.get("valueUri")
                elif sub.get("url") == "revoke":
                    out["revocation_endpoint"] = sub.get("valueUri")
    return out


async def discover(http: httpx.AsyncClient, iss: str, *, allow_http: bool, timeout: float) -> SmartConfiguration:
    """Read `{iss}/.well-known/smart-configuration` (falling back to `{iss}/metadata`)."""
    base = normalize_base(iss)
    data = await _get_json(http, f"{base}/.well-known/smart-configuration", timeout=timeout)
    if not data or not data.get("authorization_endpoint") or not data.get("token_endpoint"):
        cs = await _get_json(http, f"{base}/metadata", timeout=timeout)
        data = {**(data or {}), **(_from_capability_statement(cs) if cs else {})}
    auth = data.get("authorization_endpoint")
    token = data.get("token_endpoint")
    if not isinstance(auth, str) or not isinstance(token, str):
        raise SmartError(
            "discovery_failed",
            "Could not reach the EHR's authorization server",
            "The EHR's SMART configuration (.well-known/smart-configuration) could not be read. "
            "Try again; if it keeps failing, contact your EHR support team.",
            502,
        )
    methods = tuple(str(m) for m in data.get("code_challenge_methods_supported") or ())
    if methods and "S256" not in methods:
        raise SmartError(
            "pkce_unsupported",
            "The EHR does not support secure app launch",
            "This app requires PKCE with S256, which the EHR's authorization server does not offer.",
            502,
        )

    def _opt(name: str) -> str | None:
        v = data.get(name)
        return check_url(v, allow_http=allow_http, what=name) if isinstance(v, str) and v else None

    return SmartConfiguration(
        authorization_endpoint=check_url(auth, allow_http=allow_http, what="authorization endpoint"),
        token_endpoint=check_url(token, allow_http=allow_http, what="token endpoint"),
        issuer=data.get("issuer") if isinstance(data.get("issuer"), str) else None,
        jwks_uri=_opt("jwks_uri"),
        revocation_endpoint=_opt("revocation_endpoint"),
        capabilities=tuple(str(c) for c in data.get("capabilities") or ()),
        code_challenge_methods=methods,
    )


def authorize_url(
    config: SmartConfiguration,
    *,
    client_id: str,
    redirect_uri: str,
    scope: str,
    state: str,
    code_challenge: str,
    aud: str,
    launch: str | None,
    nonce: str | None,
) -> str:
    """The authorization request URL (response_type=code, PKCE S256, `aud` = the FHIR base)."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "aud": aud,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if launch:
        params["launch"] = launch
    if nonce:
        params["nonce"] = nonce
    sep = "&" if urlsplit(config.authorization_endpoint).query else "?"
    return config.authorization_endpoint + sep + urlencode(params)


# ---------------------------------------------------------------------------------------- tokens


def _client_auth(client_id: str, client_secret: str | None, form: dict[str, str]) -> dict[str, str]:
    """Confidential clients use client_secret_basic; public clients send client_id in the form."""
    if client_secret:
        from urllib.parse import quote

        raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    form["client_id"] = client_id
    return {}


async def _token_call(
    http: httpx.AsyncClient, endpoint: str, form: dict[str, str], headers: dict[str, str], *, timeout: float
) -> dict[str, Any]:
    try:
        resp = await http.post(endpoint, data=form, headers={"Accept": "application/json", **headers}, timeout=timeout)
    except httpx.HTTPError:
        raise SmartError(
            "token_unreachable",
            "Could not reach the EHR's authorization server",
            "The token request did not get an answer in time. Please launch the app again.",
            502,
        ) from None
    try:
        body = resp.json() if len(resp.content) <= _MAX_JSON_BYTES else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if resp.status_code != 200:
        err = str(body.get("error") or f"HTTP {resp.status_code}")[:80]
        raise SmartError(
            "token_failed",
            "The EHR did not grant access",
            f"The authorization server refused to issue a token ({err}). Please launch the app again.",
            401 if resp.status_code in (400, 401) else 502,
        )
    return body


def _parse_app_context(value: Any) -> dict[str, Any] | None:
    """CDS Hooks appContext arrives as a string (usually JSON); keep a dict either way."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {"raw": value[:2000]}
        return parsed if isinstance(parsed, dict) else {"raw": value[:2000]}
    return None


def _parse_token_body(body: dict[str, Any], *, now: float) -> TokenResponse:
    token = body.get("access_token")
    token_type = str(body.get("token_type") or "")
    if not isinstance(token, str) or not token or token_type.lower() != "bearer":
        raise SmartError(
            "token_invalid",
            "The EHR returned an unusable token",
            "The authorization server's answer did not contain a bearer access token.",
            502,
        )
    expires_in = body.get("expires_in")
    expires_at = now + float(expires_in) if isinstance(expires_in, int | float) else None
    banner = body.get("need_patient_banner")
    fhir_ctx = body.get("fhirContext")
    return TokenResponse(
        access_token=token,
        expires_at=expires_at,
        scope=str(body.get("scope") or ""),
        refresh_token=body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None,
        patient=str(body["patient"]) if body.get("patient") else None,
        encounter=str(body["encounter"]) if body.get("encounter") else None,
        need_patient_banner=banner if isinstance(banner, bool) else True,
        smart_style_url=body.get("smart_style_url") if isinstance(body.get("smart_style_url"), str) else None,
        app_context=_parse_app_context(body.get("appContext")),
        fhir_context=[c for c in fhir_ctx if isinstance(c, dict)] if isinstance(fhir_ctx, list) else [],
    )


async def exchange_code(
    http: httpx.AsyncClient,
    *,
    token_endpoint: str,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    client_id: str,
    client_secret: str | None,
    timeout: float,
) -> tuple[TokenResponse, str | None]:
    """Trade the authorization code for tokens. Returns the parsed response and the raw id_token."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    headers = _client_auth(client_id, client_secret, form)
    body = await _token_call(http, token_endpoint, form, headers, timeout=timeout)
    parsed = _parse_token_body(body, now=time.time())
    id_token = body.get("id_token") if isinstance(body.get("id_token"), str) else None
    return parsed, id_token


async def refresh(
    http: httpx.AsyncClient,
    *,
    token_endpoint: str,
    refresh_token: str,
    client_id: str,
    client_secret: str | None,
    timeout: float,
) -> TokenResponse:
    """Use a refresh token. Raises SmartError(kind='token_failed') when refused."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    headers = _client_auth(client_id, client_secret, form)
    body = await _token_call(http, token_endpoint, form, headers, timeout=timeout)
    return _parse_token_body(body, now=time.time())


def scope_allows_read(granted: str, resource: str) -> bool:
    """True when a granted scope string lets the app read `resource` for the patient.

    Accepts SMART v2 (`patient/Observation.rs`, `.r`, `.cruds`, `patient/*.rs`) and v1
    (`patient/Observation.read`, `patient/*.read`, `.*`) forms; `user/` scopes also allow reads.
    """
    for s in granted.split():
        ctx, _, rest = s.partition("/")
        if ctx not in ("patient", "user") or "." not in rest:
            continue
        rtype, _, perms = rest.partition(".")
        if rtype not in (resource, "*"):
            continue
        perms = perms.split("?", 1)[0]
        if perms in ("read", "*") or (perms and set(perms) <= set("cruds") and "r" in perms):
            return True
    return False


# -------------------------------------------------------------------------------------- id_token


async def check_id_token(
    http: httpx.AsyncClient,
    id_token: str,
    *,
    nonce: str,
    client_id: str,
    issuer: str | None,
    jwks_uri: str | None,
    timeout: float,
    leeway_s: int = 60,
) -> dict[str, Any]:
    """Validate an id_token: nonce, audience, expiry and, when the EHR publishes keys, the signature.

    Without a jwks_uri the token is still accepted unsigned-checked because it came straight from the
    token endpoint over TLS (OpenID Connect Core 3.1.3.7); nonce, aud and exp are always checked.
    """
    bad = SmartError(
        "id_token_invalid",
        "The sign-in could not be verified",
        "The identity token returned by the EHR did not match this launch. Please launch the app again.",
        401,
    )
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError:
        raise bad from None
    options = {"require": ["exp", "aud"], "verify_iss": bool(issuer)}
    kwargs: dict[str, Any] = {"audience": client_id, "leeway": leeway_s}
    if issuer:
        kwargs["issuer"] = issuer
    try:
        if jwks_uri:
            jwks = await _get_json(http, jwks_uri, timeout=timeout)
            if not jwks:
                raise bad
            key = _pick_key(jwks, header)
            if key is None or header.get("alg") not in ID_TOKEN_ALGS:
                raise bad
            claims = jwt.decode(id_token, key=key, algorithms=ID_TOKEN_ALGS, options=options, **kwargs)
        else:
            claims = jwt.decode(
                id_token, options={**options, "verify_signature": False}, algorithms=ID_TOKEN_ALGS, **kwargs
            )
    except jwt.PyJWTError:
        raise bad from None
    if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce):
        raise bad
    return claims


def _pick_key(jwks: dict[str, Any], header: dict[str, Any]) -> Any:
    keys = [k for k in jwks.get("keys") or [] if isinstance(k, dict)]
    kid = header.get("kid")
    if kid:
        keys = [k for k in keys if k.get("kid") == kid]
    for k in keys:
        if k.get("use", "sig") != "sig":
            continue
        try:
            return jwt.PyJWK(k, algorithm=header.get("alg")).key
        except jwt.PyJWTError:
            continue
    return None
