"""Which medication statuses count as current is data (cards/medication_status.yaml, issue 14), per purpose,
read through one function (service.pgx.medications.current); the engine takes a typed patient context and a
small policy (no FHIR dicts, no Settings)."""

from __future__ import annotations

import shutil
from datetime import date

import pytest
import yaml

from service.config import REPO_ROOT, Settings
from service.fhir.context import medication
from service.fhir.models import DraftOrder, MedicationCode, PatientData
from service.pgx import medications as meds_mod
from service.pgx.context import PatientContext
from service.pgx.engine import evaluate_order
from service.pgx.knowledge import check_knowledge, load_knowledge
from service.pgx.models import GeneResult, GenomicProfile, PhenotypeCall
from service.pgx.policy import EnginePolicy, PhenoconversionPolicy

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
TODAY = date(2026, 6, 1)
CLOP, CODEINE, PAROXETINE, APIXABAN = "32968", "2670", "32937", "1364430"
BEFORE = frozenset({"draft", "entered-in-error", "cancelled", "stopped", "completed", "revoked"})  # pre-stop-18 code


@pytest.fixture(scope="module")
def k():
    return load_knowledge(REPO_ROOT / "cards")


def res(gene: str, phenotype: str, activity: str | None = None, diplotype: str = "*1/*1") -> GeneResult:
    call = PhenotypeCall(gene=gene, diplotype=diplotype, phenotype=phenotype, activity_score=activity, method="t")
    return GeneResult(gene=gene, diplotype=diplotype, call=call, observation=f"Observation/{gene}")


def prof(*results: GeneResult) -> GenomicProfile:
    return GenomicProfile(patient_id="p", genes={r.gene: r for r in results})


def med(rxnorm: str, status: str = "active", mid: str = "m1", **extra) -> dict:
    return {"resourceType": "MedicationRequest", "id": mid, "status": status, "authoredOn": "2026-01-05",
            "medicationCodeableConcept": {"coding": [{"system": RX, "code": rxnorm}]}, **extra}


def order(rxnorm: str) -> DraftOrder:
    return DraftOrder(id="draft-1", reference="MedicationRequest/draft-1", codes=[MedicationCode(system=RX, code=rxnorm)])


ACS = {"resourceType": "Condition", "code": {"coding": [{"system": ICD10, "code": "I21.4"}]}}
C19_PM = res("CYP2C19", "Poor Metabolizer", diplotype="*2/*2")
D6_NM = res("CYP2D6", "Normal Metabolizer", "2.0")


def clopidogrel(k, meds, **kw):
    pat = PatientData(patient_id="p", birth_date=date(1966, 3, 1), sex="female", conditions=[ACS], medications=meds)
    [r] = evaluate_order(k, prof(C19_PM), order(CLOP), pat, settings=Settings(), today=TODAY, **kw)
    return {a.name: a.recommended for a in r.alternatives}


def codeine(k, meds):
    [r] = evaluate_order(k, prof(D6_NM), order(CODEINE), PatientData(patient_id="p", medications=meds),
                         settings=Settings(), today=TODAY)
    return r


def test_the_shipped_lists_keep_the_behaviour_of_the_code_they_replace(k):
    s = k.medication_status
    assert s.populations == BEFORE and s.phenoconversion == BEFORE and s.safety == BEFORE | {"on-hold"}
    text = meds_mod.SHIPPED.read_text()
    assert "Reviewed by" in text and "hl7.org/fhir/R4/valueset-medicationrequest-status" in text


@pytest.mark.parametrize("status", sorted(meds_mod.KNOWN_STATUSES) + [None])
def test_one_filter_for_every_purpose(k, status):
    m = medication(med(APIXABAN, status=status))
    for purpose in ("populations", "phenoconversion", "safety"):
        not_current = getattr(k.medication_status, purpose)
        assert (meds_mod.current([m], None, not_current) == [m]) is (status not in not_current)


def test_the_draft_orders_own_record_never_counts(k):
    ms = [medication(med(CLOP, mid="draft-1")), medication(med(APIXABAN, mid="m2"))]
    assert [m.id for m in meds_mod.current(ms, order(CLOP), k.medication_status.safety)] == ["m2"]
    assert [m.id for m in meds_mod.current(ms, None, k.medication_status.safety)] == ["draft-1", "m2"]


def test_on_hold_differs_by_purpose_as_before(k):
    # safety: an on-hold anticoagulant is not screened (as stopped); an active one demotes both alternatives
    assert clopidogrel(k, [med(APIXABAN, status="on-hold")]) == {"prasugrel": True, "ticagrelor": False}
    assert clopidogrel(k, [med(APIXABAN)]) == {"prasugrel": False, "ticagrelor": False}
    # phenoconversion: an on-hold paroxetine still converts CYP2D6 (a paused inhibitor is expected to resume)
    assert codeine(k, [med(PAROXETINE, status="on-hold")]).interruptive
    assert not codeine(k, [med(PAROXETINE, status="stopped")]).interruptive


def test_the_lists_are_data(tmp_path):
    d = tmp_path / "cards"
    shutil.copytree(REPO_ROOT / "cards", d)
    v1 = load_knowledge(d).version
    f = d / meds_mod.FILE_NAME
    data = yaml.safe_load(f.read_text())
    data["purposes"]["safety"]["not_current"].remove("on-hold")
    f.write_text(yaml.safe_dump(data))
    k2 = load_knowledge(d)
    assert k2.version != v1
    assert clopidogrel(k2, [med(APIXABAN, status="on-hold")]) == {"prasugrel": False, "ticagrelor": False}


@pytest.mark.parametrize("change,message", [
    (lambda d: d["purposes"]["safety"]["not_current"].append("paused"), "unknown status"),
    (lambda d: d["purposes"]["populations"]["not_current"].append("active"), "'active' cannot be listed"),
    (lambda d: d["purposes"].pop("phenoconversion"), "purposes missing"),
])
def test_a_bad_status_file_is_reported(tmp_path, change, message):
    d = tmp_path / "cards"
    shutil.copytree(REPO_ROOT / "cards", d)
    f = d / meds_mod.FILE_NAME
    data = yaml.safe_load(f.read_text())
    change(data)
    f.write_text(yaml.safe_dump(data))
    msgs = [str(p) for p in check_knowledge(d) if p.severity == "error"]
    assert any(meds_mod.FILE_NAME in m and message in m for m in msgs), msgs


def test_a_tree_without_the_file_uses_the_shipped_lists(tmp_path):
    d = tmp_path / "cards"
    shutil.copytree(REPO_ROOT / "cards", d)
    (d / meds_mod.FILE_NAME).unlink()
    assert load_knowledge(d).medication_status == meds_mod.shipped()


def contained(rxnorm: str, status: str = "active") -> dict:
    """A current medication naming its drug through a contained Medication (product code unknown to us, the
    ingredient's RxNorm code on the ingredient)."""
    return {"resourceType": "MedicationRequest", "id": "mc", "status": status, "authoredOn": "2026-01-05",
            "medicationReference": {"reference": "#med"},
            "contained": [{"resourceType": "Medication", "id": "med", "code": {"coding": [{"system": RX, "code": "999999"}]},
                           "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RX, "code": rxnorm}]}}]}]}


def test_a_contained_medication_counts_for_every_purpose(k):
    """Bug fix (stop 18): populations recognised a drug named through a contained Medication, but the
    phenoconversion and one-click safety readers did not (each walked the dict its own way). Both
    assertions fail on the code before."""
    assert codeine(k, [contained(PAROXETINE)]).interruptive  # phenoconversion: paroxetine converts CYP2D6
    assert clopidogrel(k, [contained(APIXABAN)]) == {"prasugrel": False, "ticagrelor": False}  # safety screening
    assert not codeine(k, [contained(PAROXETINE, status="stopped")]).interruptive


@pytest.mark.parametrize("bad", [
    {"status": {"code": "active"}},  # unhashable status: `status in {...}` raised TypeError (a 500)
    {"status": ["stopped"]},
    {"dispenseRequest": ["junk"]},  # `.get` on a list raised AttributeError
    {"dispenseRequest": {"validityPeriod": "junk"}},
    {"dosageInstruction": [{"timing": "junk"}]},
])
def test_a_malformed_current_medication_never_breaks_the_engine(k, bad):
    """Fails on the code before stop 18 (each reader walked the raw dict with its own checks)."""
    m = {**med(PAROXETINE), **bad}
    r = codeine(k, [m])
    assert r.rule_id.startswith("opioids-cyp2d6/")
    clopidogrel(k, [{**med(APIXABAN), **bad}])


def test_the_engine_takes_a_typed_context_and_a_policy(k):
    data = PatientData(patient_id="p", medications=[med(PAROXETINE)])
    ctx = data.context()
    assert isinstance(ctx, PatientContext)
    by_settings = evaluate_order(k, prof(D6_NM), order(CODEINE), data, settings=Settings(), today=TODAY)
    by_policy = evaluate_order(k, prof(D6_NM), order(CODEINE), ctx, policy=EnginePolicy(), today=TODAY)
    assert [r.model_dump() for r in by_settings] == [r.model_dump() for r in by_policy]
    assert by_policy[0].interruptive
    off = EnginePolicy(phenoconversion=PhenoconversionPolicy(enabled=False))
    assert not evaluate_order(k, prof(D6_NM), order(CODEINE), ctx, policy=off, today=TODAY)[0].interruptive


def test_policy_of_settings():
    s = Settings(disabled_rules=["a/b"], pretest_cards={"codeine": "info"}, indicator_overrides={"a/c": "info"},
                 phenoconversion={"enabled": True, "disabled_genes": ["CYP2D6"], "disabled_drugs": ["paroxetine"]})
    p = EnginePolicy.of(s)
    assert p.disabled_rules == {"a/b"} and dict(p.pretest_cards) == {"codeine": "info"}
    assert dict(p.indicator_overrides) == {"a/c": "info"}
    assert p.phenoconversion == PhenoconversionPolicy(True, frozenset({"CYP2D6"}), frozenset({"paroxetine"}))
    assert EnginePolicy.of(Settings()) == EnginePolicy()
