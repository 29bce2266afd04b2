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
