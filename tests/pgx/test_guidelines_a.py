"""One actionable card per guideline file (helper-2's half): action, strength, alternatives, evidence."""

from __future__ import annotations

from datetime import date

import pytest

from service.config import REPO_ROOT, Settings
from service.fhir.models import DraftOrder, MedicationCode, PatientData
from service.pgx.engine import evaluate_order
from service.pgx.knowledge import load_knowledge
from service.pgx.models import Action, GeneResult, GenomicProfile, PhenotypeCall

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
ADULT = date(1970, 1, 1)
CHILD = date(2016, 1, 1)

PM, IM, NM, UM = "Poor Metabolizer", "Intermediate Metabolizer", "Normal Metabolizer", "Ultrarapid Metabolizer"

CASES = [
    # rxnorm, {gene: (phenotype, diplotype, activity)}, birth date, guideline, action, strength, alternatives, dose factor
    ("32968", {"CYP2C19": (PM, "*2/*3", None)}, ADULT, "clopidogrel-cyp2c19", Action.avoid, "Strong",
     ["prasugrel", "ticagrelor"], None),
    ("121243", {"CYP2C19": (PM, "*2/*2", None)}, ADULT, "voriconazole-cyp2c19", Action.alternative_or_reduced_dose,
     "Moderate", ["posaconazole"], None),  # liposomal amphotericin B: no one-click (product)
    ("121243", {"CYP2C19": (UM, "*17/*17", None)}, CHILD, "voriconazole-cyp2c19", Action.consider_alternative,
     "Moderate", ["posaconazole"], None),
    ("7646", {"CYP2C19": (UM, "*17/*17", None)}, ADULT, "ppi-cyp2c19", Action.increase_dose, "Optional", [], 2.0),
    ("7646", {"CYP2C19": (PM, "*2/*2", None)}, ADULT, "ppi-cyp2c19", Action.standard_dosing_with_caution,
     "Moderate", [], 0.5),
    ("816346", {"CYP2C19": (PM, "*2/*2", None)}, ADULT, "ppi-cyp2c19", Action.standard_dosing_with_caution,
     "Optional", [], 0.5),
    ("2556", {"CYP2C19": (PM, "*2/*2", None)}, ADULT, "ssri-snri", Action.alternative_or_reduced_dose, "Strong", [], 0.5),
    ("32937", {"CYP2D6": (PM, "*4/*4", "0.0")}, ADULT, "ssri-snri", Action.reduce_dose, "Moderate", [], 0.5),
    ("1455099", {"CYP2D6": (PM, "*4/*4", "0.0")}, ADULT, "ssri-snri", Action.alternative_or_reduced_dose,
     "Moderate", [], 0.5),
    ("39786", {"CYP2D6": (PM, "*4/*5", "0.0")}, ADULT, "ssri-snri", Action.consider_alternative, "Optional", [], None),
    ("7531", {"CYP2D6": (PM, "*4/*4", "0.0")}, ADULT, "tca-cyp2d6-cyp2c19", Action.alternative_or_reduced_dose,
     "Strong", [], 0.5),
    ("704", {"CYP2D6": (NM, "*1/*1", "2.0"), "CYP2C19": (UM, "*17/*17", None)}, ADULT, "tca-cyp2d6-cyp2c19",
     Action.consider_alternative, "Optional", ["nortriptyline", "desipramine"], None),
    ("2670", {"CYP2D6": (UM, "*1/*1x2", "3.0")}, ADULT, "opioids-cyp2d6", Action.avoid, "Strong", ["morphine"], None),
    ("10689", {"CYP2D6": (PM, "*4/*4", "0.0")}, ADULT, "opioids-cyp2d6", Action.avoid, "Strong", ["morphine"], None),
    ("26225", {"CYP2D6": (UM, "*2/*2x2", "3.0")}, ADULT, "antiemetics-cyp2d6", Action.consider_alternative,
     "Moderate", ["granisetron"], None),
    ("10324", {"CYP2D6": (PM, "*4/*4", "0.0")}, ADULT, "tamoxifen-cyp2d6", Action.consider_alternative, "Strong",
     [], None),  # aromatase inhibitors: sex unknown here, so not one-click (see tests/pgx/test_safety.py)
    ("38400", {"CYP2D6": (PM, "*4/*4", "0.0")}, CHILD, "atomoxetine-cyp2d6", Action.reduce_dose, "Strong", [], None),
    ("38400", {"CYP2D6": (PM, "*4/*4", "0.0")}, ADULT, "atomoxetine-cyp2d6", Action.reduce_dose, "Moderate", [], None),
    ("195085", {"CYP2B6": (PM, "*6/*6", None)}, ADULT, "efavirenz-cyp2b6", Action.reduce_dose, "Moderate", [], None),
    ("42316", {"CYP3A5": (NM, "*1/*1", None)}, ADULT, "tacrolimus-cyp3a5", Action.increase_dose, "Strong", [], 1.5),
    ("343047", {"UGT1A1": (PM, "*28/*28", None)}, ADULT, "atazanavir-ugt1a1", Action.consider_alternative, "Strong",
     [], None),
]


@pytest.fixture(scope="module")
def k():
    return load_knowledge(REPO_ROOT / "cards")


@pytest.mark.parametrize("rx,genes,birth,gid,action,strength,alts,factor", CASES,
                         ids=[f"{c[3]}-{c[0]}-{next(iter(c[1].values()))[0][:2]}" for c in CASES])
def test_actionable_card(k, rx, genes, birth, gid, action, strength, alts, factor):
    prof = GenomicProfile(patient_id="p", genes={
        g: GeneResult(gene=g, diplotype=d, observation=f"Observation/{g}",
                      call=PhenotypeCall(gene=g, diplotype=d, phenotype=p, activity_score=a, method=f"{g} test"))
        for g, (p, d, a) in genes.items()})
    o = DraftOrder(id="d1", codes=[MedicationCode(system=RX, code=rx)])
    recs = evaluate_order(k, prof, o, PatientData(patient_id="p", birth_date=birth), settings=Settings(),
                          today=date(2026, 6, 1))
    assert len(recs) == 1
    r = recs[0]
    assert r.guideline_id == gid
    assert (r.action, r.strength) == (action, strength)
    assert [a.name for a in r.alternatives] == alts
    assert all(a.rxnorm.isdigit() for a in r.alternatives)
    assert (r.dose.factor if r.dose else None) == factor
    assert {e.gene: e.phenotype for e in r.genes if e.phenotype != "No Result"} == {g: v[0] for g, v in genes.items()}
    assert all(e.derivation == f"{e.gene} test" for e in r.genes if e.phenotype != "No Result")
    assert len(r.summary) < 140 and "{" not in r.summary and "{" not in r.detail
    assert r.publication and "PMID" in r.publication
    expected = "info" if action == Action.standard_dosing_with_caution else ("critical" if action == Action.avoid else "warning")
    assert r.indicator == expected and r.interruptive
