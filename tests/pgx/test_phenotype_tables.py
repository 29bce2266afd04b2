"""Every expected CPIC row in tests/data/cpic_phenotypes/<GENE>.tsv against the engine.

The TSV files were generated from the PharmCAT/CPIC tables (all rows where the full table was
available; CYP2D6, TPMT, NUDT15, G6PD and RYR1 from the newest allele values plus hand-checked
rows; see each file's first line). Format: diplotype<TAB>phenotype<TAB>activityScore[<TAB>sex].
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service.pgx.genes import load_genes
from service.pgx.phenotype import call_phenotype

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "cpic_phenotypes"
GENES = load_genes(ROOT / "cards" / "genes")
ALL_GENES = ["CYP2C19", "CYP2D6", "CYP2C9", "CYP4F2", "VKORC1", "SLCO1B1", "ABCG2", "TPMT", "NUDT15", "DPYD", "UGT1A1",
             "CYP3A5", "CYP2B6", "HLA-A", "HLA-B", "G6PD", "RYR1", "CACNA1S", "MT-RNR1", "CFTR", "IFNL3"]


def _rows(gene: str) -> list[list[str]]:
    out = []
    for line in (DATA / f"{gene}.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            out.append(line.split("\t"))
    return out


def test_every_gene_has_a_definition_and_an_expected_table():
    assert sorted(GENES) == sorted(ALL_GENES)
    assert sorted(p.stem for p in DATA.glob("*.tsv")) == sorted(ALL_GENES)


@pytest.mark.parametrize("gene", ALL_GENES)
def test_every_expected_row(gene):
    rows = _rows(gene)
    assert rows, f"no rows for {gene}"
    gd = GENES[gene]
    mismatches = []
    for cols in rows:
        dip, phenotype, score = cols[0], cols[1], cols[2] or None
        sex = cols[3] if len(cols) > 3 and cols[3] else None
        call = call_phenotype(gd, dip, sex=sex)
        if call.phenotype != phenotype or (score is not None and call.activity_score != score):
            mismatches.append(f"{dip} [{sex}]: expected {phenotype} / {score}, got {call.phenotype} / {call.activity_score}")
        if call.phenotype == "Indeterminate":
            assert call.reason, f"{gene} {dip}: Indeterminate without a reason"
    assert not mismatches, f"{len(mismatches)} of {len(rows)} rows differ:\n" + "\n".join(mismatches[:20])


def test_table_sizes_match_the_sources():
    """Guards against a truncated fixture: the PharmCAT tables have these many rows."""
    sizes = {g: len(_rows(g)) for g in ("CFTR", "CYP2C9", "DPYD", "CYP2C19", "CYP2B6", "SLCO1B1", "UGT1A1", "CYP3A5")}
    assert sizes == {"CFTR": 5462, "CYP2C9": 2850, "DPYD": 3570, "CYP2C19": 666, "CYP2B6": 1176, "SLCO1B1": 741,
                     "UGT1A1": 45, "CYP3A5": 21}
    n_d6 = len(GENES["CYP2D6"].alleles)
    assert len(_rows("CYP2D6")) >= n_d6 * (n_d6 + 1) // 2


@pytest.mark.parametrize(
    ("dip", "phenotype", "score"),
    [
        ("*1/*41", "Normal Metabolizer", "1.25"),
        ("*1x2/*41", "Normal Metabolizer", "2.25"),
        ("*1x2/*17", "Ultrarapid Metabolizer", "2.5"),
        ("*17/*17", "Intermediate Metabolizer", "1.0"),
        ("*1x2/*4", "Normal Metabolizer", "2.0"),
        ("*4/*4x2", "Poor Metabolizer", "0.0"),
        ("*9/*10", "Intermediate Metabolizer", "0.5"),
        ("*1/*1x≥3", "Ultrarapid Metabolizer", "≥4.0"),
        ("*4/*1x≥3", "Ultrarapid Metabolizer", "≥3.0"),
    ],
)
def test_cyp2d6_hand_checked_rows(dip, phenotype, score):
    call = call_phenotype(GENES["CYP2D6"], dip)
    assert (call.phenotype, call.activity_score) == (phenotype, score)


@pytest.mark.parametrize(
    ("gene", "dip", "phenotype"),
    [
        ("TPMT", "*1/*8", "Normal Metabolizer"),
        ("TPMT", "*1/*9", "Indeterminate"),
        ("TPMT", "*1/*2", "Intermediate Metabolizer"),
        ("NUDT15", "*1/*5", "Normal Metabolizer"),
        ("NUDT15", "*1/*8", "Normal Metabolizer"),
        ("NUDT15", "*3/*4", "Poor Metabolizer"),
        ("NUDT15", "*3/*5", "Poor Metabolizer"),
        ("NUDT15", "*3/*11", "Possible Intermediate Metabolizer"),
        ("NUDT15", "*1/*11", "Indeterminate"),
    ],
)
def test_cpic_2026_thiopurine_examples(gene, dip, phenotype):
    assert call_phenotype(GENES[gene], dip).phenotype == phenotype


def test_nudt15_star2_is_read_as_star3():
    call = call_phenotype(GENES["NUDT15"], "*1/*2")
    assert call.diplotype == "*1/*3"
    assert call.phenotype == "Intermediate Metabolizer"
