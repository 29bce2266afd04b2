"""Phenoconversion (issue 13): co-medication turns the genotype phenotype into an effective one.

Engine level, against the real knowledge in cards/ (cards/phenoconversion.yaml). Profiles are built by hand
so each test states exactly what the engine sees. Every test here fails on the code before phenoconversion
(which ignored co-medication), except the ones that check that nothing changes (weak inhibitor, stopped
medicine, switched off, no genotype), which guard against over-reach.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml

from service.config import REPO_ROOT, Settings
from service.fhir.models import DraftOrder, MedicationCode, PatientData
from service.pgx import phenoconversion as pcv
from service.pgx.engine import evaluate_order, summarize_profile
from service.pgx.knowledge import Knowledge, check_knowledge, load_knowledge
from service.pgx.models import Action, GeneResult, GenomicProfile, PhenotypeCall

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
TODAY = date(2026, 6, 1)
PAROXETINE, FLUOXETINE, BUPROPION, DULOXETINE = "32937", "4493", "42347", "72625"
FLUCONAZOLE, FLUVOXAMINE, AMIODARONE, SERTRALINE, RIFAMPIN = "4450", "42355", "703", "36437", "9384"
CODEINE, TRAMADOL, TAMOXIFEN, NORTRIPTYLINE, AMITRIPTYLINE = "2670", "10689", "10324", "7531", "704"
CITALOPRAM, VORTIOXETINE, CLOPIDOGREL, VORICONAZOLE, OMEPRAZOLE, CELECOXIB = (
    "2556", "1455099", "32968", "121243", "7646", "140587")


@pytest.fixture(scope="module")
def k() -> Knowledge:
    return load_knowledge(REPO_ROOT / "cards")


def res(gene: str, phenotype: str, activity: str | None = None, diplotype: str = "*1/*1") -> GeneResult:
    call = PhenotypeCall(gene=gene, diplotype=diplotype, phenotype=phenotype, activity_score=activity, method="test call")
    return GeneResult(gene=gene, diplotype=diplotype, call=call, observation=f"Observation/{gene.lower()}")


D6_NM = res("CYP2D6", "Normal Metabolizer", "2.0")
D6_NM125 = res("CYP2D6", "Normal Metabolizer", "1.25", "*1/*41")
C19_NM = res("CYP2C19", "Normal Metabolizer")
C9_NM = res("CYP2C9", "Normal Metabolizer", "2.0")
C9_IM15 = res("CYP2C9", "Intermediate Metabolizer", "1.5", "*1/*2")


def profile(*results: GeneResult) -> GenomicProfile:
    return GenomicProfile(patient_id="p1", genes={r.gene: r for r in results})


def med(rxnorm: str | None, *, mid: str | None = None, status: str = "active", authored: str | None = "2026-01-05",
        text: str | None = None, end: str | None = None) -> dict:
    m: dict = {"resourceType": "MedicationRequest", "id": mid or f"m{rxnorm or text}", "status": status,
               "medicationCodeableConcept": {"coding": [{"system": RX, "code": rxnorm}] if rxnorm else [], "text": text}}
    if authored:
        m["authoredOn"] = authored
    if end:
        m["dispenseRequest"] = {"validityPeriod": {"start": "2025-01-01", "end": end}}
    return m


def order(rxnorm: str | None, oid: str = "draft-1", text: str | None = None) -> DraftOrder:
    codes = [MedicationCode(system=RX, code=rxnorm)] if rxnorm else []
    return DraftOrder(id=oid, reference=f"MedicationRequest/{oid}", codes=codes, text=text)


def run(k, prof, o, meds=(), settings=None, co_orders=()):
    pat = PatientData(patient_id="p1", medications=list(meds))
    return evaluate_order(k, prof, o, pat, settings=settings or Settings(), today=TODAY, co_orders=co_orders)


def one(recs, drug=None):
    recs = [r for r in recs if drug is None or r.drug.name == drug]
    assert len(recs) == 1, [r.rule_id for r in recs]
    return recs[0]


# ---- data ----------------------------------------------------------------------------------------


def test_knowledge_file_loads_with_citations(k):
    pk = k.phenoconversion
    assert pk is not None
    assert {"CYP2D6", "CYP2C19", "CYP2C9"} <= set(pk.rules)
    for p in pk.data.perpetrators:
        assert p.source in pk.data.sources
    strong_2d6 = {p.name for p in pk.data.perpetrators for e in p.effects if (e.gene, e.strength) == ("CYP2D6", "strong_inhibitor")}
    assert strong_2d6 == {"bupropion", "fluoxetine", "paroxetine", "quinidine", "terbinafine"}
    strong_2c19 = {p.name for p in pk.data.perpetrators for e in p.effects if (e.gene, e.strength) == ("CYP2C19", "strong_inhibitor")}
    assert strong_2c19 == {"fluconazole", "fluoxetine", "fluvoxamine", "ticlopidine"}


def test_knowledge_version_changes_with_the_file_and_bad_file_is_reported(tmp_path):
    d = tmp_path / "cards"
    shutil.copytree(REPO_ROOT / "cards", d)
    v1 = load_knowledge(d).version
    f = d / "phenoconversion.yaml"
    f.write_text(f.read_text() + "\n# reviewed\n")
    assert load_knowledge(d).version != v1
    data = yaml.safe_load(f.read_text())
    data["genes"][0]["convert"]["strong_inhibitor"] = {"phenotype": "Super Metabolizer"}
    data["perpetrators"][0]["source"] = "nowhere"
    f.write_text(yaml.safe_dump(data))
    msgs = [str(p) for p in check_knowledge(d)]
    assert any("Super Metabolizer" in m and "phenoconversion.yaml" in m for m in msgs)
    assert any("source 'nowhere' is not in sources" in m for m in msgs)


# ---- forward direction: CYP2D6 -------------------------------------------------------------------


def test_codeine_normal_metabolizer_on_paroxetine_is_poor_metabolizer_card(k):
    assert not one(run(k, profile(D6_NM), order(CODEINE))).interruptive  # genotype alone: no card
    r = one(run(k, profile(D6_NM), order(CODEINE), [med(PAROXETINE, mid="parox-1")]))
    assert r.rule_id == "opioids-cyp2d6/codeine.tramadol-as0.0" and r.action == Action.avoid and r.interruptive
    ev = r.genes[0]
    assert (ev.phenotype, ev.activityScore) == ("Poor Metabolizer", "0.0")  # effective values used for the lookup
    assert ev.phenoconversion == {
        "genotypePhenotype": "Normal Metabolizer", "genotypeActivityScore": "2.0",
        "effectivePhenotype": "Poor Metabolizer", "effectiveActivityScore": "0.0",
        "perpetrators": [{"name": "paroxetine", "rxnorm": PAROXETINE, "strength": "strong_inhibitor",
                          "medicationRequest": "MedicationRequest/parox-1"}],
    }
    # the card says both values, the medicine, its dates and that the advice holds while it is taken
    assert "Normal Metabolizer" in r.detail and "Poor Metabolizer" in r.detail and "paroxetine" in r.detail
    assert "2026-01-05" in r.detail and "while paroxetine is taken" in r.detail
    assert "paroxetine" in r.summary and len(r.summary) < 140
    assert any("Cicali" in n for n in r.notes)


@pytest.mark.parametrize("drug,perp,rule,action", [
    (TRAMADOL, BUPROPION, "opioids-cyp2d6/codeine.tramadol-as0.0", Action.avoid),
    (TRAMADOL, DULOXETINE, "opioids-cyp2d6/tramadol-as0.25-1.0", Action.standard_dosing_with_caution),
    (CODEINE, DULOXETINE, "opioids-cyp2d6/codeine-as0.25-1.0", Action.standard_dosing_with_caution),
    (TAMOXIFEN, PAROXETINE, "tamoxifen-cyp2d6/as0.0", Action.consider_alternative),
    (TAMOXIFEN, DULOXETINE, "tamoxifen-cyp2d6/as1.0", Action.consider_alternative),  # 2.0 x 0.5
    (NORTRIPTYLINE, FLUOXETINE, "tca-cyp2d6-cyp2c19/nortriptyline-as0.0", Action.alternative_or_reduced_dose),
    (VORTIOXETINE, BUPROPION, "ssri-snri/vortioxetine-as0.0", Action.alternative_or_reduced_dose),
])
def test_cyp2d6_strong_and_moderate_inhibitors_convert_substrates(k, drug, perp, rule, action):
    r = one(run(k, profile(D6_NM), order(drug), [med(perp)]))
    assert (r.rule_id, r.action) == (rule, action)
    strength = {BUPROPION: "strong_inhibitor", PAROXETINE: "strong_inhibitor", FLUOXETINE: "strong_inhibitor",
                DULOXETINE: "moderate_inhibitor"}[perp]
    assert r.genes[0].phenoconversion["perpetrators"][0]["strength"] == strength


def test_moderate_inhibitor_halves_and_rounds_down_to_cpic_steps(k):
    r = one(run(k, profile(D6_NM125), order(TAMOXIFEN), [med(DULOXETINE)]))
    assert r.genes[0].phenoconversion["effectiveActivityScore"] == "0.5"  # 1.25 x 0.5 = 0.625 -> 0.5
    assert r.rule_id == "tamoxifen-cyp2d6/as0.25-0.75"


def test_amitriptyline_fluoxetine_converts_both_genes(k):
    r = one(run(k, profile(res("CYP2D6", "Normal Metabolizer", "1.5"), C19_NM), order(AMITRIPTYLINE), [med(FLUOXETINE)]))
    pcs = {g.gene: g.phenoconversion for g in r.genes}
    assert pcs["CYP2D6"]["effectiveActivityScore"] == "0.0"
    assert pcs["CYP2C19"]["effectivePhenotype"] == "Poor Metabolizer"
    assert r.action == Action.consider_alternative and r.interruptive  # CYP2D6 PM + CYP2C19 PM


# ---- forward direction: CYP2C19 and CYP2C9 --------------------------------------------------------


@pytest.mark.parametrize("drug,perp,rule", [
    (CLOPIDOGREL, FLUCONAZOLE, "clopidogrel-cyp2c19/acs-pci-pm-lpm"),
    (CITALOPRAM, FLUVOXAMINE, "ssri-snri/cit-escit-pm-lpm"),
    (OMEPRAZOLE, FLUCONAZOLE, "ppi-cyp2c19/first-gen-pm-lpm"),
])
def test_cyp2c19_strong_inhibitor_gives_poor_metabolizer(k, drug, perp, rule):
    assert not one(run(k, profile(C19_NM), order(drug))).interruptive
    r = one(run(k, profile(C19_NM), order(drug), [med(perp)]))
    assert r.rule_id == rule and r.interruptive
    assert r.genes[0].phenoconversion["effectivePhenotype"] == "Poor Metabolizer"


def test_cyp2c19_moderate_inhibitor_lowers_one_class(k):
    felbamate = med(None, text="felbamate 400 mg tablet")  # no verified RxNorm code: recognised by name
    r = one(run(k, profile(C19_NM), order(CLOPIDOGREL), [felbamate]))
    assert r.genes[0].phenoconversion["effectivePhenotype"] == "Intermediate Metabolizer"
    assert r.rule_id == "clopidogrel-cyp2c19/acs-pci-im-lim"
    assert r.genes[0].phenoconversion["perpetrators"][0]["rxnorm"] is None


def test_voriconazole_rapid_metabolizer_on_fluvoxamine(k):
    prof = profile(res("CYP2C19", "Rapid Metabolizer", diplotype="*1/*17"))
    r = one(run(k, prof, order(VORICONAZOLE), [med(FLUVOXAMINE)]))
    assert r.rule_id == "voriconazole-cyp2c19/adults-pm-lpm"
    assert "Rapid Metabolizer" in r.detail  # the genotype phenotype is still named


def test_unchanged_recommendation_gives_no_extra_text_only_a_note(k):
    # CYP2C19 ultrarapid -> rapid with a moderate inhibitor: voriconazole advice is the same for both
    prof = profile(res("CYP2C19", "Ultrarapid Metabolizer", diplotype="*17/*17"))
    base = one(run(k, prof, order(VORICONAZOLE)))
    r = one(run(k, prof, order(VORICONAZOLE), [med(None, text="felbamate")]))
    assert (r.rule_id, r.summary) == (base.rule_id, base.summary)
    assert r.detail == base.detail
    assert r.genes[0].phenoconversion["effectivePhenotype"] == "Rapid Metabolizer"
    assert any("the same either way" in n for n in r.notes)


@pytest.mark.parametrize("result,perp,rule", [
    (C9_NM, AMIODARONE, "nsaids-cyp2c9/short-as1"),  # moderate: 2.0 -> 1.0
    (C9_IM15, FLUCONAZOLE, "nsaids-cyp2c9/short-poor"),  # moderate: 1.5 -> 0.75 -> 0.5 (CPIC 0.5 steps)
])
def test_cyp2c9_moderate_inhibitors_convert_nsaids(k, result, perp, rule):
    r = one(run(k, profile(result), order(CELECOXIB), [med(perp)]))
    assert r.rule_id == rule and r.interruptive


def test_cyp2c9_strong_inhibitor_rule_applies_when_data_lists_one(tmp_path):
    # The FDA table lists no strong clinical CYP2C9 inhibitor; the rule is data and works when one is added.
    d = tmp_path / "cards"
    shutil.copytree(REPO_ROOT / "cards", d)
    f = d / "phenoconversion.yaml"
    data = yaml.safe_load(f.read_text())
    data["perpetrators"].append({"name": "testinhibitor", "effects": [{"gene": "CYP2C9", "strength": "strong_inhibitor"}],
                                 "source": "fda-ddi-table"})
    f.write_text(yaml.safe_dump(data, allow_unicode=True))
    k2 = load_knowledge(d)
    r = one(run(k2, profile(C9_NM), order(CELECOXIB), [med(None, text="testinhibitor")]))
    assert r.genes[0].phenoconversion["effectiveActivityScore"] == "0.0"
    assert r.rule_id == "nsaids-cyp2c9/short-poor"


# ---- what does not convert ------------------------------------------------------------------------


@pytest.mark.parametrize("m", [
    med(PAROXETINE, status="stopped"),
    med(PAROXETINE, status="completed"),
    med(PAROXETINE, status="entered-in-error"),
    med(PAROXETINE, end="2026-03-01"),  # validity period over before today
])
def test_stopped_or_ended_inhibitor_does_not_convert(k, m):
    r = one(run(k, profile(D6_NM), order(CODEINE), [m]))
    assert r.rule_id == "opioids-cyp2d6/as1.25-2.25" and not r.interruptive
    assert r.genes[0].phenoconversion is None


def test_weak_inhibitor_is_noted_not_converted(k):
    r = one(run(k, profile(D6_NM), order(CODEINE), [med(SERTRALINE)]))
    assert r.rule_id == "opioids-cyp2d6/as1.25-2.25" and not r.interruptive
    pc = r.genes[0].phenoconversion
    assert pc["effectivePhenotype"] == pc["genotypePhenotype"] == "Normal Metabolizer"
    assert pc["perpetrators"][0]["strength"] == "weak_inhibitor"
    assert any("sertraline" in n and "noted only" in n for n in r.notes)


def test_inducer_is_noted_not_converted(k):
    r = one(run(k, profile(C19_NM), order(CLOPIDOGREL), [med(RIFAMPIN)]))
    assert r.action == Action.standard_dosing
    assert r.genes[0].phenoconversion["perpetrators"][0]["strength"] == "strong_inducer"


@pytest.mark.parametrize("settings", [
    Settings(phenoconversion={"enabled": False}),
    Settings(phenoconversion={"disabled_genes": ["CYP2D6"]}),
    Settings(phenoconversion={"disabled_drugs": ["paroxetine"]}),
])
def test_conversion_switched_off_by_configuration(k, settings):
    r = one(run(k, profile(D6_NM), order(CODEINE), [med(PAROXETINE)], settings=settings))
    assert r.rule_id == "opioids-cyp2d6/as1.25-2.25" and r.genes[0].phenoconversion is None


def test_conversion_switched_off_in_the_data(tmp_path):
    d = tmp_path / "cards"
    shutil.copytree(REPO_ROOT / "cards", d)
    f = d / "phenoconversion.yaml"
    data = yaml.safe_load(f.read_text())
    next(g for g in data["genes"] if g["gene"] == "CYP2D6")["enabled"] = False
    next(p for p in data["perpetrators"] if p["name"] == "fluconazole")["enabled"] = False
    f.write_text(yaml.safe_dump(data, allow_unicode=True))
    k2 = load_knowledge(d)
    assert one(run(k2, profile(D6_NM), order(CODEINE), [med(PAROXETINE)])).action == Action.standard_dosing
    assert one(run(k2, profile(C19_NM), order(CLOPIDOGREL), [med(FLUCONAZOLE)])).action == Action.standard_dosing


def test_no_genotype_on_file_gives_no_phenoconversion_card(k):
    recs = run(k, profile(), order(CODEINE), [med(PAROXETINE)])
    assert all(r.action == Action.test_before_prescribing for r in recs)  # at most the ordinary pre-test card
    assert all(g.phenoconversion is None for r in recs for g in r.genes)
    # the reverse direction needs a genotype too: ordering paroxetine for a patient on tamoxifen
    recs = run(k, profile(), order(PAROXETINE), [med(TAMOXIFEN)])
    assert not [r for r in recs if r.drug.name == "tamoxifen"]


def test_pretest_card_notes_a_strong_inhibitor(k):
    recs = run(k, profile(), order(TAMOXIFEN), [med(PAROXETINE)], settings=Settings(pretest_cards={"tamoxifen": "info"}))
    r = one(recs)
    assert r.action == Action.test_before_prescribing
    assert any("paroxetine" in n and "Poor Metabolizer" in n for n in r.notes)


def test_ordered_drug_does_not_phenoconvert_itself(k):
    # paroxetine is both a CYP2D6 substrate (CPIC) and a strong inhibitor: its own advice uses the genotype
    r = one(run(k, profile(D6_NM), order(PAROXETINE), [med(PAROXETINE, mid="old-parox")]), "paroxetine")
    assert r.genes[0].phenoconversion is None and r.action == Action.standard_dosing


# ---- co-medication in the same hook call -----------------------------------------------------------


def test_other_draft_order_is_a_perpetrator(k):
    r = one(run(k, profile(D6_NM), order(CODEINE), co_orders=[order(CODEINE), order(PAROXETINE, "draft-2")]))
    assert r.rule_id == "opioids-cyp2d6/codeine.tramadol-as0.0"
    assert r.genes[0].phenoconversion["perpetrators"][0]["medicationRequest"] == "MedicationRequest/draft-2"


# ---- reverse direction --------------------------------------------------------------------------------


def test_ordering_inhibitor_for_patient_on_tamoxifen_gives_card_about_tamoxifen(k):
    recs = run(k, profile(D6_NM), order(PAROXETINE, "draft-parox"), [med(TAMOXIFEN, mid="tam-1", authored="2025-02-01")])
    r = one(recs, "tamoxifen")
    assert r.rule_id == "tamoxifen-cyp2d6/as0.0" and r.interruptive
    assert r.order_ref == "MedicationRequest/draft-parox"
    assert r.alternatives == [] and r.dose is None  # suggestions would act on the inhibitor order: none
    assert "anastrozole" in r.detail  # CPIC's alternatives to tamoxifen named in the text
    assert "MedicationRequest/tam-1" in r.detail and "2025-02-01" in r.detail
    assert r.genes[0].phenoconversion["perpetrators"][0]["medicationRequest"] == "MedicationRequest/draft-parox"
    assert "Paroxetine" in r.summary and len(r.summary) < 140


def test_non_cpic_inhibitor_order_gives_card_about_codeine(k):
    r = one(run(k, profile(D6_NM), order(BUPROPION), [med(CODEINE)]), "codeine")
    assert r.action == Action.avoid


def test_reverse_not_repeated_when_advice_already_converted_or_unchanged(k):
    # already on fluoxetine (strong): adding paroxetine changes nothing for tamoxifen
    assert not [r for r in run(k, profile(D6_NM), order(PAROXETINE), [med(TAMOXIFEN), med(FLUOXETINE)])
                if r.drug.name == "tamoxifen"]
    # a weak inhibitor does not convert: no card
    assert not [r for r in run(k, profile(D6_NM), order(SERTRALINE), [med(TAMOXIFEN)]) if r.drug.name == "tamoxifen"]
    # stopped tamoxifen: not taken
    assert not [r for r in run(k, profile(D6_NM), order(PAROXETINE), [med(TAMOXIFEN, status="stopped")])
                if r.drug.name == "tamoxifen"]


# ---- patient view ----------------------------------------------------------------------------------------


def test_patient_view_uses_effective_phenotypes(k):
    pat = PatientData(patient_id="p1", medications=[med(PAROXETINE)])
    recs = summarize_profile(k, profile(D6_NM), pat, settings=Settings(), today=TODAY)
    codeine = one(recs, "codeine")
    assert codeine.action == Action.avoid and codeine.genes[0].phenoconversion is not None
    # paroxetine's own advice is not converted by paroxetine
    assert not [r for r in recs if r.drug.name == "paroxetine"]
    assert summarize_profile(k, profile(D6_NM), PatientData(patient_id="p1"), settings=Settings(), today=TODAY) == []


def test_data_needs_medications_for_convertible_and_perpetrator_drugs(k):
    assert pcv.data_needs(k, {"codeine"}) == {"medications"}
    assert pcv.data_needs(k, {"bupropion"}) == {"medications"}
    assert pcv.data_needs(k, {"abacavir"}) == set()


def test_draft_sharing_the_order_id_is_still_a_perpetrator(k):
    # some EHRs (and the sandbox) give every draft the same id: the paroxetine draft is another order
    codeine = order(CODEINE, "draft")
    r = one(run(k, profile(D6_NM), codeine, co_orders=[codeine, order(PAROXETINE, "draft")]))
    assert r.rule_id == "opioids-cyp2d6/codeine.tramadol-as0.0"
