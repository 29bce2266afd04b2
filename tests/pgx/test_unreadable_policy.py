"""cards/unreadable.yaml is checked like the other knowledge files (issue 11)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.pgx.knowledge import check_knowledge, load_knowledge

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kdir(tmp_path) -> Path:
    d = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", d)
    return d


def test_shipped_policy_covers_the_high_risk_drugs_named_in_the_issue():
    k = load_knowledge(ROOT / "cards")
    for drug in ("fluorouracil", "capecitabine", "azathioprine", "mercaptopurine", "thioguanine", "clopidogrel",
                 "abacavir", "carbamazepine", "oxcarbazepine", "rasburicase", "dapsone", "primaquine"):
        assert k.unreadable.drugs[drug].indicator == "warning" and len(k.unreadable.drugs[drug].reason) > 40
    assert k.unreadable.follow_up["G6PD"].loinc == "32546-4" and k.unreadable.follow_up["TPMT"].loinc == "21563-2"


@pytest.mark.parametrize(("edit", "message"), [
    ("drugs:\n  warfarin: {indicator: warning, guideline: clopidogrel-cyp2c19, reason: \"a reason long enough\"}\n",
     "not covered by guideline"),
    ("drugs:\n  abacavir: {indicator: warning, guideline: no-such-guideline, reason: \"a reason long enough\"}\n",
     "does not exist"),
    ("drugs:\n  abacavir: {indicator: loud, guideline: abacavir-hla-b, reason: \"a reason long enough\"}\n", "indicator"),
    ("follow_up:\n  NOPE1: {test: enzyme, why: \"because it is so\", citation: \"somebody 2020\"}\n", "no gene file"),
    ("follow_up:\n  G6PD: {test: enzyme, loinc: \"12AB\", why: \"because it is so\", citation: \"somebody\"}\n", "loinc"),
])
def test_bad_policy_is_reported(kdir, edit, message):
    (kdir / "unreadable.yaml").write_text(edit)
    problems = [str(p) for p in check_knowledge(kdir)]
    assert any("unreadable.yaml" in p and message in p for p in problems), problems


def test_without_the_file_the_knowledge_still_loads_and_the_version_changes_with_it(kdir):
    v1 = load_knowledge(kdir).version
    (kdir / "unreadable.yaml").unlink()
    k = load_knowledge(kdir)
    assert k.unreadable is not None and not k.unreadable.drugs and k.version != v1
