"""Hand-built engine results (the pydantic contract types) for rendering tests without FHIR."""

from __future__ import annotations

from datetime import datetime, timezone

from service.fhir.models import PatientData
from service.pgx.models import (
    Action,
    DrugRef,
    GeneEvidence,
    GeneResult,
    GenomicProfile,
    PhenotypeCall,
    Recommendation,
    UnreadableResult,
)

CLOPIDOGREL = DrugRef(name="clopidogrel", rxnorm="32968")
CODEINE = DrugRef(name="codeine", rxnorm="2670")
SIMVASTATIN = DrugRef(name="simvastatin", rxnorm="36567")


def patient_data() -> PatientData:
    return PatientData(
        patient_id="pgx-pat-1",
        fhir_server="http://fhir.test/fhir",
        observations=[
            {
                "resourceType": "Observation",
                "id": "obs-2c19",
                "status": "final",
                "performer": [{"display": "Synthetic Genomics Lab"}],
            }
        ],
        medications=[
            {
                "resourceType": "MedicationRequest",
                "id": "mr-1",
                "status": "active",
                "medicationCodeableConcept": {"text": "Clopidogrel 75 mg oral tablet"},
            },
            {
                "resourceType": "MedicationRequest",
                "id": "mr-2",
                "status": "active",
                "medicationCodeableConcept": {"text": "Lisinopril 10 mg oral tablet"},
            },
        ],
        sex="female",
    )


def _dt(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=timezone.utc)


def profile() -> GenomicProfile:
    return GenomicProfile(
        patient_id="pgx-pat-1",
        genes={
            "CYP2C19": GeneResult(
                gene="CYP2C19",
                diplotype="*2/*2",
                call=PhenotypeCall(gene="CYP2C19", diplotype="*2/*2", phenotype="Poor Metabolizer"),
                observation="Observation/obs-2c19",
                effective=_dt(2024, 3, 1),
            ),
            "CYP2D6": GeneResult(
                gene="CYP2D6",
                diplotype="*1/*41",
                call=PhenotypeCall(
                    gene="CYP2D6", diplotype="*1/*41", phenotype="Normal Metabolizer", activity_score="1.25"
                ),
                observation="Observation/obs-2d6",
                effective=_dt(2024, 3, 1),
            ),
            "SLCO1B1": GeneResult(
                gene="SLCO1B1",
                diplotype="*1/*99",
                call=PhenotypeCall(
                    gene="SLCO1B1", diplotype="*1/*99", phenotype="Indeterminate", reason="unknown allele *99"
                ),
                observation="Observation/obs-slco",
                conflicts_with=["Observation/obs-slco-old"],
                notes=["conflicts with an earlier SLCO1B1 result"],
            ),
        },
        unreadable=[UnreadableResult(observation="Observation/obs-bad", gene="TPMT", reason="diplotype text not understood", text="see report")],
        source="fhir",
    )


def _rec(drug: DrugRef, gene: str, pheno: str, action: Action, summary: str, gid: str, rule: str, **kw) -> Recommendation:
    return Recommendation(
        drug=drug,
        guideline_id=gid,
        guideline_name=f"CPIC {gene}-{drug.name}",
        guideline_url=f"https://cpicpgx.org/guidelines/{gid}/",
        rule_id=rule,
        action=action,
        strength=kw.pop("strength", "Strong"),
        indicator=kw.pop("indicator", "warning"),
        summary=summary,
        detail=summary,
        genes=[GeneEvidence(gene=gene, phenotype=pheno)],
        knowledge_version="test-knowledge 1",
        **kw,
    )


def recommendations() -> list[Recommendation]:
    return [
        _rec(CLOPIDOGREL, "CYP2C19", "Poor Metabolizer", Action.avoid,
             "CYP2C19 poor metabolizer: avoid clopidogrel; use prasugrel or ticagrelor.",
             "clopidogrel-cyp2c19", "acs-pm", indicator="critical"),
        _rec(CODEINE, "CYP2D6", "Normal Metabolizer", Action.standard_dosing,
             "CYP2D6 normal metabolizer: use the label-recommended codeine dose.",
             "codeine-cyp2d6", "nm", indicator="info", interruptive=False),
    ]
