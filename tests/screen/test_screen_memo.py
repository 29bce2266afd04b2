"""The memoised screening path (service/screen/memo.py) gives the same worklist and counts as the plain one."""

from __future__ import annotations

import gc
from datetime import date
from pathlib import Path

import orjson
import pytest

from service.screen import local, source
from service.screen.progress import NoProgress
from service.screen.run import ScreenRequest, screen
from service.screen.summary import Tally
from tests.screen.synth import write_export

TODAY = date.today()


@pytest.fixture(scope="module")
def varied(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("varied")
    # many tested patients, every synthetic-bundle form often (conflicts, unreadable, phenotype-only, HLA...)
    write_export(d, 600, seed=11, tested=0.8, shards=2, template_share=0.3, gzip_types=("Condition",))
    return d


@pytest.fixture
def in_process_state():
    """local._init in this process (as in a worker): put the module state back afterwards."""
    saved_state = dict(local._STATE)
    yield
    local._STATE.clear()
    local._STATE.update(saved_state)
    gc.unfreeze()  # local._init freezes what the process holds (right for a worker, not for pytest)


def test_memoised_and_plain_screens_write_the_same_files(varied, tmp_path):
    runs = {}
    for memo in (True, False):
        out = tmp_path / f"memo-{memo}"
        summary = screen(ScreenRequest(input=str(varied), output=out, workers=2, formats=("ndjson",), today=TODAY,
                                       memo=memo), NoProgress())
        runs[memo] = (out / "worklist.ndjson").read_bytes(), {k: v for k, v in summary.items()
                                                             if k not in ("timings", "generatedAt", "engine")}
    assert runs[True][0] and runs[True][0] == runs[False][0]
    assert runs[True][1] == runs[False][1]


def test_each_patient_the_same_and_the_memo_is_used(varied, tmp_path, in_process_state):
    dirs = [tmp_path / "p"]
    source.partition(source.tasks(source.input_files(varied)), dirs[0], 4)
    groups = {}
    for b in range(4):
        groups.update(source.read_bucket(dirs, b))
    pids = sorted(groups)
    answers = {}
    for memo in (False, True):
        local._init(None, None, TODAY, None, (), memo)
        tally = Tally()
        # twice over: the second pass is answered from the memo
        answers[memo] = [orjson.dumps(local.evaluate_group(p, groups[p], tally)) for p in pids + pids]
        answers[memo, "tally"] = tally.state()
    assert answers[True] == answers[False]
    assert answers[True, "tally"] == answers[False, "tally"]
    phenotypes = local._STATE["memo"]
    assert phenotypes.hits > phenotypes.misses > 0
    # the export has patients the memoised path skips (no result, no current medication) and ones it evaluates
    assert any(not any(local._may_matter(orjson.loads(x)) for x in groups[p]) for p in pids)
    assert any(any(local._may_matter(orjson.loads(x)) for x in groups[p]) for p in pids)


def test_phenotype_memo_gives_each_patient_its_own_result(in_process_state):
    """Same diplotype, different observations and dates: one call, each patient keeps its own reference."""
    from datetime import datetime, timezone

    from service.config import Settings
    from service.pgx.knowledge import load_knowledge
    from service.pgx.models import GeneResult, GenomicProfile
    from service.pgx.phenotype import annotate_profile
    from service.screen.memo import PhenotypeMemo

    genes = load_knowledge(Settings().knowledge_dir).genes
    memo = PhenotypeMemo()
    for i, dip in enumerate(["*1/*2", "*1/*2", "*2/*17", "*1/*2"]):
        gr = GeneResult(gene="CYP2C19", diplotype=dip, observation=f"Observation/o{i}",
                        effective=datetime(2020, 1, 1 + i, tzinfo=timezone.utc))
        profile = GenomicProfile(patient_id=f"p{i}", genes={"CYP2C19": gr})
        assert memo(genes, profile, "female") == annotate_profile(genes, profile, "female")
        assert memo(genes, profile, "female").genes["CYP2C19"].observation == f"Observation/o{i}"
    assert (memo.misses, memo.hits) == (2, 6)


def test_worklist_line_does_not_depend_on_the_order_of_the_patients_resources(in_process_state):
    """A Bulk Data export has no order across its files (Spark groups them in any order): a patient's line
    must be the same whatever order the resources arrive in. This synthetic patient (paroxetine as a
    MedicationRequest and a MedicationStatement, CYP2D6 result) gave two different perpetrator orders on the
    local and Spark engines before resources were put in a canonical order."""
    lines = (Path(__file__).parent / "data" / "order-sensitive-patient.ndjson").read_bytes().splitlines(keepends=True)
    for memo in (False, True):
        local._init(None, None, date(2026, 12, 3), None, (), memo)
        got = {orjson.dumps(local.evaluate_group("q0000001", order, Tally()))
               for order in (lines, lines[::-1], lines[1:] + lines[:1], [x.rstrip(b"\n") for x in lines[::-1]])}
        assert len(got) == 1, memo
        assert b"MedicationRequest/q0000001-m19" in got.pop()
