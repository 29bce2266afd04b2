"""FHIR resources -> the pgx stage's typed patient context (``service.pgx.context``), parsed once.

Current medications (MedicationRequest, or a MedicationStatement read as one) and Conditions become
small records holding what the engine reads; untrusted JSON of any shape is tolerated (a wrong type reads
as absent). Which statuses count as current is not decided here (cards/medication_status.yaml).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from service.fhir.orders import codes_of_medication
from service.pgx.context import Coding, Concept, Condition, Medication, PatientContext, Vitals
from service.pgx.medications import medication_drugs

if TYPE_CHECKING:
    from service.fhir.models import PatientData
    from service.pgx.drugs import DrugIndex
    from service.pgx.models import DrugRef


T = TypeVar("T")


class Parsed(Sequence[T], Generic[T]):
    """The typed records of a list of resources, parsed on first use and then kept (conditions are read only
    for some guidelines; a snapshot serves every order of a request and the requests after it)."""

    __slots__ = ("_raw", "_parse", "_items")

    def __init__(self, raw: list[Any], parse: Callable[[dict[str, Any]], T]) -> None:
        self._raw: list[Any] | None = raw
        self._parse = parse
        self._items: list[T] | None = None

    def items(self) -> list[T]:
        items = self._items
        if items is None:
            parse = self._parse
            items = self._items = [parse(r) for r in self._raw or () if type(r) is dict]
            self._raw = None
        return items

    def __iter__(self):  # type: ignore[override]
        return iter(self.items())

    def __len__(self) -> int:
        return len(self.items())

    def __getitem__(self, i):  # type: ignore[override]
        return self.items()[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and self.items() == list(other)

    def __repr__(self) -> str:
        return f"Parsed({self.items()!r})"


def patient_context(data: "PatientData") -> PatientContext:
    return PatientContext(
        patient_id=data.patient_id,
        birth_date=data.birth_date,
        sex=data.sex,
        vitals=Vitals(data.weight_kg, data.height_cm),
        conditions=Parsed(data.conditions, condition),
        medications=Parsed(data.medications, medication),
        observations_available=data.observations_available,
        unavailable=frozenset(data.unavailable),
    )


def medication(res: dict[str, Any]) -> Medication:
    """A MedicationRequest (or MedicationStatement) as the engine reads it (this runs for every current
    medication of every patient snapshot: plain lookups, no validation)."""
    get = res.get
    cc = get("medicationCodeableConcept")
    concepts = (_concept(cc),) if type(cc) is dict else ()
    cc = get("code")
    if type(cc) is dict:
        concepts += (_concept(cc),)
    ref = get("medicationReference")
    ref_display = contained = None
    if type(ref) is dict:
        ref_display = _s(ref.get("display"))
        target = ref.get("reference")
        if type(target) is str and target.startswith("#"):
            for med in _list(get("contained")):
                if type(med) is dict and med.get("resourceType") == "Medication" and med.get("id") == target[1:]:
                    codes, text = codes_of_medication(med)
                    contained = Concept(tuple(codes), text)
                    break
    authored = get("authoredOn")
    start = end = None
    ends: list[date] = []
    dispense = get("dispenseRequest")
    if type(dispense) is dict:
        vp = dispense.get("validityPeriod")
        if type(vp) is dict:
            start, end = _s(vp.get("start")), _s(vp.get("end"))
            if end is not None and (d := _day(end)) is not None:
                ends.append(d)
    dis = get("dosageInstruction")
    if type(dis) is list:
        for di in dis:
            timing = di.get("timing") if type(di) is dict else None
            repeat = timing.get("repeat") if type(timing) is dict else None
            bounds = repeat.get("boundsPeriod") if type(repeat) is dict else None
            if type(bounds) is dict and (d := _day(bounds.get("end"))) is not None:
                ends.append(d)
    rid = get("id")
    status = get("status")
    return Medication(
        rid if type(rid) is str else None,
        status if type(status) is str else None,
        concepts,
        ref_display,
        contained,
        _s(authored),
        start,
        end,
        _day(authored or start),  # started: authoredOn, else the validity start
        tuple(ends),
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
    codings = cc.get("coding")
    codes = tuple(Coding(_s(c.get("system")), _s(c.get("code")), _s(c.get("display")))
                  for c in codings if type(c) is dict) if type(codings) is list else ()
    return Concept(codes, _s(cc.get("text")))


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
    return value if type(value) is str else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []

