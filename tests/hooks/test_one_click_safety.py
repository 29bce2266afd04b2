"""One-click safety through the whole service (issue 11, issue 16): what the record says reaches the
screening whether it comes from prefetch or is missing, and product-level draft orders are recognised."""

from __future__ import annotations

from tests.hooks import requests as rq

STROKE = {"resourceType": "Condition", "id": "c-stroke", "clinicalStatus": {"coding": [{"code": "active"}]},
          "code": {"coding": [{"system": "http://snomed.info/sct", "code": "230690007"}]},
          "subject": {"reference": "Patient/pgx-demo-1"}}
ACS = {"resourceType": "Condition", "id": "c-acs", "clinicalStatus": {"coding": [{"code": "active"}]},
       "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I21.4"}]},
       "subject": {"reference": "Patient/pgx-demo-1"}}


def cards(client, body):
    r = client.post("/cds-services/pgx-order-select", json=body)
    assert r.status_code == 200, r.text
    return r.json()["cards"]


def labels(card):
    return [s["label"] for s in card.get("suggestions", [])]


def test_prefetched_stroke_removes_prasugrel_from_the_one_click_choices(client):
    body = rq.order_select()
    body["prefetch"]["conditions"] = rq.bundle(ACS, STROKE)
    (card,) = cards(client, body)
    assert labels(card) == ["Use ticagrelor instead of clopidogrel"]
    withheld = card["extension"]["pgx-cds"]["alternativesWithheld"]
    assert withheld[0]["name"] == "prasugrel" and withheld[0]["effect"] == "excluded"
    assert "stroke" in card["detail"]


def test_conditions_that_cannot_be_obtained_never_count_as_no_contraindication(client):
    body = rq.order_select()
    del body["prefetch"]["conditions"]  # not prefetched, and no fhirServer to fetch it from
    (card,) = cards(client, body)
    assert "Use prasugrel instead of clopidogrel" not in labels(card)
    assert "could not be ruled out" in card["detail"]


def test_product_level_draft_order_is_recognised(client):
    """The sandbox sends product-level codes (clopidogrel 75 MG Oral Tablet); no display needed."""
    order = rq.med_request("d-prod", "309362", "x")
    order["medicationCodeableConcept"] = {"coding": [{"system": rq.RXNORM, "code": "309362"}]}
    (card,) = cards(client, rq.order_select(orders=[order]))
    assert card["extension"]["pgx-cds"]["drug"] == {"name": "clopidogrel", "rxnorm": "32968"}
    assert all(s["actions"][-1] == {"type": "delete", "description": "Remove the draft order for clopidogrel",
                                    "resourceId": "MedicationRequest/d-prod"} for s in card["suggestions"])


def test_acetaminophen_codeine_order_gets_no_one_click_switch(client):
    order = rq.med_request("d-apap-cod", "993781", "Acetaminophen 300 MG / Codeine Phosphate 30 MG Oral Tablet")
    d6_pm = rq.genotype("o-2d6", "CYP2D6", "HGNC:2625", "*4/*4")
    (card,) = cards(client, rq.order_select(obs=[d6_pm], orders=[order]))
    assert card["extension"]["pgx-cds"]["drug"]["name"] == "codeine"
    assert "suggestions" not in card
    assert "acetaminophen" in card["detail"]
