"""End to end over real HTTP: the service under uvicorn, a real redis-server, signed JWTs.

Also the PHI log scan (issue 6): after the traffic, the service's whole log output must contain no
token, JWT, patient id, diplotype or patient name.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.hooks import requests as rq

pytestmark = pytest.mark.e2e

ISS = "https://ehr.e2e.example/fhir"
KEY = ec.generate_private_key(ec.SECP384R1())
JWK = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key()))
JWK.update(kid="e2e-1", use="sig", alg="ES384")
SECRET_TOKEN = "fhir-access-token-" + uuid.uuid4().hex


def sign(aud: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISS, "aud": aud, "iat": now, "exp": now + 120, "jti": str(uuid.uuid4())}, KEY,
                      algorithm="ES384", headers={"kid": "e2e-1", "typ": "JWT"})


@pytest.fixture
def live(service_factory, redis_url, tmp_path):
    issuers = [{"iss": ISS, "jwks": {"keys": [JWK]}, "fhir_servers": ["https://ehr.e2e.example/fhir"]}]
    env = {"PGX_CDS_ISSUERS": json.dumps(issuers), "PGX_CDS_REDIS_URL": redis_url, "PGX_CDS_PUBLIC_BASE_URL": "{url}",
           "PGX_CDS_FEEDBACK_FILE": str(tmp_path / "fb.ndjson"), "PGX_CDS_LOG_LEVEL": "info"}
    return service_factory(env, name="e2e")


def test_full_exchange_over_http_with_signed_jwt(live):
    url = live.url
    with httpx.Client(timeout=10) as c:
        assert c.get(url + "/cds-services").status_code == 401
        d = c.get(url + "/cds-services", headers={"Authorization": "Bearer " + sign(url + "/cds-services")})
        assert d.status_code == 200 and len(d.json()["services"]) == 3

        body = rq.order_select(fhirServer="https://ehr.e2e.example/fhir",
                               fhirAuthorization={"access_token": SECRET_TOKEN, "token_type": "Bearer", "expires_in": 60,
                                                  "scope": "patient/Observation.read", "subject": "pgx-cds", "patient": "pgx-demo-1"})
        svc = url + "/cds-services/pgx-order-select"
        r = c.post(svc, json=body, headers={"Authorization": "Bearer " + sign(svc)})
        assert r.status_code == 200, r.text
        card = r.json()["cards"][0]
        assert card["indicator"] == "critical"
        assert r.headers["content-type"].startswith("application/json")

        # order-sign of the same order: the card already shown is not repeated (de-duplication via Redis)
        sign_body = rq.order_sign(fhirServer="https://ehr.e2e.example/fhir")
        sign_url = url + "/cds-services/pgx-order-sign"
        r2 = c.post(sign_url, json=sign_body, headers={"Authorization": "Bearer " + sign(sign_url)})
        assert r2.status_code == 200 and r2.json()["cards"] == []

        fb_url = svc + "/feedback"
        fb = {"feedback": [{"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-21T10:00:00Z",
                            "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]}]}
        assert c.post(fb_url, json=fb, headers={"Authorization": "Bearer " + sign(fb_url)}).status_code == 200

        bad = c.post(svc, content=b"{", headers={"Authorization": "Bearer " + sign(svc), "content-type": "application/json"})
        assert bad.status_code == 400

        metrics = c.get(url + "/metrics").text
        assert "pgx_cds_request_seconds_bucket" in metrics
        assert 'pgx_cds_feedback_total{outcome="accepted"' in metrics
        assert c.get(url + "/readyz").json()["redis"] == "up"

    live.stop()
    logs = live.logs()
    assert "hook_evaluated" in logs  # the scan below reads real log lines
    for forbidden in (SECRET_TOKEN, "pgx-demo-1", "*2/*2", "eyJ", "Bearer "):
        assert forbidden not in logs, forbidden
    for line in logs.splitlines():
        if line.startswith("{"):
            json.loads(line)  # every structured line is JSON


def test_log_scanner_catches_what_it_must():
    """The scanner that guards every e2e service log (tests/conftest.py) is not a no-op."""
    from tests.conftest import scan_log_for_phi

    assert scan_log_for_phi('{"event": "x", "auth": "Bearer abc"}')
    assert scan_log_for_phi('{"dip": "*2/*17"}')
    assert scan_log_for_phi('{"jwt": "eyJhbGciOiJFUzM4NCJ9.e30.x"}')
    assert scan_log_for_phi('{"patient": "pgx-demo-1"}')
    assert not scan_log_for_phi('{"event": "request", "patient_hash": "cb46717ef9a34b2b", "status": 200}')


def test_installed_layout_finds_fhir_code_tables_beside_the_knowledge_dir(tmp_path):
    """Regression: an installed (non-checkout) package looked for fhir_profiles/ inside site-packages,
    so the container image failed on the first genomic result. It now finds them beside the knowledge
    directory, as the image lays them out (/app/cards, /app/fhir_profiles)."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    app = tmp_path / "app"
    shutil.copytree(root / "cards", app / "cards")
    shutil.copytree(root / "fhir_profiles", app / "fhir_profiles")
    site = tmp_path / "site"
    shutil.copytree(root / "service", site / "service")  # the package alone, as a wheel installs it
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGX_CDS_")}
    env.update(PYTHONPATH=str(site), PGX_CDS_KNOWLEDGE_DIR=str(app / "cards"), PGX_CDS_LOG_LEVEL="error")
    out = subprocess.run([sys.executable, "-m", "service.cli", "evaluate",
                          str(root / "fhir_profiles" / "examples" / "order-select-clopidogrel.json")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"indicator": "critical"' in out.stdout
