"""Async FHIR R4 client: one shared httpx connection pool per process, a per-request time budget.

Every call takes a :class:`Budget` (created once per CDS request from ``settings.fhir.timeout_s``) so all
FHIR traffic of one hook call, however many calls run in parallel, ends by one deadline. Failures raise
:class:`FhirError`, whose message never carries the access token, the URL or the patient id.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Iterable, Mapping
from urllib.parse import quote, urljoin, urlsplit

import httpx
import orjson
import structlog

from service.config import FhirSettings
from service.observability import metrics

log = structlog.get_logger(__name__)

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_MIN_RETRY_S = 0.05  # do not start a retry with less time than this left
_BACKOFF_S = 0.02
_MAX_BODY = 32 * 1024 * 1024
_FHIR_JSON = "application/fhir+json"


class FhirError(Exception):
    """A FHIR call failed. ``kind``: timeout | connect | unauthorized | forbidden | not_found | http |
    invalid_response | budget_exhausted | invalid_request. ``status``: the HTTP status when there was one."""

    def __init__(self, kind: str, status: int | None = None, detail: str | None = None) -> None:
        self.kind = kind
        self.status = status
        self.detail = detail
        msg = f"FHIR {kind}" + (f" (HTTP {status})" if status is not None else "")
        super().__init__(msg + (f": {detail}" if detail else ""))


class Budget:
    """The time budget of one CDS request, shared by all its FHIR calls; also counts outbound requests."""

    __slots__ = ("deadline", "calls", "_clock")

    def __init__(self, seconds: float, *, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self.deadline = clock() + seconds
        self.calls = 0

    @classmethod
    def from_settings(cls, settings: Any) -> "Budget":
        """Build from a Settings or FhirSettings object (``timeout_s``)."""
        return cls(_fhir_settings(settings).timeout_s)

    def remaining(self) -> float:
        return max(0.0, self.deadline - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0


def _fhir_settings(settings: Any) -> FhirSettings:
    if settings is None:
        return FhirSettings()
    return getattr(settings, "fhir", settings)


def validate_fhir_server(url: str, *, allowed: list[str] | None, allow_http: bool) -> str:
    """Check a ``fhirServer`` URL from a CDS request and return it normalised (no trailing slash).

    https only unless ``allow_http``; no user info, query or fragment; when ``allowed`` is a non-empty list
    the URL must equal one of its entries or lie below one (path-segment boundary). ``None`` or ``[]``
    means no allow-list. Raises ValueError with a message safe to return to the client.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("fhirServer must be a non-empty URL")
    norm = _normalise_base(url.strip())
    parts = urlsplit(norm)
    if parts.scheme not in ("https", "http"):
        raise ValueError("fhirServer must be an http(s) URL")
    if parts.scheme == "http" and not allow_http:
        raise ValueError("fhirServer must use https (http is only allowed in dev/test configuration)")
    if not parts.hostname:
        raise ValueError("fhirServer has no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("fhirServer must not contain user credentials")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("fhirServer must not contain a query or fragment")
    if allowed:
        for a in allowed:
            base = _normalise_base(a)
            if norm == base or norm.startswith(base + "/"):
                return norm
        raise ValueError("fhirServer is not one of the FHIR servers configured for this issuer")
    return norm


def _normalise_base(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.lower()
    path = parts.path.rstrip("/")
    return f"{parts.scheme.lower()}://{netloc}{path}" + (f"?{parts.query}" if parts.query else "") + (
        f"#{parts.fragment}" if parts.fragment else ""
    )


def encode_params(params: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
    """Percent-encode search parameters: ``system|code`` -> ``system%7Ccode``; commas (OR) kept."""
    items = params.items() if isinstance(params, Mapping) else params
    out = []
    for k, v in items:
        values = v if isinstance(v, (list, tuple)) else [v]
        for one in values:
            out.append(f"{quote(str(k), safe=':-_.')}={quote(str(one), safe=',-_.~')}")
    return "&".join(out)


class FhirClient:
    """FHIR reads and searches over one lazily created, shared ``httpx.AsyncClient``.

    Create one per process (``get_fhir_client()``) and ``await aclose()`` it on shutdown. ``transport`` is
    for tests. The pool is recreated if the running event loop changes (test suites use one loop per test).
    """

    def __init__(self, settings: Any = None, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = _fhir_settings(settings)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def settings(self) -> FhirSettings:
        return self._settings

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(
                http2=False,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30),
                timeout=httpx.Timeout(self._settings.timeout_s, connect=self._settings.connect_timeout_s),
                transport=self._transport,
                headers={"Accept": _FHIR_JSON, "User-Agent": "pgx-cds"},
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the pool (call from the app's shutdown/lifespan)."""
        client, self._client, self._loop = self._client, None, None
        if client is not None and not client.is_closed:
            try:
                await client.aclose()
            except RuntimeError:  # pragma: no cover - closed from a different loop
                pass

    async def read(self, base: str, path: str, token: str | None, *, budget: Budget) -> dict[str, Any]:
        """GET ``{base}/{path}`` (e.g. ``Patient/123``) and return the resource.

        The resource type must match the first path segment; anything else is ``invalid_response``.
        """
        rtype = path.split("/", 1)[0].split("?", 1)[0]
        url = f"{base.rstrip('/')}/{path.lstrip('/')}"
        body = await self._get(url, token, budget)
        if body.get("resourceType") != rtype:
            raise FhirError("invalid_response", None, f"expected {rtype}, got {body.get('resourceType')!r}")
        return body

    async def search(
        self,
        base: str,
        resource_type: str,
        params: Mapping[str, Any] | Iterable[tuple[str, Any]],
        token: str | None,
        *,
        budget: Budget,
    ) -> dict[str, Any]:
        """Search and return one ``searchset`` Bundle with the entries of all pages fetched.

        Sets ``_count`` to ``settings.page_size`` unless given; follows ``next`` links (same server only) up
        to ``settings.max_pages`` pages. When more pages remain, the returned Bundle keeps the last
        ``next`` link so the caller can tell the result is incomplete.
        """
        items = list(params.items() if isinstance(params, Mapping) else params)
        if not any(k == "_count" for k, _ in items):
            items.append(("_count", str(self._settings.page_size)))
        base = base.rstrip("/")
        url = f"{base}/{resource_type}?{encode_params(items)}"
        return await self.pages(base, url, token, budget=budget, max_pages=self._settings.max_pages)

    async def pages(
        self, base: str, url: str, token: str | None, *, budget: Budget, max_pages: int
    ) -> dict[str, Any]:
        """Fetch a search URL (or a ``next`` link) and follow ``next`` links up to ``max_pages`` pages in all.

        Links are only followed on the same server as ``base``; a remaining ``next`` link is kept in the
        returned Bundle's ``link``. Raises FhirError(invalid_request) if ``url`` is not on ``base``'s server.
        """
        base = base.rstrip("/")
        if not _same_server(url, base):
            raise FhirError("invalid_request", None, "page URL is not on the FHIR server")
        entries: list[dict[str, Any]] = []
        total = None
        next_url: str | None = url
        pages = 0
        while next_url is not None and pages < max_pages:
            page = await self._get(next_url, token, budget)
            if page.get("resourceType") != "Bundle":
                raise FhirError("invalid_response", None, f"expected Bundle, got {page.get('resourceType')!r}")
            pages += 1
            got = page.get("entry") or []
            if not isinstance(got, list):
                raise FhirError("invalid_response", None, "Bundle.entry is not a list")
            entries.extend(e for e in got if isinstance(e, dict))
            if total is None and isinstance(page.get("total"), int):
                total = page["total"]
            next_url = _next_link(page, base)
            if next_url is not None and not _same_server(next_url, base):
                log.warning("fhir_next_link_foreign_server_not_followed")
                break
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
        if total is not None:
            bundle["total"] = total
        if next_url is not None:
            bundle["link"] = [{"relation": "next", "url": next_url}]
        return bundle

    async def _get(self, url: str, token: str | None, budget: Budget) -> dict[str, Any]:
        """One GET with bounded retries, all inside the budget's deadline."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        retries_left = self._settings.retries
        attempt = 0
        while True:
            remaining = budget.remaining()
            if remaining <= 0:
                raise FhirError("budget_exhausted")
            # leave room for a retry when one is allowed and worthwhile
            share = remaining * (2 / 3) if retries_left and remaining / 3 >= _MIN_RETRY_S else remaining
            attempt += 1
            budget.calls += 1
            started = time.perf_counter()
            resource = _resource_label(url)
            try:
                resp = await self._send(url, headers, share)
            except FhirError as err:
                metrics.FHIR_LATENCY.labels(resource=resource).observe(time.perf_counter() - started)
                metrics.FHIR_ERRORS.labels(kind=err.kind).inc()
                if retries_left and budget.remaining() >= _MIN_RETRY_S and err.kind in ("timeout", "connect"):
                    retries_left -= 1
                    log.info("fhir_retry", kind=err.kind, attempt=attempt)
                    await asyncio.sleep(min(_BACKOFF_S * attempt, budget.remaining() / 4))
                    continue
                log.warning("fhir_call_failed", kind=err.kind, attempt=attempt,
                            ms=round((time.perf_counter() - started) * 1000, 1))
                raise
            status = resp.status_code
            metrics.FHIR_LATENCY.labels(resource=resource).observe(time.perf_counter() - started)
            if status >= 400:
                metrics.FHIR_ERRORS.labels(kind=f"http_{status // 100}xx").inc()
            if status in _RETRY_STATUS and retries_left and budget.remaining() >= _MIN_RETRY_S:
                retries_left -= 1
                log.info("fhir_retry", status=status, attempt=attempt)
                await asyncio.sleep(min(_BACKOFF_S * attempt, budget.remaining() / 4))
                continue
            if status >= 400:
                kind = {401: "unauthorized", 403: "forbidden", 404: "not_found", 410: "not_found"}.get(status, "http")
                log.warning("fhir_call_failed", kind=kind, status=status, attempt=attempt)
                raise FhirError(kind, status)
            if status != 200:
                raise FhirError("invalid_response", status, "unexpected status")
            return _parse_body(resp.content)

    async def _send(self, url: str, headers: dict[str, str] | None, seconds: float) -> httpx.Response:
        client = self._http()
        timeout = httpx.Timeout(seconds, connect=min(seconds, self._settings.connect_timeout_s))
        try:
            async with asyncio.timeout(seconds):
                return await client.get(url, headers=headers, timeout=timeout)
        except (TimeoutError, httpx.TimeoutException):
            raise FhirError("timeout") from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
                httpx.CloseError, httpx.ProxyError) as e:
            raise FhirError("connect", None, type(e).__name__) from None
        except httpx.HTTPError as e:
            raise FhirError("invalid_request", None, type(e).__name__) from None


def _resource_label(url: str) -> str:
    """The resource type of a FHIR URL, for metric labels (never ids or query values)."""
    path = url.split("?", 1)[0].rstrip("/").split("/")
    for part in reversed(path[-2:]):
        if part[:1].isupper() and part.isalpha():
            return part
    return "other"


def _parse_body(content: bytes) -> dict[str, Any]:
    if len(content) > _MAX_BODY:
        raise FhirError("invalid_response", None, "response too large")
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise FhirError("invalid_response", None, "body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise FhirError("invalid_response", None, "body is not a FHIR resource")
    return body


def _next_link(bundle: dict[str, Any], base: str) -> str | None:
    """The ``next`` link resolved against base. Callers only follow it when it is on the same server
    (the token is never sent elsewhere)."""
    links = bundle.get("link")
    for link in links if isinstance(links, list) else []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return urljoin(base + "/", link["url"])
    return None


def _same_server(url: str, base: str) -> bool:
    """Same scheme, host and port (default ports made explicit)."""
    try:
        a, b = urlsplit(url), urlsplit(base)
        pa = a.port or (443 if a.scheme == "https" else 80)
        pb = b.port or (443 if b.scheme == "https" else 80)
    except ValueError:
        return False
    return (a.scheme, a.hostname, pa) == (b.scheme, b.hostname, pb)


_shared: FhirClient | None = None


def get_fhir_client(settings: Any = None) -> FhirClient:
    """The process-wide client (created on first use)."""
    global _shared
    if _shared is None:
        if settings is None:
            from service.config import get_settings

            settings = get_settings()
        _shared = FhirClient(settings)
    return _shared


async def close_fhir_client() -> None:
    """Close the process-wide client (app shutdown)."""
    global _shared
    if _shared is not None:
        await _shared.aclose()
        _shared = None
