"""Typed result of the patient-data stage: what we know about the patient for this request."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, Field


class MedicationCode(BaseModel):
    system: str | None = None
    code: str | None = None
    display: str | None = None


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


class PatientData(BaseModel):
    """Everything the later stages need, already pulled out of FHIR JSON.

    `observations` are raw FHIR Observation (and DiagnosticReport-contained) dicts; the genomics
    parser (`service.fhir.genomics`) turns them into a GenomicProfile.
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
