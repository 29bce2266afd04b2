"""Checklist 6-28 (requests, prefetch semantics, responses) through the real app in-process."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from tests.hooks import requests as rq


def post(client, service, body, **kw):
    return client.post(f"/cds-services/{service}", json=body, **kw)


# ---- bad input (issue 2 "Bad input") --------------------------------------------------------------

def test_non_json_is_400(client):
    r = client.post("/cds-services/pgx-order-select", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_wrong_content_type_is_415(client):
    r = client.post("/cds-services/pgx-order-select", content=b"hook=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415


@pytest.mark.parametrize("field", ["hook", "hookInstance", "context"])
def test_missing_required_field_is_400_naming_it(client, field):
    body = rq.order_select()
    del body[field]
    r = post(client, "pgx-order-select", body)
    assert r.status_code == 400
    assert field in r.json()["issue"][0]["diagnostics"]


def test_hook_not_matching_service_is_400(client):
    r = post(client, "pgx-order-sign", rq.order_select())
    assert r.status_code == 400
    assert "hook" in r.json()["issue"][0]["diagnostics"]


def test_body_over_1mb_is_413(client):
    body = rq.order_select()
    body["extension"] = {"padding": "x" * 1_100_000}
    assert post(client, "pgx-order-select", body).status_code == 413


def test_fhir_authorization_without_fhir_server_is_400(client):
    body = rq.order_select(fhirAuthorization={"access_token": "secret-token-123", "token_type": "Bearer",
                                              "expires_in": 300, "scope": "patient/Observation.read", "subject": "c"})
    r = post(client, "pgx-order-select", body)
    assert r.status_code == 400
    assert "secret-token-123" not in r.text


def test_missing_patient_id_is_400(client):
    body = rq.order_select()
    del body["context"]["patientId"]
    r = post(client, "pgx-order-select", body)
    assert r.status_code == 400
    assert "patientId" in r.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("mutate", [
    lambda b: b["context"].update(draftOrders={"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "NutritionOrder", "id": "n1"}}]}),
    lambda b: b["context"].update(draftOrders={"resourceType": "Bundle", "entry": [{}, {"resource": None}, "junk"]}),
    lambda b: b["context"].update(draftOrders={"resourceType": "Bundle"}),
    lambda b: b.update(unknownField={"a": 1}, extension={"com.example.x": {"y": 2}}),
    lambda b: b["context"].update(extension={"org.example": True}, somethingElse=[1, 2]),
    lambda b: b["prefetch"].update(pgxObservations={"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation"}}]}),
    lambda b: b["prefetch"].update(pgxObservations={"resourceType": "Bundle", "entry": "garbage"}),
])
def test_messy_but_parseable_input_never_500(client, mutate):
    body = rq.order_select()
    mutate(body)
    r = post(client, "pgx-order-select", body)
    assert r.status_code in (200, 400, 412), r.text
    assert "Traceback" not in r.text


# ---- behaviour ---------------------------------------------------------------------------------

def card_rules(resp) -> list[str]:
    return [c["extension"]["pgx-cds"]["recommendation"]["ruleId"] for c in resp.json()["cards"]]


def test_order_select_poor_metabolizer_clopidogrel_gives_critical_card(client):
    r = post(client, "pgx-order-select", rq.order_select())
    assert r.status_code == 200, r.text
    cards = r.json()["cards"]
    assert len(cards) == 1
    card = cards[0]
    assert card["indicator"] == "critical"
    assert "clopidogrel" in card["summary"].lower() and len(card["summary"]) < 140
    ext = card["extension"]["pgx-cds"]
    assert ext["drug"] == {"name": "clopidogrel", "rxnorm": "32968"}
    assert ext["genes"][0]["gene"] == "CYP2C19"
    assert ext["genes"][0]["phenotype"] == "Poor Metabolizer"
    assert ext["genes"][0]["observation"].endswith("obs-2c19")
    assert ext["recommendation"]["action"] == "avoid"
    assert ext["recommendation"]["strength"] == "Strong"
    assert ext["recommendation"]["guideline"].startswith("https://cpicpgx.org/")
    assert ext["knowledgeVersion"]


def test_order_select_only_evaluates_selections(client):
    body = rq.order_select(orders=[rq.ACETAMINOPHEN, rq.CLOPIDOGREL], selections=["MedicationRequest/draft-apap"])
    r = post(client, "pgx-order-select", body)
    assert r.status_code == 200
    assert r.json() == {"cards": []}


def test_order_sign_evaluates_all_draft_orders_and_non_draft_statuses(client):
    orders = [rq.ACETAMINOPHEN, dict(rq.CLOPIDOGREL, status="active")]
    r = post(client, "pgx-order-sign", rq.order_sign(orders=orders))
    assert r.status_code == 200
    assert len(r.json()["cards"]) == 1


def test_normal_metabolizer_gives_no_interruptive_card(client):
    r = post(client, "pgx-order-select", rq.order_select(obs=[rq.CYP2C19_NM]))
    assert r.status_code == 200
    assert r.json() == {"cards": []}


def test_patient_view_accepts_patient_user_and_lists_actionable_results(client):
    body = rq.patient_view()
    body["context"]["userId"] = "Patient/pgx-demo-1"
    r = post(client, "pgx-patient-view", body)
    assert r.status_code == 200
    drugs = {c["extension"]["pgx-cds"]["drug"]["name"] for c in r.json()["cards"]}
    assert "clopidogrel" in drugs


def test_card_conformance(client):
    """Checklist 20-28: summary, indicator, source, uuids, selectionBehavior, actions, overrideReasons, links, no empties."""
    card = post(client, "pgx-order-select", rq.order_select()).json()["cards"][0]
    assert card["source"]["label"] and card["source"]["topic"]["code"].startswith("clopidogrel")
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["uuid"]
    sugg = card["suggestions"]
    assert sugg and card["selectionBehavior"] == "at-most-one"
    assert sum(1 for s in sugg if s.get("isRecommended")) <= 1
    assert len({s["uuid"] for s in sugg}) == len(sugg)
    for s in sugg:
        types = [a["type"] for a in s["actions"]]
        assert types == ["create", "delete"]  # create first: a client applying only the first action keeps an order
        create, delete = s["actions"]
        assert delete["resourceId"] == "MedicationRequest/draft-clop" and "resource" not in delete
        assert all(a["description"] for a in s["actions"])
        res = create["resource"]
        assert res["resourceType"] == "MedicationRequest" and res["status"] == "draft" and res["intent"] == "order"
        assert res["subject"] == {"reference": "Patient/pgx-demo-1"}
        assert res["medicationCodeableConcept"]["coding"][0]["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
        assert res["encounter"] == {"reference": "Encounter/enc-1"}
    for reason in card["overrideReasons"]:
        assert reason["code"] and reason["system"] and reason["display"]
    for link in card["links"]:
        assert link["type"] in ("absolute", "smart")
        if link["type"] != "smart":
            assert "appContext" not in link
    raw = json.dumps(card)
    assert "null" not in raw.replace('"activityScore": null', "").replace('"alleleStatus": null', "").replace('"diplotype": null', "")
    assert '""' not in raw and "[]" not in raw and "{}" not in raw


def test_card_uuid_is_stable_for_the_same_hook_instance(client):
    body = rq.order_select()
    a = post(client, "pgx-order-select", body).json()["cards"][0]
    b = post(client, "pgx-order-select", body).json()["cards"][0]
    assert a["uuid"] == b["uuid"]
    assert [s["uuid"] for s in a["suggestions"]] == [s["uuid"] for s in b["suggestions"]]
    body2 = rq.order_select()
    c = post(client, "pgx-order-select", body2).json()["cards"][0]
    assert c["uuid"] != a["uuid"]


# ---- prefetch semantics (checklist 13-17) -------------------------------------------------------

FHIR = "https://fhir.example.org/r4"


@respx.mock(assert_all_mocked=True)
def test_complete_prefetch_makes_zero_fhir_calls(respx_mock, client):
    body = rq.order_select(fhirServer=FHIR, fhirAuthorization={"access_token": "t0k", "token_type": "Bearer",
                           "expires_in": 300, "scope": "patient/*.read", "subject": "pgx-cds"})
    r = post(client, "pgx-order-select", body)
    assert r.status_code == 200 and len(r.json()["cards"]) == 1
    assert respx_mock.calls.call_count == 0


def test_no_prefetch_and_no_fhir_server_is_412_operation_outcome(client):
    r = post(client, "pgx-order-select", rq.order_select(prefetch=False))
    assert r.status_code == 412
    assert r.json()["resourceType"] == "OperationOutcome"


def test_prefetch_empty_bundle_means_no_data_not_412(client):
    body = rq.order_select(obs=[])
    r = post(client, "pgx-order-select", body)
    assert r.status_code == 200


def test_prefetch_null_means_no_data(client):
    body = rq.order_select()
    body["prefetch"]["pgxObservations"] = None
    r = post(client, "pgx-order-select", body)
    assert r.status_code == 200


@respx.mock(assert_all_called=False)
def test_operation_outcome_prefetch_is_refetched_never_parsed(respx_mock, client):
    route = respx_mock.get(url__startswith=FHIR + "/Observation").mock(
        return_value=httpx.Response(200, json=rq.bundle(rq.CYP2C19_PM)))
    respx_mock.route(url__startswith=FHIR).mock(return_value=httpx.Response(200, json=rq.bundle()))
    body = rq.order_select(fhirServer=FHIR, fhirAuthorization={"access_token": "t0k", "token_type": "Bearer",
                           "expires_in": 300, "scope": "patient/*.read", "subject": "pgx-cds"})
    body["prefetch"]["pgxObservations"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    r = post(client, "pgx-order-select", body)
    assert r.status_code == 200, r.text
    assert route.called
    assert route.calls[0].request.headers["authorization"] == "Bearer t0k"
    assert len(r.json()["cards"]) == 1


@respx.mock(assert_all_called=False)
def test_fhir_server_failing_gives_412_not_500(respx_mock, client):
    respx_mock.route(url__startswith=FHIR).mock(return_value=httpx.Response(503))
    body = rq.order_select(prefetch=False, fhirServer=FHIR, fhirAuthorization={"access_token": "t0k", "token_type": "Bearer",
                           "expires_in": 300, "scope": "patient/*.read", "subject": "pgx-cds"})
    r = post(client, "pgx-order-select", body)
    assert r.status_code == 412
    assert "t0k" not in r.text


@respx.mock(assert_all_mocked=True)
def test_http_fhir_server_never_contacted_in_production_profile(respx_mock, client):
    body = rq.order_select(fhirServer="http://fhir.example.org/r4")
    r = post(client, "pgx-order-select", body)
    assert r.status_code == 200 and r.json()["cards"]  # answered from prefetch
    body = rq.order_select(fhirServer="http://fhir.example.org/r4", prefetch=False)
    body["context"]["patientId"] = "not-cached-patient"
    r = post(client, "pgx-order-select", body)
    assert r.status_code == 412
    assert "https" in r.json()["issue"][0]["diagnostics"]
    assert respx_mock.calls.call_count == 0


@pytest.mark.parametrize("make", [
    lambda: ("pgx-order-select", rq.order_select()),
    lambda: ("pgx-order-sign", rq.order_sign(orders=[rq.CLOPIDOGREL, rq.med_request("d2", "2002", "carbamazepine")])),
    lambda: ("pgx-patient-view", rq.patient_view(obs=[rq.CYP2C19_PM, rq.genotype("o2", "CYP2D6", "HGNC:2625", "*4/*4")])),
    lambda: ("pgx-order-select", rq.order_select(obs=[], orders=[rq.med_request("d3", "190521", "abacavir")])),
])
def test_responses_validate_against_the_strict_response_model(client, make):
    """Checklist 28: every response parses with the strict CDS Hooks models (extra fields forbidden,
    indicator/link type/selectionBehavior enums, summary < 140) and the 2.0 invariants hold."""
    from service.hooks.schemas import CdsResponse

    service, body = make()
    r = post(client, service, body)
    assert r.status_code == 200, r.text
    resp = CdsResponse.model_validate(r.json())
    assert resp.cards
    for card in resp.cards:
        if card.suggestions:
            assert card.selectionBehavior is not None  # cds-resp-6
            if card.selectionBehavior == "at-most-one":
                assert sum(1 for s in card.suggestions if s.isRecommended) <= 1  # cds-resp-1
            for s in card.suggestions:
                for a in s.actions or []:
                    assert a.description  # cds-resp-5
                    if a.type == "delete":
                        assert a.resourceId and a.resource is None  # cds-resp-2
        for link in card.links or []:
            assert link.type == "smart" or link.appContext is None  # cds-resp-3


def test_cards_are_bound_to_the_hook_instance(client):
    """The body is built from reusable card templates; only the uuids belong to the request: a retry of
    the same hookInstance gets the same uuids, another hookInstance new ones, nothing else changes."""
    import asyncio
    import uuid

    from service.hooks.discovery import SERVICES
    from service.hooks.pipeline import run_hook
    from service.hooks.schemas import CdsResponse, HookRequest

    body = rq.order_sign(orders=[rq.CLOPIDOGREL, rq.med_request("d2", "2002", "carbamazepine")], obs=[rq.CYP2C19_PM])
    deps = client.app.state.deps

    def run(hook_instance: str) -> dict:
        req = HookRequest.model_validate({**body, "hookInstance": hook_instance})
        out = asyncio.run(run_hook(SERVICES["pgx-order-sign"], req, deps, None))
        CdsResponse.model_validate_json(out.body)  # strict wire model
        assert out.indicators == tuple(c["indicator"] for c in json.loads(out.body)["cards"])
        return json.loads(out.body)

    def uuids(resp: dict) -> list[str]:
        return [u for c in resp["cards"] for u in [c["uuid"], *(s["uuid"] for s in c.get("suggestions", []))]]

    def without_uuids(resp: dict) -> dict:
        return {"cards": [{**c, "uuid": None, "suggestions": [{**s, "uuid": None} for s in c.get("suggestions", [])]}
                          for c in resp["cards"]]}

    first, retry, other = run("hi-a"), run("hi-a"), run("hi-b")  # the retry comes from the memoised templates
    assert first["cards"] and first == retry
    assert without_uuids(first) == without_uuids(other)
    assert not set(uuids(first)) & set(uuids(other))
    assert len(set(uuids(first))) == len(uuids(first))
    assert all(uuid.UUID(u).version == 5 for u in uuids(first))
    http = post(client, "pgx-order-sign", {**body, "hookInstance": "hi-a"}).json()
    assert uuids(http) == uuids(first)


def _vital(obs_id: str, loinc: str, value: float, unit: str) -> dict:
    return {"resourceType": "Observation", "id": obs_id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "subject": {"reference": "Patient/pgx-demo-1"}, "effectiveDateTime": "2026-10-01",
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def test_warfarin_dose_from_the_pharmacogenetic_algorithm_when_vitals_are_prefetched(client):
    """Issue 3: the IWPC algorithm runs when age (Patient), height and weight (the `vitals` prefetch) are known."""
    obs = [rq.genotype("o-2c9", "CYP2C9", "HGNC:2623", "*1/*3"), rq.genotype("o-vk", "VKORC1", "HGNC:23663", "-1639 AG")]
    body = rq.order_select(obs=obs, orders=[rq.med_request("d-w", "11289", "warfarin", dose=5)])
    body["prefetch"]["vitals"] = rq.bundle(_vital("w1", "29463-7", 70, "kg"), _vital("h1", "8302-2", 170, "cm"))
    with_vitals = post(client, "pgx-order-select", body).json()["cards"]
    body["prefetch"]["vitals"] = rq.bundle()  # new prefetch content: the newest prefetch wins over the cache
    without = post(client, "pgx-order-select", body).json()["cards"]
    assert with_vitals and without
    assert "IWPC" in with_vitals[0]["detail"] and "mg/week" in with_vitals[0]["detail"]
    genes = {g["gene"]: g["phenotype"] for g in without[0]["extension"]["pgx-cds"]["genes"]}
    assert genes["CYP2C9"] == "Intermediate Metabolizer"  # still genotype-guided, from the same results
    assert "mg/week" not in without[0]["detail"]


def test_unexpected_error_is_a_clean_500_with_no_trace_or_data(monkeypatch, tmp_path, capsys):
    """Fail safe: a bug in the pipeline gives a 500 OperationOutcome; neither the response nor any log
    line carries the traceback or the exception message (which could hold patient data)."""
    from fastapi.testclient import TestClient

    import service.hooks.router as router
    from service.config import Settings
    from service.main import create_app

    async def boom(*_a, **_k):
        raise RuntimeError("secret-detail *2/*2 pgx-demo-1")

    monkeypatch.setattr(router, "run_hook", boom)
    with TestClient(create_app(Settings(feedback_file=tmp_path / "f")), raise_server_exceptions=True) as c:
        r = post(c, "pgx-order-select", rq.order_select())
    assert r.status_code == 500 and r.json()["resourceType"] == "OperationOutcome"
    out = capsys.readouterr()
    for text in (r.text, out.out, out.err):
        assert "secret-detail" not in text and "Traceback" not in text
    assert "unhandled_error" in out.out and "RuntimeError" in out.out


def test_metric_labels_stay_bounded(client):
    for i in range(5):
        client.post(f"/cds-services/made-up-{i}", json={})
        client.get(f"/random-{i}")
    text = client.get("/metrics").text
    assert "made-up" not in text and "random-" not in text
    assert 'service="unknown-service"' in text


def test_numeric_dose_change_offers_an_update_of_the_draft_order(client):
    """Issue 3: where CPIC gives a numeric dose change and the draft order has a dose, one suggestion
    updates the draft order to the adjusted dose (paroxetine, CYP2D6 poor metabolizer: 50%)."""
    obs = [rq.genotype("o-2d6", "CYP2D6", "HGNC:2625", "*4/*4")]
    order = rq.med_request("d-par", "32937", "paroxetine", dose=20)
    card = post(client, "pgx-order-select", rq.order_select(obs=obs, orders=[order])).json()["cards"][0]
    assert card["indicator"] == "warning"
    assert card["extension"]["pgx-cds"]["recommendation"]["action"] == "reduce_dose"
    updates = [s for s in card["suggestions"] if s["actions"][0]["type"] == "update"]
    assert len(updates) == 1
    resource = updates[0]["actions"][0]["resource"]
    assert resource["id"] == "d-par" and resource["resourceType"] == "MedicationRequest"
    assert resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] == {"value": 10, "unit": "mg"}
    assert card["selectionBehavior"] == "at-most-one"
