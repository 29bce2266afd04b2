"""Checklist 31-39: JWT authentication of discovery, service and feedback calls."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from freezegun import freeze_time

from service.auth.jwt import AuthError, JwtVerifier
from service.cache.store import InProcessKV
from service.config import Issuer, Settings
from tests.hooks import requests as rq
from tests.hooks.conftest import make_client

VECTORS = json.loads((Path(__file__).parent.parent / "data" / "jwt_vectors.json").read_text())
BASE = "https://cds.hospital.example"
ISS = "https://ehr.hospital.example/fhir"

_EC_KEY = ec.generate_private_key(ec.SECP384R1())
_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(key, kid, alg):
    d = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
    d.update(kid=kid, use="sig", alg=alg)
    return d


JWKS = {"keys": [_jwk(_EC_KEY, "k-ec", "ES384"), _jwk(_RSA_KEY, "k-rsa", "RS384")]}


def token(aud, *, key=_EC_KEY, alg="ES384", kid="k-ec", iss=ISS, exp_in=300, iat_delta=0, jti=None, headers=None, **claims):
    now = int(time.time())
    payload = {"iss": iss, "aud": aud, "iat": now + iat_delta, "exp": now + exp_in, "jti": jti or str(uuid.uuid4()), **claims}
    hdr = {"kid": kid, "typ": "JWT", **(headers or {})}
    if kid is None:
        hdr.pop("kid")
    return jwt.encode(payload, key, algorithm=alg, headers=hdr)


@pytest.fixture
def authed(tmp_path):
    with make_client(
        issuers=[Issuer(iss=ISS, jwks=JWKS, fhir_servers=["https://ehr.hospital.example/fhir"])],
        public_base_url=BASE, feedback_file=tmp_path / "fb.ndjson",
    ) as c:
        yield c


def H(tok):
    return {"Authorization": f"Bearer {tok}"}


SVC = "/cds-services/pgx-order-select"


def test_discovery_service_and_feedback_require_a_jwt(authed):
    assert authed.get("/cds-services").status_code == 401
    assert authed.post(SVC, json=rq.order_select()).status_code == 401
    fb = {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}
    assert authed.post(SVC + "/feedback", json=fb).status_code == 401


def test_valid_tokens_accepted_with_aud_equal_to_each_url(authed):
    assert authed.get("/cds-services", headers=H(token(BASE + "/cds-services"))).status_code == 200
    r = authed.post(SVC, json=rq.order_select(), headers=H(token(BASE + SVC)))
    assert r.status_code == 200 and r.json()["cards"]
    fb = {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]}
    assert authed.post(SVC + "/feedback", json=fb, headers=H(token(BASE + SVC + "/feedback"))).status_code == 200


def test_rs384_accepted_and_aud_as_array(authed):
    tok = token([BASE + "/cds-services"], key=_RSA_KEY, alg="RS384", kid="k-rsa")
    assert authed.get("/cds-services", headers=H(tok)).status_code == 200


@pytest.mark.parametrize("make", [
    lambda: token(BASE + SVC),  # aud of another endpoint (service URL used on discovery)
    lambda: token(BASE + "/cds-services", exp_in=-600),  # expired
    lambda: token(BASE + "/cds-services", iat_delta=600),  # iat in the future
    lambda: token(BASE + "/cds-services", iat_delta=-7200, exp_in=600),  # too old
    lambda: token(BASE + "/cds-services", kid=None),  # kid missing
    lambda: token(BASE + "/cds-services", kid="unknown"),  # kid not in JWKS
    lambda: token(BASE + "/cds-services", iss="https://evil.example"),  # issuer not allowlisted
    lambda: token(BASE + "/cds-services", headers={"jku": "https://evil.example/jwks"}),  # jku not allowlisted
    lambda: token(BASE + "/cds-services", nbf=int(time.time()) + 600),  # not yet valid
    lambda: token(BASE + "/cds-services", headers={"typ": "at+jwt"}),
    lambda: jwt.encode({"iss": ISS, "aud": BASE + "/cds-services", "exp": int(time.time()) + 60,
                        "iat": int(time.time()), "jti": "x"}, "secret-secret-secret-secret-secret!", algorithm="HS256",
                       headers={"kid": "k-ec"}),  # HMAC never
    lambda: jwt.encode({"iss": ISS, "aud": BASE + "/cds-services", "exp": int(time.time()) + 60,
                        "iat": int(time.time()), "jti": "x"}, None, algorithm="none", headers={"kid": "k-ec"}),
    lambda: token(BASE + "/cds-services")[:-4] + "AAAA",  # tampered signature
    lambda: token(BASE + "/cds-services", key=_RSA_KEY, alg="RS384", kid="k-ec"),  # key/alg mismatch
    lambda: "not-a-jwt",
])
def test_bad_tokens_are_401_without_detail(authed, make):
    r = authed.get("/cds-services", headers=H(make()))
    assert r.status_code == 401
    assert r.json()["issue"][0]["diagnostics"] == "Unauthorized"


def test_missing_required_claim_rejected(authed):
    now = int(time.time())
    tok = jwt.encode({"iss": ISS, "aud": BASE + "/cds-services", "exp": now + 60, "iat": now}, _EC_KEY,
                     algorithm="ES384", headers={"kid": "k-ec"})  # no jti
    assert authed.get("/cds-services", headers=H(tok)).status_code == 401


def test_replayed_jti_rejected(authed):
    tok = token(BASE + "/cds-services")
    assert authed.get("/cds-services", headers=H(tok)).status_code == 200
    assert authed.get("/cds-services", headers=H(tok)).status_code == 401


def test_replay_detected_through_shared_redis_across_app_instances(redis_url, tmp_path):
    s = dict(issuers=[Issuer(iss=ISS, jwks=JWKS)], public_base_url=BASE, redis_url=redis_url,
             feedback_file=tmp_path / "fb.ndjson")
    tok = token(BASE + "/cds-services")
    with make_client(**s) as a, make_client(**s) as b:
        assert a.get("/cds-services", headers=H(tok)).status_code == 200
        assert b.get("/cds-services", headers=H(tok)).status_code == 401


def test_tenant_checked_when_configured(tmp_path):
    with make_client(issuers=[Issuer(iss=ISS, jwks=JWKS, tenant="t-1")], public_base_url=BASE,
                     feedback_file=tmp_path / "f") as c:
        assert c.get("/cds-services", headers=H(token(BASE + "/cds-services", tenant="t-2"))).status_code == 401
        assert c.get("/cds-services", headers=H(token(BASE + "/cds-services", tenant="t-1"))).status_code == 200


def test_configured_audience_accepted(tmp_path):
    with make_client(issuers=[Issuer(iss=ISS, jwks=JWKS, audiences=["https://configured.example/cds"])],
                     public_base_url=BASE, feedback_file=tmp_path / "f") as c:
        assert c.get("/cds-services", headers=H(token("https://configured.example/cds"))).status_code == 200


def test_spec_example_token_verifies_with_frozen_clock():
    v = VECTORS["spec_example"]
    settings = Settings(issuers=[Issuer(iss=v["iss"], jwks=v["jwks"], jku_allowlist=[v["jku"]])], public_base_url=BASE)
    verifier = JwtVerifier(settings, InProcessKV(), None)
    with freeze_time("2011-07-21T20:43:00Z"):  # 10 s after the example's iat
        principal = asyncio.run(verifier.verify(v["token"], v["aud"]))
    assert principal.tenant == "2ddd6c3a-8e9a-44c6-a305-52111ad302a2"
    with freeze_time("2011-07-21T20:43:00Z"), pytest.raises(AuthError):
        asyncio.run(JwtVerifier(settings, InProcessKV(), None).verify(v["token"], v["aud"] + "-other"))
    with pytest.raises(AuthError):  # real clock: long expired
        asyncio.run(JwtVerifier(settings, InProcessKV(), None).verify(v["token"], v["aud"]))


def test_sandbox_token_trusted_only_in_dev_profile(tmp_path):
    sb = VECTORS["sandbox"]
    now = int(time.time())
    tok = jwt.encode({"iss": sb["iss"], "aud": BASE + "/cds-services", "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())},
                     sb["private_key_pem"], algorithm="ES384", headers={"kid": sb["kid"], "typ": "JWT", "jku": sb["jku"]})
    with make_client(profile="dev", trust_sandbox=True, public_base_url=BASE, feedback_file=tmp_path / "f") as c:
        assert c.get("/cds-services", headers=H(tok)).status_code == 200
    with pytest.raises(ValueError, match="dev"):
        Settings(trust_sandbox=True)  # production profile refuses the public key


def test_jwks_fetched_from_issuer_url_and_refreshed_on_unknown_kid(tmp_path):
    import httpx
    import respx

    jwks_url = "https://ehr.hospital.example/jwks.json"
    new_key = ec.generate_private_key(ec.SECP384R1())
    served = {"keys": [_jwk(_EC_KEY, "k-ec", "ES384")]}
    with respx.mock(assert_all_called=False) as m:
        route = m.get(jwks_url).mock(side_effect=lambda req: httpx.Response(200, json=served))
        with make_client(issuers=[Issuer(iss=ISS, jwks_url=jwks_url)], public_base_url=BASE,
                         cache={"jwks_min_refresh_s": 0}, feedback_file=tmp_path / "f") as c:
            assert c.get("/cds-services", headers=H(token(BASE + "/cds-services"))).status_code == 200
            assert c.get("/cds-services", headers=H(token(BASE + "/cds-services"))).status_code == 200
            assert route.call_count == 1  # cached
            served["keys"].append(_jwk(new_key, "k-new", "ES384"))  # rotation
            tok = token(BASE + "/cds-services", key=new_key, kid="k-new")
            assert c.get("/cds-services", headers=H(tok)).status_code == 200
            assert route.call_count == 2
            # an arbitrary jku is never fetched
            tok = token(BASE + "/cds-services", headers={"jku": "https://attacker.example/jwks"})
            assert c.get("/cds-services", headers=H(tok)).status_code == 401
            assert all("attacker" not in str(call.request.url) for call in m.calls)


def test_fhir_server_not_configured_for_issuer_is_never_contacted(authed):
    import respx

    with respx.mock(assert_all_mocked=True) as m:
        body = rq.order_select(fhirServer="https://other-ehr.example/fhir", prefetch=False,
                               fhirAuthorization={"access_token": "t", "token_type": "Bearer", "expires_in": 60,
                                                  "scope": "patient/*.read", "subject": "s"})
        r = authed.post(SVC, json=body, headers=H(token(BASE + SVC)))
        assert r.status_code == 412
        assert "not one of the FHIR servers configured" in r.json()["issue"][0]["diagnostics"]
        assert m.calls.call_count == 0  # no server-side request forgery
        # the same request with complete prefetch is still answered
        r = authed.post(SVC, json=rq.order_select(fhirServer="https://other-ehr.example/fhir"), headers=H(token(BASE + SVC)))
        assert r.status_code == 200 and r.json()["cards"]
