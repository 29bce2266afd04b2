"""Fixtures for the FHIR stage: synthetic bundles, prefetch built from them, sekmet, a slow server."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

from service.config import FhirSettings
from service.fhir.client import FhirClient

_HERE = Path(__file__).resolve().parent
BUNDLES = _HERE.parents[1] / "fhir_profiles" / "bundles"

# load tests/fhir/sekmet.py by path: the name "sekmet" would clash with the sekmet-fhir package
_spec = importlib.util.spec_from_file_location("pgx_tests_fhir_sekmet", _HERE / "sekmet.py")
assert _spec and _spec.loader
_sekmet = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _sekmet
_spec.loader.exec_module(_sekmet)
fhir_server = _sekmet.fhir_server  # session fixture, reusable by other test packages


def load_bundle(name: str) -> dict[str, Any]:
    """A synthetic transaction bundle from fhir_profiles/bundles (name without .json)."""
    return json.loads((BUNDLES / f"{name}.json").read_text(encoding="utf-8"))


def patient_id_of(bundle: dict[str, Any]) -> str:
    return next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def prefetch_from(bundle: dict[str, Any], hook: str = "order-sign") -> dict[str, Any]:
    """What a conformant EHR would prefetch for our templates, built from a transaction bundle."""
    res = [e["resource"] for e in bundle["entry"]]

    def searchset(types: tuple[str, ...]) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "searchset",
                "entry": [{"fullUrl": f"http://ehr.example/fhir/{r['resourceType']}/{r['id']}", "resource": r}
                          for r in res if r["resourceType"] in types]}

    out = {
        "patient": next(r for r in res if r["resourceType"] == "Patient"),
        "pgxObservations": searchset(("Observation", "DiagnosticReport")),
    }
    if hook != "patient-view":
        out["conditions"] = searchset(("Condition",))
        out["medications"] = searchset(("MedicationRequest",))
        out["vitals"] = {"resourceType": "Bundle", "type": "searchset", "entry": []}  # vitals sit in the obs above
    return out


@pytest.fixture
def bundles() -> Callable[[str], dict[str, Any]]:
    return load_bundle


@pytest.fixture
def make_prefetch() -> Callable[..., dict[str, Any]]:
    return prefetch_from


@pytest.fixture
def fhir_settings() -> FhirSettings:
    return FhirSettings(timeout_s=2.0, connect_timeout_s=0.5, retries=1, max_pages=3, page_size=50, allow_http=True)


@pytest.fixture
async def client(fhir_settings: FhirSettings) -> AsyncIterator[FhirClient]:
    c = FhirClient(fhir_settings)
    yield c
    await c.aclose()


class SlowServer:
    """A tiny HTTP server that waits ``delay`` seconds before answering (to prove the budget holds)."""

    def __init__(self, delay: float, body: bytes = b'{"resourceType":"Bundle","type":"searchset"}') -> None:
        self.delay, self.body, self.requests = delay, body, 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.base_url = ""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            self.requests += 1
            await asyncio.sleep(self.delay)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n"
                         + f"Content-Length: {len(self.body)}\r\n\r\n".encode() + self.body)
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def start(self) -> "SlowServer":
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/fhir"
        return self

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1)
            except (asyncio.TimeoutError, Exception):
                pass


@pytest.fixture
async def slow_server() -> AsyncIterator[SlowServer]:
    server = await SlowServer(delay=30).start()
    yield server
    await server.stop()
