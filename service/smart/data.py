"""Load one patient's PGx picture through the same stages the CDS Hooks cards use.

patient data (service.fhir.patient_data) -> service.evaluate.run_clinical (genomic profile -> phenotypes
-> recommendations for every affected drug), the one composition the hooks and population screening use.
Nothing here re-implements a clinical step, so the app and the cards cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog

from service.evaluate import run_clinical
from service.fhir.client import Budget
from service.fhir.models import PatientData
from service.fhir.patient_data import load_patient_data
from service.pgx.models import DrugRef, GenomicProfile, Recommendation
from service.smart.oauth import SmartError

log = structlog.get_logger("pgx_cds.smart")


class TokenRejected(Exception):
    """The FHIR server answered 401: the access token is expired or revoked."""


@dataclass
class LoadedProfile:
    patient: PatientData
    profile: GenomicProfile
    recommendations: list[Recommendation]
    patient_resource: dict[str, Any] | None
    conversions: dict[str, Any] = field(default_factory=dict)  # gene -> phenoconversion.GeneConversion


def _is_unauthorized(exc: BaseException) -> bool:
    return getattr(exc, "kind", None) == "unauthorized" or getattr(exc, "status", None) == 401


#: Which prefetch template set to load. The order hooks' set (Patient, PGx Observations, active
#: MedicationRequests, active Conditions) gives the page the current medications and gives the engine the
#: same conditions (population selection) the order-select / order-sign cards are evaluated with.
DATA_HOOK = "order-select"


async def load_profile(state: Any, *, iss: str, patient_id: str, token: str, budget_s: float) -> LoadedProfile:
    """Read and evaluate everything for the page. Raises TokenRejected on a FHIR 401, SmartError otherwise."""
    from service.fhir.client import FhirError

    settings = state.settings
    knowledge = state.knowledge
    fhir = state.fhir
    budget = Budget(budget_s)

    # The Patient read first: it proves the token (a 401 here means expired/revoked) and, handed over as
    # prefetch, saves load_patient_data from reading it again.
    resource: dict[str, Any] | None = None
    try:
        resource = await fhir.read(iss, f"Patient/{patient_id}", token, budget=budget)
    except FhirError as exc:
        if _is_unauthorized(exc):
            raise TokenRejected() from None
        # 403/404/timeout: no banner details; load_patient_data tries again and records why
    patient = await load_patient_data(
        hook=DATA_HOOK,
        patient_id=patient_id,
        fhir_server=iss,
        access_token=token,
        prefetch={"patient": resource} if resource else None,
        client=fhir,
        settings=settings,
        budget=budget,
    )
    if not patient.observations_available:
        if any("unauthorized" in n for n in patient.notes):
            raise TokenRejected()
        if any("forbidden" in n for n in patient.notes):
            raise SmartError(
                "fhir_forbidden",
                "Access to lab results was not granted",
                "The EHR's FHIR server refused to share the patient's lab results with this app, so no PGx "
                "profile can be shown. Nothing here means the patient has no results.",
                403,
            )
        raise SmartError(
            "fhir_unavailable",
            "Could not read the patient's genomic results",
            "The EHR's FHIR server did not return the patient's lab results, so no PGx profile can be shown. "
            "Nothing here means the patient has no results. Please try again, or check the results in the chart.",
            502,
        )
    clinical = run_clinical(knowledge, settings, patient, summary=True)
    from datetime import datetime, timezone

    from service.pgx.phenoconversion import conversions

    conv = conversions(knowledge, clinical.profile, patient, settings, datetime.now(timezone.utc).date())
    return LoadedProfile(patient, clinical.profile, list(clinical.summary), resource, conv)


def med_matcher(knowledge: Any):
    """A function: raw MedicationRequest -> CPIC drugs it contains (the cards' own drug recogniser)."""
    try:
        from service.fhir.context import medication_drugs_of as medication_request_drugs
    except ImportError:  # pragma: no cover - ships with the service
        return lambda _res: []
    index = getattr(knowledge, "drug_index", None)
    if index is None:
        return lambda _res: []

    def _match(res: dict[str, Any]) -> list[DrugRef]:
        return medication_request_drugs(index, res)

    return _match


def drug_genes(knowledge: Any):
    """A function: drug name -> genes CPIC links to it in our knowledge base."""

    def _genes(drug: str) -> list[str]:
        out: list[str] = []
        fn = getattr(knowledge, "guidelines_for_drug", None)
        for g in fn(drug) if callable(fn) else []:
            for gene in getattr(g, "genes", []):
                if gene not in out:
                    out.append(gene)
        return out

    return _genes
