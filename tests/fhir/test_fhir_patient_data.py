"""Prefetch templates and load_patient_data semantics (respx stands in for the EHR's FHIR server)."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
import respx

from service.fhir.client import Budget
from service.fhir.models import DraftOrder
from service.fhir.orders import extract_orders
from service.fhir.patient_data import load_patient_data, resolve_medications
from service.fhir.prefetch import PREFETCH, REQUIRED_KEYS, as_request, render

BASE = "https://ehr.example/fhir"
TOKEN = "tok-123"
PID = "pgx-ada-cyp2c19-pm"
EMPTY = {"resourceType": "Bundle", "type": "searchset", "entry": []}
OO = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}


# ---------------------------------------------------------------------------------------------- templates


def test_prefetch_templates_stay_in_the_cds_hooks_subset():
    assert set(PREFETCH) == {"order-select", "order-sign", "patient-view"}
    # patient-view needs conditions too: without them the clopidogrel population cannot be chosen (issue 16)
    assert set(PREFETCH["patient-view"]) == {"patient", "pgxObservations", "conditions", "medications"}
    assert set(PREFETCH["order-sign"]) == {"patient", "pgxObservations", "conditions", "medications", "vitals"}
    assert REQUIRED_KEYS == {"pgxObservations"}
    for keys in PREFETCH.values():
        for template in keys.values():
            assert re.findall(r"{{[^}]*}}", template) and set(re.findall(r"{{[^}]*}}", template)) == {
                "{{context.patientId}}"}
            if "?" in template:
                names = {p.split("=")[0] for p in template.split("?", 1)[1].split("&")}
                assert names <= {"patient", "code", "clinical-status", "status", "_count", "_sort"}
    obs = PREFETCH["order-sign"]["pgxObservations"]
    for code in ("84413-4", "84414-2", "69548-6", "53040-2", "51961-1", "83009-1", "therapeutic-implication"):
        assert code in obs


def test_template_to_request():
    kind, target, params = as_request(PREFETCH["order-sign"]["pgxObservations"], "p 1")
    assert (kind, target) == ("search", "Observation")
    assert params[0] == ("patient", "p 1")
    assert params[1][1].startswith("http://loinc.org|84413-4,")
    assert as_request(PREFETCH["order-sign"]["patient"], "a/b") == ("read", "Patient/a%2Fb", None)
    assert render("Patient/{{context.patientId}}", "x") == "Patient/x"


# ---------------------------------------------------------------------------------------------- helpers


def _routes(obs_bundle=None, patient=None):
    """Mock the five searches; returns the routes."""
    return {
        # registered first: the vital-signs search is also an Observation search
        "vitals": respx.get(url__regex=rf"^{re.escape(BASE)}/Observation\?.*29463-7").respond(json=EMPTY),
        "patient": respx.get(f"{BASE}/Patient/{PID}").respond(
            json=patient or {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "1958-04"}),
        "pgxObservations": respx.get(url__startswith=f"{BASE}/Observation").respond(json=obs_bundle or EMPTY),
        "conditions": respx.get(url__startswith=f"{BASE}/Condition").respond(json=EMPTY),
        "medications": respx.get(url__startswith=f"{BASE}/MedicationRequest").respond(json=EMPTY),
    }


async def _load(client, fhir_settings, prefetch, hook="order-sign", server=BASE, token=TOKEN, pid=PID, **kw):
    return await load_patient_data(hook=hook, patient_id=pid, fhir_server=server, access_token=token,
                                    prefetch=prefetch, client=client, settings=fhir_settings, **kw)


# ---------------------------------------------------------------------------------------------- semantics


@respx.mock
async def test_complete_prefetch_makes_zero_calls(client, fhir_settings, bundles, make_prefetch):
    routes = _routes()
    data = await _load(client, fhir_settings, make_prefetch(bundles("ada-cyp2c19-pm")))
    assert data.fhir_calls == 0
    assert not any(r.called for r in routes.values())
    assert data.observations_available and len(data.observations) == 2 and data.notes == []


@respx.mock
async def test_null_and_empty_bundle_mean_no_data_and_are_not_refetched(client, fhir_settings):
    routes = _routes()
    data = await _load(client, fhir_settings, {"patient": None, "pgxObservations": EMPTY, "conditions": EMPTY,
                                               "medications": {"resourceType": "Bundle", "type": "searchset"},
                                               "vitals": None})
    assert data.fhir_calls == 0 and not any(r.called for r in routes.values())
    assert data.observations_available and data.observations == [] and data.birth_date is None


@respx.mock
async def test_operation_outcome_is_refetched_never_parsed(client, fhir_settings, bundles, make_prefetch):
    pre = make_prefetch(bundles("ada-cyp2c19-pm"))
    pre["pgxObservations"] = OO
    geno = bundles("ada-cyp2c19-pm")["entry"][1]["resource"]
    routes = _routes({"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": geno}]})
    data = await _load(client, fhir_settings, pre)
    assert routes["pgxObservations"].call_count == 1
    assert not routes["patient"].called and not routes["conditions"].called
    assert data.fhir_calls == 1
    assert [o["id"] for o in data.observations] == [geno["id"]]
    assert any("OperationOutcome" in n for n in data.notes)


@respx.mock
async def test_partial_prefetch_fetches_only_missing_keys_with_token(client, fhir_settings, bundles, make_prefetch):
    pre = make_prefetch(bundles("ada-cyp2c19-pm"))
    del pre["conditions"], pre["medications"]
    routes = _routes()
    data = await _load(client, fhir_settings, pre)
    assert not routes["patient"].called and not routes["pgxObservations"].called
    assert routes["conditions"].call_count == 1 and routes["medications"].call_count == 1
    assert data.fhir_calls == 2
    req = routes["conditions"].calls.last.request
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.url.params["patient"] == PID and req.url.params["clinical-status"] == "active"


@respx.mock
async def test_no_prefetch_fetches_everything_in_parallel(client, fhir_settings):
    in_flight = 0
    peak = 0

    def slow(json_body):
        async def handler(request):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)
            in_flight -= 1
            return httpx.Response(200, json=json_body)
        return handler

    respx.get(f"{BASE}/Patient/{PID}").mock(side_effect=slow({"resourceType": "Patient", "id": PID}))
    for rtype in ("Observation", "Condition", "MedicationRequest"):
        respx.get(url__startswith=f"{BASE}/{rtype}").mock(side_effect=slow(EMPTY))
    data = await _load(client, fhir_settings, None)
    assert data.fhir_calls == 5 and data.observations_available
    assert peak == 5  # all five requests were in flight together


@respx.mock
async def test_patient_view_reads_conditions_and_medications_but_not_vitals(client, fhir_settings):
    routes = _routes()
    data = await _load(client, fhir_settings, {}, hook="patient-view")
    assert data.fhir_calls == 4 and routes["conditions"].called and routes["medications"].called
    assert (data.sex, str(data.birth_date)) == ("female", "1958-04-01")


@respx.mock
async def test_required_key_failure_marks_unavailable(client, fhir_settings):
    routes = _routes()
    routes["pgxObservations"].respond(500)
    data = await _load(client, fhir_settings, {"patient": None, "conditions": EMPTY, "medications": EMPTY,
                                               "vitals": EMPTY})
    assert data.observations_available is False
    assert routes["pgxObservations"].call_count == 2  # one retry
    assert any("pgxObservations" in n and "http 500" in n for n in data.notes)
    assert TOKEN not in " ".join(data.notes)


@respx.mock
async def test_optional_key_failure_keeps_observations(client, fhir_settings, bundles, make_prefetch):
    pre = make_prefetch(bundles("ada-cyp2c19-pm"))
    del pre["conditions"]
    _routes()["conditions"].respond(403)
    data = await _load(client, fhir_settings, pre)
    assert data.observations_available and data.conditions == []
    assert any("conditions" in n and "forbidden 403" in n for n in data.notes)


async def test_missing_required_without_server_is_unavailable(client, fhir_settings):
    data = await _load(client, fhir_settings, {"patient": None}, server=None)
    assert data.observations_available is False and data.fhir_calls == 0


@respx.mock
async def test_patient_404_is_no_data(client, fhir_settings):
    routes = _routes()
    routes["patient"].respond(404)
    data = await _load(client, fhir_settings, {"pgxObservations": EMPTY}, hook="patient-view")
    assert data.observations_available and data.birth_date is None


@respx.mock
async def test_prefetch_next_link_is_followed_with_token(client, fhir_settings, bundles):
    entries = [{"resource": e["resource"]} for e in bundles("jonas-panel")["entry"][1:]]
    first = {"resourceType": "Bundle", "type": "searchset", "entry": entries[:4],
             "link": [{"relation": "next", "url": f"{BASE}/Observation?_page=2"}]}
    page2 = respx.get(f"{BASE}/Observation", params={"_page": "2"}).respond(
        json={"resourceType": "Bundle", "type": "searchset", "entry": entries[4:]})
    data = await _load(client, fhir_settings, {"patient": None, "pgxObservations": first, "conditions": None,
                                                "medications": None}, hook="patient-view", pid="pgx-jonas-panel")
    assert page2.call_count == 1 and data.fhir_calls == 1
    assert page2.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert len(data.observations) == len(entries)


async def test_prefetch_next_link_without_server_uses_first_page(client, fhir_settings, bundles):
    first = {"resourceType": "Bundle", "entry": [{"resource": bundles("jonas-panel")["entry"][1]["resource"]}],
             "link": [{"relation": "next", "url": f"{BASE}/Observation?_page=2"}]}
    data = await _load(client, fhir_settings, {"patient": None, "pgxObservations": first}, hook="patient-view",
                       server=None, pid="pgx-jonas-panel")
    assert data.observations_available and len(data.observations) == 1
    assert any("more pages" in n for n in data.notes)


async def test_prefetch_next_link_to_other_server_not_followed(client, fhir_settings):
    first = {"resourceType": "Bundle", "entry": [],
             "link": [{"relation": "next", "url": "https://elsewhere.example/fhir/Observation?_page=2"}]}
    data = await _load(client, fhir_settings, {"patient": None, "pgxObservations": first, "conditions": None,
                                                "medications": None}, hook="patient-view")
    assert data.fhir_calls == 0 and any("more pages" in n for n in data.notes)


async def test_other_patients_data_is_dropped(client, fhir_settings, bundles, make_prefetch):
    pre = make_prefetch(bundles("ada-cyp2c19-pm"))
    stray = {"resourceType": "Observation", "id": "stray", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
             "subject": {"reference": "https://ehr.example/fhir/Patient/someone-else"}, "valueString": "CYP2C19 *1/*1"}
    pre["pgxObservations"]["entry"].append({"resource": stray})
    pre["patient"] = {**pre["patient"], "id": "someone-else"}
    data = await _load(client, fhir_settings, pre)
    assert "stray" not in [o.get("id") for o in data.observations]
    assert data.birth_date is None
    assert any("another patient" in n for n in data.notes) and any("does not match" in n for n in data.notes)


async def test_unusable_prefetch_values_are_refetched_or_failed(client, fhir_settings):
    data = await _load(client, fhir_settings, {"patient": "garbage", "pgxObservations": [1, 2]}, hook="patient-view",
                       server=None)
    assert data.observations_available is False
    assert sum("not usable" in n for n in data.notes) == 2


async def test_diagnostic_report_flattening_with_urn_uuid(client, fhir_settings):
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]}, "valueString": "TPMT *1/*1"}
    dr = {"resourceType": "DiagnosticReport", "id": "dr1", "status": "final", "code": {"text": "PGx"},
          "result": [{"reference": "urn:uuid:0b4b8d37-0000-4000-8000-000000000001"}, {"reference": "#c1"},
                     {"reference": "Observation/missing"}],
          "contained": [{"resourceType": "Observation", "id": "c1", "status": "final",
                         "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
                         "valueString": "NUDT15 *1/*3", "hasMember": [{"reference": "#c2"}]},
                        {"resourceType": "Observation", "id": "c2", "status": "final",
                         "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4"}]},
                         "valueString": "CYP2B6 *6/*6"}]}
    bundle = {"resourceType": "Bundle", "entry": [
        {"fullUrl": "urn:uuid:0b4b8d37-0000-4000-8000-000000000001", "resource": obs},
        {"fullUrl": f"{BASE}/DiagnosticReport/dr1", "resource": dr}]}
    data = await _load(client, fhir_settings, {"patient": None, "pgxObservations": bundle}, hook="patient-view")
    refs = sorted(o.get("_pgxRef") for o in data.observations)
    assert refs == ["DiagnosticReport/dr1#c1", "DiagnosticReport/dr1#c2",
                    "urn:uuid:0b4b8d37-0000-4000-8000-000000000001"]
    from service.fhir.genomics import build_profile

    prof = build_profile(data)
    assert prof.genes["TPMT"].observation == "urn:uuid:0b4b8d37-0000-4000-8000-000000000001"
    assert prof.genes["NUDT15"].observation == "DiagnosticReport/dr1#c1"
    assert prof.genes["CYP2B6"].diplotype == "*6/*6"


async def test_garbage_inside_bundles_never_raises(client, fhir_settings):
    junk = {"resourceType": "Bundle", "entry": [
        None, {"resource": "x"}, {"fullUrl": 5, "resource": {"resourceType": "Observation", "code": "x",
                                                              "subject": "x", "hasMember": "x"}},
        {"resource": {"resourceType": "Observation", "id": "v", "code": {"coding": [{"code": "29463-7"}]},
                      "valueQuantity": {"value": "heavy", "unit": "kg"}}},
        {"resource": {"resourceType": "DiagnosticReport", "result": ["x", {"reference": 5}], "contained": "x"}}]}
    data = await _load(client, fhir_settings, {"patient": {"resourceType": "Patient", "id": PID, "birthDate": "19xx"},
                                               "pgxObservations": junk}, hook="patient-view")
    assert data.observations_available and data.weight_kg is None and data.birth_date is None
    assert len(data.observations) == 1


async def test_shared_budget_counts_calls_across_stages(client, fhir_settings, bundles, make_prefetch):
    budget = Budget(2)
    budget.calls = 3  # calls made earlier in the request are not counted as ours
    data = await _load(client, fhir_settings, make_prefetch(bundles("ada-cyp2c19-pm")), budget=budget)
    assert data.fhir_calls == 0


# ---------------------------------------------------------------------------------------------- medications


def _order(ref: str) -> DraftOrder:
    return extract_orders({"resourceType": "Bundle", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "d1", "status": "draft", "intent": "order",
        "medicationReference": {"reference": ref, "display": "Plavix 75"}}}]}, None)[0]


MED = {"resourceType": "Medication", "id": "m1", "code": {"coding": [
    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "32968", "display": "clopidogrel"}]}}


@respx.mock
async def test_medication_from_prefetch_or_draft_orders_needs_no_call(client, fhir_settings):
    route = respx.get(f"{BASE}/Medication/m1").respond(json=MED)
    order = _order("Medication/m1")
    assert order.codes == [] and order.text == "Plavix 75"
    out = await resolve_medications([order], {"meds": {"resourceType": "Bundle", "entry": [{"resource": MED}]}},
                                    client, fhir_server=BASE, access_token=TOKEN, settings=fhir_settings)
    assert out[0].codes[0].code == "32968" and not route.called
    draft = {"resourceType": "Bundle", "entry": [{"fullUrl": f"{BASE}/Medication/m1", "resource": MED}]}
    out = await resolve_medications([_order(f"{BASE}/Medication/m1")], None, client, fhir_server=BASE,
                                    access_token=TOKEN, draft_orders=draft, settings=fhir_settings)
    assert out[0].codes[0].code == "32968" and not route.called


@respx.mock
async def test_medication_read_by_id_when_not_prefetched(client, fhir_settings):
    route = respx.get(f"{BASE}/Medication/m1").respond(json=MED)
    missing = respx.get(f"{BASE}/Medication/m2").respond(404)
    budget = Budget(2)
    out = await resolve_medications([_order("Medication/m1"), _order("Medication/m1"), _order("Medication/m2")],
                                    {}, client, fhir_server=BASE, access_token=TOKEN, budget=budget)
    assert route.call_count == 1 and missing.call_count == 1 and budget.calls == 2
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert [o.codes[0].code if o.codes else None for o in out] == ["32968", "32968", None]
    assert out[2].text == "Plavix 75"


@pytest.mark.parametrize("server", [None, BASE])
async def test_medication_unresolvable_without_server_or_budget(client, fhir_settings, server):
    out = await resolve_medications([_order("Medication/m9")], None, client, fhir_server=server,
                                    access_token=TOKEN, budget=Budget(0))
    assert out[0].codes == []
