"""FHIR resources -> the pgx stage's typed patient context (service.fhir.context, issue 14): every
medication status and form, condition statuses, dosing timing, and that PatientData parses once."""

from __future__ import annotations

from datetime import date

import pytest

from service.fhir.context import condition, medication, patient_context
from service.fhir.models import PatientData
from service.fhir.orders import dosage, extract_orders
from service.pgx.context import Condition, Dosage, Medication, PatientContext, Vitals

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"


def mr(**kw) -> dict:
    return {"resourceType": "MedicationRequest", "id": "m1", "status": "active",
            "medicationCodeableConcept": {"text": "Clopidogrel 75 MG", "coding": [
                {"system": RX, "code": "32968", "display": "clopidogrel"}]}, **kw}


@pytest.mark.parametrize("status", ["active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped",
                                    "draft", "unknown", "intended", "not-taken", "revoked"])
def test_every_medication_status_is_kept_as_sent(status):
    # which of them count as current is data (cards/medication_status.yaml), never decided by the parser
    assert medication(mr(status=status)).status == status


@pytest.mark.parametrize("status", [None, 3, ["active"], {"code": "active"}])
def test_a_status_that_is_not_a_string_reads_as_absent(status):
    assert medication(mr(status=status)).status is None


def test_medication_request_fields():
    m = medication(mr(authoredOn="2025-03-04T10:00:00Z",
                      dispenseRequest={"validityPeriod": {"start": "2025-03-01", "end": "2025-09-01"}},
                      dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": {"end": "2025-06-30"}}}}, "junk"]))
    assert isinstance(m, Medication)
    assert (m.id, m.reference, m.authored, m.validity_start, m.validity_end) == (
        "m1", "MedicationRequest/m1", "2025-03-04T10:00:00Z", "2025-03-01", "2025-09-01")
    assert m.started == date(2025, 3, 4)  # authoredOn first
    assert m.ends == (date(2025, 9, 1), date(2025, 6, 30))
    assert m.ended_before(date(2025, 7, 1)) and not m.ended_before(date(2025, 6, 30))
    assert m.codes() == [(RX, "32968")]
    assert m.texts() == ["Clopidogrel 75 MG", "clopidogrel"]


def test_start_falls_back_to_the_validity_period_and_unreadable_dates_are_none():
    assert medication(mr(dispenseRequest={"validityPeriod": {"start": "2024-01-02"}})).started == date(2024, 1, 2)
    assert medication(mr(authoredOn="2024-13-45")).started is None
    assert medication(mr(authoredOn="2024")).started is None
    assert medication(mr(authoredOn=20240101)).started is None
    m = medication(mr(dispenseRequest=["not", "an", "object"], dosageInstruction={"timing": 1}))
    assert m.started is None and m.ends == () and m.validity_start is None


def test_medication_reference_display_and_contained_medication():
    res = {"resourceType": "MedicationRequest", "id": "m2", "status": "active",
           "medicationReference": {"reference": "#med", "display": "Tegretol"},
           "contained": [{"resourceType": "Medication", "id": "med",
                          "code": {"coding": [{"system": RX, "code": "999999", "display": "Tegretol 200 MG"}]},
                          "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RX, "code": "2002"}]}}]}]}
    m = medication(res)
    assert m.concepts == () and m.reference_display == "Tegretol"
    assert m.codes() == [(RX, "999999"), (RX, "2002")]  # the product code and the ingredient's
    assert m.texts() == ["Tegretol", "Tegretol 200 MG", "Tegretol 200 MG"]


def test_medication_statement_code_and_odd_codings():
    m = medication({"resourceType": "MedicationStatement", "status": "active",
                    "medicationCodeableConcept": {"coding": [{"system": 5, "code": "x"}, "junk", {"display": 7}]},
                    "code": {"text": "paroxetine"}})
    assert m.id is None and m.reference is None
    assert m.codes() == [(None, "x"), (None, None)]
    assert m.texts() == ["paroxetine"]


@pytest.mark.parametrize("clinical,verification", [
    ("active", None), ("resolved", None), ("remission", None), ("inactive", "confirmed"), (None, "refuted"),
    (None, "entered-in-error"), ("recurrence", "provisional"),
])
def test_condition_statuses(clinical, verification):
    res = {"resourceType": "Condition", "code": {"coding": [{"system": SCT, "code": "22298006"}]}}
    if clinical:
        res["clinicalStatus"] = {"coding": [{"code": clinical}]}
    if verification:
        res["verificationStatus"] = {"coding": [{"code": verification}]}
    c = condition(res)
    assert c == Condition(((SCT, "22298006"),), (clinical,) if clinical else (), (verification,) if verification else ())


def test_condition_codes_need_a_string_system_and_code():
    c = condition({"resourceType": "Condition", "code": {"coding": [
        {"system": SCT, "code": "1"}, {"code": "2"}, {"system": SCT, "code": 3}, "junk", {"system": SCT, "code": " 4 "}]},
        "clinicalStatus": {"coding": "active"}})
    assert c.codes == ((SCT, "1"), (SCT, " 4 ")) and c.clinical_status == ()
    assert condition({"code": "junk"}) == Condition()


def test_dosage_of_an_order():
    order = extract_orders({"resourceType": "MedicationRequest", "id": "d", "status": "draft", "dosageInstruction": [
        {"text": "loading dose", "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"},
                                            "code": {"text": "BID", "coding": [{"code": "BID", "display": "twice"}]}},
         "additionalInstruction": [{"text": "with food"}]}]}, None)[0]
    assert order.dosage == Dosage(phases=False, single=False, texts=("loading dose", "with food", "BID", "BID", "twice"),
                                  per_day=2.0)
    assert dosage({"dosageInstruction": [{"sequence": 1}, {"sequence": 2}]}).phases
    assert dosage({"dosageInstruction": [{"timing": {"repeat": {"count": 1}}}]}).single
    assert not dosage({"dosageInstruction": [{"timing": {"repeat": {"count": True}}}]}).single
    assert dosage({"dosageInstruction": [{"timing": {"repeat": ["junk"]}}]}).per_day is None
    assert dosage({"dosageInstruction": [{"timing": {"repeat": {"periodUnit": "a"}}}]}).per_day is None
    assert dosage({}) == Dosage() and dosage({"dosageInstruction": "x"}) == Dosage()


def test_patient_context_carries_what_the_engine_reads():
    data = PatientData(patient_id="p", birth_date=date(1960, 1, 1), sex="female", weight_kg=70.0, height_cm=170.0,
                       conditions=[{"resourceType": "Condition", "code": {"coding": [{"system": SCT, "code": "1"}]}}],
                       medications=[mr()], unavailable=["conditions"], observations_available=False)
    data.medications.append(5)  # type: ignore[arg-type]  # nothing in a list of untrusted JSON is trusted
    ctx = data.context()
    assert isinstance(ctx, PatientContext)
    assert (ctx.patient_id, ctx.birth_date, ctx.sex, ctx.vitals) == ("p", date(1960, 1, 1), "female", Vitals(70.0, 170.0))
    assert ctx.weight_kg == 70.0 and ctx.height_cm == 170.0
    assert len(ctx.conditions) == 1 and len(ctx.medications) == 1  # a non-object is dropped
    assert ctx.unavailable == frozenset({"conditions"}) and ctx.observations_available is False
    assert patient_context(data) == ctx


def test_patient_data_parses_once_and_again_only_when_it_changes():
    data = PatientData(patient_id="p", medications=[mr()])
    first = data.context()
    assert data.context() is first  # parsed once
    assert data.model_copy(update={"observations": []}).context() is first  # the cached snapshot copy shares it
    data.medications.append(mr(id="m2"))  # the SMART tests add a medication after loading
    second = data.context()
    assert second is not first and [m.id for m in second.medications] == ["m1", "m2"]
    data.weight_kg = 80.0
    assert data.context().weight_kg == 80.0
    data.unavailable.append("medications")
    assert "medications" in data.context().unavailable


def test_the_context_survives_the_snapshot_cache_round_trip():
    data = PatientData(patient_id="p", medications=[mr()])
    data.context()
    back = PatientData.model_validate_json(data.model_dump_json())
    assert back.context() == data.context()
