"""How a result is named in card text."""

from __future__ import annotations

import pytest

from service.pgx.models import GeneEvidence
from service.pgx.wording import capitalise, phenotype_words, result_label, results_label


@pytest.mark.parametrize("ev,text", [
    (GeneEvidence(gene="CYP2C19", phenotype="Poor Metabolizer"), "CYP2C19 poor metabolizer"),
    (GeneEvidence(gene="CYP2C19", phenotype="Likely Poor Metabolizer"), "CYP2C19 likely poor metabolizer"),
    (GeneEvidence(gene="CYP2D6", phenotype="Intermediate Metabolizer", activityScore="1.0"),
     "CYP2D6 intermediate metabolizer (activity score 1.0)"),
    (GeneEvidence(gene="CYP2D6", phenotype="Ultrarapid Metabolizer", activityScore="≥3.0"),
     "CYP2D6 ultrarapid metabolizer (activity score ≥3.0)"),
    (GeneEvidence(gene="HLA-B", phenotype="HLA-B*57:01 positive", alleleStatus="*57:01 positive"), "HLA-B*57:01 positive"),
    (GeneEvidence(gene="G6PD", phenotype="Deficient with CNSHA"),
     "G6PD deficient with chronic non-spherocytic hemolytic anemia (CNSHA)"),
    (GeneEvidence(gene="CYP2C19", phenotype="No Result"), "no CYP2C19 result"),
    (GeneEvidence(gene="CYP2C19", phenotype="Indeterminate"), "CYP2C19 result indeterminate"),
    (GeneEvidence(gene="VKORC1", phenotype="-1639 AG"), "VKORC1 -1639 AG"),
])
def test_result_label(ev, text) -> None:
    assert result_label(ev) == text


def test_two_genes_with_the_same_result_are_named_together() -> None:
    same = [GeneEvidence(gene="CYP2C19", phenotype="Poor Metabolizer"), GeneEvidence(gene="CYP2B6", phenotype="Poor Metabolizer")]
    assert results_label(same) == "CYP2C19 and CYP2B6 poor metabolizers"
    mixed = [GeneEvidence(gene="CYP2D6", phenotype="Intermediate Metabolizer", activityScore="1.0"),
             GeneEvidence(gene="CYP2C19", phenotype="No Result")]
    assert results_label(mixed) == "CYP2D6 intermediate metabolizer, no CYP2C19 result"  # no activity score with two genes
    none = [GeneEvidence(gene="CYP2D6", phenotype="Indeterminate"), GeneEvidence(gene="CYP2C19", phenotype="Indeterminate")]
    assert results_label(none) == "CYP2D6 and CYP2C19 results indeterminate"


def test_capitalise_and_phenotype_words() -> None:
    assert capitalise("clopidogrel: standard dose") == "Clopidogrel: standard dose"
    assert capitalise("CYP2C19 poor metabolizer") == "CYP2C19 poor metabolizer"
    assert capitalise("*57:01 positive") == "*57:01 positive"
    assert phenotype_words("Possible Decreased Function") == "possible decreased function"
