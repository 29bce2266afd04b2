"""Habits of real CDS clients (the CDS Hooks Sandbox, Epic, Oracle Health) the service must tolerate (issue 16)."""

from __future__ import annotations

import copy

from tests.hooks import requests as rq

ACS = {
    "resourceType": "Condition", "id": "cond-acs",
    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "394659003", "display": "Acute coronary syndrome"}]},
    "subject": {"reference": "Patient/pgx-demo-1"},
}


def test_patient_view_discovery_prefetches_conditions_and_medications(client):
    services = {s["id"]: s for s in client.get("/cds-services").json()["services"]}
    prefetch = services["pgx-patient-view"]["prefetch"]
    assert prefetch["conditions"].startswith("Condition?patient={{context.patientId}}")
    assert prefetch["medications"].startswith("MedicationRequest?patient={{context.patientId}}")


def test_patient_view_uses_the_patients_conditions_for_the_population(client):
    """The sandbox sends what discovery asks for; with the ACS condition the clopidogrel advice is the ACS/PCI
    one, not the 'population could not be determined' fallback seen in the sandbox."""
    body = rq.patient_view()
    body["prefetch"]["conditions"] = rq.bundle(ACS)
    body["prefetch"]["medications"] = rq.bundle()
    r = client.post("/cds-services/pgx-patient-view", json=body)
    assert r.status_code == 200
    text = r.text
    assert "clopidogrel" in text
    assert "could not be determined" not in text
    without = rq.patient_view()
    assert "could not be determined" in client.post("/cds-services/pgx-patient-view", json=without).text


CODEINE = rq.med_request("same", "2670", "codeine", dose=30)
CYP2D6_PM = rq.genotype("obs-2d6", "CYP2D6", "HGNC:2625", "*4/*4")


def _changes_order_by_id(card: dict) -> list[dict]:
    return [a for s in card.get("suggestions") or [] for a in s["actions"] if a["type"] in ("delete", "update")]


def test_draft_orders_sharing_an_id_get_no_change_by_id(client):
    """The sandbox (and some EHRs) send every draft order with the same id: a 'delete MedicationRequest/same'
    would remove the wrong order (or all of them). The cards still come, without actions by id, saying why."""
    clop = {**rq.CLOPIDOGREL, "id": "same"}
    apap = {**rq.ACETAMINOPHEN, "id": "same"}
    body = rq.order_sign(obs=[rq.CYP2C19_PM, CYP2D6_PM], orders=[apap, clop, CODEINE])
    cards = client.post("/cds-services/pgx-order-sign", json=body).json()["cards"]
    drugs = sorted(c["extension"]["pgx-cds"]["drug"]["name"] for c in cards)
    assert drugs == ["clopidogrel", "codeine"]
    for card in cards:
        assert _changes_order_by_id(card) == []
        assert "share the id `MedicationRequest/same`" in card["detail"]


def test_unique_ids_keep_their_one_click_replacement(client):
    """The same orders with their own ids (the control): the replacement names the draft to remove."""
    body = rq.order_sign(obs=[rq.CYP2C19_PM, CYP2D6_PM], orders=[rq.ACETAMINOPHEN, rq.CLOPIDOGREL,
                                                                  {**CODEINE, "id": "draft-codeine"}])
    cards = client.post("/cds-services/pgx-order-sign", json=body).json()["cards"]
    assert len(cards) == 2 and all(_changes_order_by_id(c) for c in cards)
    assert all("share the id" not in c["detail"] for c in cards)


def test_a_shared_id_is_not_answered_from_the_unique_orders_templates(client):
    """Card templates are memoised per order content: the same order once alone and once beside a namesake
    must not share a template (the memo key includes whether the id is shared)."""
    clop = {**rq.CLOPIDOGREL, "id": "same"}
    alone = client.post("/cds-services/pgx-order-sign", json=rq.order_sign(orders=[clop])).json()["cards"]
    assert _changes_order_by_id(alone[0])
    both = rq.order_sign(orders=[clop, {**rq.ACETAMINOPHEN, "id": "same"}])
    shared = client.post("/cds-services/pgx-order-sign", json=both).json()["cards"]
    assert shared and _changes_order_by_id(shared[0]) == []


def test_an_epic_style_token_is_accepted(tmp_path):
    """Epic's CDS Hooks JWT habits (developer documentation): RS384, a `jku` under the organisation's
    /api/epic/.../PublicKeys path, a thumbprint-like `kid`, `typ: JWT`, `iss` = the organisation's FHIR
    endpoint, `sub` = the CDS client id, `aud` = the service URL as the health system configured it,
    `nbf` about 5 minutes before `iat`, `exp` 15 minutes after."""
    import json as _json
    import time
    import uuid

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    from service.config import Issuer
    from tests.hooks.conftest import make_client

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = "d5Kz0Xz6c3F0aQ8Yv7kKq1mQm2b9c1b0x0J3d2Qm9Fw="
    jwk = _json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, use="sig", alg="RS384")
    iss = "https://fhir.hospital.example/interconnect-fhir-oauth/api/FHIR/R4"
    jku = "https://fhir.hospital.example/interconnect-fhir-oauth/api/epic/2019/Security/Open/PublicKeys/530013/530013"
    configured_aud = "https://cds.hospital.example/cds-services/pgx-order-select"
    issuer = Issuer(iss=iss, jwks={"keys": [jwk]}, jku_allowlist=[jku], audiences=[configured_aud],
                    fhir_servers=[iss])
    now = int(time.time())
    claims = {"iss": iss, "sub": "a1b2c3-cds-client", "aud": configured_aud, "iat": now, "nbf": now - 300,
              "exp": now + 900, "jti": str(uuid.uuid4())}
    tok = jwt.encode(claims, key, algorithm="RS384", headers={"kid": kid, "typ": "JWT", "jku": jku})
    with make_client(issuers=[issuer], public_base_url="https://cds.hospital.example",
                     feedback_file=tmp_path / "fb") as c:
        r = c.post("/cds-services/pgx-order-select", json=rq.order_select(),
                   headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 200 and r.json()["cards"]
        # the same token again is a replay
        again = c.post("/cds-services/pgx-order-select", json=rq.order_select(),
                       headers={"Authorization": f"Bearer {tok}"})
        assert again.status_code == 401
