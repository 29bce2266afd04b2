"""Typed result of the patient-data stage: what we know about the patient for this request.

The typed records the pgx stage reads (draft orders, current medications, conditions, vitals) are pgx's
models (``service.pgx.context``), re-exported here; :meth:`PatientData.context` builds the pgx
:class:`PatientContext` from the FHIR resources once (``service.fhir.context``).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

from service.pgx.context import (  # noqa: F401 - re-exported: the fhir stage builds these
    Concept,
    Condition,
    Dosage,
    DraftOrder,
    Medication,
    MedicationCode,
    PatientContext,
    Vitals,
)


class PatientData(BaseModel):
    """Everything the later stages need, already pulled out of FHIR JSON.

    `observations` are raw FHIR Observation (and DiagnosticReport-contained) dicts; the genomics
    parser (`service.fhir.genomics`) turns them into a GenomicProfile. `conditions` and `medications`
    are the FHIR resources as obtained (the SMART app lists them); :meth:`context` is what the engine reads.
    """

    patient_id: str
    fhir_server: str | None = None
    observations: list[dict[str, Any]] = Field(default_factory=list)
    observations_available: bool = True  # False when neither prefetch nor the FHIR server gave them
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    medications: list[dict[str, Any]] = Field(default_factory=list)  # active MedicationRequests
    birth_date: date | None = None
    sex: str | None = None  # administrative gender
    weight_kg: float | None = None
    height_cm: float | None = None
    fhir_calls: int = 0  # outbound FHIR requests made for this request
    obtained: list[str] = Field(default_factory=list)  # prefetch keys loaded (or tried): what a cached copy covers
    unavailable: list[str] = Field(default_factory=list)  # keys that were needed but could not be obtained
    notes: list[str] = Field(default_factory=list)
    # (what it was built from, the context): rebuilt when a list is replaced or grows, or a field changes
    _context: tuple[tuple, PatientContext] | None = PrivateAttr(default=None)

    def context(self) -> PatientContext:
        """The typed patient context of the pgx stage, parsed once (per content) from the resources above."""
        key = (self.conditions, len(self.conditions), self.medications, len(self.medications), self.patient_id,
               self.birth_date, self.sex, self.weight_kg, self.height_cm, self.observations_available,
               tuple(self.unavailable))
        private = self.__pydantic_private__  # (a plain dict: faster than pydantic's attribute lookup)
        hit = private.get("_context") if private is not None else None
        if hit is not None and _same_key(hit[0], key):
            return hit[1]
        from service.fhir.context import patient_context

        ctx = patient_context(self)
        if private is None:
            self._context = (key, ctx)
        else:
            private["_context"] = (key, ctx)
        return ctx


def _same_key(a: tuple, b: tuple) -> bool:
    # the lists by identity (a list replaced by an equal copy still re-parses: cheap and rare), the rest by value
    return a[0] is b[0] and a[2] is b[2] and a[1] == b[1] and a[3] == b[3] and a[4:] == b[4:]
