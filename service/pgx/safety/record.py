"""What the patient's record says, tri-state: True, False, or None when the record cannot tell (data that
could not be obtained is never read as "none on record")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from service.pgx import medications as _meds
from service.pgx.context import Condition, DraftOrder, PatientContext
from service.pgx.guidelines import AgeRange
from service.pgx.safety.data import Check, MedicationSelector, SafetyData
from service.pgx.warfarin import age_years

SNOMED = "http://snomed.info/sct"
RXNORM_SYSTEMS = frozenset({"http://www.nlm.nih.gov/research/umls/rxnorm", "urn:oid:2.16.840.1.113883.6.88",
                            "http://www.nlm.nih.gov/research/umls/rxnorm/"})
_REFUTED = frozenset({"refuted", "entered-in-error"})

# --------------------------------------------------------------------------------------------
# Patient facts (tri-state: True / False / None = the record cannot tell)


def _unavailable(patient: PatientContext, key: str) -> bool:
    return _meds.unavailable(patient, key)


def _condition_counts(c: Condition) -> bool:
    """A Condition counts for screening unless refuted or entered in error. A resolved or inactive one still
    counts: contraindications are about history too (a prior stroke stays a prior stroke)."""
    return not any(s in _REFUTED for s in c.verification_status)


def _patient_codes(patient: PatientContext, order: DraftOrder | None) -> set[tuple[str, str]]:
    codes: set[tuple[str, str]] = set()
    for c in patient.conditions:
        if _condition_counts(c):
            codes.update(c.codes)
    if order is not None:
        for rc in order.reason_codes:
            if rc.system and rc.code:
                codes.add((rc.system, rc.code))
    return codes


_COMPILED: dict[int, tuple[Sequence[str], dict[str, tuple[frozenset[str], tuple[str, ...]]]]] = {}


def _compiled(patterns: Sequence[str]) -> dict[str, tuple[frozenset[str], tuple[str, ...]]]:
    """system -> (exact codes, code prefixes) for one pattern list (SNOMED exact, other systems by prefix)."""
    hit = _COMPILED.get(id(patterns))
    if hit is not None and hit[0] is patterns:
        return hit[1]
    by_system: dict[str, tuple[set[str], list[str]]] = {}
    for pat in patterns:
        system, _, code = pat.partition("|")
        exact, prefixes = by_system.setdefault(system, (set(), []))
        (exact.add(code) if system == SNOMED else prefixes.append(code))
    out = {sys_: (frozenset(e), tuple(p)) for sys_, (e, p) in by_system.items()}
    if len(_COMPILED) > 4096:  # pattern lists live in the loaded knowledge; bounded for safety
        _COMPILED.clear()
    _COMPILED[id(patterns)] = (patterns, out)
    return out


def _code_hit(patterns: Sequence[str], codes: set[tuple[str, str]]) -> bool:
    compiled = _compiled(patterns)
    for s, c in codes:
        entry = compiled.get(s)
        if entry is not None and (c in entry[0] or (entry[1] and c.startswith(entry[1]))):
            return True
    return False


class Record:
    """The facts of one patient and order the checks read, each computed once per request."""

    def __init__(self, patient: PatientContext, order: DraftOrder | None, today: date,
                 not_current: frozenset[str]) -> None:
        self.patient = patient
        self.order = order
        self.today = today
        self.not_current = not_current  # statuses that are not a current medication (cards/medication_status.yaml)
        self._codes: set[tuple[str, str]] | None = None
        self._meds: list[tuple[frozenset[str], str]] | None = None

    @property
    def condition_codes(self) -> set[tuple[str, str]]:
        if self._codes is None:
            self._codes = _patient_codes(self.patient, self.order)
        return self._codes

    @property
    def medications(self) -> list[tuple[frozenset[str], str]]:
        """Active medications as (RxNorm codes, all their displays and text joined)."""
        if self._meds is None:
            self._meds = []
            for m in _meds.current(self.patient.medications, self.order, self.not_current):
                codes = frozenset(c.strip() for s, c in m.codes() if c and s in RXNORM_SYSTEMS)
                self._meds.append((codes, " | ".join(m.texts())))
        return self._meds


def _conditions_state(patterns: Sequence[str], rec: Record) -> bool | None:
    if _code_hit(patterns, rec.condition_codes):
        return True
    return None if _unavailable(rec.patient, "conditions") else False


def _medications_state(data: SafetyData, sels: Sequence[MedicationSelector], rec: Record) -> tuple[bool | None, str | None]:
    by_code, rx, by_word = data.med_matcher(sels)
    for codes, text in rec.medications:
        hit = next((by_code[c] for c in codes if c in by_code), None)
        if hit is None and text:
            m = rx.search(text)
            hit = by_word[m.group(1).lower()] if m else None
        if hit is not None:
            return True, hit
    return (None if _unavailable(rec.patient, "medications") else False), None


def _sex_state(sexes: Sequence[str], patient: PatientContext) -> bool | None:
    sex = (patient.sex or "").lower()
    if sex not in ("male", "female"):
        return None
    return sex in sexes


def _age_state(rng: AgeRange, patient: PatientContext, today: date) -> bool | None:
    age = age_years(patient.birth_date, today)
    if age is None:
        return None
    return (rng.min is None or age >= rng.min) and (rng.max is None or age <= rng.max)


@dataclass
class _CheckResult:
    fires: bool | None  # None: could not be ruled out
    missing: list[str]  # what the record lacked
    detail: str | None = None  # e.g. the co-medication found


def evaluate_check(data: SafetyData, check: Check, rec: Record) -> _CheckResult:
    patient, today = rec.patient, rec.today
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
        s = _conditions_state(check.conditions, rec)
        states.append(s)
        if s is None:
            missing.append("conditions")
    if check.medications:
        s, detail = _medications_state(data, check.medications, rec)
        states.append(s)
        if s is None:
            missing.append("current medications")
    if any(s is False for s in states):
        return _CheckResult(False, [])
    if check.unless_conditions:
        u = _conditions_state(check.unless_conditions, rec)
        if u is True:
            return _CheckResult(False, [])
        if u is None:
            missing.append("conditions")
            states.append(None)
    if all(s is True for s in states):
        return _CheckResult(True, [], detail)
    return _CheckResult(None, sorted(set(missing)))
