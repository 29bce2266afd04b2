"""End to end against a real FHIR server process (sekmet-fhir) and a deliberately slow server."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from service.config import FhirSettings
from service.fhir.client import Budget, FhirClient, FhirError
from service.fhir.genomics import build_profile
from service.fhir.orders import extract_orders
from service.fhir.patient_data import load_patient_data, resolve_medications

pytestmark = pytest.mark.e2e

ADA = "pgx-ada-cyp2c19-pm"


async def _load(client, server_url, token, pid=ADA, hook="order-sign", prefetch=None, settings=None):
    return await load_patient_data(hook=hook, patient_id=pid, fhir_server=server_url, access_token=token,
                                   prefetch=prefetch, client=client, settings=settings or client.settings)


async def test_cold_path_with_valid_token(fhir_server, client):
    data = await _load(client, fhir_server.base_url, fhir_server.token())
    assert data.fhir_calls == 5 and data.observations_available and data.notes == []
    # weight and height come from the `vitals` search (the warfarin algorithm needs them)
    assert (data.sex, str(data.birth_date), data.weight_kg, data.height_cm) == ("female", "1958-04-12", 68.0, 165.0)
    assert [m["id"] for m in data.medications] == [f"{ADA}-clopidogrel"]
    assert [c["id"] for c in data.conditions] == [f"{ADA}-acs"]
    prof = build_profile(data)
    assert prof.source == "fhir"
    assert (prof.genes["CYP2C19"].diplotype, prof.genes["CYP2C19"].reported_phenotype) == ("*2/*2", "Poor metabolizer")


async def test_cold_path_matches_prefetch_path(fhir_server, client, bundles, make_prefetch):
    for name, pid in [("farah-conflicts", "pgx-farah-conflicts"), ("hiro-stu1", "pgx-hiro-stu1"),
                      ("chidi-hla-b5701", "pgx-chidi-hla-b5701")]:
        cold = build_profile(await _load(client, fhir_server.base_url, fhir_server.token(), pid=pid))
        warm = build_profile(await _load(client, None, None, pid=pid, prefetch=make_prefetch(bundles(name))))
        assert cold.genes.keys() == warm.genes.keys()
        for g in cold.genes:
            assert (cold.genes[g].diplotype, cold.genes[g].reported_phenotype, cold.genes[g].conflicts_with) == (
                warm.genes[g].diplotype, warm.genes[g].reported_phenotype, warm.genes[g].conflicts_with)
        assert sorted(u.reason for u in cold.unreadable) == sorted(u.reason for u in warm.unreadable)


async def test_complete_prefetch_makes_no_call_even_with_a_server(fhir_server, client, bundles, make_prefetch):
    data = await _load(client, fhir_server.base_url, fhir_server.token(),
                       prefetch=make_prefetch(bundles("ada-cyp2c19-pm")))
    assert data.fhir_calls == 0


async def test_missing_token_is_upstream_401(fhir_server, client):
    with pytest.raises(FhirError) as ei:
        await client.read(fhir_server.base_url, f"Patient/{ADA}", None, budget=Budget(2))
    assert (ei.value.kind, ei.value.status) == ("unauthorized", 401)
    data = await _load(client, fhir_server.base_url, None)
    assert data.observations_available is False
    assert any("pgxObservations" in n and "401" in n for n in data.notes)


async def test_bad_token_is_401_and_never_echoed(fhir_server, client):
    bad = "not-a-real-token-xyz"
    data = await _load(client, fhir_server.base_url, bad)
    assert data.observations_available is False
    assert bad not in json.dumps(data.model_dump(mode="json"))


async def test_wrong_scope_is_403(fhir_server, client):
    token = fhir_server.token(client="obs-only")
    with pytest.raises(FhirError) as ei:
        await client.read(fhir_server.base_url, f"Patient/{ADA}", token, budget=Budget(2))
    assert (ei.value.kind, ei.value.status) == ("forbidden", 403)
    data = await _load(client, fhir_server.base_url, token)  # observations allowed, the rest forbidden
    assert data.observations_available and data.birth_date is None
    assert build_profile(data).genes["CYP2C19"].diplotype == "*2/*2"
    assert sum("forbidden 403" in n for n in data.notes) == 3


async def test_paging_against_real_server(fhir_server):
    client = FhirClient(FhirSettings(timeout_s=3, page_size=3, max_pages=2, allow_http=True))
    try:
        data = await _load(client, fhir_server.base_url, fhir_server.token(), pid="pgx-jonas-panel",
                           hook="patient-view")
        # patient, conditions, medications + 2 observation pages
        assert len(data.observations) == 6 and data.fhir_calls == 5
        assert any("more results than were fetched" in n for n in data.notes)
        client2 = FhirClient(FhirSettings(timeout_s=3, page_size=3, max_pages=10, allow_http=True))
        full = await _load(client2, fhir_server.base_url, fhir_server.token(), pid="pgx-jonas-panel",
                           hook="patient-view")
        assert len(full.observations) == 10 and full.notes == []
        await client2.aclose()
    finally:
        await client.aclose()


async def test_medication_reference_read_from_server(fhir_server, client):
    fhir_server.seed({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {"resourceType": "Medication", "id": "pgx-med-clopidogrel", "code": {"coding": [
            {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "32968", "display": "clopidogrel"}]}},
        "request": {"method": "PUT", "url": "Medication/pgx-med-clopidogrel"}}]})
    orders = extract_orders({"resourceType": "Bundle", "entry": [{"resource": {
        "resourceType": "MedicationRequest", "id": "draft-1", "status": "draft", "intent": "order",
        "subject": {"reference": f"Patient/{ADA}"},
        "medicationReference": {"reference": "Medication/pgx-med-clopidogrel"}}}]}, ["MedicationRequest/draft-1"])
    budget = Budget(2)
    out = await resolve_medications(orders, {}, client, fhir_server=fhir_server.base_url,
                                    access_token=fhir_server.token(), budget=budget)
    assert out[0].codes[0].code == "32968" and budget.calls == 1


async def test_slow_server_budget_holds(slow_server):
    client = FhirClient(FhirSettings(timeout_s=0.4, retries=1, allow_http=True))
    try:
        data = await asyncio.wait_for(
            load_patient_data(hook="order-sign", patient_id=ADA, fhir_server=slow_server.base_url,
                              access_token="t", prefetch=None, client=client, settings=client.settings),
            timeout=10,  # the server sleeps 30 s: reaching this means the budget did not hold
        )
    finally:
        await client.aclose()
    assert data.observations_available is False
    assert any("timeout" in n or "budget" in n for n in data.notes)
    assert 5 <= slow_server.requests <= 10  # 5 keys, at most one retry each


async def test_sekmet_token_endpoint_rejects_unknown_client(fhir_server):
    r = httpx.post(f"{fhir_server.root_url}/auth/token", data={"grant_type": "client_credentials"},
                   auth=("nobody", "x"), timeout=5)
    assert r.status_code == 401
