"""The view builder and the CPIC scale placement (pure functions)."""

from __future__ import annotations

import pytest

from service.pgx.models import Action, DrugRef, GeneEvidence, Recommendation
from service.smart.scales import scale_for
from service.smart.view import banner_from_patient, build_view
from tests.smart import fixtures


def _active(sc) -> list[str]:
    return [b.label for b in sc.bands if b.active]


@pytest.mark.parametrize(
    ("gene", "pheno", "score", "active", "marker"),
    [
        ("CYP2D6", "Normal Metabolizer", "1.25", ["NM"], 1.25 / 3),
        ("CYP2D6", "Poor Metabolizer", "0", ["PM"], 0.0),
        ("CYP2D6", "Intermediate Metabolizer", "1.0", ["IM"], 1 / 3),
        ("CYP2D6", "Ultrarapid Metabolizer", "≥3.0", ["UM"], 1.0),
        ("CYP2D6", "Ultrarapid Metabolizer", "4.0", ["UM"], 1.0),
        ("CYP2C9", "Intermediate Metabolizer", "1.5", ["IM"], 0.75),
        ("DPYD", "Poor Metabolizer", "0.5", ["PM"], 0.25),
        ("DPYD", "Normal Metabolizer", "2", ["NM"], 1.0),
    ],
)
def test_activity_score_scale(gene, pheno, score, active, marker):
    sc = scale_for(gene, pheno, score)
    assert sc.kind == "activity"
    assert _active(sc) == active
    assert sc.marker == pytest.approx(marker)
    assert score in sc.description and pheno in sc.description


@pytest.mark.parametrize(
    ("gene", "pheno", "active", "marker"),
    [
        ("CYP2C19", "Ultrarapid Metabolizer", ["UM"], 0.9),
        ("CYP2C19", "Rapid Metabolizer", ["RM"], 0.7),
        ("CYP2C19", "Likely Poor Metabolizer", ["PM"], 0.1),
        ("CYP2C19", "Intermediate Metabolizer", ["IM"], 0.3),
        ("TPMT", "Normal Metabolizer", ["NM"], 2.5 / 3),
        ("SLCO1B1", "Possible Decreased Function", ["Decreased"], 0.375),
        ("SLCO1B1", "Poor Function", ["Poor"], 0.125),
    ],
)
def test_ordinal_scale(gene, pheno, active, marker):
    sc = scale_for(gene, pheno, None)
    assert sc.kind == "ordinal"
    assert _active(sc) == active
    assert sc.marker == pytest.approx(marker)


def test_indeterminate_is_never_placed():
    for gene, score in (("CYP2D6", "n/a"), ("CYP2C19", None)):
        sc = scale_for(gene, "Indeterminate", score)
        assert sc.marker is None and _active(sc) == []
        assert "not" in sc.description


def test_genes_without_a_scale():
    sc = scale_for("HLA-B", "*57:01 positive", None)
    assert sc.kind == "none" and sc.bands == [] and "HLA-B" in sc.description


def _matcher(res):
    text = (res.get("medicationCodeableConcept") or {}).get("text", "").lower()
    return [fixtures.CLOPIDOGREL] if "clopidogrel" in text else []


def test_build_view_groups_drugs_by_result_and_flags_current_medications():
    v = build_view(fixtures.patient_data(), fixtures.profile(), fixtures.recommendations(),
                   knowledge_version="kv1", med_matcher=_matcher)
    assert [r.gene for r in v.rows] == ["CYP2C19", "CYP2D6", "SLCO1B1"]
    by_gene = {r.gene: r for r in v.rows}
    assert [d.drug for d in by_gene["CYP2C19"].drugs] == ["clopidogrel"]
    clop = by_gene["CYP2C19"].drugs[0]
    assert clop.current and clop.changes_prescribing and clop.action_label == "Avoid"
    assert clop.rule == "clopidogrel-cyp2c19/acs-pm"
    assert by_gene["CYP2C19"].lab == "Synthetic Genomics Lab" and by_gene["CYP2C19"].effective == "2024-03-01"
    codeine = by_gene["CYP2D6"].drugs[0]
    assert not codeine.current and not codeine.changes_prescribing
    assert by_gene["SLCO1B1"].indeterminate and by_gene["SLCO1B1"].scale.marker is None
    assert [m.name for m in v.medications] == ["Clopidogrel 75 mg oral tablet"]
    assert v.medications[0].affected and v.other_medication_count == 1
    kinds = sorted(p.kind for p in v.problems)
    assert kinds == ["conflict", "indeterminate", "unreadable"]
    assert v.banner is None and v.focus is None and v.knowledge_version == "kv1"


def test_a_multi_gene_recommendation_appears_under_each_gene():
    rec = Recommendation(
        drug=DrugRef(name="amitriptyline", rxnorm="704"), guideline_id="tca", guideline_name="CPIC TCA",
        guideline_url="https://cpicpgx.org/guidelines/tca/", rule_id="r1", action=Action.reduce_dose,
        strength="Moderate", indicator="warning", summary="Start at a lower dose.", detail="d",
        genes=[GeneEvidence(gene="CYP2D6", phenotype="NM"), GeneEvidence(gene="CYP2C19", phenotype="PM")],
        knowledge_version="kv",
    )
    v = build_view(fixtures.patient_data(), fixtures.profile(), [rec])
    by_gene = {r.gene: r for r in v.rows}
    assert [d.drug for d in by_gene["CYP2D6"].drugs] == ["amitriptyline"]
    assert [d.drug for d in by_gene["CYP2C19"].drugs] == ["amitriptyline"]
    assert by_gene["SLCO1B1"].drugs == []


def test_focus_without_recommendation_names_the_missing_gene():
    prof = fixtures.profile()
    del prof.genes["CYP2C19"]
    v = build_view(fixtures.patient_data(), prof, [], focus_drug="Clopidogrel",
                   drug_genes=lambda d: ["CYP2C19"] if d == "clopidogrel" else [])
    assert v.focus is not None and v.focus.drug == "clopidogrel" and v.focus.lines == []
    assert "No result on file for CYP2C19" in v.focus.message


def test_banner_from_patient():
    b = banner_from_patient({
        "resourceType": "Patient",
        "name": [{"use": "usual", "given": ["Bob"]}, {"use": "official", "text": "Robert Smith"}],
        "identifier": [{"type": {"coding": [{"code": "SS"}]}, "value": "x"},
                       {"type": {"coding": [{"code": "MR"}]}, "value": "M1"}],
        "gender": "male",
    })
    assert (b.name, b.identifier, b.gender, b.birth_date) == ("Robert Smith", "M1", "male", None)
    assert banner_from_patient({"resourceType": "Patient"}).name == "Name not recorded"
    assert banner_from_patient(None) is None


@pytest.fixture(scope="module")
def gene_defs():
    from service.config import REPO_ROOT
    from service.pgx.knowledge import load_knowledge

    return load_knowledge(REPO_ROOT / "cards").genes


@pytest.mark.parametrize(
    ("gene", "pheno", "score", "kind", "active"),
    [
        ("CYP2D6", "Ultrarapid Metabolizer", "≥3.0", "activity", ["UM"]),
        ("CYP2D6", "Normal Metabolizer", "2.25", "activity", ["NM"]),
        ("CYP2D6", "Intermediate Metabolizer", "0.25", "activity", ["IM"]),
        ("CYP2C9", "Poor Metabolizer", "0.5", "activity", ["PM"]),
        ("DPYD", "Intermediate Metabolizer", "1.5", "activity", ["IM"]),
        ("CYP2C19", "Rapid Metabolizer", None, "ordinal", ["RM"]),
        ("CYP3A5", "Possible Intermediate Metabolizer", None, "ordinal", ["IM"]),
        ("SLCO1B1", "Poor Function", None, "ordinal", ["Poor"]),
        ("G6PD", "Deficient", None, "ordinal", ["Deficient"]),
        ("HLA-B", "*57:01 positive", None, "none", []),
    ],
)
def test_scales_from_the_knowledge_files(gene_defs, gene, pheno, score, kind, active):
    sc = scale_for(gene, pheno, score, gene_defs.get(gene))
    assert sc.kind == kind
    assert _active(sc) == active
    if sc.bands:  # contiguous, ordered, covering the whole axis
        assert sc.bands[0].start == 0 and sc.bands[-1].end == pytest.approx(1.0)
        assert all(a.end == pytest.approx(b.start) for a, b in zip(sc.bands, sc.bands[1:]))


def test_cyp2d6_axis_comes_from_the_thresholds(gene_defs):
    sc = scale_for("CYP2D6", "Ultrarapid Metabolizer", "2.5", gene_defs["CYP2D6"])
    assert [b.label for b in sc.bands] == ["PM", "IM", "NM", "UM"]
    assert sc.axis_max == "3+" and sc.marker == pytest.approx(2.5 / 3)
