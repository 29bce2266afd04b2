"""Typed results of the PGx stages: gene results, the genomic profile, recommendations.

These are plain, serialisable pydantic models. The FHIR stage produces a
:class:`GenomicProfile`; the PGx engine reads it and produces :class:`Recommendation` objects;
the card builder turns those into CDS Hooks cards. Nothing here knows about FHIR JSON or HTTP.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Action(StrEnum):
    """What a recommendation asks the prescriber to do (the README documents each value)."""

    avoid = "avoid"
    consider_alternative = "consider_alternative"
    alternative_or_reduced_dose = "alternative_or_reduced_dose"
    reduce_dose = "reduce_dose"
    increase_dose = "increase_dose"
    adjust_dose_tdm = "adjust_dose_tdm"
    standard_dosing = "standard_dosing"
    standard_dosing_with_caution = "standard_dosing_with_caution"
    no_recommendation = "no_recommendation"
    test_before_prescribing = "test_before_prescribing"


class AlleleCall(BaseModel):
    """One allele of a diplotype as the knowledge base sees it."""

    model_config = ConfigDict(frozen=True)

    allele: str
    function: str | None = None  # CPIC function, e.g. "No function"; None when unknown
    activity_value: str | None = Field(default=None, serialization_alias="activityValue")


class PhenotypeCall(BaseModel):
    """The result of turning one gene's diplotype into a CPIC phenotype."""

    model_config = ConfigDict(frozen=True)

    gene: str
    diplotype: str | None = None  # normalised, e.g. "*1/*2"
    phenotype: str  # CPIC term, e.g. "Intermediate Metabolizer", or "Indeterminate"
    activity_score: str | None = None  # as CPIC writes it: "1.25", "≥3.0", "n/a"; None if not an AS gene
    allele_status: list[str] = Field(default_factory=list)  # HLA: ["*57:01 positive", ...]
    alleles: list[AlleleCall] = Field(default_factory=list)
    method: str = ""  # how it was derived, human-readable ("activity score: *1 (1.0) + *41 (0.25)")
    reason: str | None = None  # why Indeterminate, when it is


class GeneResult(BaseModel):
    """One gene's result for one patient, with where it came from (the evidence trail)."""

    gene: str
    diplotype: str | None = None  # as reported (after trimming); None for a phenotype-only result
    reported_phenotype: str | None = None  # phenotype stated by the lab, if any
    call: PhenotypeCall | None = None  # filled by the PGx engine
    observation: str | None = None  # "Observation/123" or a contained/fullUrl reference
    effective: datetime | None = None
    status: str = "final"
    source_style: str = ""  # e.g. "pharmvar-coding", "gl-string", "text", "phenotype-only"
    notes: list[str] = Field(default_factory=list)  # e.g. "preliminary result", "conflicts with ..."
    conflicts_with: list[str] = Field(default_factory=list)  # other Observation references


class UnreadableResult(BaseModel):
    """A genomic Observation we recognised as PGx but could not parse. Never dropped silently."""

    observation: str | None = None
    gene: str | None = None
    text: str | None = None
    reason: str


class GenomicProfile(BaseModel):
    """Every PGx result known for one patient, one entry per gene (the newest result wins)."""

    patient_id: str
    genes: dict[str, GeneResult] = Field(default_factory=dict)
    unreadable: list[UnreadableResult] = Field(default_factory=list)
    source: str = "prefetch"  # "prefetch", "fhir", "cache"

    def get(self, gene: str) -> GeneResult | None:
        return self.genes.get(gene)


class DrugRef(BaseModel):
    """A drug as recognised in an order: the CPIC ingredient we matched."""

    model_config = ConfigDict(frozen=True)

    name: str
    rxnorm: str


class Alternative(BaseModel):
    """A CPIC-named alternative drug (a one-click suggestion)."""

    name: str
    rxnorm: str
    recommended: bool = False  # first-line


class WithheldAlternative(BaseModel):
    """A CPIC-named alternative not offered one-click (or not as the recommended one), and why."""

    name: str
    rxnorm: str | None = None
    effect: str  # "excluded" (contraindication), "not_recommended" (demoted), "not_offered" (no safe one-click order)
    check: str | None = None  # id of the check in cards/safety/contraindications.yaml
    reason: str
    citation: str | None = None


class DoseAdjustment(BaseModel):
    """A numeric dose change CPIC gives (e.g. factor 0.5 = reduce by 50%)."""

    factor: float | None = None
    max_daily_mg: float | None = None
    text: str | None = None
    one_click: bool = True  # False: CPIC's number does not apply to this order as a one-click change
    informational: bool = False  # True: starting-dose advice for a patient already on the drug (monitor/TDM)


class GeneEvidence(BaseModel):
    """Machine-readable per-gene evidence carried on a card (README: card extension)."""

    gene: str
    diplotype: str | None = None
    phenotype: str
    activityScore: str | None = None
    alleleStatus: str | None = None
    observation: str | None = None
    effective: str | None = None
    derivation: str | None = None
    phenoconversion: dict[str, Any] | None = None  # README: genes[].phenoconversion (set only with a perpetrator)


class UnreadableEvidence(BaseModel):
    """A result for one of the drug's genes that is on file but could not be interpreted (card extension
    ``unreadable``): the raw value as the lab sent it, why it could not be used, and where it is."""

    gene: str
    value: str | None = None
    reason: str
    observation: str | None = None
    phenotype: str | None = None  # "Indeterminate" when a result was read but gave no phenotype
    recognised: list[str] = Field(default_factory=list)  # alleles of it that are in our table, with function


class FollowUpTest(BaseModel):
    """The test a card offers to order (cards/unreadable.yaml `follow_up`, else re-genotyping)."""

    gene: str
    text: str
    loinc: str | None = None
    why: str | None = None
    citation: str | None = None


class Recommendation(BaseModel):
    """One drug–guideline hit for one order: what CPIC says for this patient."""

    drug: DrugRef
    order_ref: str | None = None  # "MedicationRequest/draft-1"
    guideline_id: str  # our guideline file id, e.g. "clopidogrel-cyp2c19"
    guideline_name: str
    guideline_url: str
    publication: str | None = None
    rule_id: str  # stable id of the rule inside the guideline file
    action: Action
    strength: str  # CPIC classification: Strong, Moderate, Optional, No recommendation
    indicator: str  # info | warning | critical
    summary: str
    detail: str
    population: str | None = None
    population_note: str | None = None  # e.g. "population could not be determined; primary used"
    genes: list[GeneEvidence] = Field(default_factory=list)
    alternatives: list[Alternative] = Field(default_factory=list)
    withheld: list[WithheldAlternative] = Field(default_factory=list)  # named by CPIC, not offered one-click
    dose: DoseAdjustment | None = None
    notes: list[str] = Field(default_factory=list)  # warnings: conflicts, preliminary results, indeterminate reasons
    info_notes: list[str] = Field(default_factory=list)  # information shown without a warning sign
    knowledge_version: str
    interruptive: bool = True  # False for standard dosing: patient-view only
    unreadable: list[UnreadableEvidence] = Field(default_factory=list)  # results that could not be interpreted
    follow_up: list[FollowUpTest] = Field(default_factory=list)  # tests to order (test_before_prescribing)
