"""Screening counts: mergeable across workers (and Spark partitions), free of identifiers by construction.

Only gene names, CPIC phenotypes, drug names, actions, rule ids, finding kinds and reasons are counted;
no patient, resource id, diplotype text or free text from a record is kept.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from service.evaluate import PatientEvaluation
from service.screen.findings import ACTIVE_DRUG_CONFLICT, TEST_CANDIDATE

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def reason_label(reason: str) -> str:
    """An unreadable-result reason without any quoted value from the record (kept: the kind of problem)."""
    return _QUOTED.sub("'…'", reason)[:120]


class Tally:
    """Counters for summary.json; ``add`` one patient, ``merge`` partial tallies."""

    FIELDS = ("patients", "gene_phenotype", "drug_action", "findings", "patients_by_kind",
              "test_candidates_by_drug", "conflicts", "unreadable", "resources")

    def __init__(self) -> None:
        self.patients: Counter[str] = Counter()  # read / with_results / with_findings / skipped_since
        self.gene_phenotype: Counter[tuple[str, str]] = Counter()
        self.drug_action: Counter[tuple[str, str]] = Counter()  # over findings
        self.findings: Counter[tuple[str, str]] = Counter()  # (kind, priority)
        self.patients_by_kind: Counter[str] = Counter()
        self.test_candidates_by_drug: Counter[str] = Counter()
        self.conflicts: Counter[tuple[str, str, str, str]] = Counter()  # (drug, genes/phenotypes, action, priority)
        self.unreadable: Counter[tuple[str, str]] = Counter()  # (gene, reason)
        self.resources: Counter[str] = Counter()  # by resource type, plus skipped kinds

    def add(self, ev: PatientEvaluation, items: list[dict[str, Any]]) -> None:
        self.patients["read"] += 1
        if ev.profile.genes:
            self.patients["with_results"] += 1
        if ev.profile.unreadable:
            self.patients["with_unreadable_results"] += 1
        if items:
            self.patients["with_findings"] += 1
        for gene, r in ev.profile.genes.items():
            self.gene_phenotype[(gene, r.call.phenotype if r.call else "Indeterminate")] += 1
        for u in ev.profile.unreadable:
            self.unreadable[(u.gene or "unknown gene", reason_label(u.reason))] += 1
        kinds = set()
        for f in items:
            kind, drug, action = f["kind"], f["drug"]["name"], f["recommendation"]["action"]
            kinds.add(kind)
            self.findings[(kind, f["priority"])] += 1
            self.drug_action[(drug, action)] += 1
            if kind == TEST_CANDIDATE:
                self.test_candidates_by_drug[drug] += 1
            elif kind == ACTIVE_DRUG_CONFLICT:
                genes = ", ".join(f"{g['gene']} {g['phenotype']}" for g in f["genes"])
                self.conflicts[(drug, genes, action, f["priority"])] += 1
        for kind in kinds:
            self.patients_by_kind[kind] += 1

    def add_empty(self) -> None:
        """A patient without results or current medications (what ``add`` counts for one)."""
        self.patients["read"] += 1

    def merge(self, other: "Tally") -> "Tally":
        for name in self.FIELDS:
            getattr(self, name).update(getattr(other, name))
        return self

    def state(self) -> dict[str, list]:
        """A plain picklable / JSON-able form (Spark ships partial tallies this way)."""
        return {name: [[list(k) if isinstance(k, tuple) else k, v] for k, v in getattr(self, name).items()]
                for name in self.FIELDS}

    @classmethod
    def from_state(cls, state: dict[str, list]) -> "Tally":
        t = cls()
        for name in cls.FIELDS:
            getattr(t, name).update({(tuple(k) if isinstance(k, list) else k): v for k, v in state.get(name, [])})
        return t

    def to_summary(self) -> dict[str, Any]:
        """The counts section of summary.json (sorted: the same input always gives the same file)."""
        def nested(c: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for (a, b), n in sorted(c.items()):
                out.setdefault(a, {})[b] = n
            return out

        return {
            "patients": {k: self.patients.get(k, 0) for k in
                         ("read", "with_results", "with_unreadable_results", "with_findings", "skipped_since")},
            "resources": dict(sorted(self.resources.items())),
            "findings": {
                "by_kind": {k: sum(n for (kk, _), n in self.findings.items() if kk == k) for k in
                            ("active_drug_conflict", "test_candidate", "actionable_result")},
                "by_kind_and_priority": nested(self.findings),
                "patients_by_kind": dict(sorted(self.patients_by_kind.items())),
            },
            "gene_phenotype": nested(self.gene_phenotype),
            "drug_action": nested(self.drug_action),
            "test_candidates_by_drug": dict(sorted(self.test_candidates_by_drug.items(), key=lambda kv: (-kv[1], kv[0]))),
            "top_conflicts": [
                {"drug": d, "genes": g, "action": a, "priority": p, "findings": n}
                for (d, g, a, p), n in sorted(self.conflicts.items(), key=lambda kv: (-kv[1], kv[0]))[:50]
            ],
            "unreadable_results": [
                {"gene": g, "reason": r, "count": n}
                for (g, r), n in sorted(self.unreadable.items(), key=lambda kv: (-kv[1], kv[0]))
            ],
        }
