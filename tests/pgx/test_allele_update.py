"""Issue 11: a documented, repeatable update path for the allele tables (`pgx-cds knowledge alleles`).

Fixtures in tests/data/alleles are small synthetic tables in the shapes of PharmCAT phenotype files, CPIC
update extracts and CPIC allele functionality tables; every write goes to a copy of cards/ in tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.pgx.allele_update import compare, read_source, render
from service.pgx.genes import load_genes
from service.pgx.phenotype import call_phenotype
from tests.test_cli import ROOT, cli

DATA = ROOT / "tests" / "data" / "alleles"


@pytest.fixture
def kdir(tmp_path) -> Path:
    d = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", d)
    return d


def _alleles(kdir: Path, *args: str):
    return cli("knowledge", "alleles", *args, "--dir", str(kdir))


def test_report_lists_added_changed_and_missing_without_writing(kdir):
    before = (kdir / "genes" / "CYP2C19.yaml").read_text()
    r = _alleles(kdir, str(DATA / "CYP2C19.json"))
    assert r.returncode == 3, r.stderr  # changes found, nothing written
    out = r.stdout
    assert "version 2025-11-05 vs CYP2C19.json (PharmCAT phenotype file) version 2099-01-01" in out
    assert "+ *42: No function" in out and "+ *43: Decreased function" in out
    assert "~ *12: function Uncertain function -> Decreased function" in out
    assert "in our file but not in the source" in out and "*3" in out
    assert (kdir / "genes" / "CYP2C19.yaml").read_text() == before


def test_write_applies_the_update_and_the_new_allele_is_read(kdir):
    gd = load_genes(kdir / "genes")["CYP2C19"]
    assert call_phenotype(gd, "*1/*42").phenotype == "Indeterminate"  # today: unknown allele
    r = _alleles(kdir, str(DATA / "CYP2C19.json"), "--write", "--citation", "CPIC CYP2C19 table 2099 (synthetic)")
    assert r.returncode == 0, r.stdout + r.stderr
    text = (kdir / "genes" / "CYP2C19.yaml").read_text()
    assert 'version: "2099-01-01"' in text
    assert "# Safety: an allele that is not listed here" in text  # comments kept
    assert '{name: "*42", function: "No function", note: "added from CYP2C19.json (PharmCAT phenotype file) ' \
           '2099-01-01; CPIC CYP2C19 table 2099 (synthetic)"}' in text
    gd = load_genes(kdir / "genes")["CYP2C19"]
    assert call_phenotype(gd, "*1/*42").phenotype == "Intermediate Metabolizer"
    assert gd.lookup("*12").function == "Decreased function"
    assert cli("knowledge", "check", "--dir", str(kdir)).returncode == 0
    # the same source again: nothing left to do
    assert _alleles(kdir, str(DATA / "CYP2C19.json")).returncode == 0


def test_older_source_is_reported_and_never_written(kdir):
    before = (kdir / "genes" / "CYP2C19.yaml").read_text()
    r = _alleles(kdir, str(DATA / "CYP2C19-old.json"), "--write")
    assert "OLDER than the gene file" in r.stdout and "NOT written" in r.stderr
    assert (kdir / "genes" / "CYP2C19.yaml").read_text() == before


def test_a_function_the_rules_cannot_use_is_flagged_and_not_written(kdir):
    before = (kdir / "genes" / "CYP2C19.yaml").read_text()
    r = _alleles(kdir, str(DATA / "CYP2C19-newfunction.json"), "--write")
    assert "Possibly slightly reduced function" in r.stdout and "do not cover" in r.stdout
    assert r.returncode == 1 and "NOT written" in r.stderr
    assert (kdir / "genes" / "CYP2C19.yaml").read_text() == before


def test_activity_values_are_compared_for_activity_score_genes(kdir):
    gd = load_genes(kdir / "genes")["CYP2C9"]
    rep = compare(gd, read_source(DATA / "CYP2C9.json")[0])
    assert [(c.allele, c.field, c.old, c.new) for c in rep.changed] == [("*2", "activity_value", "0.5", "0.0")]
    assert rep.added == [("*99", None, "0.5")]
    r = _alleles(kdir, str(DATA / "CYP2C9.json"), "--write")
    assert r.returncode == 0, r.stdout + r.stderr
    gd = load_genes(kdir / "genes")["CYP2C9"]
    assert gd.lookup("*2").activity_value == "0.0" and gd.lookup("*99").activity_value == "0.5"
    assert call_phenotype(gd, "*1/*2").activity_score == "1.0"


def test_an_activity_value_outside_the_rules_is_not_written(kdir, tmp_path):
    src = tmp_path / "CYP2C9.json"
    src.write_text('{"gene": "CYP2C9", "version": "2099-01-01", "haplotypes": {"*2": "0.25"}, '
                   '"activityValues": {"*2": "0.25"}}')
    before = (kdir / "genes" / "CYP2C9.yaml").read_text()
    r = _alleles(kdir, str(src), "--write")
    assert r.returncode == 1 and "falls in no threshold range" in r.stderr
    assert (kdir / "genes" / "CYP2C9.yaml").read_text() == before


def test_update_extract_with_several_genes_and_gene_filter(kdir):
    tables = read_source(DATA / "updates.json")
    assert {t.gene for t in tables} == {"TPMT", "NUDT15"} and all(t.version == "2099-03-03" for t in tables)
    r = _alleles(kdir, str(DATA / "updates.json"), "--gene", "TPMT")
    assert "TPMT:" in r.stdout and "NUDT15" not in r.stdout and "+ *99: No function" in r.stdout


def test_cpic_allele_functionality_table_tsv(kdir):
    t = read_source(DATA / "CYP2C19_allele_functionality.tsv")[0]
    assert (t.gene, t.version, t.functions["*42"]) == ("CYP2C19", "2099-04-04", "No function")
    gd = load_genes(kdir / "genes")["CYP2C19"]
    assert "+ *42: No function" in render(compare(gd, t))


def test_bad_source_is_a_clear_error(kdir, tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("no header here\n1,2\n")
    r = _alleles(kdir, str(bad))
    assert r.returncode == 2 and "Allele" in r.stderr
    assert _alleles(kdir, str(DATA / "CYP2C19.json"), "--gene", "DPYD").returncode == 2
