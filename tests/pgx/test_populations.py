"""Populations recognised from the codes EHRs send: value sets (cards/valuesets) per code system,
thiopurine malignancy (ALL coded only in SNOMED, in remission), clopidogrel ACS/PCI vs neurovascular,
code-system aliases, situational populations (carbamazepine "no alternative agent available") and the
knowledge checks that guard them."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from service.config import REPO_ROOT, Settings
from service.fhir.models import DraftOrder, MedicationCode, PatientData
from service.pgx.engine import evaluate_order
from service.pgx.knowledge import check_knowledge, load_knowledge
from service.pgx.models import GeneResult, GenomicProfile, PhenotypeCall
from service.pgx.populations import ICD10, ICD10CM, SNOMED

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TODAY = date(2026, 6, 1)


@pytest.fixture(scope="module")
def k():
    return load_knowledge(REPO_ROOT / "cards")


def _cond(system: str, code: str, status: str = "active") -> dict:
    return {"resourceType": "Condition", "clinicalStatus": {"coding": [{"code": status}]},
            "code": {"coding": [{"system": system, "code": code}]}}


def _call(gene: str, pheno: str, status: list[str] | None = None) -> GeneResult:
    return GeneResult(gene=gene, diplotype="*1/*2", call=PhenotypeCall(gene=gene, diplotype="*1/*2", phenotype=pheno,
                                                                       allele_status=status or []))


def _rec(k, rxnorm: str, results: list[GeneResult], conditions=(), reasons=(), medications=(), birth=None):
    order = DraftOrder(id="d1", codes=[MedicationCode(system=RXNORM, code=rxnorm)],
                       reason_codes=[MedicationCode(system=s, code=c) for s, c in reasons])
    patient = PatientData(patient_id="p", conditions=list(conditions), medications=list(medications), birth_date=birth)
    recs = evaluate_order(k, GenomicProfile(patient_id="p", genes={r.gene: r for r in results}), order, patient,
                          settings=Settings(), today=TODAY)
    assert len(recs) == 1
    return recs[0]


# --------------------------------------------------------------------------------------------
# value sets, per code system


@pytest.mark.parametrize("system,code,inside", [
    (ICD10CM, "C91.00", True), (ICD10CM, "C9100", True), (ICD10CM, "c91.01", True), (ICD10CM, "C00.0", True),
    (ICD10CM, "C96.9", True), (ICD10CM, "C7A.010", True), (ICD10CM, "C4A.9", True), (ICD10CM, "C97", False),
    (ICD10CM, "D45", False), (ICD10CM, "D03.9", False), (ICD10CM, "Z85.3", False), (ICD10CM, "B99", False),
    (ICD10, "C91.0", True), (ICD10, "C97", True), (ICD10, "D46.9", False),
    (SNOMED, "91857003", True), (SNOMED, "91856007", True), (SNOMED, "277571004", True), (SNOMED, "363346000", True),
    (SNOMED, "93143009", True), (SNOMED, "34000006", False),
    (SNOMED, "254956000", False), (SNOMED, "254656002", False), (SNOMED, "92824003", False),  # benign / in situ
    (SNOMED, "93770008", True), (SNOMED, "62497000", True),
    ("urn:oid:2.16.840.1.113883.6.96", "91857003", True), ("urn:oid:2.16.840.1.113883.6.90", "C91.00", True),
    ("http://example.org/local", "91857003", False),
])
def test_malignancy_value_set(k, system, code, inside) -> None:
    assert k.valuesets["malignancy"].contains(system, code) is inside


@pytest.mark.parametrize("vs,system,code", [
    ("acs-pci", ICD10CM, "I21.4"), ("acs-pci", ICD10CM, "I20.0"), ("acs-pci", ICD10, "I21"), ("acs-pci", ICD10CM, "Z95.5"),
    ("acs-pci", SNOMED, "394659003"), ("acs-pci", SNOMED, "4557003"), ("acs-pci", SNOMED, "401314000"),
    ("nvi", ICD10CM, "I63.9"), ("nvi", ICD10CM, "G45.9"), ("nvi", SNOMED, "422504002"), ("nvi", SNOMED, "266257000"),
    ("cvi-other", ICD10CM, "I25.10"), ("cvi-other", SNOMED, "53741008"),
    ("thiopurine-non-malignant", ICD10CM, "K50.012"), ("thiopurine-non-malignant", SNOMED, "64766004"),
    ("thiopurine-non-malignant", ICD10, "M05.3"),
])
def test_population_value_sets_per_code_system(k, vs, system, code) -> None:
    assert k.valuesets[vs].contains(system, code)
    others = [v for v in ("acs-pci", "nvi", "cvi-other") if v != vs and vs in ("acs-pci", "nvi", "cvi-other")]
    assert not any(k.valuesets[o].contains(system, code) for o in others)


# --------------------------------------------------------------------------------------------
# thiopurines: malignancy vs non-malignant


TPMT_PM = [_call("TPMT", "Poor Metabolizer"), _call("NUDT15", "Normal Metabolizer")]


@pytest.mark.parametrize("condition", [
    _cond(SNOMED, "91857003"),  # ALL coded only in SNOMED
    _cond(SNOMED, "91856007"),  # ALL in remission (maintenance therapy)
    _cond(SNOMED, "91857003", status="remission"),  # clinicalStatus remission still counts for malignancy
    _cond(SNOMED, "277571004"),  # B-cell ALL
    _cond(ICD10CM, "C91.00"), _cond(ICD10CM, "C9101"), _cond(ICD10, "C91.0"),
    _cond("urn:oid:2.16.840.1.113883.6.96", "91857003"),
])
def test_child_with_leukaemia_gets_the_malignancy_advice(k, condition) -> None:
    rec = _rec(k, "103", TPMT_PM, conditions=[condition])  # mercaptopurine
    assert rec.rule_id == "thiopurines-tpmt-nudt15/mal-tpmt-pm", rec.rule_id
    assert rec.population.startswith("Malignancy") and rec.population_note is None
    assert "non-thiopurine" not in rec.summary


@pytest.mark.parametrize("conditions,note", [
    ([_cond(SNOMED, "64766004")], False), ([_cond(ICD10CM, "K50.90")], False), ([_cond(SNOMED, "34000006")], False),
    ([], True), ([_cond(SNOMED, "91857003", status="resolved")], True),
])
def test_non_malignant_or_unknown(k, conditions, note) -> None:
    rec = _rec(k, "1256", TPMT_PM, conditions=conditions)  # azathioprine
    assert rec.rule_id == "thiopurines-tpmt-nudt15/nonmal-tpmt-pm"
    assert (rec.population_note is not None) is note


def test_malignancy_from_the_orders_reason(k) -> None:
    rec = _rec(k, "103", TPMT_PM, reasons=[(SNOMED, "91857003")])
    assert rec.rule_id == "thiopurines-tpmt-nudt15/mal-tpmt-pm"


# --------------------------------------------------------------------------------------------
# clopidogrel


@pytest.mark.parametrize("system,code,pop_rule", [
    (SNOMED, "422504002", "nvi-pm-lpm"), (ICD10CM, "I63.9", "nvi-pm-lpm"), (ICD10CM, "G45.9", "nvi-pm-lpm"),
    (SNOMED, "394659003", "acs-pci-pm-lpm"), (ICD10CM, "I20.0", "acs-pci-pm-lpm"), (SNOMED, "4557003", "acs-pci-pm-lpm"),
    (ICD10, "I21.0", "acs-pci-pm-lpm"), (ICD10CM, "I25.10", "cvi-other-pm-lpm"), (SNOMED, "53741008", "cvi-other-pm-lpm"),
    ("urn:oid:2.16.840.1.113883.6.90", "I63.9", "nvi-pm-lpm"),
])
def test_clopidogrel_population_from_each_code_system(k, system, code, pop_rule) -> None:
    rec = _rec(k, "32968", [_call("CYP2C19", "Poor Metabolizer")], conditions=[_cond(system, code)])
    assert rec.rule_id == f"clopidogrel-cyp2c19/{pop_rule}" and rec.population_note is None


def test_clopidogrel_without_a_coded_indication_assumes_acs_and_says_so(k) -> None:
    rec = _rec(k, "32968", [_call("CYP2C19", "Poor Metabolizer")])
    assert rec.rule_id == "clopidogrel-cyp2c19/acs-pci-pm-lpm" and "assumed" in rec.population_note


# --------------------------------------------------------------------------------------------
# carbamazepine: the "no alternative agent available" situation


def test_carbamazepine_a3101_carrier_card_carries_the_no_alternatives_advice(k) -> None:
    rec = _rec(k, "2002", [_call("HLA-A", "HLA-A*31:01 positive", ["*31:01 positive"]),
                           _call("HLA-B", "HLA-B*15:02 negative", ["*15:02 negative"])])
    assert rec.rule_id == "carbamazepine-hla/cbz-naive-a3101-positive" and rec.action.value == "avoid"
    note = [n for n in rec.info_notes if n.startswith("If no alternative agent is available")]
    assert len(note) == 1 and "more frequent clinical monitoring" in note[0] and "Optional" in note[0]
    assert "more frequent clinical monitoring" not in rec.detail  # said once


@pytest.mark.parametrize("status_a,status_b", [("*31:01 negative", "*15:02 positive"), ("*31:01 negative", "*15:02 negative")])
def test_no_alternatives_note_only_where_cpic_advice_differs(k, status_a, status_b) -> None:
    rec = _rec(k, "2002", [_call("HLA-A", f"HLA-A{status_a}", [status_a]), _call("HLA-B", f"HLA-B{status_b}", [status_b])])
    assert not any("alternative agent" in n for n in rec.info_notes + rec.notes)


def test_situational_population_is_never_chosen_from_the_record(k) -> None:
    g = k.guidelines["carbamazepine-hla"]
    assert [p.id for p in g.populations if p.situational] == ["naive-no-alternatives"]
    rec = _rec(k, "2002", [_call("HLA-A", "HLA-A*31:01 positive", ["*31:01 positive"])])
    assert rec.population == "Not yet on the drug (or on it for under 3 months)"


# --------------------------------------------------------------------------------------------
# knowledge checks


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "cards"
    shutil.copytree(REPO_ROOT / "cards", dst)
    return dst


def test_check_reports_an_unknown_value_set(tmp_path) -> None:
    cards = _copy(tmp_path)
    f = cards / "guidelines" / "clopidogrel-cyp2c19.yaml"
    f.write_text(f.read_text().replace("value_sets: [nvi]", "value_sets: [nvi-typo]"))
    msgs = [str(p) for p in check_knowledge(cards) if p.severity == "error"]
    assert any("nvi-typo" in m and "valuesets" in m for m in msgs), msgs


def test_check_reports_a_bad_value_set_file(tmp_path) -> None:
    cards = _copy(tmp_path)
    (cards / "valuesets" / "nvi.yaml").write_text("id: nvi\ntitle: x\nsource: y\ninclude:\n  - system: s\n    ranges: [C00]\n")
    msgs = [str(p) for p in check_knowledge(cards) if p.severity == "error"]
    assert any("nvi.yaml" in m for m in msgs), msgs


def test_value_sets_are_part_of_the_knowledge_version(tmp_path) -> None:
    cards = _copy(tmp_path)
    before = load_knowledge(cards).version
    f = cards / "valuesets" / "nvi.yaml"
    f.write_text(f.read_text().replace('"G45"', '"G45", "G46"', 1))
    assert load_knowledge(cards).version != before


# --------------------------------------------------------------------------------------------
# populations without value sets: anticonvulsant use, age


def _med(rxnorm: str, authored: str, status: str = "active") -> dict:
    return {"resourceType": "MedicationRequest", "id": f"m-{rxnorm}", "status": status, "intent": "order",
            "authoredOn": authored, "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm}]}}


B1502_POS = [_call("HLA-B", "HLA-B*15:02 positive", ["*15:02 positive"])]


@pytest.mark.parametrize("meds,rule", [
    ([], "cbz-naive-b1502-positive"),
    ([_med("2002", "2026-05-01")], "cbz-naive-b1502-positive"),  # on it for a month: still "naive"
    ([_med("2002", "2025-12-01")], "cbz-long-term-b1502-positive"),  # > 3 months
    ([_med("2002", "2025-12-01", status="stopped")], "cbz-naive-b1502-positive"),
    ([_med("32624", "2025-01-01")], "cbz-naive-b1502-positive"),  # long-term oxcarbazepine says nothing about carbamazepine
])
def test_carbamazepine_naive_vs_long_term_use(k, meds, rule) -> None:
    assert _rec(k, "2002", B1502_POS, medications=meds).rule_id == f"carbamazepine-hla/{rule}"


@pytest.mark.parametrize("birth,pop", [(date(2000, 1, 1), "adults"), (date(2015, 1, 1), "pediatrics"), (None, "adults")])
def test_voriconazole_population_by_age(k, birth, pop) -> None:
    rec = _rec(k, "121243", [_call("CYP2C19", "Ultrarapid Metabolizer")], birth=birth)
    assert rec.rule_id.startswith(f"voriconazole-cyp2c19/{pop}-")
    assert (rec.population_note is not None) is (birth is None)
