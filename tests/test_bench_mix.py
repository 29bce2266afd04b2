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
    """The mix generates more patients after the warm-up when pgx-cds is fast enough to reach the end of the
    list: every body in the file stays distinct (patient, hookInstance), order-select before order-sign."""
    import json

    from bench.mix import _BodyFile

    k = load_knowledge(REPO_ROOT / "cards")
    f = _BodyFile(tmp_path / "b.txt", k, block=64, fhir_server="https://fhir.bench.example/r4", seed=3, keep=10)
    f.add(100)
    f.add(70)
    lines = (tmp_path / "b.txt").read_text().splitlines()
    assert len(lines) == f.lines == 340 and f.patients == 170 and len(f.head) == 10
    bodies = [json.loads(line.split(" ", 1)[1]) for line in lines]
    assert len({b["hookInstance"] for b in bodies}) == 340
    assert len({b["context"]["patientId"] for b in bodies}) == 170
    assert 0 < f.cpic < 170


def test_sent_vs_distinct_counts_a_threads_slice_once():
    from bench.mix import Target

    t = Target("x", "u", 0, "")
    t.offsets = [40, 70]  # two threads over 101 lines: slices of 50 and 51
    assert t.sent() == 110 and t.distinct(101, 2) == 40 + 51
