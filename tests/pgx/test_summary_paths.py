"""The patient-view summary's shortcuts give the answer of the plain loop (issue 15, screening throughput).

summarize_profile does not build the recommendations it drops (standard dosing, no recommendation) unless
phenoconversion may change them, shares one profile's lookup keys between guidelines, and _match answers
each distinct (rules, lookup keys) once per knowledge. The plain loop below is the summary as it was before
those shortcuts: every guideline x drug evaluated in full, then filtered. Both must give the same
recommendations, field for field, for varied synthetic patients (every result form of the synthetic export,
conflicts, unreadable and phenotype-only results, HLA, phenoconverting co-medication, populations) and for
site policies that switch rules off or override indicators.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from service.config import REPO_ROOT
from service.evaluate import patient_data, phenotype
from service.fhir.genomics import build_profile
from service.pgx import engine
from service.pgx import phenoconversion as pcv
from service.pgx.context import as_context
from service.pgx.knowledge import Knowledge, load_knowledge
from service.pgx.models import Action
from service.pgx.policy import EnginePolicy
from service.screen import local, source
from tests.screen.synth import write_export

TODAY = date(2026, 12, 3)


def plain_summary(k: Knowledge, profile, patient, policy: EnginePolicy, today: date) -> list:
    """summarize_profile without its shortcuts: every guideline x drug built, then filtered."""
    patient = as_context(patient)
    seen: set[tuple[str, str]] = set()
    out = []
    pc = pcv.convert(k, profile, pcv.find_exposures(k, patient, None, (), policy, today))
    for gene in profile.genes:
        for g in k.by_gene.get(gene, []):
            for d in g.drugs:
                if (g.id, d.name) in seen:
                    continue
                seen.add((g.id, d.name))
                ref = engine.DrugRef(name=d.name, rxnorm=d.rxnorm)
                rec = engine._evaluate(k, g, ref, profile, patient, None, policy, today, pretest=False)
                rec = pcv.adjust(k, pc, g, ref, rec, lambda p, g=g, ref=ref: engine._evaluate(
                    k, g, ref, p, patient, None, policy, today, pretest=False))
                if rec is not None and rec.action not in engine._NOT_ACTIONABLE:
                    out.append(rec)
    out.sort(key=engine.severity_key)
    return out


@pytest.fixture(scope="module")
def k() -> Knowledge:
    return load_knowledge(REPO_ROOT / "cards")


@pytest.fixture(scope="module")
def patients(tmp_path_factory, k) -> list:
    d: Path = tmp_path_factory.mktemp("summary-paths")
    write_export(d / "export", 400, seed=5, tested=0.9, shards=1, template_share=0.3)
    source.partition(source.tasks(source.input_files(d / "export")), d / "p", 2)
    groups: dict = {}
    for b in range(2):
        groups.update(source.read_bucket([d / "p"], b))
    out = []
    for pid in sorted(groups):
        data = patient_data(pid, local.canonical_order(groups[pid]))
        profile = phenotype(k, build_profile(data), data.sex)
        if profile.genes:
            out.append((data, profile))
    return out


def _policies(k: Knowledge) -> list[EnginePolicy]:
    # switch off / re-grade a share of the real rules (every third, every fifth), so the shortcuts meet them
    rule_ids = sorted({cr.full_id for rules in k.rules.values() for cr in rules})
    return [
        EnginePolicy(),
        EnginePolicy(disabled_rules=frozenset(rule_ids[::3])),
        EnginePolicy(indicator_overrides={r: "critical" for r in rule_ids[1::5]}),
    ]


def test_summary_equals_the_plain_loop(k, patients):
    assert len(patients) > 200
    phenoconverted = 0
    kept = 0
    # the policy with switched-off rules first, then the others: what one site's switched-off rules drop is
    # not remembered for another site
    policies = _policies(k)
    for policy in [policies[1], *policies]:
        for data, profile in patients:
            got = engine.summarize_profile(k, profile, data, policy=policy, today=TODAY)
            want = plain_summary(k, profile, data, policy, TODAY)
            assert [r.model_dump() for r in got] == [r.model_dump() for r in want], data.patient_id
            kept += len(got)
            phenoconverted += any("phenoconverted" in (g.derivation or "") for r in got for g in r.genes)
    assert kept > 500 and phenoconverted > 0  # the export exercised what the shortcuts skip and what they keep


def test_match_memo_follows_replaced_rules(k, patients):
    """A rules list replaced in the knowledge (as a test or a reload of one guideline would) is matched afresh."""
    summaries = ((d, p, engine.summarize_profile(k, p, d, today=TODAY)) for d, p in patients)
    data, profile, before = next((d, p, s) for d, p, s in summaries
                                 if any(r.guideline_id == "clopidogrel-cyp2c19" for r in s))
    shown = {r.rule_id for r in before if r.guideline_id == "clopidogrel-cyp2c19"}
    clop = [key for key in k.rules if key[0] == "clopidogrel-cyp2c19"]
    saved = {key: k.rules[key] for key in clop}
    try:
        for key in clop:  # the same guideline, population and drug: only the list differs
            k.rules[key] = [cr for cr in saved[key] if cr.full_id not in shown]
        assert all(k.rules[key] for key in clop)
        after = engine.summarize_profile(k, profile, data, today=TODAY)
        assert not shown & {r.rule_id for r in after}
    finally:
        k.rules.update(saved)
    assert engine.summarize_profile(k, profile, data, today=TODAY) == before


def test_summary_follows_a_replaced_rule_that_now_acts(k, patients):
    """The summary skips the drugs whose rules drop a result (remembered per result); a rules list replaced in
    the knowledge so that such a result now gets advice is read afresh, not skipped from memory."""
    data, profile = next((d, p) for d, p in patients if (r := p.genes.get("CYP2C19")) is not None
                         and r.call is not None and r.call.phenotype == "Normal Metabolizer")
    before = engine.summarize_profile(k, profile, data, today=TODAY)
    assert not any(r.drug.name == "citalopram" for r in before)  # standard dosing for a normal metabolizer
    keys = [key for key in k.rules if key[0] == "ssri-snri" and key[2] == "citalopram"]
    assert keys
    saved = {key: k.rules[key] for key in keys}
    try:
        for key in keys:
            k.rules[key] = [replace(cr, rule=cr.rule.model_copy(update={"action": Action.avoid}))
                            for cr in saved[key]]
        after = engine.summarize_profile(k, profile, data, today=TODAY)
        assert any(r.drug.name == "citalopram" and r.action == Action.avoid for r in after)
    finally:
        k.rules.update(saved)
    assert engine.summarize_profile(k, profile, data, today=TODAY) == before
