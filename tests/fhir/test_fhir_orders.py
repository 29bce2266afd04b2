"""extract_orders on tidy and messy draftOrders bundles."""

from __future__ import annotations

from service.fhir.orders import extract_orders

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _mr(rid: str | None, **fields) -> dict:
    r = {"resourceType": "MedicationRequest", "status": "draft", "intent": "order", **fields}
    if rid:
        r["id"] = rid
    return r


CLOPIDOGREL = {"coding": [{"system": RX, "code": "32968", "display": "clopidogrel"}], "text": "clopidogrel 75 mg tab"}


def test_full_order():
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": _mr(
        "d1", medicationCodeableConcept=CLOPIDOGREL, encounter={"reference": "Encounter/e1"},
        requester={"reference": "Practitioner/dr"},
        reasonCode=[{"coding": [{"system": "http://snomed.info/sct", "code": "394659003"}]}],
        dosageInstruction=[{"doseAndRate": [{"doseQuantity": {"value": 75, "unit": "mg"}}]}])}]}
    [o] = extract_orders(bundle, None)
    assert (o.id, o.reference, o.status, o.text) == ("d1", "MedicationRequest/d1", "draft", "clopidogrel 75 mg tab")
    assert [(c.system, c.code) for c in o.codes] == [(RX, "32968")]
    assert (o.encounter, o.requester, o.dose_quantity, o.dose_unit) == ("Encounter/e1", "Practitioner/dr", 75.0, "mg")
    assert o.reason_codes[0].code == "394659003"
    assert o.resource["id"] == "d1"


def test_contained_medication_reference():
    med = {"resourceType": "Medication", "id": "med1", "code": {"coding": [{"system": RX, "code": "2670"}],
                                                                "text": "codeine 30 mg"}}
    [o] = extract_orders({"entry": [{"resource": _mr("d2", contained=[med],
                                                        medicationReference={"reference": "#med1"})}]}, None)
    assert o.codes[0].code == "2670" and o.text == "codeine 30 mg"


def test_external_reference_left_for_resolution():
    [o] = extract_orders({"resourceType": "Bundle", "entry": [{"resource": _mr(
        "d3", medicationReference={"reference": "Medication/abc", "display": "Plavix"})}]}, None)
    assert o.codes == [] and o.text == "Plavix"


def test_messy_bundle_is_tolerated():
    messy = {"entry": [None, 5, {"resource": None}, {"resource": {"resourceType": "ServiceRequest", "id": "s"}},
                       {"resource": _mr(None, medicationCodeableConcept={"text": "warfarin"},
                                        dosageInstruction=[{"doseAndRate": [{"doseQuantity": {"value": "x"}}]}])},
                       {"resource": _mr("d5", medicationCodeableConcept={"coding": "bad"}, reasonCode="bad",
                                        encounter="bad", dosageInstruction=[])},
                       {"resource": {"resourceType": "MedicationRequest"}}]}
    orders = extract_orders(messy, None)
    assert [(o.id, o.text, o.dose_quantity) for o in orders] == [(None, "warfarin", None), ("d5", None, None),
                                                                 (None, None, None)]
    assert extract_orders(None, None) == [] and extract_orders("x", None) == []  # type: ignore[arg-type]
    assert len(extract_orders(_mr("single", medicationCodeableConcept=CLOPIDOGREL), None)) == 1


def test_selections_filter():
    bundle = {"resourceType": "Bundle", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": _mr("a", medicationCodeableConcept=CLOPIDOGREL)},
        {"resource": _mr("b", medicationCodeableConcept=CLOPIDOGREL)},
        {"resource": _mr("c", medicationCodeableConcept=CLOPIDOGREL)}]}
    assert [o.id for o in extract_orders(bundle, ["MedicationRequest/b"])] == ["b"]
    assert [o.id for o in extract_orders(bundle, ["urn:uuid:1", "https://ehr/fhir/MedicationRequest/c"])] == ["a", "c"]
    assert [o.id for o in extract_orders(bundle, [])] == ["a", "b", "c"]
    assert extract_orders(bundle, ["ServiceRequest/b"]) == []
