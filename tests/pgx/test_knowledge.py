"""Knowledge loader and checker: every file loads, coverage is complete, problems carry file:line."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from service.config import REPO_ROOT
from service.pgx.knowledge import KnowledgeError, check_knowledge, list_knowledge, load_knowledge

CARDS = REPO_ROOT / "cards"
MINE = ["clopidogrel-cyp2c19", "voriconazole-cyp2c19", "ppi-cyp2c19", "ssri-snri", "tca-cyp2d6-cyp2c19",
        "opioids-cyp2d6", "antiemetics-cyp2d6", "tamoxifen-cyp2d6", "atomoxetine-cyp2d6", "warfarin",
        "efavirenz-cyp2b6", "tacrolimus-cyp3a5", "atazanavir-ugt1a1"]


@pytest.fixture(scope="module")
def problems():
    return check_knowledge(CARDS)


def test_whole_knowledge_base_loads():
    k = load_knowledge(CARDS)
    assert set(MINE) <= set(k.guidelines)
    assert re.fullmatch(r"pgx-cds-knowledge \d{4}\.\d{2} \([0-9a-f]{12}\)", k.version)
    assert k.by_drug["clopidogrel"][0].id == "clopidogrel-cyp2c19"


def test_no_error_level_problems(problems):
    assert [str(p) for p in problems if p.severity == "error"] == []


@pytest.mark.parametrize("gid", MINE)
def test_guideline_file_is_clean_and_fully_covered(problems, gid):
    """Every phenotype / activity score the gene files can produce (incl. Indeterminate) has a rule."""
    mine = [str(p) for p in problems if p.file.endswith(f"guidelines/{gid}.yaml")]
    assert mine == []


def _copy(tmp_path: Path, guideline_text: str, name: str = "bad.yaml") -> Path:
    d = tmp_path / "cards"
    shutil.copytree(CARDS / "genes", d / "genes")
    (d / "guidelines").mkdir()
    (d / "guidelines" / name).write_text(guideline_text, encoding="utf-8")
    return d


GOOD = """\
id: bad
name: test guideline
url: https://cpicpgx.org/x/
publication: "Someone. Journal. 2020. PMID: 1"
version: "2020"
genes: [CYP2C19]
lookup: {CYP2C19: phenotype}
drugs:
  - {name: clopidogrel, rxnorm: "32968"}
rules:
  - id: all
    when: {CYP2C19: [any]}
    action: standard_dosing
    strength: Strong
    summary: ok
    detail: ok
"""


def test_minimal_file_is_clean(tmp_path):
    assert check_knowledge(_copy(tmp_path, GOOD)) == []


def test_problems_have_file_and_line(tmp_path):
    text = GOOD.replace("    summary: ok\n", "    summary: " + "x" * 150 + "\n").replace(
        "    when: {CYP2C19: [any]}", "    population: nope\n    when: {CYP2C19: [any]}")
    probs = check_knowledge(_copy(tmp_path, text))
    by_msg = {p.message.split(":")[0] + ":" + p.message.split(":")[1][:20]: p for p in probs}
    assert any("population 'nope' is not declared" in p.message and p.line == 12 for p in probs), by_msg
    assert any("summary is 150 characters" in p.message and p.line == 16 for p in probs)
    assert all(p.file == "cards/guidelines/bad.yaml" for p in probs)
    with pytest.raises(KnowledgeError) as exc:
        load_knowledge(tmp_path / "cards")
    assert "bad.yaml:12" in str(exc.value)


def test_unknown_value_and_uncovered_phenotypes(tmp_path):
    text = GOOD.replace("[any]", "[Normal Metabolizer, Slow Metabolizer]")
    probs = check_knowledge(_copy(tmp_path, text))
    msgs = [p.message for p in probs]
    assert any("'Slow Metabolizer' cannot be produced by genes/CYP2C19.yaml" in m for m in msgs)
    gap = next(m for m in msgs if "no rule for" in m)
    assert "CYP2C19=Indeterminate" in gap and "CYP2C19=Poor Metabolizer" in gap
    line = next(p.line for p in probs if "cannot be produced" in p.message)
    assert line == 12


def test_broken_references(tmp_path):
    text = GOOD.replace("genes: [CYP2C19]", "genes: [CYP2C19, NOPE1]").replace(
        "lookup: {CYP2C19: phenotype}", "lookup: {CYP2C19: phenotype, NOPE1: phenotype}").replace(
        "    when: {CYP2C19: [any]}", "    drugs: [warfarin]\n    when: {CYP2C19: [any], NOPE1: [any]}")
    msgs = [p.message for p in check_knowledge(_copy(tmp_path, text))]
    assert any("drug 'warfarin' is not declared" in m for m in msgs)
    msgs = [p.message for p in check_knowledge(_copy(tmp_path / "b", text.replace("    drugs: [warfarin]\n", "")))]
    assert any("gene NOPE1 has no file in genes/" in m for m in msgs)


def test_missing_citation_and_bad_yaml(tmp_path):
    probs = check_knowledge(_copy(tmp_path, GOOD.replace('publication: "Someone. Journal. 2020. PMID: 1"\n', "")))
    assert any(p.message.startswith("publication: Field required") for p in probs)
    probs = check_knowledge(_copy(tmp_path / "b", GOOD.replace("rules:\n", "rules: [\n")))
    assert probs and "YAML syntax" in probs[0].message and probs[0].line is not None


def test_id_must_match_file_name(tmp_path):
    probs = check_knowledge(_copy(tmp_path, GOOD, name="other.yaml"))
    assert any("must equal the file name" in p.message and p.line == 1 for p in probs)


def test_overlapping_rules_are_warned(tmp_path):
    text = GOOD + """\
  - id: pm
    when: {CYP2C19: [Poor Metabolizer]}
    action: avoid
    strength: Strong
    summary: ok
    detail: ok
"""
    probs = check_knowledge(_copy(tmp_path, text))
    assert [p.severity for p in probs] == ["warning"]
    assert "matched by rules all, pm" in probs[0].message


def test_list_knowledge_rows():
    rows = list_knowledge(load_knowledge(CARDS))
    clop = next(r for r in rows if r["drug"] == "clopidogrel")
    assert clop["guideline"] == "clopidogrel-cyp2c19" and clop["rxnorm"] == "32968"
    assert clop["populations"] == ["acs-pci", "cvi-other", "nvi"] and clop["pretest"] == "info"
    nort = next(r for r in rows if r["drug"] == "nortriptyline")
    assert nort["genes"] == ["CYP2D6"]


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(CARDS)


@pytest.mark.parametrize("gid", MINE)
def test_filled_summaries_stay_short(knowledge, gid):
    g = knowledge.guidelines[gid]
    longest = max((d.name for d in g.drugs), key=len)
    for r in g.rules:
        filled = r.summary.replace("{drug}", longest).replace("{gene}", max(g.genes, key=len))
        assert len(filled) < 140, (r.id, filled)
