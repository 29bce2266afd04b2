"""Memoised phenotype stage for population screening (one worker process, bounded).

service.pgx.phenotype.annotate_profile calls each gene result on its own, from the result's gene, diplotype
and lab-reported phenotype (and the patient's sex, for X-linked genes). A population shares few distinct
results (a CYP2C19 diplotype appears in thousands of patients), so :class:`PhenotypeMemo` calls each distinct
result once (annotate_profile itself, on a one-gene profile) and gives every later patient with the same
result the same call. The key holds every field of the result except its observation reference, date and
conflicting references, which are carried over from the patient's own result unchanged.

Output is byte-identical to the plain path (tests/screen/test_screen_memo.py); ``memo=False``
(ScreenRequest/Options) turns it off.

Tried and not kept (measured in the issue 15 work, see README "Population screening"): memoising the
engine's per guideline x drug evaluation across patients, keyed on the genes' results plus a trace of the
record fields it read. Exact, 76% hits at 20k patients, but no faster: most evaluations read the full
medication list (phenoconversion, co-medication safety), the key building and the trace cost what a hit
saves, and a million-entry table makes the cyclic GC scan it.
"""

from __future__ import annotations

from typing import Any

from service.pgx.models import GenomicProfile
from service.pgx.phenotype import annotate_profile


def _copy(model: Any, **update: Any) -> Any:
    """A shallow copy with some fields replaced (model_copy(update=...) without its overhead)."""
    new = object.__new__(type(model))
    d = dict(model.__dict__)
    d.update(update)
    object.__setattr__(new, "__dict__", d)
    object.__setattr__(new, "__pydantic_fields_set__", set(model.__pydantic_fields_set__) | set(update))
    object.__setattr__(new, "__pydantic_extra__", model.__pydantic_extra__)
    object.__setattr__(new, "__pydantic_private__", model.__pydantic_private__)
    return new


class PhenotypeMemo:
    """annotate_profile, one gene result at a time, each distinct result called once (bounded)."""

    def __init__(self, max_entries: int = 50_000) -> None:
        self.table: dict[tuple, tuple[Any, list[str]]] = {}
        self.max_entries = max_entries
        self.hits = self.misses = 0

    def __call__(self, genes: dict[str, Any], profile: GenomicProfile, sex: str | None = None) -> GenomicProfile:
        out = {}
        for key, gr in profile.genes.items():
            mk = (id(genes), key, gr.gene, gr.diplotype, gr.reported_phenotype, gr.status, gr.source_style,
                  tuple(gr.notes), sex)
            hit = self.table.get(mk)
            if hit is None:
                self.misses += 1
                one = annotate_profile(genes, GenomicProfile(patient_id=profile.patient_id, genes={key: gr}), sex)
                hit = (one.genes[key].call, list(one.genes[key].notes))
                if len(self.table) >= self.max_entries:
                    self.table.clear()
                self.table[mk] = hit
            else:
                self.hits += 1
            call, notes = hit
            # the call object is shared between patients: the engine copies calls (model_copy), never edits them
            out[key] = _copy(gr, call=call, notes=list(notes))
        return _copy(profile, genes=out)
