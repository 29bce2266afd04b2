"""FHIR Bulk Data `$export` client with SMART Backend Services authentication (for `pgx-cds screen`).

- Token: client-credentials grant with a `private_key_jwt` client assertion (RS384/ES384 JWT signed with the
  configured key; `iss` = `sub` = client id, `aud` = token endpoint, 5-minute `exp`, unique `jti`). The token
  endpoint comes from `<base>/.well-known/smart-configuration` unless configured.
- Kick-off at system (`$export`), Patient (`Patient/$export`) or Group (`Group/{id}/$export`) level with
  `_type`, `_typeFilter` and `_since`, `Prefer: respond-async`; polls the status URL honouring
  `Retry-After` (seconds or HTTP date, capped), then downloads every output file (with the token when the
  manifest says `requiresAccessToken`), each to a `.part` file renamed when complete.
- Resumable: `export-state.json` in the download directory records the request, the status URL and the
  manifest; a re-run with the same request resumes polling, and keeps every file already downloaded.

Settings (environment, `PGX_CDS_SCREEN_` prefix): `CLIENT_ID`, `PRIVATE_KEY_FILE` (PEM), `KEY_ID` (`kid`),
`ALG` (RS384 default, or ES384), `SCOPE` (default `system/*.read`), `TOKEN_URL` (optional).
No token, assertion or key ever goes to the log or the output.
"""

from __future__ import annotations

import email.utils
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import orjson
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.fhir.prefetch import PGX_OBSERVATION_CODES

STATE_FILE = "export-state.json"
#: resource types a screening needs
TYPES = ("Patient", "Observation", "DiagnosticReport", "MedicationRequest", "MedicationStatement", "Condition")
#: only genomic results (and body weight/height), active medications and active conditions
TYPE_FILTERS = (
    # one query per type; commas inside a query are escaped (%2C): a bare comma separates queries
    "Observation?code=" + "%2C".join(PGX_OBSERVATION_CODES + ("http://loinc.org|29463-7", "http://loinc.org|8302-2")),
    "MedicationRequest?status=active",
    "MedicationStatement?status=active",
    "Condition?clinical-status=active",
)
#: `_since` is not sent: a patient whose result changed needs all their medications and conditions, not only
#: the changed resources; `pgx-cds screen --since` selects the patients after the export.


class ExportError(Exception):
    """The export could not be completed (the message names the step, never a token)."""


class BackendSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PGX_CDS_SCREEN_", extra="ignore")

    client_id: str | None = None
    private_key_file: Path | None = None
    key_id: str | None = None
    alg: str = "RS384"
    scope: str = "system/*.read"
    token_url: str | None = None
    max_wait_s: float = 300.0  # longest single Retry-After honoured
    timeout_s: float = 3600.0  # whole export


@dataclass
class ExportRequest:
    base: str
    level: str = "system"  # system | patient | group
    group: str | None = None
    types: tuple[str, ...] = TYPES
    type_filters: tuple[str, ...] = TYPE_FILTERS
    since: str | None = None

    def path(self) -> str:
        if self.level == "system":
            return "$export"
        if self.level == "patient":
            return "Patient/$export"
        if self.level == "group" and self.group:
            return f"Group/{self.group}/$export"
        raise ExportError("a Group export needs the group id (--group)")

    def params(self) -> list[tuple[str, str]]:
        out = [("_outputFormat", "application/fhir+ndjson")]
        if self.types:
            out.append(("_type", ",".join(self.types)))
        out += [("_typeFilter", f) for f in self.type_filters]
        if self.since:
            out.append(("_since", self.since))
        return out

    def ident(self) -> dict[str, Any]:
        return {"base": self.base.rstrip("/"), "path": self.path(), "params": [list(p) for p in self.params()]}


class BackendAuth:
    """SMART Backend Services: an access token from a private_key_jwt client assertion, renewed on expiry."""

    def __init__(self, http: httpx.Client, base: str, settings: BackendSettings) -> None:
        if not settings.client_id or not settings.private_key_file:
            raise ExportError("SMART Backend Services needs PGX_CDS_SCREEN_CLIENT_ID and PGX_CDS_SCREEN_PRIVATE_KEY_FILE")
        self.http = http
        self.base = base.rstrip("/")
        self.s = settings
        self._key = settings.private_key_file.read_bytes()
        self._token: str | None = None
        self._expires = 0.0

    def token_url(self) -> str:
        if self.s.token_url:
            return self.s.token_url
        r = self.http.get(f"{self.base}/.well-known/smart-configuration", headers={"Accept": "application/json"})
        if r.status_code != 200:
            raise ExportError(f"no SMART configuration at the server ({r.status_code}); set PGX_CDS_SCREEN_TOKEN_URL")
        url = r.json().get("token_endpoint")
        if not isinstance(url, str):
            raise ExportError("the server's SMART configuration names no token_endpoint")
        self.s.token_url = url
        return url

    def assertion(self, aud: str) -> str:
        now = int(time.time())
        headers = {"kid": self.s.key_id} if self.s.key_id else {}
        return jwt.encode({"iss": self.s.client_id, "sub": self.s.client_id, "aud": aud, "exp": now + 300,
                           "iat": now, "jti": uuid.uuid4().hex}, self._key, algorithm=self.s.alg,
                          headers={"typ": "JWT", **headers})

    def token(self, renew: bool = False) -> str:
        if self._token and not renew and time.time() < self._expires - 30:
            return self._token
        url = self.token_url()
        r = self.http.post(url, data={
            "grant_type": "client_credentials", "scope": self.s.scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(url)})
        if r.status_code != 200:
            err = r.json().get("error") if r.headers.get("content-type", "").startswith("application/json") else None
            raise ExportError(f"token request refused ({r.status_code}{', ' + err if err else ''})")
        body = r.json()
        self._token = body["access_token"]
        self._expires = time.time() + float(body.get("expires_in") or 300)
        return self._token


def retry_after(value: str | None, default: float) -> float:
    """Seconds to wait: Retry-After as delta-seconds or an HTTP date; the default when absent or unreadable."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


class BulkExporter:
    def __init__(self, req: ExportRequest, out_dir: Path, settings: BackendSettings | None = None,
                 http: httpx.Client | None = None, progress: Any = None, sleep: Any = time.sleep) -> None:
        self.req = req
        self.dir = out_dir
        self.s = settings or BackendSettings()
        self.http = http or httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=False)
        self.auth = BackendAuth(self.http, req.base, self.s)
        self.progress = progress
        self.sleep = sleep
        self.stats = {"kickoffs": 0, "polls": 0, "waited_s": 0.0, "downloaded": 0, "reused": 0}

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, Any]:
        p = self.dir / STATE_FILE
        if p.exists():
            st = orjson.loads(p.read_bytes())
            if st.get("request") == self.req.ident():
                return st
        return {"request": self.req.ident()}

    def _save(self, st: dict[str, Any]) -> None:
        tmp = self.dir / (STATE_FILE + ".part")
        tmp.write_bytes(orjson.dumps(st, option=orjson.OPT_INDENT_2))
        tmp.replace(self.dir / STATE_FILE)

    def _headers(self, accept: str = "application/fhir+json") -> dict[str, str]:
        return {"Accept": accept, "Authorization": f"Bearer {self.auth.token()}"}

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """A request with the token; one renewal and retry on 401."""
        headers = kw.pop("headers", {})
        r = self.http.request(method, url, headers={**headers, "Authorization": f"Bearer {self.auth.token()}"}, **kw)
        if r.status_code == 401:
            r = self.http.request(method, url, headers={**headers,
                                                        "Authorization": f"Bearer {self.auth.token(renew=True)}"}, **kw)
        return r

    # ------------------------------------------------------------------ steps
    def run(self) -> Path:
        """Export (or resume) and download; returns the directory holding the NDJSON files."""
        self.dir.mkdir(parents=True, exist_ok=True)
        st = self._state()
        if "manifest" not in st:
            if "status_url" not in st:
                st["status_url"] = self.kickoff()
                self._save(st)
            st["manifest"] = self.poll(st["status_url"])
            self._save(st)
        self.download(st["manifest"])
        st["complete"] = True
        self._save(st)
        return self.dir

    def kickoff(self) -> str:
        url = f"{self.req.base.rstrip('/')}/{self.req.path()}"
        self.stats["kickoffs"] += 1
        r = self._send("GET", url, params=self.req.params(),
                       headers={"Accept": "application/fhir+json", "Prefer": "respond-async"})
        if r.status_code != 202 or not r.headers.get("Content-Location"):
            raise ExportError(f"$export kick-off refused ({r.status_code}): {_diagnostics(r)}")
        loc = r.headers["Content-Location"]
        if not _same_origin(loc, self.req.base):
            raise ExportError("the status URL is not on the FHIR server")
        return loc

    def poll(self, status_url: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.s.timeout_s
        delay = 1.0
        while True:
            self.stats["polls"] += 1
            r = self._send("GET", status_url, headers={"Accept": "application/json"})
            if r.status_code == 200:
                return r.json()
            if r.status_code in (202, 429, 503):
                wait = min(retry_after(r.headers.get("Retry-After"), delay), self.s.max_wait_s)
                delay = min(delay * 2, 60.0)
                if self.progress is not None:
                    self.progress.note(f"export in progress ({r.headers.get('X-Progress', 'no progress given')[:60]})")
                if time.monotonic() + wait > deadline:
                    raise ExportError(f"export not complete after {self.s.timeout_s:.0f} s")
                self.stats["waited_s"] += wait
                self.sleep(wait)
                continue
            raise ExportError(f"export failed ({r.status_code}): {_diagnostics(r)}")

    def download(self, manifest: dict[str, Any]) -> None:
        needs_token = bool(manifest.get("requiresAccessToken"))
        seen: dict[str, int] = {}
        for item in manifest.get("output") or []:
            rtype, url = item.get("type"), item.get("url")
            if not isinstance(rtype, str) or not isinstance(url, str) or not rtype.isalpha():
                continue
            if needs_token and not _same_origin(url, self.req.base):
                raise ExportError("an output file with requiresAccessToken is not on the FHIR server")
            n = seen[rtype] = seen.get(rtype, -1) + 1
            dest = self.dir / f"{rtype}.{n:03d}.ndjson"
            if dest.exists():
                self.stats["reused"] += 1
                continue
            part = dest.with_suffix(".ndjson.part")
            self._stream_to(url, part, needs_token, rtype)
            part.replace(dest)
            self.stats["downloaded"] += 1


    def _stream_to(self, url: str, part: Path, needs_token: bool, rtype: str) -> None:
        """Stream one output file to disk (the token only when the manifest requires it; renewed once on 401)."""
        for attempt in (0, 1):
            headers = {"Accept": "application/fhir+ndjson"}
            if needs_token:
                headers["Authorization"] = f"Bearer {self.auth.token(renew=attempt == 1)}"
            with self.http.stream("GET", url, headers=headers) as r:
                if r.status_code == 401 and needs_token and attempt == 0:
                    continue
                if r.status_code != 200:
                    raise ExportError(f"download of a {rtype} file failed ({r.status_code})")
                with open(part, "wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        f.write(chunk)
                return


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def _diagnostics(r: httpx.Response) -> str:
    try:
        body = r.json()
        issues = body.get("issue") or []
        return "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues)[:300] or "no detail"
    except ValueError:
        return "no detail"
