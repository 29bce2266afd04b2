"""Server-side SMART sessions kept in the shared key-value store (Redis or in-process).

The browser only ever holds a random session id in an HttpOnly cookie. The store key is
``smart:sess:<sha256(id)>`` so a dump of the store does not yield usable cookie values. Tokens, the
PKCE verifier, state and nonce live only in the stored record and never reach the browser or logs.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

KEY_PREFIX = "smart:sess:"


class SmartSession(BaseModel):
    """One browser's launch: pending (between /launch and /callback) or active (tokens held)."""

    phase: Literal["pending", "active"] = "pending"
    created_at: float = Field(default_factory=time.time)
    iss: str
    token_endpoint: str
    revocation_endpoint: str | None = None
    jwks_uri: str | None = None
    issuer: str | None = None  # OpenID issuer (id_token `iss`), when the EHR advertises one
    # pending
    state: str = ""
    code_verifier: str = ""
    nonce: str = ""
    redirect_uri: str = ""
    scope_requested: str = ""
    ehr_launch: bool = False
    # focus asked for at launch time (?drug=, ?rule=) or through appContext
    focus_drug: str | None = None
    focus_rule: str | None = None
    # active
    access_token: str | None = None
    refresh_token: str | None = None
    expires_at: float | None = None
    scope: str = ""
    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None
    need_patient_banner: bool = True
    smart_style_url: str | None = None
    app_context: dict[str, Any] | None = None
    fhir_context: list[dict[str, Any]] = Field(default_factory=list)

    def token_expired(self, now: float | None = None, skew_s: float = 30.0) -> bool:
        if self.expires_at is None:
            return False
        return (now if now is not None else time.time()) + skew_s >= self.expires_at


def new_session_id() -> str:
    """256 bits of randomness, URL-safe."""
    return secrets.token_urlsafe(32)


def _key(session_id: str) -> str:
    return KEY_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Typed access to SMART sessions in a :class:`service.cache.store.KV`."""

    def __init__(self, kv: Any, *, ttl_s: int, max_s: int) -> None:
        self._kv = kv
        self._ttl = ttl_s
        self._max = max_s

    async def load(self, session_id: str | None) -> SmartSession | None:
        """The session, or None when missing, expired, past its absolute lifetime or unreadable."""
        if not session_id or len(session_id) > 128:
            return None
        raw = await self._kv.get(_key(session_id))
        if raw is None:
            return None
        try:
            sess = SmartSession.model_validate_json(raw)
        except ValueError:
            await self._kv.delete(_key(session_id))
            return None
        if time.time() - sess.created_at > self._max:
            await self._kv.delete(_key(session_id))
            return None
        return sess

    async def save(self, session_id: str, sess: SmartSession, ttl_s: int | None = None) -> None:
        await self._kv.set(_key(session_id), sess.model_dump_json().encode(), ttl_s or self._ttl)

    async def delete(self, session_id: str | None) -> None:
        if session_id:
            await self._kv.delete(_key(session_id))
