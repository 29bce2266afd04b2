"""The services we offer (`GET /cds-services`)."""

from __future__ import annotations

from dataclasses import dataclass

from service.fhir.prefetch import PREFETCH
from service.cdshooks.models import Discovery, Service


@dataclass(frozen=True)
class ServiceDef:
    id: str
    hook: str
    title: str
    description: str
    usage: str


SERVICES: dict[str, ServiceDef] = {
    s.id: s
    for s in (
        ServiceDef(
            id="pgx-order-select",
            hook="order-select",
            title="Pharmacogenomic check of the selected drug (CPIC)",
            description=(
                "Checks each newly selected medication order against the patient's pharmacogenomic results "
                "and the CPIC guideline for that drug, and suggests CPIC-named alternatives or dose changes."
            ),
            usage=(
                "Needs the patient's genomic Observations (prefetch `pgxObservations`, or fhirServer with a "
                "token allowing Observation search). Conditions and active medications refine the guideline "
                "population. Without genomic data for a drug's gene, a pre-test card may suggest testing."
            ),
        ),
        ServiceDef(
            id="pgx-order-sign",
            hook="order-sign",
            title="Pharmacogenomic check before signing (CPIC)",
            description=(
                "Checks every draft medication order against the patient's pharmacogenomic results and the "
                "CPIC guidelines; cards already shown at order-select are not repeated unless they changed."
            ),
            usage=(
                "Needs the patient's genomic Observations (prefetch `pgxObservations`, or fhirServer with a "
                "token allowing Observation search)."
            ),
        ),
        ServiceDef(
            id="pgx-patient-view",
            hook="patient-view",
            title="Pharmacogenomic summary (CPIC)",
            description=(
                "Summarises the patient's actionable pharmacogenomic results: phenotype per gene and the "
                "drugs each result affects, with a link to the full PGx profile app."
            ),
            usage="Needs the patient's genomic Observations (prefetch or fhirServer access).",
        ),
    )
}


def discovery() -> Discovery:
    return Discovery(
        services=[
            Service(
                hook=s.hook,
                id=s.id,
                title=s.title,
                description=s.description,
                prefetch=dict(PREFETCH[s.hook]),
                usageRequirements=s.usage,
            )
            for s in SERVICES.values()
        ]
    )
