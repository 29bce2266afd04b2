"""FHIR resources -> the pgx stage's typed patient context (``service.pgx.context``), parsed once.

Current medications (MedicationRequest, or a MedicationStatement read as one) and Conditions become
small records holding what the engine reads; untrusted JSON of any shape is tolerated (a wrong type reads
as absent). Which statuses count as current is not decided here (cards/medication_status.yaml).
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from service.fhir.orders import codes_of_medication
from service.pgx.context import Concept, Condition, Medication, MedicationCode, PatientContext, Vitals
from service.pgx.medications import medication_drugs

if TYPE_CHECKING:
    from service.fhir.models import PatientData
    from service.pgx.drugs import DrugIndex
    from service.pgx.models import DrugRef


def patient_context(data: "PatientData") -> PatientContext:
    return PatientContext(
        patient_id=data.patient_id,
        birth_date=data.birth_date,
        sex=data.sex,
        vitals=Vitals(data.weight_kg, data.height_cm),
        conditions=[condition(c) for c in data.conditions if isinstance(c, dict)],
        medications=[medication(m) for m in data.medications if isinstance(m, dict)],
        observations_available=data.observations_available,
        unavailable=frozenset(data.unavailable),
    )


def medication(res: dict[str, Any]) -> Medication:
    """A MedicationRequest (or MedicationStatement) as the engine reads it."""
    concepts = tuple(_concept(res[key]) for key in ("medicationCodeableConcept", "code") if isinstance(res.get(key), dict))
    ref = res.get("medicationReference")
    ref_display = None
    contained = None
    if isinstance(ref, dict):
        ref_display = ref.get("display") if isinstance(ref.get("display"), str) else None
        target = ref.get("reference")
        if isinstance(target, str) and target.startswith("#"):
            for med in _list(res.get("contained")):
                if isinstance(med, dict) and med.get("resourceType") == "Medication" and med.get("id") == target[1:]:
                    codes, text = codes_of_medication(med)
                    contained = Concept(tuple(codes), text)
                    break
    authored = res.get("authoredOn")
    dispense = res.get("dispenseRequest")
    vp = dispense.get("validityPeriod") if isinstance(dispense, dict) else None
    vp = vp if isinstance(vp, dict) else {}
    start, end = _s(vp.get("start")), _s(vp.get("end"))
    ends = [vp.get("end")]
    for di in _list(res.get("dosageInstruction")):
        timing = di.get("timing") if isinstance(di, dict) else None
        repeat = timing.get("repeat") if isinstance(timing, dict) else None
        bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
        if isinstance(bounds, dict):
            ends.append(bounds.get("end"))
    first = authored or start  # when the medication was started: authoredOn, else the validity start
    rid = res.get("id")
    status = res.get("status")
    return Medication(
        id=rid if isinstance(rid, str) else None,
        status=status if isinstance(status, str) else None,
        concepts=concepts,
        reference_display=ref_display,
        contained=contained,
        authored=_s(authored),
        validity_start=start,
        validity_end=end,
        started=_day(first),
        ends=tuple(d for d in map(_day, ends) if d is not None),
    )


def condition(res: dict[str, Any]) -> Condition:
    code = res.get("code")
    codes = tuple((c["system"], c["code"]) for c in _codings(code)
                  if isinstance(c.get("system"), str) and isinstance(c.get("code"), str))
    return Condition(codes, _status(res.get("clinicalStatus")), _status(res.get("verificationStatus")))


def medication_drugs_of(index: "DrugIndex", res: dict[str, Any]) -> list["DrugRef"]:
    """The CPIC drugs in a raw FHIR MedicationRequest / MedicationStatement (the SMART app's list)."""
    return medication_drugs(index, medication(res))


# ---------------------------------------------------------------------------------------------- readers


def _concept(cc: dict[str, Any]) -> Concept:
    codes = tuple(MedicationCode.model_construct(system=_s(c.get("system")), code=_s(c.get("code")),
                                                 display=c.get("display") if isinstance(c.get("display"), str) else None)
                  for c in _codings(cc))
    text = cc.get("text")
    return Concept(codes, text if isinstance(text, str) else None)


def _codings(cc: Any) -> list[dict[str, Any]]:
    return [c for c in _list(cc.get("coding")) if isinstance(c, dict)] if isinstance(cc, dict) else []


def _status(cc: Any) -> tuple[str, ...]:
    return tuple(c["code"] for c in _codings(cc) if isinstance(c.get("code"), str))


def _day(value: Any) -> date | None:
    """The date of a FHIR date/dateTime (its first 10 characters), None when it is not one."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _s(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []

