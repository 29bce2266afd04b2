"""Builders for CDS Hooks requests used across the hooks tests (our own synthetic data)."""

from __future__ import annotations

import copy
import uuid

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def genotype(obs_id: str, gene: str, hgnc: str, diplotype: str, date: str = "2025-03-01") -> dict:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "84413-4", "display": "Genotype display name"}]},
        "subject": {"reference": "Patient/pgx-demo-1"},
        "effectiveDateTime": date,
        "valueCodeableConcept": {"text": f"{gene} {diplotype}"},
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "48018-6", "display": "Gene studied [ID]"}]},
                "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org", "code": hgnc, "display": gene}]},
            }
        ],
    }


def bundle(*resources: dict) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources]}


def med_request(order_id: str, rxnorm: str, name: str, dose: float | None = 75, unit: str = "mg") -> dict:
    mr = {
        "resourceType": "MedicationRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": name}], "text": name},
        "subject": {"reference": "Patient/pgx-demo-1"},
        "encounter": {"reference": "Encounter/enc-1"},
        "requester": {"reference": "Practitioner/prac-1"},
    }
    if dose is not None:
        mr["dosageInstruction"] = [{"doseAndRate": [{"doseQuantity": {"value": dose, "unit": unit}}]}]
    return mr


PATIENT = {"resourceType": "Patient", "id": "pgx-demo-1", "gender": "female", "birthDate": "1960-05-01"}
CYP2C19_PM = genotype("obs-2c19", "CYP2C19", "HGNC:2621", "*2/*2")
CYP2C19_NM = genotype("obs-2c19-nm", "CYP2C19", "HGNC:2621", "*1/*1")
CLOPIDOGREL = med_request("draft-clop", "32968", "clopidogrel")
ACETAMINOPHEN = med_request("draft-apap", "161", "acetaminophen", dose=500)


def order_select(*, obs: list[dict] | None = None, orders: list[dict] | None = None, selections: list[str] | None = None,
                 prefetch: bool = True, **extra) -> dict:
    orders = orders if orders is not None else [CLOPIDOGREL]
    body = {
        "hook": "order-select",
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "userId": "Practitioner/prac-1",
            "patientId": "pgx-demo-1",
            "encounterId": "enc-1",
            "selections": selections or [f"MedicationRequest/{o['id']}" for o in orders[:1]],
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": copy.deepcopy(o)} for o in orders]},
        },
    }
    if prefetch:
        body["prefetch"] = {
            "patient": PATIENT,
            "pgxObservations": bundle(*(obs if obs is not None else [CYP2C19_PM])),
            "conditions": bundle(),
            "medications": bundle(),
            "vitals": bundle(),
        }
    body.update(extra)
    return body


def order_sign(**kw) -> dict:
    body = order_select(**kw)
    body["hook"] = "order-sign"
    body["context"].pop("selections", None)
    return body


def patient_view(*, obs: list[dict] | None = None, prefetch: bool = True) -> dict:
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/prac-1", "patientId": "pgx-demo-1"},
    }
    if prefetch:
        body["prefetch"] = {"patient": PATIENT, "pgxObservations": bundle(*(obs if obs is not None else [CYP2C19_PM]))}
    return body
