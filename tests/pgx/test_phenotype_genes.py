"""Gene definition files: schema validation with file/line errors, semantic checks, caching."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.pgx.genes import GeneDefinitionError, check_genes, load_genes

CARDS = Path(__file__).resolve().parents[2] / "cards" / "genes"

MINIMAL = """\
# test gene
gene: TESTG
hgnc: "HGNC:1"
method: function
source: "test"
version: "1"
reference_allele: "*1"
phenotypes: ["Normal Metabolizer", "Intermediate Metabolizer", "Poor Metabolizer", "Indeterminate"]
alleles:
  - {name: "*1", function: "Normal function"}
  - {name: "*2", function: "No function"}
function_pairs:
  - {functions: ["Normal function", "Normal function"], phenotype: "Normal Metabolizer"}
  - {functions: ["Normal function", "No function"], phenotype: "Intermediate Metabolizer"}
  - {functions: ["No function", "No function"], phenotype: "Poor Metabolizer"}
"""


def _write(tmp_path: Path, text: str, name: str = "TESTG.yaml") -> Path:
    d = tmp_path / "genes"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text, encoding="utf-8")
    return d


def test_shipped_gene_files_are_consistent():
    assert check_genes(CARDS) == []


def test_every_file_names_source_version_and_hgnc():
    genes = load_genes(CARDS)
    assert genes["CYP2C19"].hgnc == "HGNC:2621"
    assert genes["CYP2D6"].method == "activity_score" and genes["DPYD"].activity_score.combine == "two_lowest"
    assert genes["HLA-B"].method == "allele_status" and genes["G6PD"].method == "x_linked"
    for g in genes.values():
        assert g.source and g.version
        text = (CARDS / f"{g.gene}.yaml").read_text(encoding="utf-8")
        assert text.startswith("# "), f"{g.gene}: needs a header comment for reviewers"
        assert "# Source" in text and "# Version" in text and "# Method" in text


def test_minimal_file_loads(tmp_path):
    genes = load_genes(_write(tmp_path, MINIMAL))
    assert list(genes) == ["TESTG"]
    assert genes["TESTG"].pair_phenotype("No function", "Normal function") == "Intermediate Metabolizer"


def test_schema_error_names_file_and_line(tmp_path):
    bad = MINIMAL.replace('  - {name: "*2", function: "No function"}', '  - {name: "*2", function: "No function", colour: red}')
    d = _write(tmp_path, bad)
    with pytest.raises(GeneDefinitionError) as exc:
        load_genes(d)
    msg = str(exc.value)
    assert "TESTG.yaml:11:" in msg and "alleles.1.colour" in msg


def test_missing_required_field_names_the_field(tmp_path):
    d = _write(tmp_path, MINIMAL.replace('version: "1"\n', ""))
    with pytest.raises(GeneDefinitionError, match=r"TESTG\.yaml:\d+: version: Field required"):
        load_genes(d)


def test_bad_activity_value_line(tmp_path):
    text = MINIMAL.replace('{name: "*2", function: "No function"}', '{name: "*2", function: "No function", activity_value: "lots"}')
    with pytest.raises(GeneDefinitionError, match=r"TESTG\.yaml:11: alleles\.1\.activity_value"):
        load_genes(_write(tmp_path, text))


def test_invalid_yaml_line(tmp_path):
    with pytest.raises(GeneDefinitionError, match=r"TESTG\.yaml:\d+: invalid YAML"):
        load_genes(_write(tmp_path, MINIMAL + "alleles: [unclosed\n"))


def test_duplicate_alias_is_rejected(tmp_path):
    text = MINIMAL.replace('{name: "*2", function: "No function"}', '{name: "*2", function: "No function", aliases: ["*1"]}')
    with pytest.raises(GeneDefinitionError, match="used by both"):
        load_genes(_write(tmp_path, text))


def test_check_reports_unknown_function_and_missing_coverage(tmp_path):
    text = MINIMAL.replace('  - {functions: ["No function", "No function"], phenotype: "Poor Metabolizer"}\n',
                           '  - {functions: ["No function", "Nope function"], phenotype: "Poor Metabolizer"}\n')
    problems = check_genes(_write(tmp_path, text))
    assert any("function names no allele has: Nope function" in p for p in problems)
    assert any("does not cover [No function, No function]" in p for p in problems)


def test_check_reports_unknown_phenotype_and_file_name(tmp_path):
    text = MINIMAL.replace('phenotype: "Poor Metabolizer"}', 'phenotype: "Slow Metabolizer"}')
    problems = check_genes(_write(tmp_path, text, name="OTHER.yaml"))
    assert any("'Slow Metabolizer' is not in 'phenotypes'" in p for p in problems)
    assert any("does not match gene TESTG" in p for p in problems)


def test_check_reports_threshold_gaps(tmp_path):
    src = (CARDS / "CYP2C9.yaml").read_text(encoding="utf-8")
    text = src.replace('{min: "1.0", max: "1.5", phenotype: "Intermediate Metabolizer"}',
                       '{min: "1.5", max: "1.5", phenotype: "Intermediate Metabolizer"}')
    assert text != src
    problems = check_genes(_write(tmp_path, text, name="CYP2C9.yaml"))
    assert any("activity score 1.0 falls in no threshold range" in p for p in problems)


def test_check_reports_schema_errors_with_line(tmp_path):
    problems = check_genes(_write(tmp_path, MINIMAL.replace("method: function", "method: magic")))
    assert len(problems) == 1 and "TESTG.yaml:4: method" in problems[0]


def test_load_is_cached_until_a_file_changes(tmp_path):
    d = tmp_path / "genes"
    shutil.copytree(CARDS, d)
    first = load_genes(d)
    assert load_genes(d) is first
    p = d / "CYP4F2.yaml"
    p.write_text(p.read_text(encoding="utf-8").replace('version: "2017 (checked 2026-05-05)"', 'version: "changed"'),
                 encoding="utf-8")
    second = load_genes(d)
    assert second is not first and second["CYP4F2"].version == "changed"


def test_missing_directory(tmp_path):
    with pytest.raises(GeneDefinitionError, match="does not exist"):
        load_genes(tmp_path / "nope")
    assert check_genes(tmp_path / "nope") == [f"gene directory {tmp_path / 'nope'} does not exist"]


def test_lookup_values_for_guideline_checks():
    genes = load_genes(CARDS)
    assert genes["CYP2C9"].lookup_values("activity_score") == {"0.0", "0.5", "1.0", "1.5", "2.0", "n/a"}
    d6 = genes["CYP2D6"].lookup_values("activity_score")
    assert {"0.0", "0.25", "1.25", "2.25", "2.5", "≥3.0", "≥4.0", "n/a"} <= d6
    assert genes["DPYD"].lookup_values("activity_score") == {"0.0", "0.5", "1.0", "1.5", "2.0"}
    assert genes["HLA-B"].lookup_values("allele_status") == {
        "*57:01 positive", "*57:01 negative", "*58:01 positive", "*58:01 negative", "*15:02 positive", "*15:02 negative"}
    assert "Likely Poor Metabolizer" in genes["CYP2C19"].lookup_values("phenotype")
