"""What the patient's record says, tri-state: True, False, or None when the record cannot tell (data that
could not be obtained is never read as "none on record")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from service.fhir.models import DraftOrder, PatientData
from service.pgx.guidelines import AgeRange
from service.pgx.safety.data import Check, MedicationSelector, SafetyData
from service.pgx.warfarin import age_years

SNOMED = "http://snomed.info/sct"
RXNORM_SYSTEMS = frozenset({"http://www.nlm.nih.gov/research/umls/rxnorm", "urn:oid:2.16.840.1.113883.6.88",
                            "http://www.nlm.nih.gov/research/umls/rxnorm/"})
_INACTIVE_MED = {"draft", "entered-in-error", "cancelled", "stopped", "completed", "revoked", "on-hold"}

# --------------------------------------------------------------------------------------------
# Patient facts (tri-state: True / False / None = the record cannot tell)


def _unavailable(patient: PatientData, key: str) -> bool:
    return key in (getattr(patient, "unavailable", None) or [])


def _condition_counts(c: dict[str, Any]) -> bool:
    """A Condition counts for screening unless refuted or entered in error. A resolved or inactive one still
    counts: contraindications are about history too (a prior stroke stays a prior stroke)."""
    cc = c.get("verificationStatus") or {}
    for coding in (cc.get("coding") or []) if isinstance(cc, dict) else []:
        if isinstance(coding, dict) and coding.get("code") in ("refuted", "entered-in-error"):
            return False
    return True


def _patient_codes(patient: PatientData, order: DraftOrder | None) -> set[tuple[str, str]]:
    codes: set[tuple[str, str]] = set()
    for c in patient.conditions:
        if not isinstance(c, dict) or not _condition_counts(c):
            continue
        code = c.get("code")
        for coding in (code.get("coding") or []) if isinstance(code, dict) else []:
            if isinstance(coding, dict) and isinstance(coding.get("system"), str) and isinstance(coding.get("code"), str):
                codes.add((coding["system"], coding["code"]))
    if order is not None:
        for rc in order.reason_codes:
            if rc.system and rc.code:
                codes.add((rc.system, rc.code))
    return codes


def _code_hit(patterns: Sequence[str], codes: set[tuple[str, str]]) -> bool:
    for pat in patterns:
        system, _, code = pat.partition("|")
        for s, c in codes:
            if s == system and (c == code or (system != SNOMED and c.startswith(code))):
                return True
    return False


def _conditions_state(patterns: Sequence[str], patient: PatientData, order: DraftOrder | None) -> bool | None:
    if _code_hit(patterns, _patient_codes(patient, order)):
        return True
    return None if _unavailable(patient, "conditions") else False


def active_medications(patient: PatientData, order: DraftOrder | None) -> list[dict[str, Any]]:
    out = []
    for m in patient.medications:
        if not isinstance(m, dict) or m.get("status") in _INACTIVE_MED:
            continue
        if order is not None and order.id and m.get("id") == order.id:
            continue  # the draft itself (order-sign re-sends it)
        out.append(m)
    return out


def _med_codes_texts(m: dict[str, Any]) -> tuple[set[str], list[str]]:
    codes: set[str] = set()
    texts: list[str] = []
    for key in ("medicationCodeableConcept", "code"):
        cc = m.get(key)
        if not isinstance(cc, dict):
            continue
        if isinstance(cc.get("text"), str):
            texts.append(cc["text"])
        for c in cc.get("coding") or []:
            if isinstance(c, dict):
                if isinstance(c.get("code"), str) and c.get("system") in RXNORM_SYSTEMS:
                    codes.add(c["code"].strip())
                if isinstance(c.get("display"), str):
                    texts.append(c["display"])
    ref = m.get("medicationReference")
    if isinstance(ref, dict) and isinstance(ref.get("display"), str):
        texts.append(ref["display"])
    return codes, texts


def _medications_state(data: SafetyData, sels: Sequence[MedicationSelector], patient: PatientData,
                       order: DraftOrder | None) -> tuple[bool | None, str | None]:
    for m in active_medications(patient, order):
        codes, texts = _med_codes_texts(m)
        for sel in sels:
            if (sel.rxnorm and sel.rxnorm in codes) or any(data.med_re(sel).search(t) for t in texts):
                return True, sel.name
    return (None if _unavailable(patient, "medications") else False), None


def _sex_state(sexes: Sequence[str], patient: PatientData) -> bool | None:
    sex = (patient.sex or "").lower()
    if sex not in ("male", "female"):
        return None
    return sex in sexes


def _age_state(rng: AgeRange, patient: PatientData, today: date) -> bool | None:
    age = age_years(patient.birth_date, today)
    if age is None:
        return None
    return (rng.min is None or age >= rng.min) and (rng.max is None or age <= rng.max)


@dataclass
class _CheckResult:
    fires: bool | None  # None: could not be ruled out
    missing: list[str]  # what the record lacked
    detail: str | None = None  # e.g. the co-medication found


def evaluate_check(data: SafetyData, check: Check, patient: PatientData, order: DraftOrder | None,
                   today: date) -> _CheckResult:
    states: list[bool | None] = []
    missing: list[str] = []
    detail = None
    if check.sex:
        s = _sex_state(check.sex, patient)
        states.append(s)
        if s is None:
            missing.append("sex")
    if check.age is not None:
        s = _age_state(check.age, patient, today)
        states.append(s)
        if s is None:
            missing.append("date of birth")
    if check.conditions:
        s = _conditions_state(check.conditions, patient, order)
        states.append(s)
        if s is None:
            missing.append("conditions")
    if check.medications:
        s, detail = _medications_state(data, check.medications, patient, order)
        states.append(s)
        if s is None:
            missing.append("current medications")
    if any(s is False for s in states):
        return _CheckResult(False, [])
    if check.unless_conditions:
        u = _conditions_state(check.unless_conditions, patient, order)
        if u is True:
            return _CheckResult(False, [])
        if u is None:
            missing.append("conditions")
            states.append(None)
    if all(s is True for s in states):
        return _CheckResult(True, [], detail)
    return _CheckResult(None, sorted(set(missing)))
