"""parse_diplotype on real lab strings, and how parsed tokens resolve to CPIC alleles."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.pgx.genes import load_genes
from service.pgx.phenotype import call_phenotype, parse_diplotype

GENES = load_genes(Path(__file__).resolve().parents[2] / "cards" / "genes")


@pytest.mark.parametrize(
    ("gene", "text", "expected"),
    [
        ("CYP2C19", "*1/*2", ("*1", "*2")),
        ("CYP2C19", "CYP2C19*1/*2", ("*1", "*2")),
        ("CYP2C19", "CYP2C19 *1/*17", ("*1", "*17")),
        ("CYP2C19", "  cyp2c19*2 / cyp2c19*3 ", ("*2", "*3")),
        ("CYP2C19", "*1|*2", ("*1", "*2")),
        ("CYP2D6", "CYP2D6*7.001 / CYP2D6*1.001", ("*7", "*1")),
        ("CYP2D6", "*1x2/*4", ("*1x2", "*4")),
        ("CYP2D6", "*1/*36+*10", ("*1", "*36+*10")),
        ("CYP2D6", "*4/*4x2", ("*4", "*4x2")),
        ("CYP2D6", "*13 + *1/*2", ("*13 + *1", "*2")),
        ("HLA-B", "HLA-B*57:01/HLA-B*08:01", ("*57:01", "*08:01")),
        ("HLA-B", "hla#3.33.0#HLA-B*08:01/HLA-B*40:01", ("*08:01", "*40:01")),
        ("HLA-B", "hla#3.33.0#HLA-B*08:01+HLA-B*40:01", ("*08:01", "*40:01")),
        ("HLA-B", "HLA-B*57:01:01/HLA-B*08:01:01:02", ("*57:01:01", "*08:01:01:02")),
        ("DPYD", "c.1905+1G>A (*2A)/c.1679T>G (*13)", ("c.1905+1G>A (*2A)", "c.1679T>G (*13)")),
        ("DPYD", "c.2846A>T het", ("Reference", "c.2846A>T")),
        ("DPYD", "c.1905+1G>A homozygous", ("c.1905+1G>A", "c.1905+1G>A")),
        ("G6PD", "B", ("B",)),
        ("G6PD", "A-", ("A-",)),
        ("G6PD", "B/A-", ("B", "A-")),
        ("VKORC1", "rs9923231 C/T", ("rs9923231 reference (C)", "rs9923231 variant (T)")),
        ("VKORC1", "GA", ("rs9923231 reference (C)", "rs9923231 variant (T)")),
        ("VKORC1", "-1639 AA", ("rs9923231 variant (T)", "rs9923231 variant (T)")),
        ("IFNL3", "rs12979860 CC", ("rs12979860 reference (C)", "rs12979860 reference (C)")),
    ],
)
def test_parse_forms(gene, text, expected):
    assert parse_diplotype(gene, text, GENES[gene]) == expected


def test_parse_without_a_definition_uses_the_shipped_cards():
    assert parse_diplotype("VKORC1", "rs9923231 C/T") == ("rs9923231 reference (C)", "rs9923231 variant (T)")
    assert parse_diplotype("CYP2C19", "CYP2C19*1/*2") == ("*1", "*2")


@pytest.mark.parametrize("text", ["", "   ", "*1/", "/*2", "*1//*2"])
def test_unreadable_strings(text):
    assert parse_diplotype("CYP2C19", text, GENES["CYP2C19"]) is None


@pytest.mark.parametrize(
    ("gene", "text", "diplotype", "phenotype", "score"),
    [
        ("CYP2C19", "CYP2C19*1/*2", "*1/*2", "Intermediate Metabolizer", None),
        ("CYP2C19", "CYP2C19 *17/*1", "*1/*17", "Rapid Metabolizer", None),
        ("CYP2D6", "CYP2D6*7.001 / CYP2D6*1.001", "*1/*7", "Intermediate Metabolizer", "1.0"),
        ("CYP2D6", "*1/*36+*10", "*1/*36 + *10", "Normal Metabolizer", "1.25"),
        ("CYP2D6", "*13+*1/*4", "*4/*13 + *1", "Intermediate Metabolizer", "1.0"),
        ("CYP2D6", "*1x3/*4", "*1x≥3/*4", "Ultrarapid Metabolizer", "≥3.0"),
        ("CYP2D6", "*1xN/*1", "*1/*1x≥3", "Ultrarapid Metabolizer", "≥4.0"),
        ("CYP2D6", "*2x3/*4", "*2x≥3/*4", "Ultrarapid Metabolizer", "≥3.0"),
        ("CYP2D6", "*41x3/*4", "*4/*41x3", "Intermediate Metabolizer", "0.75"),
        ("CYP2D6", "*4A/*10B", "*4/*10", "Intermediate Metabolizer", "0.25"),
        ("DPYD", "*2A/Reference", "Reference/c.1905+1G>A (*2A)", "Intermediate Metabolizer", "1.0"),
        ("DPYD", "IVS14+1G>A/c.1679T>G", "c.1679T>G (*13)/c.1905+1G>A (*2A)", "Poor Metabolizer", "0.0"),
        ("DPYD", "HapB3/HapB3", "c.1129-5923C>G, c.1236G>A (HapB3)/c.1129-5923C>G, c.1236G>A (HapB3)", "Intermediate Metabolizer", "1.0"),
        ("VKORC1", "rs9923231 T/T", "rs9923231 variant (T)/rs9923231 variant (T)", "-1639 AA", None),
        ("CYP4F2", "rs2108622 CT", "*1/*3", "*3 carrier", None),
        ("NUDT15", "NUDT15*2/*2", "*3/*3", "Poor Metabolizer", None),
        ("CFTR", "F508del/F508del", "ivacaftor non-responsive CFTR sequence/ivacaftor non-responsive CFTR sequence",
         "ivacaftor non-responsive in CF patients", None),
        ("RYR1", "c.7300G>A heterozygous", "Reference/c.7300G>A", "Malignant Hyperthermia Susceptibility", None),
        ("MT-RNR1", "m.1555A>G", "m.1555A>G", "increased risk of aminoglycoside-induced hearing loss", None),
    ],
)
def test_lab_strings_to_calls(gene, text, diplotype, phenotype, score):
    call = call_phenotype(GENES[gene], text)
    assert (call.diplotype, call.phenotype, call.activity_score) == (diplotype, phenotype, score)


def test_reading_rules_are_explained_in_the_method():
    assert "*1x3 read as *1x≥3" in call_phenotype(GENES["CYP2D6"], "*1x3/*4").method
    assert "*4A read as *4" in call_phenotype(GENES["CYP2D6"], "*4A/*4").method


def test_tpmt_lettered_alleles_are_not_collapsed():
    """TPMT names *3A/*3B/*3C itself, so '*3' or '*3D' must not be guessed."""
    for text in ("*1/*3", "*1/*3D"):
        call = call_phenotype(GENES["TPMT"], text)
        assert call.phenotype == "Indeterminate"
        assert "not in the CPIC TPMT allele table" in call.reason
    assert call_phenotype(GENES["TPMT"], "*1/*3a").phenotype == "Intermediate Metabolizer"
