"""The patient context the pgx stage reads: typed, already pulled out of FHIR JSON by ``service.fhir``.

The pgx stage owns these models; ``service.fhir`` builds them (``service.fhir.context``: current
medications, conditions, vitals; ``service.fhir.orders``: the draft orders) and ``service.fhir.models``
re-exports them. Nothing in ``service.pgx`` reads a FHIR resource dict: what the engine needs of a
resource is a field here, extracted once per patient snapshot (or draft order).

Plain ``dataclass(slots=True)`` objects for the per-resource records (cheap to build, no validation);
``DraftOrder`` and ``MedicationCode`` stay pydantic models (the card builder, the HTTP layer and the
SMART app copy and serialise them) and are built with ``model_construct``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field


class MedicationCode(BaseModel):
    system: str | None = None
    code: str | None = None
    display: str | None = None


@dataclass(slots=True, frozen=True)
class Dosage:
    """What the dose checks read of an order's ``dosageInstruction`` (the first one, unless noted)."""

    phases: bool = False  # several instructions with different ``sequence`` (loading then maintenance ...)
    single: bool = False  # timing.repeat.count == 1
    texts: tuple[str, ...] = ()  # text, patientInstruction, additionalInstruction texts, timing code text/codes
    per_day: float | None = None  # administrations per day from timing.repeat (None when it cannot be read)


NO_DOSAGE = Dosage()


class DraftOrder(BaseModel):
    """A medication order from `draftOrders`, with its drug identity resolved as far as possible."""

    resource_type: str = "MedicationRequest"
    id: str | None = None
    reference: str | None = None  # "MedicationRequest/draft-1"
    status: str | None = None
    codes: list[MedicationCode] = Field(default_factory=list)  # medication codings (RxNorm or other)
    text: str | None = None  # medication text / display, used for name matching
    encounter: str | None = None
    requester: str | None = None
    reason_codes: list[MedicationCode] = Field(default_factory=list)
    dose_quantity: float | None = None  # first dosageInstruction doseAndRate.doseQuantity.value
    dose_unit: str | None = None
    resource: dict[str, Any] = Field(default_factory=dict)  # the raw resource, for update suggestions
    # another draft order of the same request carries the same id (seen from the CDS Hooks sandbox and some
    # EHRs): an action naming this order by id could change the wrong one
    shared_id: bool = False

    @property
    def dosage(self) -> Dosage:
        """Timing and dosing texts of the order. The fhir stage's orders (``service.fhir.orders``) read them
        from the resource on first use (only a dose check needs them); an order built by hand has none."""
        return NO_DOSAGE


@dataclass(slots=True)
class Coding:
    """One coding of a current medication (a plain record: these are built for every medication on file)."""

    system: str | None = None
    code: str | None = None
    display: str | None = None


@dataclass(slots=True)
class Concept:
    """A medication CodeableConcept: its codings and its text."""

    codes: tuple[Coding | MedicationCode, ...] = ()
    text: str | None = None


@dataclass(slots=True)
class Medication:
    """A current-medication record (MedicationRequest, or a MedicationStatement read as one).

    ``status`` is the raw FHIR status (which statuses count as current is data: cards/medication_status.yaml,
    read by :mod:`service.pgx.medications`)."""

    id: str | None = None
    status: str | None = None
    concepts: tuple[Concept, ...] = ()  # medicationCodeableConcept (and a `code`, if one was sent)
    reference_display: str | None = None  # medicationReference.display
    contained: Concept | None = None  # a contained Medication the reference points to (code + ingredients)
    authored: str | None = None  # authoredOn, as sent
    validity_start: str | None = None  # dispenseRequest.validityPeriod.start, as sent
    validity_end: str | None = None
    started: date | None = None  # authoredOn, else validityPeriod.start (first 10 characters as a date)
    ends: tuple[date, ...] = ()  # validityPeriod.end and every dosage boundsPeriod.end that parse as dates

    @property
    def reference(self) -> str | None:
        return f"MedicationRequest/{self.id}" if self.id else None

    def codes(self) -> list[tuple[str | None, str | None]]:
        """(system, code) of the drug's codings, in order: the medication concepts, then a contained
        Medication's (its product code and its ingredients' codes)."""
        out = [(c.system, c.code) for cc in self.concepts for c in cc.codes]
        if self.contained is not None:
            out += [(c.system, c.code) for c in self.contained.codes]
        return out

    def texts(self) -> list[str]:
        """Texts naming the drug, in the order name matching reads them."""
        out: list[str] = []
        for cc in self.concepts:
            if cc.text is not None:
                out.append(cc.text)
            out += [c.display for c in cc.codes if c.display]
        if self.reference_display is not None:
            out.append(self.reference_display)
        if self.contained is not None:
            if self.contained.text:
                out.append(self.contained.text)
            out += [c.display for c in self.contained.codes if c.display]
        return out

    def ended_before(self, day: date) -> bool:
        """Has a validity or dosage period of this medication ended before `day`?"""
        return any(e < day for e in self.ends)


@dataclass(slots=True)
class Condition:
    """A Condition: its codes and the status codes the screening and population rules read."""

    codes: tuple[tuple[str, str], ...] = ()  # (system, code) as sent
    clinical_status: tuple[str, ...] = ()  # clinicalStatus coding codes
    verification_status: tuple[str, ...] = ()  # verificationStatus coding codes


@dataclass(slots=True)
class Vitals:
    weight_kg: float | None = None
    height_cm: float | None = None


@dataclass(slots=True)
class PatientContext:
    """Everything the recommendation engine reads about the patient, typed."""

    patient_id: str
    birth_date: date | None = None
    sex: str | None = None  # administrative gender
    vitals: Vitals = field(default_factory=Vitals)
    conditions: Sequence[Condition] = field(default_factory=list)
    medications: Sequence[Medication] = field(default_factory=list)  # as sent (statuses filtered by the reader)
    observations_available: bool = True  # False when genomic results could not be obtained
    unavailable: frozenset[str] = frozenset()  # prefetch keys needed but not obtained ("medications", ...)

    @property
    def weight_kg(self) -> float | None:
        return self.vitals.weight_kg

    @property
    def height_cm(self) -> float | None:
        return self.vitals.height_cm

    def context(self) -> "PatientContext":
        return self


@runtime_checkable
class HasContext(Protocol):
    """What the engine accepts for a patient: anything that yields a :class:`PatientContext` (the fhir
    stage's PatientData builds and keeps one)."""

    def context(self) -> PatientContext: ...


def as_context(patient: HasContext) -> PatientContext:
    return patient if type(patient) is PatientContext else patient.context()
