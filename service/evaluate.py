"""Evaluate one patient from their FHIR resources with the hooks' own stages (no second implementation).

resources -> PatientData (service.fhir.patient_data.load_patient_data, fed as a complete prefetch, so
exactly the hooks' extraction: DiagnosticReport results, hasMember, contained results, vitals) ->
GenomicProfile (service.fhir.genomics.build_profile) -> phenotypes (service.pgx.phenotype.annotate_profile)
-> for each active medication, what order-sign would say if it were re-ordered today
(service.pgx.engine.evaluate_order), and the patient-view summary (service.pgx.engine.summarize_profile).

Population screening (service.screen) calls :func:`evaluate_patient` for every patient of an export; the
SMART app and the hooks compose the same stages around their own data loading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from service.config import Settings
from service.fhir.genomics import build_profile
from service.fhir.models import DraftOrder, PatientData
from service.fhir.orders import extract_orders
from service.fhir.patient_data import load_patient_data
from service.pgx.engine import evaluate_order, summarize_profile
from service.pgx.knowledge import Knowledge
from service.pgx.models import GenomicProfile, Recommendation
from service.pgx.phenotype import annotate_profile

#: FHIR resource types a patient's record is read from (others are ignored)
PATIENT_TYPES = frozenset({"Patient", "Observation", "DiagnosticReport", "MedicationRequest",
                           "MedicationStatement", "Condition"})
#: prefetch template set whose keys the records are handed over as (the order hooks' full set)
_HOOK = "order-sign"


@dataclass
class ActiveMedication:
    reference: str  # "MedicationRequest/ID" or "MedicationStatement/ID"
    order: DraftOrder
    recommendations: list[Recommendation]


@dataclass
class PatientEvaluation:
    patient_id: str
    data: PatientData
    profile: GenomicProfile
    medications: list[ActiveMedication] = field(default_factory=list)
    summary: list[Recommendation] = field(default_factory=list)  # the patient-view recommendations


def as_medication_request(ms: dict[str, Any]) -> dict[str, Any]:
    """A MedicationStatement as the MedicationRequest fields the engine reads (drug, status, start, reason).

    Only the form changes: the drug codes, status and reason are copied; the start of use
    (effective[x] / dateAsserted) stands where a request has authoredOn."""
    eff = ms.get("effectivePeriod")
    start = (eff.get("start") if isinstance(eff, dict) else None) or ms.get("effectiveDateTime") or ms.get("dateAsserted")
    out: dict[str, Any] = {"resourceType": "MedicationRequest", "status": ms.get("status"), "intent": "order"}
    for key in ("id", "medicationCodeableConcept", "medicationReference", "subject", "reasonCode", "contained"):
        if key in ms:
            out[key] = ms[key]
    if isinstance(start, str):
        out["authoredOn"] = start
    return out


def is_active(res: dict[str, Any]) -> bool:
    """A current medication: MedicationRequest or MedicationStatement with status active (what the hooks'
    `medications` prefetch, `status=active`, holds)."""
    return res.get("status") == "active"


def patient_data(patient_id: str, resources: Iterable[dict[str, Any]]) -> PatientData:
    """The patient's resources through the hooks' patient-data stage, as if prefetched (no I/O)."""
    return _patient_data(patient_id, resources)[0]


def _patient_data(patient_id: str, resources: Iterable[dict[str, Any]]) -> tuple[PatientData, dict[int, str]]:
    """PatientData and, for each current medication dict in it, the reference of the resource it came from."""
    patient = None
    refs: dict[int, str] = {}
    observations: list[dict[str, Any]] = []
    conditions: list[dict[str, Any]] = []
    meds: list[dict[str, Any]] = []
    for res in resources:
        rtype = res.get("resourceType")
        if rtype == "Observation" or rtype == "DiagnosticReport":
            observations.append(res)
        elif rtype == "MedicationRequest":
            if is_active(res):
                meds.append(res)
                refs[id(res)] = f"MedicationRequest/{res.get('id')}"
        elif rtype == "MedicationStatement":
            if is_active(res):
                meds.append(as_medication_request(res))
                refs[id(meds[-1])] = f"MedicationStatement/{res.get('id')}"
        elif rtype == "Condition":
            conditions.append(res)
        elif rtype == "Patient" and res.get("id") == patient_id:
            patient = res
    prefetch = {
        "patient": patient,
        "pgxObservations": _bundle(observations),
        "conditions": _bundle(conditions),
        "medications": _bundle(meds),
        "vitals": None,  # body weight and height are read from the Observations above
    }
    coro = load_patient_data(hook=_HOOK, patient_id=patient_id, fhir_server=None, access_token=None,
                             prefetch=prefetch, client=None, settings=_NO_FHIR)  # type: ignore[arg-type]
    return _run_without_io(coro), refs


def evaluate_patient(
    knowledge: Knowledge,
    settings: Settings,
    patient_id: str,
    resources: Iterable[dict[str, Any]],
    *,
    today: date | None = None,
    annotate: Callable[..., GenomicProfile] = annotate_profile,
) -> PatientEvaluation:
    """Everything the hooks would say about this patient: each active medication as if re-ordered today
    (order-sign), and the patient-view summary of actionable results.

    ``annotate``: the phenotype stage (annotate_profile's signature); population screening passes a memoised
    one (service/screen/memo.py)."""
    data, refs = _patient_data(patient_id, resources)
    profile = annotate(knowledge.genes, build_profile(data), data.sex)
    ev = PatientEvaluation(patient_id=patient_id, data=data, profile=profile)
    for med in data.medications:
        ref = refs.get(id(med)) or f"MedicationRequest/{med.get('id')}"
        order = renewal_order(med, ref)
        ev.medications.append(ActiveMedication(
            ref, order, evaluate_order(knowledge, profile, order, data, settings=settings, today=today)))
    ev.summary = summarize_profile(knowledge, profile, data, settings=settings, today=today)
    return ev


def renewal_order(med: dict[str, Any], reference: str) -> DraftOrder:
    """The draft order for re-ordering a current medication: its drug, dose and reason, no id of its own
    (so the current medication itself still counts as in use, e.g. for long-term-use populations)."""
    draft = {k: v for k, v in med.items() if k != "id"}
    draft["status"] = "draft"
    orders = extract_orders({"resourceType": "Bundle", "entry": [{"resource": draft}]}, None)
    return orders[0].model_copy(update={"reference": reference})


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


class _NoFhir:
    """Settings stand-in for load_patient_data: every key is prefetched, so nothing is ever fetched."""

    class fhir:  # noqa: N801 - mirrors Settings.fhir
        timeout_s = 1.0
        max_pages = 1


_NO_FHIR = _NoFhir()


def _run_without_io(coro: Any) -> Any:
    """Drive a coroutine that performs no I/O (every prefetch key present) to completion synchronously."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("patient data would have needed a FHIR request")
