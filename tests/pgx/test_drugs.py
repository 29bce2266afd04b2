"""Drug recognition from RxNorm codes, product codes, names and brands."""

from __future__ import annotations

import pytest

from service.config import REPO_ROOT
from service.fhir.models import DraftOrder, MedicationCode
from service.fhir.context import medication_drugs_of as medication_request_drugs
from service.pgx.drugs import recognise
from service.pgx.knowledge import load_knowledge

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture(scope="module")
def k():
    return load_knowledge(REPO_ROOT / "cards")


def names(k, **kw):
    return [d.name for d in recognise(k, DraftOrder(**kw))]


def test_ingredient_code(k):
    refs = recognise(k, DraftOrder(codes=[MedicationCode(system=RX, code="32968")]))
    assert [(r.name, r.rxnorm) for r in refs] == [("clopidogrel", "32968")]


def test_product_code_from_guideline_file(k):
    assert names(k, codes=[MedicationCode(system=RX, code="309362")]) == ["clopidogrel"]


def test_code_in_other_system_is_ignored(k):
    assert names(k, codes=[MedicationCode(system="http://example.org/local", code="32968")]) == []


@pytest.mark.parametrize("text,expected", [
    ("Plavix 75 mg tablet", ["clopidogrel"]),
    ("clopidogrel bisulfate 75 MG Oral Tablet", ["clopidogrel"]),
    ("CLOPIDOGREL", ["clopidogrel"]),
    ("dexlansoprazole 30 MG Delayed Release Oral Capsule", ["dexlansoprazole"]),
    ("lansoprazole 15 MG", ["lansoprazole"]),
    ("esomeprazole 20 MG", []),
    ("Tylenol with Codeine #3", ["codeine"]),
    ("acetaminophen 300 MG / codeine phosphate 30 MG Oral Tablet", ["codeine"]),
    ("amitriptyline/perphenazine", ["amitriptyline"]),
    ("clopidogrelx", []),
])
def test_text_matching(k, text, expected):
    assert names(k, text=text) == expected


def test_display_of_unknown_code_is_matched_by_name(k):
    code = MedicationCode(system=RX, code="999999", display="tramadol hydrochloride 50 MG Oral Tablet")
    assert names(k, codes=[code]) == ["tramadol"]


def test_combination_product_gives_each_ingredient(k):
    assert sorted(names(k, text="tramadol 37.5 MG / celecoxib 56 MG")) == ["celecoxib", "tramadol"]


def test_no_duplicates_when_code_and_text_agree(k):
    assert names(k, codes=[MedicationCode(system=RX, code="32968", display="Plavix")], text="clopidogrel") == ["clopidogrel"]


def test_medication_request_resource(k):
    mr = {"resourceType": "MedicationRequest",
          "medicationCodeableConcept": {"coding": [{"system": RX, "code": "2002"}], "text": "Tegretol"}}
    assert [r.name for r in medication_request_drugs(k.drug_index, mr)] == ["carbamazepine"]


def test_names_found_in_a_text_are_remembered_per_index_and_bounded(k):
    """Order texts repeat across patients: the name scan is done once per text (issue 14), with the same
    answers, a fresh list for every caller, and a bounded memo."""
    first = recognise(k, DraftOrder(text="Plavix 75 MG Oral Tablet"))
    first.append("caller's own change")
    again = recognise(k, DraftOrder(text="Plavix 75 MG Oral Tablet"))
    assert [d.name for d in again] == ["clopidogrel"]
    assert k.drug_index.named_in("Plavix 75 MG Oral Tablet") is k.drug_index.named_in("Plavix 75 MG Oral Tablet")
    assert names(k, text="lisinopril 10 MG Oral Tablet") == [] and names(k, text="lisinopril 10 MG Oral Tablet") == []
    for i in range(5000):
        k.drug_index.named_in(f"metformin {i} MG")
    assert len(k.drug_index._named) <= 4096
    assert names(k, text="codeine and PLAVIX") == ["codeine", "clopidogrel"]
