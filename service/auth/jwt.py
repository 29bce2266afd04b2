"""CDS Hooks client authentication: `Authorization: Bearer <JWT>` checked per the 2.0 spec.

Order of checks (cds-hooks best practice): size (at most `MAX_TOKEN_BYTES`), header (`alg` allowlist,
`kid` present, `typ`), `iss` is a configured issuer, `jku` (if any) is on that issuer's allowlist (an
arbitrary `jku` is never fetched), the key fits the token's `alg` (a JWK's own `alg` if it has one, else
its type and curve: RFC 7517 makes `alg` optional), signature with the issuer's key (JWKS cached,
refreshed once on an unknown `kid`), `aud` equals the URL called (`public_base_url` + path; taken from the
request only in the dev profile) or a configured audience, `exp`/`iat`/`nbf` JSON numbers (RFC 7519
NumericDate) with a small skew, `tenant` when configured, and `jti` not seen before (kept for the token's
lifetime). Every failure is the same bare 401 to the caller; the reason goes only to a metric and a log
line (never the token).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import structlog

from service.cache.store import KV, InProcessKV
from service.config import Issuer, Settings
from service.observability import metrics

log = structlog.get_logger("pgx_cds.auth")

ALLOWED_ALGS = frozenset({"ES384", "RS384", "ES256", "RS256", "ES512", "RS512"})
MAX_TOKEN_BYTES = 8192  # larger Authorization headers are refused unparsed (EHR tokens are 1-2 kB)
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512"})
_EC_CURVE_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_NUMERIC_DATES = ("exp", "iat", "nbf")

SANDBOX_ISSUER = Issuer(
    iss="https://sandbox.cds-hooks.org",
    jwks={
        "keys": [
            {
                "kty": "EC",
                "use": "sig",
                "crv": "P-384",
                "kid": "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f",
                "x": "dw_JGR8nB2I6XveNxUOl2qk699ZPLM2nYI5STSdiEl9avAkrm3CkfYMbrrjr8laB",
                "y": "Sm3mLE-n1zYNla_aiE3cb3nZsL51RbC7ysw3q8aJLxGm-hx79RPMYpITDjp7kgzy",
                "alg": "ES384",
            }
        ]
    },
    jku_allowlist=["https://sandbox.cds-hooks.org/.well-known/jwks.json"],
    dev_only=True,
)


class AuthError(Exception):
    """A rejected token. `reason` is for metrics and logs only, never for the response."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    iss: str
    tenant: str | None
    jti: str
    issuer: Issuer


@dataclass(frozen=True)
class VerifyKey:
    """A public key from a JWKS and what it may verify: its declared `alg`, or (none declared) the
    algorithms its key type and curve allow."""

    jwk: jwt.PyJWK
    kty: str
    crv: str | None
    alg: str | None

    @property
    def key(self) -> Any:
        return self.jwk.key

    def fits(self, alg: str) -> bool:
        if self.alg is not None:
            return self.alg == alg
        if self.kty == "RSA":
            return alg in _RSA_ALGS
        if self.kty == "EC":
            return _EC_CURVE_ALG.get(self.crv or "") == alg
        return False


class JwksCache:
    """Per-URL JWKS cache with refresh-on-unknown-kid (rate limited) and bounded fetch timeouts."""

    def __init__(
        self, http: httpx.AsyncClient | None, ttl_s: int, timeout_s: float = 2.0, min_refresh_s: float = 5.0
    ) -> None:
        self._min_refresh = min_refresh_s
        self._http = http
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._keys: dict[str, tuple[float, dict[str, VerifyKey]]] = {}
        self._last_fetch: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def _parse(jwks: dict[str, Any]) -> dict[str, VerifyKey]:
        out: dict[str, VerifyKey] = {}
        keys = jwks.get("keys", []) if isinstance(jwks, dict) else []
        for raw in keys if isinstance(keys, list) else []:
            if not isinstance(raw, dict) or not isinstance(raw.get("kid"), str) or raw.get("use", "sig") != "sig":
                continue
            alg, crv = raw.get("alg"), raw.get("crv")
            try:
                out[raw["kid"]] = VerifyKey(jwt.PyJWK(raw), str(raw.get("kty")), crv if isinstance(crv, str) else None,
                                            alg if isinstance(alg, str) else None)
            except (jwt.PyJWTError, TypeError, ValueError):
                continue
        return out

    async def _fetch(self, url: str) -> dict[str, VerifyKey]:
        if self._http is None:
            raise AuthError("jwks_unavailable")
        try:
            resp = await self._http.get(url, timeout=self._timeout, headers={"Accept": "application/json"})
            resp.raise_for_status()
            keys = self._parse(resp.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise AuthError("jwks_fetch_failed") from exc
        self._keys[url] = (time.monotonic() + self._ttl, keys)
        self._last_fetch[url] = time.monotonic()
        return keys

    async def key(self, url: str, kid: str) -> VerifyKey:
        entry = self._keys.get(url)
        if entry and entry[0] > time.monotonic() and kid in entry[1]:
            return entry[1][kid]
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            entry = self._keys.get(url)
            fresh = entry and entry[0] > time.monotonic()
            if fresh and kid in entry[1]:
                return entry[1][kid]
            # unknown kid or expired: refetch, but rate limited per URL (a flood of random kids is no DoS)
            if not fresh or time.monotonic() - self._last_fetch.get(url, 0) >= self._min_refresh:
                keys = await self._fetch(url)
            else:
                keys = entry[1]
        if kid not in keys:
            raise AuthError("unknown_kid")
        return keys[kid]


class JwtVerifier:
    def __init__(self, settings: Settings, kv: KV, http: httpx.AsyncClient | None) -> None:
        self._settings = settings
        self._kv = kv
        self._local_jti = InProcessKV(max_entries=100_000)  # used when the shared store cannot answer
        self._jwks = JwksCache(http, settings.cache.jwks_ttl_s, min_refresh_s=settings.cache.jwks_min_refresh_s)
        sandbox = SANDBOX_ISSUER.model_copy(update={"fhir_servers": list(settings.sandbox_fhir_servers)})
        issuers = [*settings.issuers, *([sandbox] if settings.trust_sandbox else [])]
        self._issuers: dict[str, Issuer] = {i.iss.rstrip("/"): i for i in issuers}
        self._inline: dict[str, dict[str, VerifyKey]] = {
            i.iss.rstrip("/"): JwksCache._parse(i.jwks) for i in issuers if i.jwks
        }

    def issuer_for(self, iss: str) -> Issuer | None:
        return self._issuers.get(iss.rstrip("/"))

    async def verify(self, token: str, url_called: str | None) -> Principal:
        """`url_called`: the URL the token must name as `aud` (None: only the issuer's configured audiences)."""
        try:
            return await self._verify(token, url_called)
        except AuthError as exc:
            metrics.AUTH_FAILURES.labels(reason=exc.reason).inc()
            log.info("jwt_rejected", reason=exc.reason)
            raise

    async def _verify(self, token: str, url_called: str | None) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("too_large")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError("malformed") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGS:  # (a list here must be a 401, not a TypeError)
            raise AuthError("alg_not_allowed")
        kid = header.get("kid")
        if not kid or not isinstance(kid, str):
            raise AuthError("kid_missing")
        typ = header.get("typ")
        if typ is not None and str(typ).upper() != "JWT":
            raise AuthError("typ_invalid")
        iss = unverified.get("iss")
        issuer = self.issuer_for(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("issuer_unknown")
        for claim in _NUMERIC_DATES:  # NumericDate is a JSON number ("1700000000" is not one)
            value = unverified.get(claim)
            if claim in unverified and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            ):
                raise AuthError("numeric_date")
        key = await self._key_for(issuer, header, kid)
        if not key.fits(alg):
            raise AuthError("alg_key_mismatch")
        audiences = [*([url_called] if url_called else []), *issuer.audiences]
        if not audiences:
            raise AuthError("audience")
        skew = self._settings.jwt_skew_s
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=audiences,
                leeway=skew,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError("audience") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("not_yet_valid") from exc
        except jwt.PyJWTError as exc:
            raise AuthError("invalid") from exc
        now = time.time()
        iat = float(claims["iat"])
        if iat > now + skew:
            raise AuthError("iat_future")
        if now - iat > self._settings.jwt_max_age_s:
            raise AuthError("iat_too_old")
        if issuer.tenant is not None and claims.get("tenant") != issuer.tenant:
            raise AuthError("tenant")
        jti = str(claims["jti"])
        # kept as long as the token could be accepted: until exp, and never beyond the oldest accepted iat
        ttl = max(min(int(float(claims["exp"]) - now), self._settings.jwt_max_age_s) + skew, 1)
        await self._check_replay(issuer.iss, jti, ttl)
        return Principal(iss=issuer.iss, tenant=claims.get("tenant"), jti=jti, issuer=issuer)

    async def _key_for(self, issuer: Issuer, header: dict[str, Any], kid: str) -> VerifyKey:
        jku = header.get("jku")
        allowed_jku = set(issuer.jku_allowlist)
        if issuer.jwks_url:
            allowed_jku.add(str(issuer.jwks_url))
        if jku is not None and (not isinstance(jku, str) or jku not in allowed_jku):
            raise AuthError("jku_not_allowed")
        inline = self._inline.get(issuer.iss.rstrip("/"))
        if inline is not None and kid in inline:
            return inline[kid]
        url = jku if (jku and not inline) else (str(issuer.jwks_url) if issuer.jwks_url else None)
        if url is None:
            raise AuthError("unknown_kid")
        return await self._jwks.key(url, kid)

    async def _check_replay(self, iss: str, jti: str, ttl: int) -> None:
        digest = hashlib.sha256(f"{iss}\x00{jti}".encode()).hexdigest()[:32]
        key = f"jti:{digest}"
        fresh_local = await self._local_jti.set_nx(key, b"1", ttl)
        shared = await self._kv.set_nx(key, b"1", ttl) if self._kv is not self._local_jti else True
        if shared is False or (not fresh_local):
            raise AuthError("replay")
