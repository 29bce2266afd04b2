"""A result we cannot read never silences the alert (issue 11).

When one of a drug's genes has a result on file that cannot be interpreted (an unreadable Observation,
an allele missing from our tables, an Indeterminate phenotype), the order hooks must show a card at least
as strong as the drug's pre-test card, saying what could not be read and what to do, with the raw value
in the evidence. The policy (which drugs are high-risk and why, which follow-up test to order per gene)
is data: ``cards/unreadable.yaml``. :func:`guard` is called by the engine for every order recommendation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.cdshooks.markdown import md_text
from service.pgx import yamlfile
from service.pgx.guidelines import INDETERMINATE, Guideline
from service.pgx.models import Action, DrugRef, FollowUpTest, GenomicProfile, Recommendation, UnreadableEvidence
from service.pgx.policy import EnginePolicy, as_policy

POLICY_FILE = "unreadable.yaml"
_RANK = {"info": 0, "warning": 1, "critical": 2}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HighRiskDrug(_Strict):
    indicator: Literal["info", "warning", "critical"] = "warning"
    guideline: str
    reason: str = Field(min_length=10)


class FollowUp(_Strict):
    test: str = Field(min_length=3)
    loinc: str | None = Field(default=None, pattern=r"^\d{1,7}-\d$")
    why: str = Field(min_length=10)
    citation: str = Field(min_length=5)
    phenotypes: list[str] = Field(default_factory=lambda: [INDETERMINATE])


class UnreadablePolicy(_Strict):
    drugs: dict[str, HighRiskDrug] = Field(default_factory=dict)
    follow_up: dict[str, FollowUp] = Field(default_factory=dict)


def load_policy(knowledge_dir: Path) -> tuple[UnreadablePolicy, list[str]]:
    """The policy file (an empty policy when absent) and its problems as messages."""
    path = Path(knowledge_dir) / POLICY_FILE
    if not path.is_file():
        return UnreadablePolicy(), []
    try:
        data = yamlfile.safe_load(path.read_text(encoding="utf-8")) or {}
        return UnreadablePolicy.model_validate(data), []
    except (yaml.YAMLError, ValidationError) as exc:
        return UnreadablePolicy(), [f"{POLICY_FILE}: {exc}"]


def check_policy(policy: UnreadablePolicy, guidelines: dict[str, Guideline], genes: set[str]) -> list[str]:
    """Cross-file checks: every drug is covered by the guideline named, every follow-up gene exists."""
    out: list[str] = []
    for name, d in policy.drugs.items():
        g = guidelines.get(d.guideline)
        if g is None:
            out.append(f"{POLICY_FILE}: drug {name}: guideline {d.guideline!r} does not exist")
        elif g.drug(name) is None:
            out.append(f"{POLICY_FILE}: drug {name} is not covered by guideline {d.guideline!r}")
    for gene in policy.follow_up:
        if gene not in genes:
            out.append(f"{POLICY_FILE}: follow_up gene {gene!r} has no gene file")
    return out


# --------------------------------------------------------------------------------------------------


def problems_for(genes: list[str], profile: GenomicProfile) -> list[UnreadableEvidence]:
    """The genes among ``genes`` whose result is on file but cannot be interpreted, with the raw value."""
    out: list[UnreadableEvidence] = []
    for gene in genes:
        r = profile.get(gene)
        if r is None:
            for u in profile.unreadable:
                if u.gene == gene:
                    out.append(UnreadableEvidence(gene=gene, value=u.text, reason=u.reason, observation=u.observation))
                    break
            continue
        call = r.call
        if call is None or call.phenotype == INDETERMINATE:
            raw = r.diplotype or r.reported_phenotype
            reason = (call.reason if call else None) or f"the {gene} result could not be interpreted"
            known = [f"{a.allele} ({a.function or 'function not recorded'})" for a in (call.alleles if call else [])]
            out.append(UnreadableEvidence(gene=gene, value=raw, reason=reason, observation=r.observation,
                                          phenotype=INDETERMINATE, recognised=known))
    return out


def follow_up_tests(policy: UnreadablePolicy, profile: GenomicProfile, genes: list[str]) -> list[FollowUpTest]:
    """The test to order for each gene whose result (or its absence) calls for one: the gene's listed
    test when its phenotype is one the policy names (or it is unreadable), else re-genotyping."""
    out: list[FollowUpTest] = []
    for gene in genes:
        fu = policy.follow_up.get(gene)
        r = profile.get(gene)
        phenotype = r.call.phenotype if r is not None and r.call is not None else (INDETERMINATE if r else None)
        unread = r is None and any(u.gene == gene for u in profile.unreadable)
        if fu is not None and (unread or (phenotype is not None and phenotype in fu.phenotypes)):
            out.append(FollowUpTest(gene=gene, text=fu.test, loinc=fu.loinc, why=fu.why, citation=fu.citation))
        elif unread or phenotype == INDETERMINATE:
            out.append(FollowUpTest(gene=gene, text=f"{gene} genotyping (repeat test)",
                                    why="No phenotypic test is named for this gene; repeat the genotyping "
                                        "(no LOINC code is given for genotyping panels)."))
    return out


def required_indicator(policy: UnreadablePolicy, g: Guideline, drug: DrugRef, site: EnginePolicy | Any) -> str:
    """At least the drug's pre-test level (site setting or guideline file), at least info, and the policy's
    level for high-risk drugs."""
    d = g.drug(drug.name)
    pretest = as_policy(site).pretest_cards.get(drug.name) or (d.pretest if d else "off")
    level = pretest if pretest in _RANK else "info"
    hr = policy.drugs.get(drug.name)
    if hr is not None and _RANK[hr.indicator] > _RANK[level]:
        level = hr.indicator
    return level


def guard(policy: UnreadablePolicy, g: Guideline, drug: DrugRef, profile: GenomicProfile,
          rec: Recommendation | None, site: EnginePolicy | Any) -> Recommendation | None:
    """Return ``rec``, or a stronger card when a result for the drug's genes cannot be interpreted."""
    if rec is None:
        return None
    genes = g.drug_genes(drug.name)
    problems = problems_for(genes, profile)
    tests = follow_up_tests(policy, profile, genes)
    if not problems:
        update: dict[str, object] = {}
        if rec.action == Action.test_before_prescribing and tests:  # e.g. G6PD Variable: enzyme activity
            update["follow_up"] = tests
        also = _also_unreadable(genes, profile)
        if rec.action == Action.test_before_prescribing and all(r.phenotype == "No Result" for r in rec.genes):
            also += _gene_unknown(genes, profile)  # pre-test card, but an unattributed result is on file
        if also:  # a readable result was used, but another one for the gene could not be read: say so
            update["notes"] = list(dict.fromkeys([*rec.notes, *also]))
        return rec.model_copy(update=update) if update else rec
    site = as_policy(site)
    level = required_indicator(policy, g, drug, site)
    what = "; ".join(_describe(p) for p in problems)  # plain text (notes are escaped where they are rendered)
    todo = _todo(tests)
    note = (f"Could not be interpreted: {what}. Review the laboratory report, confirm the result with the "
            f"laboratory, or {todo}.")
    update: dict[str, object] = {"unreadable": problems,
                                 "notes": list(dict.fromkeys([*rec.notes, note])),
                                 "follow_up": tests if rec.action == Action.test_before_prescribing else rec.follow_up}
    if rec.interruptive and _RANK.get(rec.indicator, 0) >= _RANK[level]:
        return rec.model_copy(update=update)
    if rec.interruptive:  # a rule's card, weaker than this drug needs when a result cannot be read
        update["indicator"] = level
        return rec.model_copy(update=update)
    rule_id = f"{g.id}/unreadable"
    override = site.indicator_overrides.get(rule_id)
    if override in _RANK and _RANK[override] > _RANK[level]:
        level = override
    genes_txt = "/".join(dict.fromkeys(p.gene for p in problems))
    hr = policy.drugs.get(drug.name)
    known = "; ".join(f"{p.gene}: {', '.join(p.recognised)}" for p in problems if p.recognised)
    # the detail is markdown: the raw lab values in it must stay literal (`*2/*2` is not emphasis)
    what_md, known_md, todo_md = md_text(what), md_text(known), md_text(todo)
    detail = (
        f"A {genes_txt} result is on file but **could not be interpreted**, so the {g.name} could not be "
        f"applied to this {drug.name} order. {what_md[0].upper() + what_md[1:]}."
        + (f" Recognised in it: {known_md}; a partial result gives no phenotype and must not be read as normal."
           if known else "") + "\n\n"
        f"**What to do:** review the laboratory report; confirm the result with the laboratory; "
        f"if it cannot be confirmed, {todo_md}. Until then, treat the {genes_txt} status as unknown."
        + (f"\n\n**Why this matters for {drug.name}:** {md_text(hr.reason)}" if hr else "")
    )
    update["notes"] = list(rec.notes)  # the detail already says what could not be read and what to do
    if rec.rule_id != f"{g.id}/unavailable":  # the guideline's own answer for this result, kept visible
        update["notes"] = [*rec.notes, f"Guideline rule {rec.rule_id}: {rec.summary}"]
    return rec.model_copy(update={
        **update,
        "rule_id": rule_id,
        "action": Action.test_before_prescribing,
        "strength": "n/a",
        "indicator": level,
        "summary": f"{genes_txt} result on file could not be interpreted: check it before {drug.name}"[:139],
        "detail": detail,
        "follow_up": tests,
        "alternatives": [],
        "dose": None,
        "interruptive": True,
    })


def _also_unreadable(genes: list[str], profile: GenomicProfile) -> list[str]:
    out = []
    for gene in genes:
        r = profile.get(gene)
        if r is None:
            continue
        for u in profile.unreadable:
            if u.gene == gene:
                value = f" '{u.text}'" if u.text else ""
                out.append(f"Another {gene} result{value} ({u.observation or 'Observation'}) could not be read "
                           f"({u.reason}); the readable result {r.observation or ''} was used. Check which is current.")
    return out


def _gene_unknown(genes: list[str], profile: GenomicProfile) -> list[str]:
    return [f"A genomic result on file could not be read and its gene is not known "
            f"({u.observation or 'Observation'}{': ' + repr(u.text) if u.text else ''}; {u.reason}): check whether it "
            f"is a {' or '.join(genes)} result before relying on this card." for u in profile.unreadable if not u.gene]


def _describe(p: UnreadableEvidence) -> str:
    value = f" '{p.value}'" if p.value else ""
    where = f" ({p.observation})" if p.observation else ""
    return f"{p.gene}{value}{where}: {p.reason}"


def _todo(tests: list[FollowUpTest]) -> str:
    if not tests:
        return "repeat the test"
    parts = []
    for t in tests:
        parts.append(f"order {t.text}" + (f" ({t.why})" if t.loinc else ""))
    return "; ".join(parts)
