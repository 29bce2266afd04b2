"""Recommendation engine: lookup keys, populations, pre-test, Indeterminate, overrides, patient view.

Profiles are built by hand (GeneResult.call filled) so each test states exactly what the engine sees.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from service.config import REPO_ROOT, Settings
from service.fhir.models import DraftOrder, MedicationCode, PatientData
from service.pgx.engine import evaluate_order, summarize_profile
from service.pgx.knowledge import Knowledge, load_knowledge
from service.pgx.models import Action, GeneResult, GenomicProfile, PhenotypeCall, UnreadableResult

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
TODAY = date(2026, 6, 1)


@pytest.fixture(scope="module")
def k() -> Knowledge:
    return load_knowledge(REPO_ROOT / "cards")


@pytest.fixture
def settings() -> Settings:
    return Settings()


def result(gene: str, phenotype: str, diplotype: str | None = None, activity: str | None = None,
           statuses: list[str] | None = None, reason: str | None = None, **kw) -> GeneResult:
    call = PhenotypeCall(gene=gene, diplotype=diplotype, phenotype=phenotype, activity_score=activity,
                         allele_status=statuses or [], method=f"test call for {gene}", reason=reason)
    return GeneResult(gene=gene, diplotype=diplotype, call=call, observation=f"Observation/{gene.lower()}", **kw)


def profile(*results: GeneResult, unreadable: list[UnreadableResult] | None = None) -> GenomicProfile:
    return GenomicProfile(patient_id="p1", genes={r.gene: r for r in results}, unreadable=unreadable or [])


def order(code: str | None = None, text: str | None = None, reasons: list[tuple[str, str]] | None = None) -> DraftOrder:
    codes = [MedicationCode(system=RX, code=code, display=text)] if code else []
    return DraftOrder(id="draft-1", reference="MedicationRequest/draft-1", codes=codes, text=text,
                      reason_codes=[MedicationCode(system=s, code=c) for s, c in (reasons or [])])


def patient(**kw) -> PatientData:
    return PatientData(patient_id="p1", **kw)


def condition(system: str, code: str, status: str = "active") -> dict:
    return {"resourceType": "Condition", "clinicalStatus": {"coding": [{"code": status}]},
            "code": {"coding": [{"system": system, "code": code}]}}


def med(rxnorm: str, authored: str | None = None, status: str = "active") -> dict:
    m = {"resourceType": "MedicationRequest", "id": f"m{rxnorm}", "status": status,
         "medicationCodeableConcept": {"coding": [{"system": RX, "code": rxnorm}]}}
    if authored:
        m["authoredOn"] = authored
    return m


def run(k, prof, o, pat=None, settings=None):
    return evaluate_order(k, prof, o, pat or patient(), settings=settings or Settings(), today=TODAY)


# --------------------------------------------------------------------------------------------


def test_clopidogrel_pm_acs_is_avoid_with_alternatives_and_evidence(k):
    prof = profile(result("CYP2C19", "Poor Metabolizer", "*2/*2",
                          effective=None, notes=["preliminary result"]))
    pat = patient(conditions=[condition(ICD10, "I21.4")], birth_date=date(1960, 5, 1))
    recs = run(k, prof, order("32968", "clopidogrel 75 MG Oral Tablet"), pat)
    assert len(recs) == 1
    r = recs[0]
    assert r.rule_id == "clopidogrel-cyp2c19/acs-pci-pm-lpm"
    assert r.action == Action.avoid and r.strength == "Strong" and r.indicator == "critical"
    assert r.population == "Cardiovascular: acute coronary syndrome and/or PCI"
    assert r.population_note is None
    assert [a.name for a in r.alternatives] == ["prasugrel", "ticagrelor"]
    assert r.alternatives[0].rxnorm == "613391" and r.alternatives[0].recommended
    assert r.summary.startswith("CYP2C19 poor metabolizer: avoid clopidogrel")
    assert "{drug}" not in r.summary and "{drug}" not in r.detail
    ev = r.genes[0]
    assert (ev.gene, ev.diplotype, ev.phenotype, ev.observation) == ("CYP2C19", "*2/*2", "Poor Metabolizer", "Observation/cyp2c19")
    assert ev.derivation == "test call for CYP2C19"
    assert "CYP2C19: preliminary result" in r.notes
    assert r.order_ref == "MedicationRequest/draft-1"
    assert r.knowledge_version == k.version and r.interruptive
    assert r.guideline_url.startswith("https://cpicpgx.org/")


def test_clopidogrel_population_unknown_uses_primary_with_note(k):
    recs = run(k, profile(result("CYP2C19", "Intermediate Metabolizer", "*1/*2")), order("32968"))
    r = recs[0]
    assert r.rule_id == "clopidogrel-cyp2c19/acs-pci-im-lim"
    assert r.population_note and "could not be determined" in r.population_note
    assert r.population_note in r.notes


def test_clopidogrel_neurovascular_from_order_reason(k):
    o = order("32968", reasons=[(ICD10, "I63.9")])
    r = run(k, profile(result("CYP2C19", "Intermediate Metabolizer", "*1/*2")), o)[0]
    assert r.rule_id == "clopidogrel-cyp2c19/nvi-im-lim"
    assert r.action == Action.consider_alternative and r.strength == "Moderate"
    assert r.population == "Neurovascular: ischaemic stroke or TIA"


def test_resolved_condition_does_not_select_population(k):
    pat = patient(conditions=[condition(ICD10, "I63.9", status="resolved")])
    r = run(k, profile(result("CYP2C19", "Intermediate Metabolizer", "*1/*2")), order("32968"), pat)[0]
    assert r.rule_id == "clopidogrel-cyp2c19/acs-pci-im-lim"
    assert r.population_note is not None


def test_clopidogrel_normal_is_standard_dosing_not_interruptive(k):
    r = run(k, profile(result("CYP2C19", "Normal Metabolizer", "*1/*1")), order("32968"))[0]
    assert r.action == Action.standard_dosing and not r.interruptive and r.indicator == "info"


def test_voriconazole_population_by_age(k):
    prof = profile(result("CYP2C19", "Rapid Metabolizer", "*1/*17"))
    adult = run(k, prof, order("121243"), patient(birth_date=date(1980, 1, 1)))[0]
    child = run(k, prof, order("121243"), patient(birth_date=date(2015, 1, 1)))[0]
    assert adult.rule_id.startswith("voriconazole-cyp2c19/adults-")
    assert adult.action == Action.consider_alternative and adult.population_note is None
    assert child.rule_id.startswith("voriconazole-cyp2c19/pediatrics-")
    assert child.action == Action.adjust_dose_tdm


@pytest.mark.parametrize("score,rule,action,strength", [
    ("1.0", "tamoxifen-cyp2d6/as1.0", Action.consider_alternative, "Optional"),
    ("1.25", "tamoxifen-cyp2d6/asge1.25", Action.standard_dosing, "Strong"),
    ("0.5", "tamoxifen-cyp2d6/as0.25-0.75", Action.consider_alternative, "Moderate"),
    ("0.0", "tamoxifen-cyp2d6/as0.0", Action.consider_alternative, "Strong"),
    ("≥4.0", "tamoxifen-cyp2d6/asge1.25", Action.standard_dosing, "Strong"),
])
def test_tamoxifen_activity_score_boundaries(k, score, rule, action, strength):
    pheno = {"1.0": "Intermediate Metabolizer", "1.25": "Normal Metabolizer", "0.5": "Intermediate Metabolizer",
             "0.0": "Poor Metabolizer", "≥4.0": "Ultrarapid Metabolizer"}[score]
    r = run(k, profile(result("CYP2D6", pheno, "*1/*4", activity=score)), order("10324"))[0]
    assert (r.rule_id, r.action, r.strength) == (rule, action, strength)
    assert r.genes[0].activityScore == score


def test_pretest_when_no_result(k):
    recs = run(k, profile(), order("32968", "clopidogrel"))
    assert len(recs) == 1
    r = recs[0]
    assert r.action == Action.test_before_prescribing
    assert r.summary == "No CYP2C19 result on file: consider testing before clopidogrel"
    assert r.indicator == "info" and r.rule_id == "clopidogrel-cyp2c19/pretest"
    assert [g.phenotype for g in r.genes] == ["No Result"]


def test_pretest_settings_override_and_off(k):
    s = Settings(pretest_cards={"clopidogrel": "warning", "omeprazole": "info", "tamoxifen": "off"})
    assert run(k, profile(), order("32968"), settings=s)[0].indicator == "warning"
    assert run(k, profile(), order("10324"), settings=s) == []
    assert run(k, profile(), order("7646"), settings=s)[0].action == Action.test_before_prescribing
    assert run(k, profile(), order("7646")) == []  # PPIs: pre-test off in the file


def test_pretest_multi_gene_lists_both_genes(k):
    r = run(k, profile(), order("704"))[0]
    assert r.summary == "No CYP2D6 or CYP2C19 result on file: consider testing before amitriptyline"


def test_unreadable_result_is_not_a_pretest(k):
    prof = profile(unreadable=[UnreadableResult(gene="CYP2C19", reason="unparseable value")])
    r = run(k, prof, order("32968"))[0]
    # issue 11: never silent: an interruptive card at least as strong as the pre-test card (clopidogrel is
    # listed as high-risk in cards/unreadable.yaml: warning), saying what could not be read
    assert r.rule_id == "clopidogrel-cyp2c19/unreadable" and r.interruptive and r.indicator == "warning"
    assert "could not be interpreted" in r.detail and "unparseable value" in r.detail
    assert "No CYP2C19 result on file" not in r.summary


def test_observations_unavailable_is_not_a_pretest(k):
    r = run(k, profile(), order("32968"), patient(observations_available=False))[0]
    assert r.action == Action.no_recommendation and "could not be retrieved" in r.detail


def test_indicator_override_and_disabled_rule(k):
    prof = profile(result("CYP2C19", "Poor Metabolizer", "*2/*2"))
    s = Settings(indicator_overrides={"clopidogrel-cyp2c19/acs-pci-pm-lpm": "warning"})
    assert run(k, prof, order("32968"), settings=s)[0].indicator == "warning"
    s2 = Settings(disabled_rules=["clopidogrel-cyp2c19/acs-pci-pm-lpm"])
    assert run(k, prof, order("32968"), settings=s2) == []


def test_indeterminate_uses_explicit_rule_and_reason(k):
    prof = profile(result("CYP2C19", "Indeterminate", "*1/*12", reason="*12 has uncertain function"))
    r = run(k, prof, order("32968"))[0]
    # the guideline's Indeterminate rule matched; the card is raised to the unreadable-result card and
    # names that rule
    assert r.rule_id == "clopidogrel-cyp2c19/unreadable" and r.interruptive
    assert any(n.startswith("Guideline rule clopidogrel-cyp2c19/acs-pci-ind") for n in r.notes)
    assert "CYP2C19 result on file could not be interpreted" in r.summary
    plain = r.detail.replace("\\", "")  # the detail is markdown: lab values in it are escaped
    assert "*12 has uncertain function" in plain and "*1/*12" in plain and "\\*1/\\*12" in r.detail
    assert any("*12 has uncertain function" in n for n in r.notes)


def test_disabling_the_indeterminate_rule_does_not_silence_the_result(k):
    """A site may switch a guideline rule off; the Indeterminate rule's card is then still raised to the
    could-not-be-interpreted card (a result we cannot read never silences the alert)."""
    prof = profile(result("CYP2C19", "Indeterminate", "*1/*12", reason="*12 has uncertain function"))
    s = Settings(disabled_rules=["clopidogrel-cyp2c19/acs-pci-ind"])
    recs = run(k, prof, order("32968"), settings=s)
    assert [r.rule_id for r in recs] == ["clopidogrel-cyp2c19/unreadable"] and recs[0].interruptive
    assert recs[0].indicator == "warning"
    # an ordinary rule switched off still gives nothing
    pm = profile(result("CYP2C19", "Poor Metabolizer", "*2/*2"))
    assert run(k, pm, order("32968"), settings=Settings(disabled_rules=["clopidogrel-cyp2c19/acs-pci-pm-lpm"])) == []


def test_indeterminate_without_rule_engine_fallback(k):
    prof = profile(result("CYP2B6", "Indeterminate", "*1/*99", reason="unknown allele *99"))
    # disable nothing; remove the rule from the index to simulate a file without an Indeterminate rule
    key = ("efavirenz-cyp2b6", None, "efavirenz")
    saved = k.rules[key]
    k.rules[key] = [cr for cr in saved if "Indeterminate" not in cr.rule.when["CYP2B6"]]
    try:
        r = run(k, prof, order("195085"))[0]
    finally:
        k.rules[key] = saved
    # the engine's fallback is raised to the unreadable-result card (efavirenz pre-test level: info)
    assert r.interruptive and r.indicator == "info" and r.rule_id == "efavirenz-cyp2b6/unreadable"
    assert any(n.startswith("Guideline rule efavirenz-cyp2b6/indeterminate") for n in r.notes)
    assert "could not be interpreted" in r.summary and "unknown allele \\*99" in r.detail


def test_phenotype_only_cyp2d6_result_matches_on_phenotype(k):
    prof = profile(result("CYP2D6", "Poor Metabolizer", None))
    r = run(k, prof, order("2670"))[0]
    assert r.rule_id == "opioids-cyp2d6/codeine.tramadol-as0.0" and r.action == Action.avoid
    assert any("no activity score reported" in n for n in r.notes)


def test_phenotype_only_im_tamoxifen_is_ambiguous_and_says_so(k):
    prof = profile(result("CYP2D6", "Intermediate Metabolizer", None))
    r = run(k, prof, order("10324"))[0]
    assert r.action == Action.consider_alternative
    assert r.rule_id == "tamoxifen-cyp2d6/as0.25-0.75"  # the more cautious (Moderate) of the two
    assert any("differs between activity scores" in n for n in r.notes)


def test_tca_two_gene_key(k):
    prof = profile(result("CYP2D6", "Normal Metabolizer", "*1/*1", activity="2.0"),
                   result("CYP2C19", "Poor Metabolizer", "*2/*2"))
    r = run(k, prof, order("704", "amitriptyline 25 MG Oral Tablet"))[0]
    assert r.action == Action.alternative_or_reduced_dose and r.strength == "Moderate"
    assert r.dose is not None and r.dose.factor == 0.5
    assert [g.gene for g in r.genes] == ["CYP2D6", "CYP2C19"]


def test_tca_missing_second_gene_uses_no_result_rule(k):
    prof = profile(result("CYP2D6", "Poor Metabolizer", "*4/*4", activity="0.0"))
    r = run(k, prof, order("704"))[0]
    assert r.action == Action.alternative_or_reduced_dose and r.strength == "Strong"
    assert [g.phenotype for g in r.genes] == ["Poor Metabolizer", "No Result"]


def test_nortriptyline_ignores_cyp2c19(k):
    prof = profile(result("CYP2C19", "Poor Metabolizer", "*2/*2"))
    r = run(k, prof, order("7531"))[0]
    assert r.action == Action.test_before_prescribing and "CYP2D6" in r.summary


def test_sertraline_two_genes_and_no_result(k):
    prof = profile(result("CYP2B6", "Poor Metabolizer", "*6/*6"))
    r = run(k, prof, order("36437"))[0]
    assert r.action == Action.alternative_or_reduced_dose and r.strength == "Optional"
    assert r.dose is not None and r.dose.factor == 0.75


def test_combination_product_gives_one_recommendation_per_drug(k):
    prof = profile(result("CYP2D6", "Ultrarapid Metabolizer", "*1/*1x2", activity="3.0"))
    recs = run(k, prof, order(text="Codeine / tramadol test combination"))
    assert {r.drug.name for r in recs} == {"codeine", "tramadol"}
    assert all(r.action == Action.avoid for r in recs)


def test_unrecognised_drug_gives_nothing(k):
    assert run(k, profile(result("CYP2C19", "Poor Metabolizer")), order("1191", "aspirin 81 MG")) == []


def test_summarize_profile_orders_by_severity(k, settings):
    prof = profile(result("CYP2C19", "Poor Metabolizer", "*2/*2"),
                   result("CYP2D6", "Normal Metabolizer", "*1/*1", activity="2.0"))
    recs = summarize_profile(k, prof, patient(), settings=settings, today=TODAY)
    names = [r.drug.name for r in recs]
    assert "clopidogrel" in names and "voriconazole" in names and "citalopram" in names
    assert all(r.action not in (Action.standard_dosing, Action.no_recommendation) for r in recs)
    ranks = {"critical": 0, "warning": 1, "info": 2}
    assert [ranks[r.indicator] for r in recs] == sorted(ranks[r.indicator] for r in recs)
    assert recs[0].indicator == "critical"
    assert "tamoxifen" not in names  # CYP2D6 normal: standard dosing, not shown
    assert all(r.order_ref is None for r in recs)


def test_evaluate_with_annotated_profile_from_gene_files(k):
    from service.pgx.phenotype import annotate_profile

    raw = GenomicProfile(patient_id="p1", genes={
        "CYP2D6": GeneResult(gene="CYP2D6", diplotype="*1/*41", observation="Observation/d6"),
    })
    prof = annotate_profile(k.genes, raw)
    r = run(k, prof, order("10324"))[0]
    assert r.genes[0].activityScore == "1.25"
    assert r.action == Action.standard_dosing


POP_GUIDELINE = """\
id: popdemo
name: population demo
url: https://cpicpgx.org/x/
publication: "Demo. PMID: 1"
version: "2020"
genes: [CYP2C19]
lookup: {CYP2C19: phenotype}
drugs:
  - {name: clopidogrel, rxnorm: "32968"}
populations:
  - {id: naive, label: Naive, primary: true}
  - id: long-term
    label: Long-term
    match: {drug_in_use: true, drug_in_use_days: 90}
  - id: statin-user
    label: On a statin
    match: {medications: ["36567"]}
rules:
  - {id: naive, population: naive, when: {CYP2C19: [any]}, action: avoid, strength: Strong, summary: naive, detail: d}
  - {id: long, population: long-term, when: {CYP2C19: [any]}, action: standard_dosing, strength: Optional, summary: long, detail: d}
  - {id: statin, population: statin-user, when: {CYP2C19: [any]}, action: reduce_dose, strength: Optional, summary: statin, detail: d}
"""


@pytest.fixture(scope="module")
def popk(tmp_path_factory):
    import shutil

    d = tmp_path_factory.mktemp("k") / "cards"
    shutil.copytree(REPO_ROOT / "cards" / "genes", d / "genes")
    (d / "guidelines").mkdir()
    (d / "guidelines" / "popdemo.yaml").write_text(POP_GUIDELINE)
    return load_knowledge(d)


@pytest.mark.parametrize("meds,rule,noted", [
    ([], "popdemo/naive", False),  # not in use: long-term excluded, naive is what is left
    ([med("32968", authored="2025-01-01")], "popdemo/long", False),  # in use > 90 days
    ([med("32968", authored="2026-05-01")], "popdemo/naive", False),  # in use < 90 days: not long-term
    ([med("32968")], "popdemo/naive", True),  # in use, start unknown: primary with note
    ([med("32968", authored="2025-01-01", status="stopped")], "popdemo/naive", False),
    ([med("36567")], "popdemo/statin", False),
])
def test_population_from_current_medications(popk, meds, rule, noted):
    prof = profile(result("CYP2C19", "Poor Metabolizer", "*2/*2"))
    r = run(popk, prof, order("32968"), patient(medications=meds))[0]
    assert r.rule_id == rule
    assert (r.population_note is not None) == noted
