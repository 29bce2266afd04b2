"""Guideline files, second half: statins, NSAIDs, phenytoin, carbamazepine/oxcarbazepine, abacavir,
allopurinol, fluoropyrimidines, thiopurines, G6PD, volatile anesthetics, aminoglycosides, ivacaftor,
peginterferon.

Part 1 checks the YAML files themselves (no engine needed). Part 2 loads the whole knowledge base
and runs hand-built cases through `service.pgx.engine.evaluate_order`, checking action, strength,
dose and alternatives against the CPIC recommendation for that case.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
import yaml

from service.pgx.models import Action, GeneResult, GenomicProfile, PhenotypeCall

CARDS = Path(__file__).resolve().parents[2] / "cards"
GUIDELINES = CARDS / "guidelines"
OUR_FILES = [
    "statins", "statins-fluvastatin", "statins-rosuvastatin", "nsaids-cyp2c9", "phenytoin-cyp2c9-hla-b",
    "carbamazepine-hla", "abacavir-hla-b", "allopurinol-hla-b", "fluoropyrimidines-dpyd",
    "thiopurines-tpmt-nudt15", "g6pd", "volatile-anesthetics-ryr1-cacna1s", "aminoglycosides-mt-rnr1",
    "ivacaftor-cftr", "peginterferon-ifnl3",
]
STRENGTHS = {"Strong", "Moderate", "Optional", "No recommendation"}
ACTIONS = {a.value for a in Action}
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TODAY = date(2026, 6, 1)


def _load(name: str) -> dict:
    return yaml.safe_load((GUIDELINES / f"{name}.yaml").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Part 1: the files


@pytest.mark.parametrize("name", OUR_FILES)
def test_file_parses_and_has_citation(name: str) -> None:
    g = _load(name)
    assert g["id"] == name
    assert g["source"] == "CPIC"
    assert g["url"].startswith("https://cpicpgx.org/guidelines/")
    assert re.search(r"PMID: \d{8}", g["publication"]), g["publication"]
    assert g["drugs"] and g["rules"]
    assert set(g["lookup"]) == set(g["genes"])


@pytest.mark.parametrize("name", OUR_FILES)
def test_rules_use_allowed_values(name: str) -> None:
    g = _load(name)
    longest_drug = max((d["name"] for d in g["drugs"]), key=len)
    ids = [r["id"] for r in g["rules"]]
    assert len(ids) == len(set(ids)), "rule ids must be unique"
    for r in g["rules"]:
        assert r["action"] in ACTIONS, (r["id"], r["action"])
        assert r["strength"] in STRENGTHS, (r["id"], r["strength"])
        filled = r["summary"].replace("{drug}", longest_drug).replace("{phenotype}", "Possible Decreased Function")
        filled = filled.replace("{activity_score}", "0.5")
        assert len(filled) < 140, (r["id"], len(filled))
        assert r["detail"].strip() and len(r["detail"]) > len(r["summary"]) / 2
        for gene in g["genes"]:
            assert gene in r["when"], (r["id"], gene)
        for d in r.get("drugs", []):
            assert d in {x["name"] for x in g["drugs"]}
        dose = r.get("dose") or {}
        if "factor" in dose:
            assert 0 < dose["factor"] < 1, r["id"]


@pytest.mark.parametrize("name", OUR_FILES)
def test_alternatives_and_drugs_have_rxnorm_codes(name: str) -> None:
    g = _load(name)
    for d in g["drugs"]:
        assert re.fullmatch(r"[0-9]+", d["rxnorm"]), d
        assert d.get("pretest", "off") in ("off", "info", "warning"), d  # YAML reads a bare off as False
    for r in g["rules"]:
        for a in r.get("alternatives", []):
            assert re.fullmatch(r"[0-9]+", str(a.get("rxnorm", ""))), (r["id"], a)


def test_known_rxnorm_codes() -> None:
    """A few ingredient codes the cards depend on (from the CPIC gene-drug pair table)."""
    codes = {d["name"]: d["rxnorm"] for name in OUR_FILES for d in _load(name)["drugs"]}
    assert codes["simvastatin"] == "36567"
    assert codes["rosuvastatin"] == "301542"
    assert codes["mercaptopurine"] == "103"
    assert codes["carbamazepine"] == "2002"
    assert codes["gentamicin"] == "1596450"
    assert codes["capecitabine"] == "194000"
    assert codes["abacavir"] == "190521"
    assert len(codes) == 51  # distinct drugs across our 15 files


# --------------------------------------------------------------------------------------------
# Part 2: knowledge base checks and card-level cases through the engine



@pytest.fixture(scope="module")
def knowledge():
    from service.pgx.knowledge import load_knowledge

    return load_knowledge(CARDS)


@pytest.fixture(scope="module")
def settings():
    from service.config import Settings

    return Settings()


def test_check_knowledge_clean_for_our_files() -> None:
    from service.pgx.knowledge import check_knowledge

    ours = [p for p in check_knowledge(CARDS) if any(f"guidelines/{n}.yaml" in p.file for n in OUR_FILES)]
    assert ours == []


def _call(gene: str, phenotype: str, *, score: str | None = None, status: list[str] | None = None) -> GeneResult:
    return GeneResult(gene=gene, diplotype="*1/*1", observation=f"Observation/{gene}",
                      call=PhenotypeCall(gene=gene, phenotype=phenotype, activity_score=score,
                                         allele_status=status or []))


def _profile(*results: GeneResult) -> GenomicProfile:
    return GenomicProfile(patient_id="p1", genes={r.gene: r for r in results})


def _evaluate(knowledge, settings, rxnorm: str, profile: GenomicProfile, *, conditions=None, medications=None):
    from service.fhir.models import DraftOrder, MedicationCode, PatientData
    from service.pgx.engine import evaluate_order

    order = DraftOrder(id="draft-1", codes=[MedicationCode(system=RXNORM, code=rxnorm)])
    patient = PatientData(patient_id="p1", conditions=conditions or [], medications=medications or [])
    recs = evaluate_order(knowledge, profile, order, patient, settings=settings, today=TODAY)
    assert len(recs) == 1, [r.rule_id for r in recs]
    return recs[0]


def _condition(system: str, code: str) -> dict:
    return {"resourceType": "Condition", "code": {"coding": [{"system": system, "code": code}]}}


def _med(rxnorm: str, authored: str) -> dict:
    return {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "authoredOn": authored,
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm}]}}


HLA_B_NEG = ["*57:01 negative", "*58:01 negative", "*15:02 negative"]


def test_abacavir_b5701_positive_avoid(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "190521",
                  _profile(_call("HLA-B", "*57:01 positive", status=["*57:01 positive", "*58:01 negative", "*15:02 negative"])))
    assert (r.rule_id, r.action, r.strength, r.indicator) == ("abacavir-hla-b/b5701-positive", Action.avoid, "Strong", "critical")
    assert r.interruptive is True


def test_abacavir_negative_standard(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "190521", _profile(_call("HLA-B", "negative", status=HLA_B_NEG)))
    assert (r.action, r.strength) == (Action.standard_dosing, "Strong")


def test_allopurinol_b5801_positive_avoid(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "519",
                  _profile(_call("HLA-B", "x", status=["*57:01 negative", "*58:01 positive", "*15:02 negative"])))
    assert (r.rule_id, r.action, r.strength) == ("allopurinol-hla-b/b5801-positive", Action.avoid, "Strong")


def test_celecoxib_poor_metabolizer(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "140587", _profile(_call("CYP2C9", "Poor Metabolizer", score="0.5")))
    assert (r.action, r.strength) == (Action.alternative_or_reduced_dose, "Moderate")
    # naproxen one-click; ketorolac never (5-day limit); aspirin not while the age is unknown (Reye's syndrome)
    assert {a.rxnorm for a in r.alternatives} == {"7258"}
    assert {w.name: w.effect for w in r.withheld} == {"ketorolac": "not_offered", "aspirin": "excluded"}
    assert "25-50%" in r.summary and "celecoxib" in r.summary


def test_meloxicam_as1_half_dose(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "41493", _profile(_call("CYP2C9", "Intermediate Metabolizer", score="1.0")))
    assert (r.action, r.strength) == (Action.alternative_or_reduced_dose, "Moderate")
    assert r.dose is not None and r.dose.factor == 0.5


def test_piroxicam_and_tenoxicam_as1(knowledge, settings) -> None:
    p = _profile(_call("CYP2C9", "Intermediate Metabolizer", score="1.0"))
    pir = _evaluate(knowledge, settings, "8356", p)
    ten = _evaluate(knowledge, settings, "37790", p)
    assert (pir.action, pir.strength) == (Action.avoid, "Moderate")
    assert (ten.action, ten.strength) == (Action.consider_alternative, "Optional")
    assert "celecoxib" in {a.name for a in ten.alternatives}


def test_ibuprofen_as15_standard(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "5640", _profile(_call("CYP2C9", "Intermediate Metabolizer", score="1.5")))
    assert (r.action, r.strength, r.interruptive) == (Action.standard_dosing, "Moderate", False)


def test_phenytoin_b1502_positive_naive_avoid(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "8183", _profile(
        _call("CYP2C9", "Normal Metabolizer", score="2.0"),
        _call("HLA-B", "x", status=["*57:01 negative", "*58:01 negative", "*15:02 positive"])))
    assert (r.rule_id, r.action, r.strength) == ("phenytoin-cyp2c9-hla-b/naive-b1502-positive", Action.avoid, "Strong")
    assert "carbamazepine" in r.summary


def test_phenytoin_b1502_positive_without_cyp2c9(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "72236", _profile(
        _call("HLA-B", "x", status=["*57:01 negative", "*58:01 negative", "*15:02 positive"])))
    assert (r.action, r.strength) == (Action.avoid, "Strong")


def test_phenytoin_b1502_positive_long_term_use(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "8183", _profile(
        _call("CYP2C9", "Normal Metabolizer", score="2.0"),
        _call("HLA-B", "x", status=["*57:01 negative", "*58:01 negative", "*15:02 positive"])),
        medications=[_med("8183", "2025-10-01")])
    assert (r.rule_id, r.action, r.strength) == (
        "phenytoin-cyp2c9-hla-b/long-term-b1502-positive", Action.standard_dosing_with_caution, "Optional")


def test_phenytoin_recent_start_stays_naive(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "8183", _profile(
        _call("CYP2C9", "Normal Metabolizer", score="2.0"),
        _call("HLA-B", "x", status=["*57:01 negative", "*58:01 negative", "*15:02 positive"])),
        medications=[_med("8183", "2026-05-20")])
    assert r.action == Action.avoid


def test_phenytoin_cyp2c9_poor_halves_maintenance(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "8183", _profile(
        _call("CYP2C9", "Poor Metabolizer", score="0.5"), _call("HLA-B", "neg", status=HLA_B_NEG)))
    assert (r.action, r.strength) == (Action.reduce_dose, "Strong")
    assert r.dose is not None and r.dose.factor == 0.5


def test_phenytoin_cyp2c9_as1_quarter_less(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "8183", _profile(_call("CYP2C9", "Intermediate Metabolizer", score="1.0")))
    assert (r.action, r.strength) == (Action.reduce_dose, "Moderate")
    assert r.dose is not None and r.dose.factor == 0.75


def test_carbamazepine_a3101_positive_avoid(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "2002", _profile(
        _call("HLA-A", "*31:01 positive", status=["*31:01 positive"]), _call("HLA-B", "neg", status=HLA_B_NEG)))
    assert (r.rule_id, r.action, r.strength) == ("carbamazepine-hla/cbz-naive-a3101-positive", Action.avoid, "Strong")


def test_carbamazepine_b1502_positive_avoid(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "2002", _profile(
        _call("HLA-B", "x", status=["*57:01 negative", "*58:01 negative", "*15:02 positive"])))
    assert (r.action, r.strength) == (Action.avoid, "Strong")


def test_oxcarbazepine_b1502_positive_avoid_and_hla_a_ignored(knowledge, settings) -> None:
    pos = _evaluate(knowledge, settings, "32624", _profile(
        _call("HLA-A", "*31:01 positive", status=["*31:01 positive"]),
        _call("HLA-B", "x", status=["*57:01 negative", "*58:01 negative", "*15:02 positive"])))
    assert (pos.rule_id, pos.action, pos.strength) == ("carbamazepine-hla/oxc-naive-b1502-positive", Action.avoid, "Strong")
    neg = _evaluate(knowledge, settings, "32624", _profile(
        _call("HLA-A", "*31:01 positive", status=["*31:01 positive"]), _call("HLA-B", "neg", status=HLA_B_NEG)))
    assert (neg.action, neg.strength) == (Action.standard_dosing, "Strong")


def test_capecitabine_dpyd(knowledge, settings) -> None:
    im = _evaluate(knowledge, settings, "194000", _profile(_call("DPYD", "Intermediate Metabolizer", score="1.0")))
    assert (im.action, im.strength) == (Action.reduce_dose, "Strong")
    assert im.dose is not None and im.dose.factor == 0.5
    pm = _evaluate(knowledge, settings, "4492", _profile(_call("DPYD", "Poor Metabolizer", score="0.0")))
    assert (pm.action, pm.strength, pm.indicator) == (Action.avoid, "Strong", "critical")


def test_mercaptopurine_tpmt_pm_malignancy(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "103", _profile(
        _call("TPMT", "Poor Metabolizer"), _call("NUDT15", "Normal Metabolizer")),
        conditions=[_condition("http://hl7.org/fhir/sid/icd-10-cm", "C91.00")])
    assert (r.rule_id, r.action, r.strength, r.indicator) == (
        "thiopurines-tpmt-nudt15/mal-tpmt-pm", Action.reduce_dose, "Strong", "critical")
    assert r.dose is not None and r.dose.factor == 0.1
    assert r.population_note is None


def test_azathioprine_tpmt_pm_population_unknown(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "1256", _profile(
        _call("TPMT", "Poor Metabolizer"), _call("NUDT15", "Normal Metabolizer")))
    assert (r.rule_id, r.action, r.strength) == (
        "thiopurines-tpmt-nudt15/nonmal-tpmt-pm", Action.consider_alternative, "Strong")
    assert r.population_note  # the card says the population was assumed
    assert "Malignancy" in r.detail  # both paths are explained


def test_thioguanine_nudt15_pm_malignancy_quarter_dose(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "10485", _profile(
        _call("TPMT", "Normal Metabolizer"), _call("NUDT15", "Poor Metabolizer")),
        conditions=[_condition("http://hl7.org/fhir/sid/icd-10-cm", "C92.00")])
    assert (r.action, r.strength) == (Action.reduce_dose, "Strong")
    assert r.dose is not None and r.dose.factor == 0.25


def test_thioguanine_tpmt_im_moderate(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "10485", _profile(
        _call("TPMT", "Intermediate Metabolizer"), _call("NUDT15", "Normal Metabolizer")))
    assert (r.action, r.strength) == (Action.reduce_dose, "Moderate")
    assert "50-80%" in r.summary


def test_thiopurine_both_unknown_asks_for_tpmt_activity(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "103", _profile(_call("TPMT", "Indeterminate")))
    assert (r.action, r.strength, r.indicator) == (Action.test_before_prescribing, "Strong", "warning")


def test_g6pd(knowledge, settings) -> None:
    deficient = _profile(_call("G6PD", "Deficient"))
    ras = _evaluate(knowledge, settings, "283821", deficient)
    assert (ras.action, ras.strength) == (Action.avoid, "Strong")
    nitro = _evaluate(knowledge, settings, "7454", deficient)
    assert (nitro.action, nitro.strength, nitro.indicator) == (Action.standard_dosing_with_caution, "Optional", "warning")
    mb = _evaluate(knowledge, settings, "6878", deficient)
    assert (mb.action, mb.strength) == (Action.avoid, "Moderate")
    var = _evaluate(knowledge, settings, "8687", _profile(_call("G6PD", "Variable")))
    assert (var.action, var.strength) == (Action.test_before_prescribing, "Moderate")


def test_sevoflurane_ryr1_mhs(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "36453", _profile(_call("RYR1", "Malignant Hyperthermia Susceptibility")))
    assert (r.action, r.strength, r.indicator) == (Action.avoid, "Strong", "critical")
    s = _evaluate(knowledge, settings, "10154", _profile(
        _call("RYR1", "Uncertain Susceptibility"), _call("CACNA1S", "Malignant Hyperthermia Susceptibility")))
    assert (s.rule_id, s.action) == ("volatile-anesthetics-ryr1-cacna1s/mhs-cacna1s", Action.avoid)


def test_gentamicin_mt_rnr1_increased_risk(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "1596450",
                  _profile(_call("MT-RNR1", "increased risk of aminoglycoside-induced hearing loss")))
    assert (r.action, r.strength) == (Action.avoid, "Strong")
    u = _evaluate(knowledge, settings, "10627",
                  _profile(_call("MT-RNR1", "uncertain risk of aminoglycoside-induced hearing loss")))
    assert (u.action, u.strength) == (Action.standard_dosing, "Optional")


def test_ivacaftor_non_responsive(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "1243041", _profile(_call("CFTR", "ivacaftor non-responsive in CF patients")))
    assert (r.action, r.strength) == (Action.avoid, "Moderate")


def test_peginterferon_unfavorable(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "120608", _profile(_call("IFNL3", "Unfavorable response genotype")))
    assert (r.action, r.strength) == (Action.consider_alternative, "Strong")


def test_simvastatin_poor_function(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "36567", _profile(_call("SLCO1B1", "Poor Function")))
    assert (r.rule_id, r.action, r.strength) == ("statins/simvastatin-poor", Action.avoid, "Strong")
    assert {"301542", "83367", "42463", "41127", "861634"} == {a.rxnorm for a in r.alternatives}


def test_simvastatin_decreased_function(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "36567", _profile(_call("SLCO1B1", "Decreased Function")))
    assert (r.action, r.strength) == (Action.alternative_or_reduced_dose, "Strong")
    assert "decreased function" in r.summary and "20 mg" in r.summary


def test_atorvastatin_decreased_capped(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "83367", _profile(_call("SLCO1B1", "Possible Decreased Function")))
    assert (r.action, r.strength) == (Action.reduce_dose, "Moderate")
    assert r.dose is not None and r.dose.max_daily_mg == 40


def test_fluvastatin_cyp2c9_poor(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "41127", _profile(
        _call("SLCO1B1", "Normal Function"), _call("CYP2C9", "Poor Metabolizer", score="0.0")))
    assert (r.rule_id, r.action, r.strength) == ("statins-fluvastatin/cyp2c9-pm", Action.reduce_dose, "Moderate")
    assert r.dose is not None and r.dose.max_daily_mg == 20
    both = _evaluate(knowledge, settings, "41127", _profile(
        _call("SLCO1B1", "Poor Function"), _call("CYP2C9", "Intermediate Metabolizer", score="1.0")))
    assert (both.action, both.strength) == (Action.consider_alternative, "Optional")


def test_rosuvastatin_abcg2_poor(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "301542", _profile(
        _call("SLCO1B1", "Normal Function"), _call("ABCG2", "Poor Function")))
    assert (r.action, r.strength) == (Action.reduce_dose, "Optional")
    assert r.dose is not None and r.dose.max_daily_mg == 20
    worse = _evaluate(knowledge, settings, "301542", _profile(
        _call("SLCO1B1", "Decreased Function"), _call("ABCG2", "Poor Function")))
    assert worse.dose is not None and worse.dose.max_daily_mg == 10


def test_rosuvastatin_slco1b1_only(knowledge, settings) -> None:
    r = _evaluate(knowledge, settings, "301542", _profile(_call("SLCO1B1", "Poor Function")))
    assert (r.action, r.strength) == (Action.reduce_dose, "Moderate")
    assert r.dose is not None and r.dose.max_daily_mg == 20
