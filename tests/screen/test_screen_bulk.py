"""`pgx-cds screen --input <FHIR base>`: Bulk Data $export from a real FHIR server (sekmet-fhir) with SMART
Backend Services (private_key_jwt), polling, download, resume, Group level; then the same screening."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.screen.bulk import BackendSettings, BulkExporter, ExportError, ExportRequest, retry_after
from service.screen.progress import NoProgress
from service.screen.run import ScreenRequest, screen
from tests.fhir.sekmet import sekmet_available, start_sekmet, stop_sekmet
from tests.screen.synth import Generator

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
N = 60
FILTER_CODES = {"84413-4", "84414-2", "69548-6", "therapeutic-implication", "53040-2", "51961-1", "83009-1",
                "29463-7", "8302-2"}


def _key(tmp: Path, name: str) -> tuple[Path, dict]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp / f"{name}.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return pem, {**jwk, "kid": name, "alg": "RS384", "use": "sig"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    assert sekmet_available(), "sekmet-fhir is part of the test extras (make install)"
    tmp = tmp_path_factory.mktemp("bulk")
    pem, jwk = _key(tmp, "screen-key")
    other_pem, _ = _key(tmp, "unregistered")
    srv = start_sekmet(tmp / "sekmet", seed_bundles=False, extra_clients=[
        {"client_id": "pgx-screen", "scopes": "system/*.read", "jwks": {"keys": [jwk]}}])
    patients = list(Generator(seed=5, tested=0.6, template_share=0.3).patients(N))
    for chunk in range(0, N, 20):
        entries = [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                   for rs in patients[chunk:chunk + 20] for r in rs]
        srv.seed({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    group = {"resourceType": "Group", "id": "pgx-programme", "type": "person", "actual": True,
             "member": [{"entity": {"reference": f"Patient/{rs[0]['id']}"}} for rs in patients[:5]]}
    srv.seed({"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": group, "request": {"method": "PUT", "url": "Group/pgx-programme"}}]})
    try:
        yield type("S", (), {"srv": srv, "pem": pem, "other_pem": other_pem, "patients": patients, "tmp": tmp})
    finally:
        stop_sekmet(srv)


def _settings(server, pem: Path | None = None) -> BackendSettings:
    return BackendSettings(client_id="pgx-screen", private_key_file=pem or server.pem, key_id="screen-key")


def _env(server) -> dict[str, str]:
    return {"PGX_CDS_SCREEN_CLIENT_ID": "pgx-screen", "PGX_CDS_SCREEN_PRIVATE_KEY_FILE": str(server.pem),
            "PGX_CDS_SCREEN_KEY_ID": "screen-key"}


def _filtered_out(resources: list[dict]) -> bool:
    """A patient with an Observation the export's _typeFilter leaves out (a local, non-LOINC code)."""
    for r in resources:
        if r["resourceType"] == "Observation":
            if not {c.get("code") for c in r.get("code", {}).get("coding", [])} & FILTER_CODES:
                return True
    return False


def test_export_then_screen_equals_screening_the_same_records(server, tmp_path, monkeypatch):
    for k, v in _env(server).items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "from-server"
    s1 = screen(ScreenRequest(input=server.srv.base_url, output=out, workers=2, formats=("ndjson",),
                              today=date.today()), NoProgress())
    assert s1["input"]["kind"] == "bulk-export" and s1["input"]["export"]["kickoffs"] == 1
    assert s1["input"]["export"]["polls"] >= 1 and s1["input"]["export"]["downloaded"] >= 5
    assert "127.0.0.1" in s1["input"]["export"]["server"] and "?" not in s1["input"]["export"]["server"]
    state = json.loads((out / "export" / "export-state.json").read_text())
    assert state["complete"] and state["manifest"]["requiresAccessToken"] is True
    assert "access_token" not in json.dumps(state) and "Bearer" not in json.dumps(state)
    assert s1["patients"]["read"] == N

    # the same patients from a directory: the same findings (patients whose results the type filter keeps)
    local_in = tmp_path / "local-in"
    local_in.mkdir()
    with open(local_in / "all.ndjson", "w") as f:
        for rs in server.patients:
            for r in rs:
                f.write(json.dumps(r) + "\n")
    s2 = screen(ScreenRequest(input=str(local_in), output=tmp_path / "local", workers=2, formats=("ndjson",),
                              today=date.today()), NoProgress())
    assert s2["patients"]["read"] == N
    skip = {f"Patient/{rs[0]['id']}" for rs in server.patients if _filtered_out(rs)}
    lines = lambda p: {ln["patient"]: ln["findings"] for ln in map(json.loads, (p / "worklist.ndjson").read_text().splitlines())}  # noqa: E731
    a, b = lines(out), lines(tmp_path / "local")
    assert a and len(skip) < N / 4
    assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


def test_resume_reuses_downloaded_files(server, tmp_path):
    req = ExportRequest(base=server.srv.base_url)
    first = BulkExporter(req, tmp_path, _settings(server), sleep=lambda s: None)
    first.run()
    files = sorted(p.name for p in tmp_path.glob("*.ndjson"))
    assert files and first.stats["kickoffs"] == 1
    # an interrupted run: one file missing, the run not marked complete -> only that file again, no kick-off
    (tmp_path / files[0]).unlink()
    state = json.loads((tmp_path / "export-state.json").read_text())
    state.pop("complete")
    (tmp_path / "export-state.json").write_text(json.dumps(state))
    again = BulkExporter(req, tmp_path, _settings(server), sleep=lambda s: None)
    again.run()
    assert again.stats == {**again.stats, "kickoffs": 0, "polls": 0, "downloaded": 1, "reused": len(files) - 1}
    assert sorted(p.name for p in tmp_path.glob("*.ndjson")) == files
    # a different request is a new export
    other = BulkExporter(ExportRequest(base=server.srv.base_url, types=("Patient",), type_filters=()), tmp_path,
                         _settings(server), sleep=lambda s: None)
    assert "manifest" not in other._state()


def test_polling_before_the_export_is_ready(server, tmp_path):
    """Kick-off, then poll the status URL until done, sleeping what Retry-After asks (sekmet: 1 s)."""
    waits: list[float] = []
    ex = BulkExporter(ExportRequest(base=server.srv.base_url, level="patient"), tmp_path, _settings(server),
                      sleep=waits.append)
    status = ex.kickoff()
    r = httpx.get(status, headers={"Authorization": f"Bearer {ex.auth.token()}"})
    assert r.status_code in (200, 202)
    manifest = ex.poll(status)
    assert manifest["output"] and all(w == 1.0 for w in waits)
    assert ex.stats["polls"] == len(waits) + 1


def test_group_level_export(server, tmp_path, monkeypatch):
    for k, v in _env(server).items():
        monkeypatch.setenv(k, v)
    s = screen(ScreenRequest(input=server.srv.base_url, output=tmp_path, workers=1, formats=("ndjson",),
                             export_level="group", group="pgx-programme", today=date.today()), NoProgress())
    members = {f"Patient/{rs[0]['id']}" for rs in server.patients[:5]}
    assert s["patients"]["read"] == 5
    got = {json.loads(ln)["patient"] for ln in (tmp_path / "worklist.ndjson").read_text().splitlines()}
    assert got <= members


def test_unregistered_key_is_refused_clearly(server, tmp_path):
    ex = BulkExporter(ExportRequest(base=server.srv.base_url), tmp_path, _settings(server, server.other_pem))
    with pytest.raises(ExportError, match=r"token request refused \(401, invalid_client\)"):
        ex.run()
    env = {**os.environ, **_env(server), "PGX_CDS_SCREEN_PRIVATE_KEY_FILE": str(server.other_pem)}
    r = subprocess.run([sys.executable, "-m", "service.cli", "screen", "--input", server.srv.base_url, "--output",
                        str(tmp_path / "o"), "--quiet"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "token request refused" in r.stderr
    assert "eyJ" not in r.stderr + r.stdout and "PRIVATE KEY" not in r.stderr + r.stdout


def test_missing_settings_and_group_id():
    with pytest.raises(ExportError, match="PGX_CDS_SCREEN_CLIENT_ID"):
        BulkExporter(ExportRequest(base="https://fhir.example.org"), Path("/nonexistent"), BackendSettings())
    with pytest.raises(ExportError, match="group id"):
        ExportRequest(base="https://fhir.example.org", level="group").path()


def test_retry_after_forms():
    assert retry_after("7", 1.0) == 7.0
    assert retry_after(None, 2.5) == 2.5 and retry_after("soon", 3.0) == 3.0
    assert 100 < retry_after("Wed, 21 Oct 2099 07:28:00 GMT", 1.0)
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1.0) == 0.0
