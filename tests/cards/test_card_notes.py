"""Which notes a card carries: only those that apply to this drug and this result, warnings flagged only
when they warn."""

from __future__ import annotations

import re
from datetime import date

import pytest

from service.config import REPO_ROOT, Settings
from service.fhir.models import DraftOrder, MedicationCode, PatientData
from service.pgx.engine import evaluate_order
from service.pgx.guidelines import NoteDef
from service.pgx.knowledge import load_knowledge
from service.pgx.models import GeneEvidence, GeneResult, GenomicProfile, PhenotypeCall
from service.pgx.notes import split_notes

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture(scope="module")
def k():
    return load_knowledge(REPO_ROOT / "cards")


def _rec(k, rxnorm: str, *results: GeneResult, birth: date | None = None):
    order = DraftOrder(id="d1", codes=[MedicationCode(system=RXNORM, code=rxnorm)])
    recs = evaluate_order(k, GenomicProfile(patient_id="p", genes={r.gene: r for r in results}), order,
                          PatientData(patient_id="p", birth_date=birth), settings=Settings(), today=date(2026, 6, 1))
    assert len(recs) == 1
    return recs[0]


def _d6(score: str, pheno: str, notes: list[str] | None = None) -> GeneResult:
    return GeneResult(gene="CYP2D6", diplotype="*4/*4", notes=notes or [],
                      call=PhenotypeCall(gene="CYP2D6", diplotype="*4/*4", phenotype=pheno, activity_score=score))


def test_tamoxifen_poor_metabolizer_card_has_no_activity_score_boundary_note(k) -> None:
    rec = _rec(k, "10324", _d6("0.0", "Poor Metabolizer"))
    text = " ".join(rec.notes + rec.info_notes)
    assert "1.25" not in text and "1.0" not in text


def test_guideline_level_notes_do_not_name_a_specific_result(k) -> None:
    # a guideline-level note is printed on every card of the guideline: it must not be about one result
    specific = re.compile(r"\bAS \d|activity score \d|\b(poor|intermediate|ultrarapid|rapid|normal) metaboli[sz]er",
                          re.IGNORECASE)
    for g in k.guidelines.values():
        for n in g.notes:
            text = n.text if isinstance(n, NoteDef) else n
            assert not specific.search(text), (g.id, text)


@pytest.mark.parametrize("rxnorm,drug", [("2670", "codeine"), ("10689", "tramadol")])
@pytest.mark.parametrize("score,pheno", [("0.0", "Poor Metabolizer"), ("3.0", "Ultrarapid Metabolizer"),
                                         ("0.5", "Intermediate Metabolizer")])
def test_codeine_and_tramadol_cards_carry_the_fda_boxed_contraindications(k, rxnorm, drug, score, pheno) -> None:
    rec = _rec(k, rxnorm, _d6(score, pheno))
    fda = [n for n in rec.notes if n.startswith("FDA boxed warning")]
    assert len(fda) == 1
    assert "under 12 years" in fda[0] and "breastfeeding" in fda[0] and "Drug Safety Communication" in fda[0]


def test_hydrocodone_card_does_not_carry_the_codeine_tramadol_warning(k) -> None:
    rec = _rec(k, "5489", _d6("0.0", "Poor Metabolizer"))
    assert not any("FDA boxed warning" in n for n in rec.notes + rec.info_notes)


def _ev(gene: str, pheno: str) -> list[GeneEvidence]:
    return [GeneEvidence(gene=gene, phenotype=pheno)]


@pytest.mark.parametrize("note,drug,expect", [
    ("CYP2C19: lab-reported implication for clopidogrel: Poor metabolizer (Observation/t1)", "clopidogrel", "info"),
    ("CYP2C19: lab-reported implication for clopidogrel: Poor metabolizer (Observation/t1)", "sertraline", "dropped"),
    ("CYP2C19: lab-reported implication for Clopidogrel: Poor metabolizer (Observation/t1)", "clopidogrel", "info"),
    ("CYP2C19: lab-reported implication for clopidogrel: Intermediate metabolizer (Observation/t1)", "clopidogrel", "warn"),
    ("CYP2C19: lab-reported implication: CYP2C19 Poor Metabolizer (Observation/t1)", "omeprazole", "info"),
    ("CYP2C19: lab-reported implication: Likely poor metabolizer (Observation/t1)", "omeprazole", "warn"),
    ("CYP2C19: result status is preliminary", "omeprazole", "warn"),
])
def test_lab_implications_shown_on_their_drug_and_flagged_only_when_they_disagree(note, drug, expect) -> None:
    warn, info = split_notes([note], drug, _ev("CYP2C19", "Poor Metabolizer"))
    got = "warn" if warn else "info" if info else "dropped"
    assert got == expect, (warn, info)
    if got == "warn" and "implication" in note:
        assert "differs" in warn[0]


def test_knowledge_notes_by_drug_and_flag() -> None:
    notes = [NoteDef(text="only codeine", drugs=["codeine"]), NoteDef(text="plain info", warn=False), "a warning"]
    assert split_notes(notes, "codeine", []) == (["only codeine", "a warning"], ["plain info"])
    assert split_notes(notes, "hydrocodone", []) == (["a warning"], ["plain info"])
