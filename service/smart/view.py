"""Turn the engine's typed results into what the profile page shows. Pure functions, no I/O.

Input: :class:`PatientData`, the annotated :class:`GenomicProfile` and the engine's
:class:`Recommendation` list (the same objects the cards are built from), plus an optional FHIR
Patient resource for the banner. Output: a :class:`ProfileView` the Jinja2 templates render.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.fhir.models import PatientData
from service.pgx.models import Action, DrugRef, GeneResult, GenomicProfile, Recommendation
from service.smart.scales import Scale, scale_for

ACTION_LABELS: dict[str, str] = {
    Action.avoid: "Avoid",
    Action.consider_alternative: "Consider an alternative",
    Action.alternative_or_reduced_dose: "Alternative or reduced dose",
    Action.reduce_dose: "Reduce dose",
    Action.increase_dose: "Increase dose",
    Action.adjust_dose_tdm: "Adjust dose (use drug levels)",
    Action.standard_dosing: "Standard dosing",
    Action.standard_dosing_with_caution: "Standard dosing, with caution",
    Action.no_recommendation: "No recommendation",
    Action.test_before_prescribing: "Test before prescribing",
}
_NO_CHANGE = {Action.standard_dosing, Action.no_recommendation}
_ACTION_ORDER = {a: i for i, a in enumerate(ACTION_LABELS)}

MedMatcher = Callable[[dict[str, Any]], list[DrugRef]]


@dataclass
class DrugLine:
    """One drug a result affects, with CPIC's recommendation in one line."""

    drug: str
    rxnorm: str
    summary: str
    action: str
    action_label: str
    changes_prescribing: bool
    strength: str
    indicator: str
    guideline_id: str
    guideline_name: str
    guideline_url: str
    rule: str  # "<guideline id>/<rule id>"
    rule_id: str = ""  # exactly as the engine (and the card's appContext) carries it
    genes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)
    current: bool = False  # on the patient's active medication list
    focused: bool = False


@dataclass
class ResultRow:
    gene: str
    diplotype: str | None
    phenotype: str
    activity_score: str | None
    allele_status: list[str]
    effective: str | None
    observation: str | None
    lab: str | None
    status: str
    indeterminate: bool
    reason: str | None
    method: str
    notes: list[str]
    conflicts_with: list[str]
    scale: Scale
    drugs: list[DrugLine] = field(default_factory=list)
    focused: bool = False
    # phenoconversion by current medicines (issue 13): shown beside the genotype phenotype
    effective_phenotype: str | None = None
    effective_activity_score: str | None = None
    converted_by: str | None = None  # "paroxetine (strong CYP2D6 inhibitor)"
    conversion_note: str | None = None  # noted-only perpetrators or why no conversion was possible

    @property
    def anchor(self) -> str:
        return "gene-" + re.sub(r"[^A-Za-z0-9]+", "-", self.gene)


@dataclass
class CurrentMedication:
    name: str
    drugs: list[str]
    lines: list[DrugLine]
    affected: bool  # a result changes how this drug should be prescribed
    status: str = ""  # when not affected: why ("no change needed ...", "no result on file for ...")


@dataclass
class ResultProblem:
    """A result that could not be read, conflicts with another, or gave no phenotype."""

    kind: str  # "unreadable" | "conflict" | "indeterminate"
    gene: str | None
    observation: str | None
    text: str


@dataclass
class Focus:
    drug: str
    rule: str | None
    lines: list[DrugLine]
    genes: list[str]  # genes CPIC links to the drug (from the knowledge base), when known
    message: str


@dataclass
class Banner:
    name: str
    birth_date: str | None
    gender: str | None
    identifier: str | None


@dataclass
class ProfileView:
    patient_id: str
    rows: list[ResultRow]
    medications: list[CurrentMedication]
    other_medication_count: int
    problems: list[ResultProblem]
    focus: Focus | None
    banner: Banner | None
    knowledge_version: str
    observations_available: bool
    medications_available: bool
    notes: list[str]


# ---------------------------------------------------------------------------------------- helpers


def _date(value: datetime | None) -> str | None:
    return value.date().isoformat() if isinstance(value, datetime) else None


def _index_observations(observations: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Observation/DiagnosticReport by "Type/id" (contained resources included, with their parent)."""
    out: dict[str, dict[str, Any]] = {}
    for res in observations:
        if not isinstance(res, dict):
            continue
        rid = res.get("id")
        rtype = res.get("resourceType")
        if rid and rtype:
            out[f"{rtype}/{rid}"] = res
        for c in res.get("contained") or []:
            if isinstance(c, dict) and c.get("id"):
                out.setdefault(f"{c.get('resourceType')}/{c['id']}", {**c, "_parent": res})
                out.setdefault(f"#{c['id']}", {**c, "_parent": res})
    return out


def _performer(res: dict[str, Any] | None) -> str | None:
    while res:
        for p in res.get("performer") or []:
            if isinstance(p, dict) and isinstance(p.get("display"), str):
                return p["display"]
        res = res.get("_parent")
    return None


def _line(rec: Recommendation, *, current: set[str], focus_drug: str | None) -> DrugLine:
    return DrugLine(
        drug=rec.drug.name,
        rxnorm=rec.drug.rxnorm,
        summary=rec.summary,
        action=str(rec.action),
        action_label=ACTION_LABELS.get(rec.action, str(rec.action)),
        changes_prescribing=rec.action not in _NO_CHANGE,
        strength=rec.strength,
        indicator=rec.indicator,
        guideline_id=rec.guideline_id,
        guideline_name=rec.guideline_name,
        guideline_url=rec.guideline_url,
        rule=rec.rule_id if rec.rule_id.startswith(rec.guideline_id + "/") else f"{rec.guideline_id}/{rec.rule_id}",
        rule_id=rec.rule_id,
        genes=[g.gene for g in rec.genes],
        notes=list(rec.notes),
        alternatives=[a.name for a in rec.alternatives],
        current=rec.drug.name in current,
        focused=focus_drug is not None and rec.drug.name == focus_drug,
    )


def _line_sort_key(line: DrugLine) -> tuple[int, int, int, str]:
    return (not line.focused, not line.current, _ACTION_ORDER.get(line.action, 99), line.drug)


def _med_name(res: dict[str, Any]) -> str:
    cc = res.get("medicationCodeableConcept")
    if isinstance(cc, dict):
        if isinstance(cc.get("text"), str) and cc["text"].strip():
            return cc["text"].strip()
        for c in cc.get("coding") or []:
            if isinstance(c, dict) and isinstance(c.get("display"), str):
                return c["display"]
    ref = res.get("medicationReference")
    if isinstance(ref, dict) and isinstance(ref.get("display"), str):
        return ref["display"]
    return "Unnamed medication"


def banner_from_patient(resource: dict[str, Any] | None) -> Banner | None:
    """Name, birth date, gender and MRN from a FHIR Patient (None when there is no resource)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
        return None
    names = [n for n in resource.get("name") or [] if isinstance(n, dict)]
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    text = chosen.get("text") if isinstance(chosen.get("text"), str) else None
    if not text:
        given = " ".join(g for g in chosen.get("given") or [] if isinstance(g, str))
        family = chosen.get("family") if isinstance(chosen.get("family"), str) else ""
        text = " ".join(p for p in (given, family) if p) or "Name not recorded"
    ident = None
    for i in resource.get("identifier") or []:
        if not isinstance(i, dict):
            continue
        codes = [c.get("code") for c in ((i.get("type") or {}).get("coding") or []) if isinstance(c, dict)]
        if "MR" in codes and isinstance(i.get("value"), str):
            ident = i["value"]
            break
    return Banner(
        name=text,
        birth_date=resource.get("birthDate") if isinstance(resource.get("birthDate"), str) else None,
        gender=resource.get("gender") if isinstance(resource.get("gender"), str) else None,
        identifier=ident,
    )


# ------------------------------------------------------------------------------------------- main


def build_view(
    patient: PatientData,
    profile: GenomicProfile,
    recommendations: list[Recommendation],
    *,
    knowledge_version: str = "",
    med_matcher: MedMatcher | None = None,
    gene_defs: dict[str, Any] | None = None,
    drug_genes: Callable[[str], list[str]] | None = None,
    focus_drug: str | None = None,
    focus_rule: str | None = None,
    patient_resource: dict[str, Any] | None = None,
    show_banner: bool = False,
    conversions: dict[str, Any] | None = None,
) -> ProfileView:
    """Assemble the page: results with their drugs, current medications, problems and the focus."""
    focus_drug = focus_drug.strip().lower() if focus_drug else None
    obs_index = _index_observations(patient.observations)

    # current medications -> CPIC drugs
    meds: list[tuple[str, list[DrugRef]]] = []
    for res in patient.medications:
        refs = med_matcher(res) if med_matcher else []
        meds.append((_med_name(res), refs))
    current = {r.name for _, refs in meds for r in refs}

    recs_by_gene: dict[str, list[Recommendation]] = {}
    for rec in recommendations:
        for g in {e.gene for e in rec.genes}:
            recs_by_gene.setdefault(g, []).append(rec)

    rows: list[ResultRow] = []
    problems: list[ResultProblem] = []
    for gene in sorted(profile.genes):
        res: GeneResult = profile.genes[gene]
        call = res.call
        phenotype = call.phenotype if call else (res.reported_phenotype or "Not interpreted")
        indeterminate = call is None or call.phenotype.lower().startswith("indeterminate")
        lines = sorted(
            (_line(r, current=current, focus_drug=focus_drug) for r in recs_by_gene.get(gene, [])),
            key=_line_sort_key,
        )
        row = ResultRow(
            gene=gene,
            diplotype=(call.diplotype if call and call.diplotype else res.diplotype),
            phenotype=phenotype,
            activity_score=call.activity_score if call else None,
            allele_status=list(call.allele_status) if call else [],
            effective=_date(res.effective),
            observation=res.observation,
            lab=_performer(obs_index.get(res.observation or "")),
            status=res.status,
            indeterminate=indeterminate,
            reason=(call.reason if call else "the result has not been interpreted"),
            method=call.method if call else "",
            notes=list(res.notes),
            conflicts_with=list(res.conflicts_with),
            scale=scale_for(gene, phenotype, call.activity_score if call else None, (gene_defs or {}).get(gene)),
            drugs=lines,
            focused=any(line.focused for line in lines),
        )
        _apply_conversion(row, (conversions or {}).get(gene))
        rows.append(row)
        if res.conflicts_with:
            problems.append(
                ResultProblem(
                    "conflict",
                    gene,
                    res.observation,
                    f"{gene} result conflicts with {', '.join(res.conflicts_with)}"
                    + (f": {'; '.join(res.notes)}" if res.notes else ""),
                )
            )
        if indeterminate:
            problems.append(
                ResultProblem(
                    "indeterminate",
                    gene,
                    res.observation,
                    f"{gene} {row.diplotype or ''}".strip()
                    + f": no phenotype could be assigned ({row.reason or 'reason not given'})",
                )
            )
    for u in profile.unreadable:
        problems.append(ResultProblem("unreadable", u.gene, u.observation, u.reason + (f" ({u.text})" if u.text else "")))

    # medications: CPIC drugs first (affected first), the rest only counted
    all_lines = [line for row in rows for line in row.drugs]
    med_views: list[CurrentMedication] = []
    other = 0
    for name, refs in meds:
        if not refs:
            other += 1
            continue
        drug_names = [r.name for r in refs]
        lines = _unique_lines(line for line in all_lines if line.drug in drug_names)
        affected = any(x.changes_prescribing for x in lines)
        status = ""
        if not affected:
            genes = [g for d in drug_names for g in (drug_genes(d) if drug_genes else [])]
            missing = [g for g in dict.fromkeys(genes) if g not in profile.genes]
            if missing:
                status = f"no result on file for {', '.join(missing)}"
            elif genes:
                status = "no change needed with the results on file"
            else:
                status = "no PGx change indicated"
        med_views.append(CurrentMedication(name, drug_names, lines, affected, status))
    med_views.sort(key=lambda m: (not m.affected, m.name.lower()))

    focus = None
    if focus_drug:
        flines = _unique_lines(line for line in all_lines if line.focused)
        genes = drug_genes(focus_drug) if drug_genes else []
        if flines:
            msg = ""
            if focus_rule and all(focus_rule not in (line.rule, line.rule_id) for line in flines):
                msg = (
                    f"The card was based on rule {focus_rule}; with the results on file now, "
                    f"{', '.join(line.rule for line in flines)} applies."
                )
        elif genes:
            have = [g for g in genes if g in profile.genes]
            missing = [g for g in genes if g not in profile.genes]
            msg = f"No recommendation for {focus_drug} from the results on file."
            if missing:
                msg += f" No result on file for {', '.join(missing)}."
            if have:
                msg += f" Results on file: {', '.join(have)}."
        else:
            msg = f"{focus_drug} has no CPIC pharmacogenomic guideline in this service's knowledge base."
        focus = Focus(focus_drug, focus_rule, flines, genes, msg)

    notes = list(patient.notes)
    return ProfileView(
        patient_id=patient.patient_id,
        rows=rows,
        medications=med_views,
        other_medication_count=other,
        problems=problems,
        focus=focus,
        banner=banner_from_patient(patient_resource) if show_banner else None,
        knowledge_version=knowledge_version,
        observations_available=patient.observations_available,
        medications_available=True,
        notes=notes,
    )


def _apply_conversion(row: ResultRow, gc: Any) -> None:
    """Genotype phenotype and effective phenotype side by side, with the causing medicine."""
    if gc is None:
        return
    if gc.converted:
        row.effective_phenotype = gc.effective_phenotype
        row.effective_activity_score = gc.effective_as
        row.converted_by = "; ".join(
            f"{e.name} ({e.strength.replace('_', ' ')} of {gc.gene})" for e in gc.applied)
    noted = [e for e in gc.noted if e not in gc.applied]
    if gc.problem:
        row.conversion_note = f"{', '.join(e.name for e in gc.exposures)} taken; not converted: {gc.problem}"
    elif noted:
        row.conversion_note = "noted, not converted: " + ", ".join(
            f"{e.name} ({e.strength.replace('_', ' ')})" for e in noted)


def _unique_lines(lines: Iterable[DrugLine]) -> list[DrugLine]:
    seen: dict[tuple[str, str], DrugLine] = {}
    for line in lines:
        seen.setdefault((line.drug, line.rule), line)
    return sorted(seen.values(), key=_line_sort_key)
