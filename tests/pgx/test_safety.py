"""One-click safety (issue 11): contraindication screening of alternatives, products and combination
products, alternatives CPIC does not name for the genotype, and dose changes only where CPIC's number
applies. Every clinical judgement tested here is data in cards/ (cards/safety/*.yaml, rule fields);
the tests drive the real engine and card builder with the real knowledge base.
"""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path

import pytest

from service.cards.builder import build_card_template
from service.config import REPO_ROOT, Settings
from service.fhir.models import DraftOrder, MedicationCode, PatientData
from service.fhir.orders import extract_orders
from service.fhir.context import medication_drugs_of as medication_request_drugs
from service.fhir.orders import dosage
from service.pgx.drugs import recognise
from service.pgx.engine import evaluate_order
from service.pgx.knowledge import check_knowledge, load_knowledge
from service.pgx.models import GeneResult, GenomicProfile, PhenotypeCall
from service.pgx.safety import doses_per_day as _doses_per_day, loading_dose_reason as _loading_dose_reason

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
TODAY = date(2026, 6, 1)
ADULT = date(1966, 3, 1)  # 60
OLD = date(1946, 3, 1)  # 80


@pytest.fixture(scope="module")
def k():
    return load_knowledge(REPO_ROOT / "cards")


def res(gene: str, phenotype: str, activity: str | None = None, diplotype: str = "*x/*y") -> GeneResult:
    return GeneResult(gene=gene, diplotype=diplotype, observation=f"Observation/{gene}",
                      call=PhenotypeCall(gene=gene, diplotype=diplotype, phenotype=phenotype,
                                         activity_score=activity, method="test"))


def prof(*results: GeneResult) -> GenomicProfile:
    return GenomicProfile(patient_id="p", genes={r.gene: r for r in results})


def cond(system: str, code: str, **extra) -> dict:
    return {"resourceType": "Condition", "code": {"coding": [{"system": system, "code": code}]}, **extra}


def med(code: str | None = None, display: str | None = None, authored: str | None = None, mid: str = "m1",
        status: str = "active") -> dict:
    coding = {"system": RX}
    if code:
        coding["code"] = code
    if display:
        coding["display"] = display
    m = {"resourceType": "MedicationRequest", "id": mid, "status": status, "intent": "order",
         "medicationCodeableConcept": {"coding": [coding]}}
    if authored:
        m["authoredOn"] = authored
    return m


def order(code: str | None, text: str | None = None, *, dose: float | None = None, unit: str = "mg",
          dosage: dict | None = None, oid: str = "draft-1") -> DraftOrder:
    resource: dict = {"resourceType": "MedicationRequest", "id": oid, "status": "draft", "intent": "order",
                      "medicationCodeableConcept": {"coding": [{"system": RX, **({"code": code} if code else {}),
                                                                 **({"display": text} if text else {})}]}}
    if dose is not None or dosage is not None:
        di = copy.deepcopy(dosage) if dosage else {}
        if dose is not None:
            di["doseAndRate"] = [{"doseQuantity": {"value": dose, "unit": unit}}]
        resource["dosageInstruction"] = [di]
    return extract_orders({"resourceType": "Bundle", "entry": [{"resource": resource}]}, None)[0]


def patient(**kw) -> PatientData:
    kw.setdefault("birth_date", ADULT)
    kw.setdefault("sex", "female")
    return PatientData(patient_id="p", **kw)


def one(k, profile, o, pat):
    recs = evaluate_order(k, profile, o, pat, settings=Settings(), today=TODAY)
    assert len(recs) == 1, [r.rule_id for r in recs]
    return recs[0]


def offered(rec) -> dict[str, bool]:
    return {a.name: a.recommended for a in rec.alternatives}


def withheld(rec) -> dict[str, str]:
    return {w.name: w.effect for w in rec.withheld}


def card(rec, o: DraftOrder | None):
    return build_card_template(rec, patient_id="p", order=o).model_dump(mode="json", exclude_none=True)


CLOP = "32968"
C19_PM = res("CYP2C19", "Poor Metabolizer", diplotype="*2/*2")
ACS = cond(ICD10, "I21.4")

# --------------------------------------------------------------------------------------------
# Contraindications of alternatives (cards/safety/contraindications.yaml)


def test_prasugrel_is_offered_and_recommended_when_nothing_speaks_against_it(k):
    r = one(k, prof(C19_PM), order(CLOP), patient(conditions=[ACS]))
    assert offered(r) == {"prasugrel": True, "ticagrelor": False}
    assert r.withheld == []


@pytest.mark.parametrize("stroke", [
    cond(SCT, "230690007"),  # cerebrovascular accident
    cond(SCT, "266257000"),  # TIA
    cond(ICD10, "Z86.73"),  # personal history of TIA / cerebral infarction
    cond(ICD10, "I63.9", clinicalStatus={"coding": [{"code": "resolved"}]}),  # a resolved stroke is still a prior stroke
    cond("http://hl7.org/fhir/sid/icd-10", "G45.9"),
])
def test_prasugrel_is_left_out_after_stroke_or_tia(k, stroke):
    r = one(k, prof(C19_PM), order(CLOP), patient(conditions=[ACS, stroke]))
    assert offered(r) == {"ticagrelor": False}  # ticagrelor stays, not promoted to "recommended"
    assert withheld(r) == {"prasugrel": "excluded"}
    w = r.withheld[0]
    assert w.check == "stroke-tia" and "boxed warning" in (w.citation or "")
    assert any("Prasugrel left out of the one-click choices" in n and "stroke" in n for n in r.notes)
    c = card(r, order(CLOP))
    assert [s["label"] for s in c["suggestions"]] == ["Use ticagrelor instead of clopidogrel"]
    assert c["extension"]["pgx-cds"]["alternativesWithheld"][0]["name"] == "prasugrel"
    assert "Prasugrel left out" in c["detail"]


def test_refuted_stroke_does_not_exclude_prasugrel(k):
    refuted = cond(SCT, "230690007", verificationStatus={"coding": [{"code": "refuted"}]})
    r = one(k, prof(C19_PM), order(CLOP), patient(conditions=[ACS, refuted]))
    assert offered(r) == {"prasugrel": True, "ticagrelor": False}


def test_prasugrel_at_75_or_over_is_offered_but_not_recommended(k):
    r = one(k, prof(C19_PM), order(CLOP), patient(conditions=[ACS], birth_date=OLD))
    assert offered(r) == {"prasugrel": False, "ticagrelor": False}
    assert withheld(r) == {"prasugrel": "not_recommended"}
    c = card(r, order(CLOP))
    assert not any(s.get("isRecommended") for s in c["suggestions"])


@pytest.mark.parametrize("anticoagulant", [
    med("1364430"),  # apixaban ingredient code
    med("9999999", "Eliquis 5 MG Oral Tablet"),  # product code we do not know: recognised by brand
    med(None, "warfarin sodium 5 MG Oral Tablet"),
])
def test_oral_anticoagulant_demotes_both_p2y12_alternatives(k, anticoagulant):
    r = one(k, prof(C19_PM), order(CLOP), patient(conditions=[ACS], medications=[anticoagulant]))
    assert offered(r) == {"prasugrel": False, "ticagrelor": False}
    assert withheld(r) == {"prasugrel": "not_recommended", "ticagrelor": "not_recommended"}
    assert any("anticoagulant" in n for n in r.notes)


def test_stopped_anticoagulant_does_not_count(k):
    r = one(k, prof(C19_PM), order(CLOP), patient(conditions=[ACS], medications=[med("1364430", status="stopped")]))
    assert offered(r) == {"prasugrel": True, "ticagrelor": False}


def test_ticagrelor_is_left_out_with_a_strong_cyp3a_inhibitor_after_stroke(k):
    """Neurovascular population: ticagrelor is the only alternative; with clarithromycin none is one-click."""
    r = one(k, prof(C19_PM), order(CLOP), patient(conditions=[cond(ICD10, "I63.5")],
                                                   medications=[med(None, "clarithromycin 500 MG Oral Tablet")]))
    assert r.alternatives == []
    assert withheld(r) == {"ticagrelor": "excluded"}
    assert "suggestions" not in card(r, order(CLOP))


def test_unobtainable_record_never_reads_as_no_contraindication(k):
    """Conditions that could not be obtained: a prior stroke cannot be ruled out, so no one-click prasugrel."""
    pat = patient(conditions=[], unavailable=["conditions"])
    r = one(k, prof(C19_PM), order(CLOP, ), pat)
    assert "prasugrel" not in offered(r)
    assert withheld(r)["prasugrel"] == "excluded"
    assert any("could not be ruled out" in n and "conditions not available" in n for n in r.notes)


def test_unknown_age_stops_prasugrel_from_being_recommended(k):
    r = one(k, prof(C19_PM), order(CLOP), patient(conditions=[ACS], birth_date=None))
    assert offered(r) == {"prasugrel": False, "ticagrelor": False}


TAM = "10324"
D6_PM = res("CYP2D6", "Poor Metabolizer", "0.0", "*4/*4")
AIS = ["anastrozole", "letrozole", "exemestane"]


@pytest.mark.parametrize("sex,birth,conditions,expected", [
    ("male", OLD, [], []),  # not a monotherapy switch in men
    ("female", date(1974, 1, 1), [], []),  # 52, menopause not documented
    ("female", date(1974, 1, 1), [cond(ICD10, "Z78.0")], AIS),  # 52, postmenopausal documented
    ("female", date(1974, 1, 1), [cond(SCT, "76498008")], AIS),
    ("female", date(1960, 1, 1), [], AIS),  # 66: postmenopausal by age
    (None, date(1960, 1, 1), [], []),  # sex unknown: men cannot be ruled out
])
def test_aromatase_inhibitor_only_where_it_can_be_monotherapy(k, sex, birth, conditions, expected):
    r = one(k, prof(D6_PM), order(TAM), patient(sex=sex, birth_date=birth, conditions=conditions))
    assert [a.name for a in r.alternatives] == expected
    if not expected:
        assert set(withheld(r)) == set(AIS) and all(v == "excluded" for v in withheld(r).values())


CELECOXIB = "140587"
C9_PM = res("CYP2C9", "Poor Metabolizer", "0.0", "*3/*3")


def test_aspirin_is_not_an_nsaid_swap_for_a_child_and_ketorolac_never_one_click(k):
    child = one(k, prof(C9_PM), order(CELECOXIB), patient(birth_date=date(2015, 1, 1)))
    assert [a.name for a in child.alternatives] == ["naproxen"]
    assert withheld(child) == {"ketorolac": "not_offered", "aspirin": "excluded"}
    adult = one(k, prof(C9_PM), order(CELECOXIB), patient())
    assert [a.name for a in adult.alternatives] == ["naproxen", "aspirin"]
    assert withheld(adult) == {"ketorolac": "not_offered"}
    assert any("Ketorolac is not offered as a one-click order" in n and "5 days" in n for n in adult.notes)


# --------------------------------------------------------------------------------------------
# Alternatives CPIC does not name for this genotype; products


AMI = "704"


def test_secondary_amine_tca_not_one_click_for_a_cyp2d6_intermediate_metabolizer(k):
    im = one(k, prof(res("CYP2D6", "Intermediate Metabolizer", "0.5"), res("CYP2C19", "Ultrarapid Metabolizer")),
             order(AMI), patient())
    assert im.alternatives == []
    assert withheld(im) == {"nortriptyline": "not_offered", "desipramine": "not_offered"}
    nm = one(k, prof(res("CYP2D6", "Normal Metabolizer", "2.0"), res("CYP2C19", "Ultrarapid Metabolizer")),
             order(AMI), patient())
    assert [a.name for a in nm.alternatives] == ["nortriptyline", "desipramine"]


def test_liposomal_amphotericin_is_never_ordered_under_the_ingredient_code(k):
    r = one(k, prof(C19_PM), order("121243"), patient())
    assert "amphotericin B liposomal" not in offered(r)
    assert withheld(r)["amphotericin B liposomal"] == "not_offered"
    assert any("conventional amphotericin B" in n for n in r.notes)
    c = card(r, order("121243"))
    assert all("732" not in str(s) for s in c.get("suggestions", []))


def test_knowledge_check_rejects_a_product_alternative_ordered_by_ingredient(tmp_path):
    import shutil

    shutil.copytree(REPO_ROOT / "cards", tmp_path / "cards")
    f = tmp_path / "cards" / "guidelines" / "voriconazole-cyp2c19.yaml"
    text = f.read_text()
    start = text.index("      - {name: amphotericin B liposomal")
    end = text.index("}", start) + 1
    f.write_text(text[:start] + '      - {name: amphotericin B liposomal, rxnorm: "732"}' + text[end:])
    problems = [str(p) for p in check_knowledge(tmp_path / "cards") if p.severity == "error"]
    assert any("names a specific product" in p and "voriconazole" in p for p in problems)
    f.write_text(text[:start] + '      - {name: amphotericin B liposomal, rxnorm: "732", one_click: false}' + text[end:])
    assert any("needs `why`" in str(p) for p in check_knowledge(tmp_path / "cards"))


CODEINE_PM = res("CYP2D6", "Poor Metabolizer", "0.0", "*4/*4")


@pytest.mark.parametrize("o", [
    order("993781"),  # acetaminophen 300 MG / codeine 30 MG (product code only, no display)
    order(None, "Tylenol with Codeine #3"),
    order("999999", "Acetaminophen 300 MG / Codeine Phosphate 30 MG Oral Tablet"),
    order("997164"),  # codeine / ibuprofen
])
def test_switching_a_combination_product_never_silently_drops_its_other_ingredient(k, o):
    r = one(k, prof(CODEINE_PM), o, patient())
    assert r.drug.name == "codeine"
    assert r.alternatives == []
    assert withheld(r) == {"morphine": "not_offered"}
    note = next(n for n in r.notes if n.startswith("No one-click switch"))
    assert "acetaminophen" in note or "ibuprofen" in note
    assert "suggestions" not in card(r, o)


def test_single_ingredient_codeine_product_is_recognised_and_switchable(k):
    o = order("997285")  # codeine phosphate 30 MG Oral Tablet, code only
    assert [d.name for d in recognise(k, o)] == ["codeine"]
    r = one(k, prof(CODEINE_PM), o, patient())
    assert [a.name for a in r.alternatives] == ["morphine"]


@pytest.mark.parametrize("code,drug", [("309362", "clopidogrel"), ("993781", "codeine"), ("835603", "tramadol")])
def test_product_level_codes_are_recognised(k, code, drug):
    assert [d.name for d in recognise(k, DraftOrder(codes=[MedicationCode(system=RX, code=code)]))] == [drug]


def test_contained_medication_with_unknown_product_code_is_recognised_by_its_ingredient(k):
    mr = {"resourceType": "MedicationRequest", "id": "d1", "status": "draft", "intent": "order",
          "contained": [{"resourceType": "Medication", "id": "med1",
                         "code": {"coding": [{"system": RX, "code": "213169"}]},  # an SBD we do not list
                         "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RX, "code": CLOP}]}}]}],
          "medicationReference": {"reference": "#med1"}}
    o = extract_orders(mr, None)[0]
    assert [d.name for d in recognise(k, o)] == ["clopidogrel"]
    active = {**mr, "status": "active"}
    assert [d.name for d in medication_request_drugs(k.drug_index, active)] == ["clopidogrel"]


# --------------------------------------------------------------------------------------------
# Dose changes only where CPIC's number applies


PHENYTOIN = "8183"
C9_IM = res("CYP2C9", "Intermediate Metabolizer", "1.0", "*1/*3")


def _updates(c: dict) -> list[dict]:
    return [s for s in c.get("suggestions", []) if s["actions"][0]["type"] == "update"]


@pytest.mark.parametrize("dosage,why", [
    ({"timing": {"repeat": {"count": 1}}}, "timing count 1"),
    ({"text": "Loading dose: 15 mg/kg IV"}, "loading"),
    ({"timing": {"code": {"text": "STAT"}}}, "STAT"),
    ({"patientInstruction": "single dose before surgery"}, "single dose"),
])
def test_a_loading_or_once_only_dose_is_never_scaled(k, dosage, why):
    o = order(PHENYTOIN, dose=1000, dosage=dosage)
    r = one(k, prof(C9_IM), o, patient())
    assert r.dose is not None and r.dose.factor == 0.75 and r.dose.one_click is False
    assert any("loading or once-only" in n and why.lower() in n.lower() for n in r.notes)
    assert _updates(card(r, o)) == []


def test_sequenced_loading_then_maintenance_is_not_scaled(k):
    o = order(PHENYTOIN, dose=1000)
    o.resource["dosageInstruction"] = [
        {"sequence": 1, "doseAndRate": [{"doseQuantity": {"value": 1000, "unit": "mg"}}]},
        {"sequence": 2, "doseAndRate": [{"doseQuantity": {"value": 100, "unit": "mg"}}],
         "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}}]
    o = extract_orders({"resourceType": "Bundle", "entry": [{"resource": o.resource}]}, None)[0]  # read once
    assert _loading_dose_reason(o.dosage) and _updates(card(one(k, prof(C9_IM), o, patient()), o)) == []


def test_a_maintenance_dose_is_scaled(k):
    o = order(PHENYTOIN, dose=100, dosage={"text": "100 mg three times daily", "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}})
    (u,) = _updates(card(one(k, prof(C9_IM), o, patient()), o))
    assert u["actions"][0]["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 75


TACRO = "42316"
C3A5_NM = res("CYP3A5", "Normal Metabolizer", diplotype="*1/*1")
BID = {"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}}}


def test_starting_dose_advice_is_informational_for_a_patient_already_on_the_drug(k):
    o = order(TACRO, dose=5, dosage=BID)
    r = one(k, prof(C3A5_NM), o, patient(weight_kg=70, medications=[med(TACRO, authored="2026-01-10")]))
    assert r.dose.one_click is False
    assert any("already an active medication" in n and "therapeutic drug monitoring" in n for n in r.notes)
    assert _updates(card(r, o)) == []


@pytest.mark.parametrize("dose,weight,ok", [(5, 70, True), (10, 70, False), (5, None, False)])
def test_tacrolimus_increase_respects_cpic_maximum_of_0_3_mg_per_kg_per_day(k, dose, weight, ok):
    """5 mg twice daily x1.5 = 15 mg/day <= 21 mg/day at 70 kg; 10 mg twice daily x1.5 = 30 mg/day is over."""
    o = order(TACRO, dose=dose, dosage=BID)
    r = one(k, prof(C3A5_NM), o, patient(weight_kg=weight))
    assert r.dose.one_click is ok
    assert bool(_updates(card(r, o))) is ok
    if not ok:
        assert any("0.3 mg/kg/day" in n for n in r.notes)


@pytest.mark.parametrize("drug,profile_,already", [
    ("194000", prof(res("DPYD", "Intermediate Metabolizer", "1.5", "c.1905+1G>A/Reference")), "194000"),
    ("2556", prof(res("CYP2C19", "Poor Metabolizer", diplotype="*2/*2")), "2556"),
    ("704", prof(res("CYP2D6", "Normal Metabolizer", "2.0"), res("CYP2C19", "Poor Metabolizer")), "704"),
])
def test_starting_dose_cut_only_for_a_new_start(k, drug, profile_, already):
    o = order(drug, dose=100)
    new = one(k, profile_, o, patient())
    assert new.dose.one_click is True and _updates(card(new, o))
    on = one(k, profile_, o, patient(medications=[med(already, authored="2026-05-01", mid="other")]))
    assert on.dose.one_click is False and not _updates(card(on, o))
    unknown = one(k, profile_, o, patient(unavailable=["medications"]))
    assert unknown.dose.one_click is False
    assert any("could not be checked" in n for n in unknown.notes)


def test_atomoxetine_starting_advice_says_it_does_not_apply_when_already_taken(k):
    r = one(k, prof(D6_PM), order("38400"), patient(medications=[med("38400", authored="2026-01-01")]))
    assert any("already an active medication" in n for n in r.notes)


def test_thiopurine_in_malignancy_is_never_a_daily_ten_percent_dose(k):
    o = order("103", dose=75)
    r = one(k, prof(res("TPMT", "Poor Metabolizer", diplotype="*3A/*3A"), res("NUDT15", "Normal Metabolizer")),
            o, patient(conditions=[cond(ICD10, "C91.00")]))
    assert r.rule_id.endswith("mal-tpmt-pm") and r.dose.factor == 0.1
    assert r.dose.one_click is False and _updates(card(r, o)) == []
    assert any("three doses a week" in n for n in r.notes)
    assert card(r, o)["extension"]["pgx-cds"]["doseChangeWithheld"] is True


@pytest.mark.parametrize("meds,ok", [
    ([], False),  # a new PPI order
    ([med("7646", authored="2026-04-01")], False),  # 61 days
    ([med("7646", authored="2026-01-01")], True),  # 151 days: chronic therapy
])
def test_ppi_reduction_only_after_twelve_weeks(k, meds, ok):
    o = order("7646", dose=40)
    r = one(k, prof(C19_PM), o, patient(medications=meds))
    assert r.dose.factor == 0.5 and r.dose.one_click is ok
    assert bool(_updates(card(r, o))) is ok


@pytest.mark.parametrize("birth,weight,shown,note", [
    (ADULT, None, True, None),
    (date(2016, 1, 1), 45, True, None),  # child over 40 kg
    (date(2016, 1, 1), 30, False, "outside that range"),
    (date(2016, 1, 1), None, True, "not in the record"),
])
def test_efavirenz_dose_numbers_only_for_adults_and_children_over_40_kg(k, birth, weight, shown, note):
    r = one(k, prof(res("CYP2B6", "Poor Metabolizer", diplotype="*6/*6")), order("195085"),
            patient(birth_date=birth, weight_kg=weight))
    assert (r.dose is not None) is shown
    if note:
        assert any(note in n and "40 kg" in n for n in r.notes)
    else:
        assert not any("apply to patients with" in n for n in r.notes)


def test_meloxicam_half_of_lowest_starting_dose_is_not_half_the_ordered_dose(k):
    o = order("41493", dose=15)
    r = one(k, prof(C9_IM), o, patient())
    assert r.dose.factor == 0.5 and r.dose.one_click is False and _updates(card(r, o)) == []


def doses_per_day(resource: dict):
    return _doses_per_day(dosage(resource))  # the fhir stage reads the timing, the dose check uses it


def loading_dose_reason(resource: dict):
    return _loading_dose_reason(dosage(resource))


def test_doses_per_day_reads_fhir_timing():
    assert doses_per_day({"dosageInstruction": [BID]}) == 2
    assert doses_per_day({"dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 8, "periodUnit": "h"}}}]}) == 3
    assert doses_per_day({"dosageInstruction": [{"timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "wk"}}}]}) == pytest.approx(3 / 7)
    assert doses_per_day({"dosageInstruction": [{}]}) is None
    assert loading_dose_reason({"dosageInstruction": [{"text": "once daily"}]}) is None
    assert loading_dose_reason({"dosageInstruction": [{"text": "give once"}]})


# --------------------------------------------------------------------------------------------
# The data the screening needs is fetched


def test_data_needs_cover_the_safety_checks(k):
    from service.hooks.pipeline import _data_needs

    assert {"conditions", "patient"} <= _data_needs(k, {"tamoxifen"})  # aromatase inhibitor checks
    assert {"medications", "vitals"} <= _data_needs(k, {"tacrolimus"})  # already on it? weight limit
    assert {"medications", "conditions", "patient"} <= _data_needs(k, {"clopidogrel"})
    assert "medications" in _data_needs(k, {"capecitabine"})


def test_safety_files_change_the_knowledge_version(tmp_path):
    import shutil

    shutil.copytree(REPO_ROOT / "cards", tmp_path / "cards")
    before = load_knowledge(tmp_path / "cards").version
    f = tmp_path / "cards" / "safety" / "contraindications.yaml"
    f.write_text(f.read_text().replace("age: {min: 75}", "age: {min: 76}"))
    assert load_knowledge(tmp_path / "cards").version != before


def test_unobtainable_prefetch_key_is_marked_unavailable():
    import asyncio

    from service.fhir.client import FhirClient
    from service.fhir.patient_data import load_patient_data

    async def go():
        client = FhirClient(Settings())
        try:
            return await load_patient_data(hook="order-select", patient_id="p", fhir_server=None, access_token=None,
                                           prefetch={"pgxObservations": {"resourceType": "Bundle", "entry": []},
                                                     "patient": None, "vitals": None, "medications": None},
                                           client=client, settings=Settings())
        finally:
            await client.aclose()

    data = asyncio.run(go())
    assert data.unavailable == ["conditions"]


def test_files_exist_where_the_readme_says():
    for name in ("contraindications.yaml", "products.yaml"):
        assert (Path(REPO_ROOT) / "cards" / "safety" / name).is_file()


QD = {"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}


@pytest.mark.parametrize("dose,dosage,ok", [
    (20, QD, True),  # 10 mg/day: within CPIC's 10 mg/day maximum
    (40, QD, False),  # 20 mg/day: over
    (20, None, False),  # frequency unknown: cannot be checked
    (10, {"timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}}, False),  # 15 mg/day
])
def test_vortioxetine_reduction_respects_cpic_maximum_daily_dose(k, dose, dosage, ok):
    o = order("1455099", dose=dose, dosage=dosage)
    r = one(k, prof(D6_PM), o, patient())
    assert r.dose.one_click is ok and bool(_updates(card(r, o))) is ok
    if not ok:
        assert any("10 mg/day" in n for n in r.notes)


def test_starting_dose_card_for_a_patient_already_on_the_drug_is_info_not_warning(k):
    o = order(TACRO, dose=5, dosage=BID)
    new = one(k, prof(C3A5_NM), o, patient(weight_kg=70))
    on = one(k, prof(C3A5_NM), o, patient(weight_kg=70, medications=[med(TACRO, authored="2026-01-10")]))
    assert new.indicator == "warning" and on.indicator == "info"
    assert on.dose.informational and not new.dose.informational


def test_secondary_amine_tca_left_out_with_an_maoi_or_a_recent_infarction(k):
    p = prof(res("CYP2D6", "Normal Metabolizer", "2.0"), res("CYP2C19", "Ultrarapid Metabolizer"))
    maoi = one(k, p, order(AMI), patient(medications=[med(None, "linezolid 600 MG Oral Tablet")]))
    assert maoi.alternatives == [] and withheld(maoi) == {"nortriptyline": "excluded", "desipramine": "excluded"}
    mi = one(k, p, order(AMI), patient(conditions=[cond(ICD10, "I21.09")]))
    assert mi.alternatives == []


def test_posaconazole_not_one_click_under_two_years(k):
    baby = one(k, prof(C19_PM), order("121243"), patient(birth_date=date(2025, 9, 1)))
    assert "posaconazole" not in offered(baby) and withheld(baby)["posaconazole"] == "excluded"
    child = one(k, prof(C19_PM), order("121243"), patient(birth_date=date(2018, 1, 1)))
    assert offered(child) == {"posaconazole": True}
