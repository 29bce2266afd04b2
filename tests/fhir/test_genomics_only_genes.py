"""Issue 14: reading only the genes the ordered drugs need gives those genes exactly what reading every
result gives: the same result, conflicts, notes and unreadable results (and gene-less unreadable results,
which every card names), over the synthetic patients in every form we read (fhir_profiles/bundles:
STU1-STU3 implications derived from genotypes, reports with members, conflicts, GL strings, panels) and
the benchmark's generated population (amended, entered-in-error and unreadable results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.population import Generator
from service.evaluate import patient_data
from service.fhir.genomics import build_profile
from service.pgx.knowledge import load_knowledge

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = sorted((ROOT / "fhir_profiles" / "bundles").glob("*.json"))


def _resources(path: Path) -> tuple[str, list[dict]]:
    rs = [e["resource"] for e in json.loads(path.read_text(encoding="utf-8"))["entry"]]
    return next(r["id"] for r in rs if r["resourceType"] == "Patient"), rs


def _generated(n: int = 60) -> list[tuple[str, list[dict]]]:
    gen = Generator(load_knowledge(ROOT / "cards"), seed=5)
    out = []
    for i in range(n):
        select, _ = gen.patient(i, "https://fhir.example/r4")
        pf = select["prefetch"]
        rs = [pf["patient"], *(e["resource"] for e in pf["pgxObservations"]["entry"])]
        out.append((pf["patient"]["id"], rs))
    return out


def _same_for(genes: set[str], pid: str, resources: list[dict]) -> None:
    data = patient_data(pid, resources)
    full = build_profile(data)
    part = build_profile(data, genes)
    for gene in genes:
        assert part.genes.get(gene) == full.genes.get(gene), gene
    def about(p):  # noqa: E306
        return [u for u in p.unreadable if u.gene in genes or not u.gene]
    assert about(part) == about(full)


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.stem)
def test_each_gene_alone_reads_as_among_all(path):
    pid, resources = _resources(path)
    full = build_profile(patient_data(pid, resources))
    assert full.genes or full.unreadable
    for gene in [*full.genes, *{u.gene for u in full.unreadable if u.gene}, "CYP2C9", "HLA-A"]:
        _same_for({gene}, pid, resources)
    _same_for(set(list(full.genes)[:2]), pid, resources)


def test_generated_patients_each_gene_alone_reads_as_among_all():
    skipped = 0
    for pid, resources in _generated():
        full = build_profile(patient_data(pid, resources))
        for gene in full.genes:
            _same_for({gene}, pid, resources)
            skipped += len(full.genes) > 1
    assert skipped  # genes were left unread, not only read
