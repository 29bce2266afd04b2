"""A real FHIR R4 server for tests: sekmet-fhir (pinned 0.1.1) as a subprocess on a free port.

Reusable by other test packages::

    # in your conftest.py
    from tests.fhir.sekmet import fhir_server  # noqa: F401  (session fixture)

or load this file by path (see tests/fhir/conftest.py). ``fhir_server`` yields a :class:`SekmetServer`:
``base_url`` (``http://127.0.0.1:<port>/fhir``), ``token(scope=..., client=...)`` and ``seed(bundle)``.
The server enforces SMART Backend Services tokens with scopes (``enforce_scopes: true``); every synthetic
bundle in ``fhir_profiles/bundles`` is loaded at start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLES_DIR = REPO_ROOT / "fhir_profiles" / "bundles"

#: SMART backend clients registered in the test server: client_id -> (secret, allowed scopes)
CLIENTS: dict[str, tuple[str, str]] = {
    "pgx-cds": ("pgx-secret", "system/Patient.read system/Observation.read system/Condition.read "
                              "system/MedicationRequest.read system/Medication.read"),
    "loader": ("loader-secret", "system/*.*"),
    "obs-only": ("obs-secret", "system/Observation.read"),
}
DEFAULT_SCOPE = CLIENTS["pgx-cds"][1]


@dataclass
class SekmetServer:
    """A running sekmet-fhir process."""

    base_url: str
    root_url: str
    pid: int
    workdir: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def token(self, scope: str | None = None, client: str = "pgx-cds") -> str:
        """A bearer token from sekmet's SMART Backend Services endpoint (client_credentials)."""
        scope = scope or CLIENTS[client][1]
        key = (client, scope)
        if key not in self._tokens:
            secret = CLIENTS[client][0]
            r = httpx.post(f"{self.root_url}/auth/token", data={"grant_type": "client_credentials", "scope": scope},
                           auth=(client, secret), timeout=10)
            r.raise_for_status()
            self._tokens[key] = r.json()["access_token"]
        return self._tokens[key]

    def seed(self, bundle: dict) -> dict:
        """POST a transaction Bundle (with the loader token); returns the transaction-response."""
        r = httpx.post(self.base_url, content=json.dumps(bundle),
                       headers={"Content-Type": "application/fhir+json",
                                "Authorization": f"Bearer {self.token(client='loader')}"}, timeout=30)
        if r.status_code >= 300:
            raise RuntimeError(f"seeding failed: {r.status_code} {r.text[:500]}")
        return r.json()


def sekmet_available() -> bool:
    """Is the sekmet-fhir distribution installed? (by distribution name: this file is also called sekmet)"""
    from importlib import metadata

    try:
        metadata.version("sekmet-fhir")
    except metadata.PackageNotFoundError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sekmet(workdir: Path | None = None, *, seed_bundles: bool = True, timeout_s: float = 30,
                 extra_clients: list[dict] | None = None) -> SekmetServer:
    """Start sekmet on a free loopback port, wait until /fhir/metadata answers, load the bundles.
    ``extra_clients``: more SMART backend clients (sekmet's smart_clients entries, e.g. with ``jwks``)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="pgx-sekmet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    cfg = {
        "base_url": base,
        "host": "127.0.0.1",
        "port": port,
        "data_dir": str(workdir / "data"),
        "simulator": {"enabled": False},
        "log_inbound": False,
        "own_private_key_path": str(workdir / "keys" / "sekmet_private.pem"),
        "server_auth": {
            "types": ["smart"],
            "enforce_scopes": True,
            "smart_clients": [{"client_id": c, "client_secret": s, "scopes": sc} for c, (s, sc) in CLIENTS.items()]
            + list(extra_clients or []),
        },
    }
    cfg_path = workdir / "settings.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    log = open(workdir / "sekmet.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from sekmet.cli import app; app()", "serve", "-c", str(cfg_path)],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    server = SekmetServer(base_url=base, root_url=f"http://127.0.0.1:{port}", pid=proc.pid, workdir=workdir, proc=proc)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sekmet exited with {proc.returncode}: {(workdir / 'sekmet.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/metadata", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_sekmet(server)
            raise RuntimeError("sekmet did not start in time")
        time.sleep(0.1)
    if seed_bundles:
        for path in sorted(BUNDLES_DIR.glob("*.json")):
            server.seed(json.loads(path.read_text(encoding="utf-8")))
    return server


def stop_sekmet(server: SekmetServer, *, cleanup: bool = True) -> None:
    """Stop the process we started (by its pid) and remove its working directory."""
    proc = server.proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if cleanup:
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    """Session-wide sekmet FHIR server, seeded with fhir_profiles/bundles/*.json."""
    if not sekmet_available():
        pytest.fail("sekmet-fhir is not installed: run `make install` (it is a test dependency)")
    server = start_sekmet(tmp_path_factory.mktemp("sekmet"))
    try:
        yield server
    finally:
        stop_sekmet(server)
