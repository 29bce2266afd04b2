"""The benchmark's distinct-patient mix (bench/, issue 14) sends what it claims: distinct patients, each
request its own hookInstance, order-select before order-sign, ~20% CPIC orders, results in several FHIR
forms, all answered by the service without error. No timings are asserted."""

from __future__ import annotations

import asyncio
import collections

from bench.mix import _has_cpic, cpu_seconds
from bench.population import FREQUENCIES, generate, load_genes
from service.config import REPO_ROOT, Settings
from service.hooks.discovery import SERVICES
from service.hooks.pipeline import run_hook
from service.hooks.schemas import HookRequest
from service.main import create_app
from service.pgx.knowledge import load_knowledge


def test_the_mix_is_distinct_patients_in_varied_forms_answered_by_the_service():
    k = load_knowledge(REPO_ROOT / "cards")
    seq = generate(k, 300, block=50, fhir_server="https://fhir.bench.example/r4")
    assert len(seq) == 600
    assert len({b["hookInstance"] for _, b in seq}) == 600
    patients = [b["context"]["patientId"] for h, b in seq if h == "order-select"]
    assert len(set(patients)) == 300
    first_select = {}
    for i, (h, b) in enumerate(seq):  # each order-sign comes after its patient's order-select
        pid = b["context"]["patientId"]
        if h == "order-select":
            first_select[pid] = i
        else:
            assert first_select[pid] < i
    share = sum(_has_cpic(k, b) for h, b in seq if h == "order-select") / 300
    assert 0.12 < share < 0.3
    forms = collections.Counter()
    for h, b in seq:
        for e in b["prefetch"]["pgxObservations"]["entry"]:
            o = e["resource"]
            forms["string" if "valueString" in o else "text" if "text" in o.get("valueCodeableConcept", {})
                  else o["valueCodeableConcept"]["coding"][0]["system"]] += 1
            forms[o["status"]] += 1
    assert {"string", "text", "https://www.pharmvar.org", "http://glstring.org", "amended", "entered-in-error"} <= set(forms)

    app = create_app(Settings(log_level="warning"))

    async def answer_all() -> int:
        cards = 0
        for h, b in seq:
            out = await run_hook(SERVICES["pgx-" + h], HookRequest.model_validate(b), app.state.deps, None)
            cards += bool(out.indicators)
        await app.state.fhir.aclose()
        return cards

    assert 0 < asyncio.run(answer_all()) < 120  # some answers carry a card, most do not


def test_allele_frequencies_name_only_alleles_the_gene_tables_list():
    genes = load_genes()
    assert set(genes) == set(FREQUENCIES)
    for g in genes.values():
        assert abs(sum(g.weights) - 1) < 1e-9 and g.reference in g.alleles


def test_cpu_seconds_reads_this_process():
    import os

    assert cpu_seconds(os.getpid()) > 0


def test_more_patients_added_later_are_distinct_from_the_first(tmp_path):
    """The mix adds patients before a pgx-cds round when it would otherwise reach the end of its bodies:
    every body stays distinct (patient, hookInstance), each thread's file keeps order-select before
    order-sign, and what a thread had sent stays valid (bodies are only appended)."""
    import json

    from bench.mix import _BodyFile

    k = load_knowledge(REPO_ROOT / "cards")
    f = _BodyFile(tmp_path / "b", k, block=16, fhir_server="https://fhir.bench.example/r4", seed=3, threads=2, keep=10)
    f.add(40)
    first = [(tmp_path / f"b-{t}.txt").read_text() for t in (1, 2)]
    assert f.top_up([30, 10], 40) > 0  # thread 1 had sent 30 of its bodies: both get >= 40 more
    files = [(tmp_path / f"b-{t}.txt").read_text() for t in (1, 2)]
    assert all(now.startswith(before) for now, before in zip(files, first))
    assert [len(x.splitlines()) for x in files] == f.lines and f.lines[0] - 30 >= 40 and f.lines[1] - 10 >= 40
    bodies = [json.loads(line.split(" ", 1)[1]) for x in files for line in x.splitlines()]
    assert len({b["hookInstance"] for b in bodies}) == len(bodies) == f.total == 2 * f.patients
    assert len({b["context"]["patientId"] for b in bodies}) == f.patients and len(f.head) == 10
    for x in files:
        seen = set()
        for line in x.splitlines():
            sid, body = line.split(" ", 1)
            pid = json.loads(body)["context"]["patientId"]
            if sid == "pgx-order-select":
                seen.add(pid)
            else:
                assert pid in seen
    assert 0 < f.cpic < f.patients


def test_sent_vs_distinct_counts_a_threads_file_once():
    from bench.mix import Target

    t = Target("x", "u", 0, "")
    t.offsets = [40, 70]  # two threads with files of 50 and 51 bodies
    assert t.sent() == 110 and t.distinct([50, 51]) == 40 + 51
