"""Issue 12, tenant isolation: what one caller sends about a patient never answers another caller.

Two issuers (EHR tenants) with their own keys, the same patient id, the same or different FHIR servers.
Issuer A sends a forged prefetch; issuer B's requests must be answered from B's own FHIR server, and
A's order-select must not suppress B's order-sign cards. The FHIR servers are respx routes (the FHIR
client's transport); everything else is the real service.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec

from service.config import Issuer
from tests.hooks import requests as rq
from tests.hooks.conftest import make_client

BASE = "https://cds.hospital.example"
ISS_A = "https://ehr-a.example/cds-client"
ISS_B = "https://ehr-b.example/cds-client"
SHARED = "https://fhir.shared.example/r4"  # both issuers are configured with it (two tenants of one EHR)
FHIR_A = "https://fhir.a.example/r4"
FHIR_B = "https://fhir.b.example/r4"
SELECT = "/cds-services/pgx-order-select"
SIGN = "/cds-services/pgx-order-sign"

_KEYS = {ISS_A: ec.generate_private_key(ec.SECP384R1()), ISS_B: ec.generate_private_key(ec.SECP384R1())}


def _jwks(iss: str) -> dict:
    d = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(_KEYS[iss].public_key()))
    d.update(kid="k1", use="sig", alg="ES384")
    return {"keys": [d]}


def _auth(iss: str, path: str, **claims) -> dict:
    now = int(time.time())
    tok = jwt.encode({"iss": iss, "aud": BASE + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **claims},
                     _KEYS[iss], algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})
    return {"Authorization": f"Bearer {tok}"}


FHIR_AUTH = {"access_token": "t", "token_type": "Bearer", "expires_in": 60, "scope": "patient/*.read", "subject": "s"}


def _fhir(m: respx.MockRouter, base: str, genotype: dict) -> respx.Route:
    """A FHIR server holding the synthetic patient with this genomic result."""

    def answer(request: httpx.Request) -> httpx.Response:
        if "Observation" in request.url.path:
            return httpx.Response(200, json=rq.bundle(genotype))
        if "Patient" in request.url.path:
            return httpx.Response(200, json=rq.PATIENT)
        return httpx.Response(200, json=rq.bundle())

    return m.route(url__startswith=base).mock(side_effect=answer)


@pytest.fixture(params=["memory", "redis"])
def two_issuers(request, tmp_path):
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    issuers = [Issuer(iss=ISS_A, jwks=_jwks(ISS_A), fhir_servers=[SHARED, FHIR_A]),
               Issuer(iss=ISS_B, jwks=_jwks(ISS_B), fhir_servers=[SHARED, FHIR_B])]
    with make_client(issuers=issuers, public_base_url=BASE, redis_url=redis_url,
                     feedback_file=tmp_path / "fb.ndjson") as c:
        yield c


def _critical(resp) -> bool:
    assert resp.status_code == 200, resp.text
    return any(card["indicator"] == "critical" for card in resp.json()["cards"])


@pytest.mark.parametrize("a_names, b_server", [(SHARED, SHARED), (FHIR_B, FHIR_B)],
                         ids=["same-fhir-server", "a-names-b's-server"])
def test_a_forged_prefetch_never_answers_another_issuers_request(two_issuers, a_names, b_server):
    c = two_issuers
    # A claims the patient is a normal metabolizer (no card) on the server B will ask about
    forged = rq.order_select(obs=[rq.CYP2C19_NM], fhirServer=a_names)
    assert not _critical(c.post(SELECT, json=forged, headers=_auth(ISS_A, SELECT)))
    with respx.mock(assert_all_called=False) as m:
        route = _fhir(m, b_server, rq.CYP2C19_PM)  # the truth on B's server: a poor metabolizer
        mine = rq.order_select(prefetch=False, fhirServer=b_server, fhirAuthorization=FHIR_AUTH)
        assert _critical(c.post(SELECT, json=mine, headers=_auth(ISS_B, SELECT)))
        assert route.called  # B's own server was asked, not A's forged data reused


def test_the_token_tenant_separates_callers_of_one_issuer(tmp_path):
    with make_client(issuers=[Issuer(iss=ISS_A, jwks=_jwks(ISS_A), fhir_servers=[SHARED])], public_base_url=BASE,
                     feedback_file=tmp_path / "fb.ndjson") as c:
        forged = rq.order_select(obs=[rq.CYP2C19_NM], fhirServer=SHARED)
        assert not _critical(c.post(SELECT, json=forged, headers=_auth(ISS_A, SELECT, tenant="t-1")))
        with respx.mock(assert_all_called=False) as m:
            route = _fhir(m, SHARED, rq.CYP2C19_PM)
            mine = rq.order_select(prefetch=False, fhirServer=SHARED, fhirAuthorization=FHIR_AUTH)
            assert _critical(c.post(SELECT, json=mine, headers=_auth(ISS_A, SELECT, tenant="t-2")))
            assert route.called


def test_the_same_callers_cache_still_serves_it(two_issuers):
    c = two_issuers
    assert _critical(c.post(SELECT, json=rq.order_select(fhirServer=SHARED), headers=_auth(ISS_A, SELECT)))
    with respx.mock(assert_all_called=False) as m:
        route = _fhir(m, SHARED, rq.CYP2C19_NM)
        again = rq.order_select(prefetch=False, fhirServer=SHARED, fhirAuthorization=FHIR_AUTH)
        assert _critical(c.post(SELECT, json=again, headers=_auth(ISS_A, SELECT)))  # A's own snapshot
        assert not route.called


def test_data_from_a_server_not_validated_for_the_caller_is_never_cached(two_issuers):
    c = two_issuers
    # A names B's server (refused for A): answered from A's prefetch, and stored for nobody
    assert _critical(c.post(SELECT, json=rq.order_select(fhirServer=FHIR_B), headers=_auth(ISS_A, SELECT)))
    r = c.post(SELECT, json=rq.order_select(prefetch=False, fhirServer=FHIR_B), headers=_auth(ISS_A, SELECT))
    assert r.status_code == 412 and "not contacted" in r.json()["issue"][0]["diagnostics"]


def test_data_from_a_refused_server_is_not_cached_in_dev_mode_either(client):
    # dev mode (no issuers: one trusted caller): a server we may not contact (plain http outside the dev
    # profile) still never makes its prefetch a cached answer for requests that carry none
    assert _critical(client.post(SELECT, json=rq.order_select(fhirServer="http://fhir.plain.example/r4")))
    r = client.post(SELECT, json=rq.order_select(prefetch=False, fhirServer="http://fhir.plain.example/r4"))
    assert r.status_code == 412


@pytest.mark.parametrize("a_names, b_server", [(SHARED, SHARED), (FHIR_B, FHIR_B)],
                         ids=["same-fhir-server", "a-names-b's-server"])
def test_one_issuers_order_select_never_suppresses_anothers_order_sign(two_issuers, a_names, b_server):
    c = two_issuers
    assert _critical(c.post(SELECT, json=rq.order_select(fhirServer=a_names), headers=_auth(ISS_A, SELECT)))
    # B signs the same order for the same patient id: B has not seen the card, so it is shown
    assert _critical(c.post(SIGN, json=rq.order_sign(fhirServer=b_server), headers=_auth(ISS_B, SIGN)))


def test_order_sign_is_still_deduplicated_for_the_same_caller(two_issuers):
    c = two_issuers
    assert _critical(c.post(SELECT, json=rq.order_select(fhirServer=SHARED), headers=_auth(ISS_A, SELECT)))
    r = c.post(SIGN, json=rq.order_sign(fhirServer=SHARED), headers=_auth(ISS_A, SIGN))
    assert r.status_code == 200 and r.json()["cards"] == []


def test_an_oversized_fhir_server_is_refused_and_never_contacted(client):
    huge = "https://fhir.example/" + "a" * 5000  # also never kept in the validation memo (256 x 1 MB otherwise)
    with respx.mock(assert_all_called=False) as m:
        route = m.route(url__startswith="https://fhir.example/").mock(return_value=httpx.Response(500))
        r = client.post(SELECT, json=rq.order_select(prefetch=False, fhirServer=huge, fhirAuthorization=FHIR_AUTH))
        assert r.status_code == 412 and "longer than 2048" in r.json()["issue"][0]["diagnostics"]
        assert not route.called
        assert _critical(client.post(SELECT, json=rq.order_select(fhirServer=huge)))  # prefetch still answers
