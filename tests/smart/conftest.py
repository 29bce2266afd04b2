"""Fixtures for the SMART app unit tests: a small app with the router mounted, an RSA key for id_tokens."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.cache.store import InProcessKV
from service.config import FhirSettings, Issuer, Settings
from service.smart.config import SmartSettings

ISS = "https://ehr.test/fhir"
AUTHZ = "https://ehr.test/oauth/authorize"
TOKEN = "https://ehr.test/oauth/token"
JWKS = "https://ehr.test/oauth/jwks"
ISSUER = "https://ehr.test/oauth"
CLIENT_ID = "pgx-cds"


class StubKnowledge:
    version = "test-knowledge 1"
    drug_index = None
    genes: dict[str, Any] = {}

    def guidelines_for_drug(self, drug: str) -> list[Any]:
        if drug == "clopidogrel":
            return [SimpleNamespace(genes=["CYP2C19"])]
        return []


def make_app(*, production: bool = False, smart: SmartSettings | None = None) -> FastAPI:
    from service.smart.router import router

    if production:
        settings = Settings(profile="production", issuers=[Issuer(iss="https://ehr.test", fhir_servers=[ISS])],
                            public_base_url="https://testserver")
    else:
        settings = Settings(profile="dev", fhir=FhirSettings(allow_http=True))
    app = FastAPI()
    app.state.settings = settings
    app.state.kv = InProcessKV()
    app.state.knowledge = StubKnowledge()
    app.state.fhir = object()
    app.state.smart_settings = smart or SmartSettings()
    app.include_router(router, prefix=settings.smart_app_path)
    return app


@pytest.fixture
def app() -> FastAPI:
    return make_app()


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        yield c


@pytest.fixture(scope="session")
def rsa_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    return key, {"keys": [jwk]}


def smart_config(**over: Any) -> dict[str, Any]:
    cfg = {
        "issuer": ISSUER,
        "authorization_endpoint": AUTHZ,
        "token_endpoint": TOKEN,
        "jwks_uri": JWKS,
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["launch-ehr", "launch-standalone", "client-public", "context-ehr-patient", "permission-v2"],
    }
    cfg.update(over)
    return cfg


def id_token(key, *, nonce: str, aud: str = CLIENT_ID, iss: str = ISSUER, exp_in: int = 300, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": iss, "aud": aud, "sub": "dr-1", "iat": now, "exp": now + exp_in, "nonce": nonce, **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})
