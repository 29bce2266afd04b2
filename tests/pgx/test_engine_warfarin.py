"""Warfarin: IWPC pharmacogenetic algorithm against a hand-computed example, fallbacks, CPIC notes."""

from __future__ import annotations

from datetime import date

import pytest

from service.config import REPO_ROOT, Settings
from service.fhir.models import DraftOrder, MedicationCode, PatientData
from service.pgx.engine import evaluate_order
from service.pgx.knowledge import load_knowledge
from service.pgx.models import Action, GeneResult, GenomicProfile, PhenotypeCall
from service.pgx.warfarin import WarfarinInputs, iwpc_weekly_dose, recommend, vkorc1_genotype

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"

# Hand computation (IWPC, NEJM 2009): age 65 y (6 decades), 170 cm, 70 kg, VKORC1 AG, CYP2C9 *1/*3,
# ancestry missing, no inducer, no amiodarone:
# 5.6044 - 0.2614*6 + 0.0087*170 + 0.0128*70 - 0.8677 - 0.9357 - 0.1032 = 4.5044 -> 4.5044^2 = 20.29 mg/week
EXAMPLE = WarfarinInputs(age_years=65, height_cm=170, weight_kg=70, vkorc1="AG", cyp2c9="*1/*3")


def test_iwpc_hand_computed_example():
    assert iwpc_weekly_dose(EXAMPLE) == pytest.approx(20.2896, abs=0.001)


def test_iwpc_amiodarone_and_inducer_terms():
    amio = WarfarinInputs(**{**EXAMPLE.__dict__, "amiodarone": True})
    assert iwpc_weekly_dose(amio) == pytest.approx((4.5044 - 0.5503) ** 2, abs=0.001)
    ind = WarfarinInputs(**{**EXAMPLE.__dict__, "enzyme_inducer": True})
    assert iwpc_weekly_dose(ind) == pytest.approx((4.5044 + 1.1816) ** 2, abs=0.001)


def test_iwpc_wildtype_reference():
    wt = WarfarinInputs(age_years=50, height_cm=180, weight_kg=80, vkorc1="GG", cyp2c9="*1/*1")
    # 5.6044 - 0.2614*5 + 0.0087*180 + 0.0128*80 - 0.1032 = 6.7842 -> 46.03 mg/week
    assert iwpc_weekly_dose(wt) == pytest.approx(6.7842 ** 2, abs=0.001)


@pytest.mark.parametrize("text,expected", [
    ("-1639 AG", "AG"), ("-1639G>A A/A", "AA"), ("GG", "GG"), ("rs9923231 C/T", "AG"),
    ("rs9923231 T/T", "AA"), ("C/C", "GG"), ("unknown", None), (None, None),
])
def test_vkorc1_genotype_forms(text, expected):
    assert vkorc1_genotype(text) == expected


def test_label_table_when_body_data_missing():
    res = recommend(WarfarinInputs(vkorc1="AA", cyp2c9="*1/*3"))
    assert res.method == "label-table" and res.label_range_mg_day == "0.5-2" and res.lower_than_usual
    assert "age, height, weight" in res.text


def test_cyp4f2_and_extra_allele_notes():
    res = recommend(WarfarinInputs(age_years=65, height_cm=170, weight_kg=70, vkorc1="GG",
                                   cyp2c9="*1/*8", cyp4f2="*3 carrier"))
    assert any("CYP4F2 *3" in n and "5-10%" in n for n in res.notes)
    assert any("*8 is not part of the IWPC algorithm" in n for n in res.notes)
    assert res.lower_than_usual


def _result(gene, phenotype, diplotype, activity=None):
    return GeneResult(gene=gene, diplotype=diplotype, observation=f"Observation/{gene}",
                      call=PhenotypeCall(gene=gene, diplotype=diplotype, phenotype=phenotype,
                                         activity_score=activity, method="test"))


def test_engine_warfarin_card_with_algorithm():
    k = load_knowledge(REPO_ROOT / "cards")
    prof = GenomicProfile(patient_id="p", genes={
        "CYP2C9": _result("CYP2C9", "Intermediate Metabolizer", "*1/*3", "1.0"),
        "VKORC1": _result("VKORC1", "-1639 AG", "rs9923231 reference (C)/rs9923231 variant (T)"),
    })
    pat = PatientData(patient_id="p", birth_date=date(1960, 5, 1), height_cm=170, weight_kg=70)
    o = DraftOrder(id="d1", codes=[MedicationCode(system=RX, code="11289")], text="warfarin 5 MG")
    recs = evaluate_order(k, prof, o, pat, settings=Settings(), today=date(2026, 6, 1))
    assert len(recs) == 1
    r = recs[0]
    assert r.rule_id == "warfarin/iwpc-algorithm" and r.action == Action.reduce_dose
    assert "20.3 mg/week" in r.summary and "IWPC" in r.detail and "PMID: 19228618" in r.detail
    assert r.dose is not None and "20.3 mg/week" in (r.dose.text or "")
    assert [g.gene for g in r.genes] == ["CYP2C9", "VKORC1", "CYP4F2"]
    assert r.genes[2].phenotype == "No Result"
    assert any("African ancestry" in n for n in r.notes)


def test_engine_warfarin_amiodarone_from_medications():
    k = load_knowledge(REPO_ROOT / "cards")
    prof = GenomicProfile(patient_id="p", genes={
        "CYP2C9": _result("CYP2C9", "Intermediate Metabolizer", "*1/*3", "1.0"),
        "VKORC1": _result("VKORC1", "-1639 AG", None),
    })
    amio = {"resourceType": "MedicationRequest", "status": "active",
            "medicationCodeableConcept": {"coding": [{"system": RX, "code": "703"}]}}
    pat = PatientData(patient_id="p", birth_date=date(1960, 5, 1), height_cm=170, weight_kg=70, medications=[amio])
    o = DraftOrder(id="d1", codes=[MedicationCode(system=RX, code="11289")])
    r = evaluate_order(k, prof, o, pat, settings=Settings(), today=date(2026, 6, 1))[0]
    assert f"{(4.5044 - 0.5503) ** 2:.1f} mg/week" in r.summary
    assert "amiodarone" in r.detail


def test_engine_warfarin_pretest_without_any_result():
    k = load_knowledge(REPO_ROOT / "cards")
    o = DraftOrder(id="d1", text="Coumadin 5 mg tablet")
    r = evaluate_order(k, GenomicProfile(patient_id="p"), o, PatientData(patient_id="p"), settings=Settings())[0]
    assert r.action == Action.test_before_prescribing
    assert r.summary == "No CYP2C9, VKORC1 or CYP4F2 result on file: consider testing before warfarin"
