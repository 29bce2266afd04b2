"""Where a result sits on its CPIC scale, for the small visual next to each gene.

Display only: the phenotype itself always comes from the engine (``GeneResult.call``); this module just
places it. The scale is read from the gene's knowledge file when one is given (activity-score
thresholds, or the phenotype list ordered from lowest to highest function); a small built-in table is
the fallback (same CPIC values) so the page still draws without a knowledge base.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Ordinal vocabularies, lowest to highest function: (short label, band class, exact lower-case term).
_METABOLIZER = [
    ("PM", "poor", "poor metabolizer"),
    ("IM", "intermediate", "intermediate metabolizer"),
    ("NM", "normal", "normal metabolizer"),
    ("RM", "rapid", "rapid metabolizer"),
    ("UM", "increased", "ultrarapid metabolizer"),
]
_FUNCTION = [
    ("Poor", "poor", "poor function"),
    ("Decreased", "intermediate", "decreased function"),
    ("Normal", "normal", "normal function"),
    ("Increased", "increased", "increased function"),
]
_ACETYLATOR = [
    ("Slow", "poor", "slow acetylator"),
    ("Intermediate", "intermediate", "intermediate acetylator"),
    ("Rapid", "normal", "rapid acetylator"),
]
_G6PD = [
    ("CNSHA", "poor", "deficient with cnsha"),
    ("Deficient", "intermediate", "deficient"),
    ("Variable", "rapid", "variable"),
    ("Normal", "normal", "normal"),
]
_VOCABULARIES = (_METABOLIZER, _FUNCTION, _ACETYLATOR, _G6PD)

# Fallback when no gene definition is given (CPIC values; the knowledge files are authoritative).
_FALLBACK_AS: dict[str, list[tuple[str, float, float | None, float | None]]] = {
    # gene: [(phenotype, min, max, above)]
    "CYP2D6": [("Poor Metabolizer", 0, 0, None), ("Intermediate Metabolizer", 0.25, 1.0, None),
               ("Normal Metabolizer", 1.25, 2.25, None), ("Ultrarapid Metabolizer", 0, 0, 2.25)],
    "CYP2C9": [("Poor Metabolizer", 0, 0.5, None), ("Intermediate Metabolizer", 1.0, 1.5, None),
               ("Normal Metabolizer", 2.0, 2.0, None)],
    "DPYD": [("Poor Metabolizer", 0, 0.5, None), ("Intermediate Metabolizer", 1.0, 1.5, None),
             ("Normal Metabolizer", 2.0, 2.0, None)],
}
_FALLBACK_PHENOTYPES: dict[str, list[str]] = {
    "CYP2C19": ["Poor Metabolizer", "Intermediate Metabolizer", "Normal Metabolizer", "Rapid Metabolizer",
                "Ultrarapid Metabolizer"],
    "CYP2B6": ["Poor Metabolizer", "Intermediate Metabolizer", "Normal Metabolizer", "Rapid Metabolizer",
               "Ultrarapid Metabolizer"],
    "CYP3A5": ["Poor Metabolizer", "Intermediate Metabolizer", "Normal Metabolizer"],
    "TPMT": ["Poor Metabolizer", "Intermediate Metabolizer", "Normal Metabolizer"],
    "NUDT15": ["Poor Metabolizer", "Intermediate Metabolizer", "Normal Metabolizer"],
    "UGT1A1": ["Poor Metabolizer", "Intermediate Metabolizer", "Normal Metabolizer"],
    "SLCO1B1": ["Poor Function", "Decreased Function", "Normal Function", "Increased Function"],
    "ABCG2": ["Poor Function", "Decreased Function", "Normal Function"],
    "G6PD": ["Deficient with CNSHA", "Deficient", "Variable", "Normal"],
}
_STEP = 0.25  # CPIC activity values move in quarters


@dataclass
class Band:
    label: str
    css: str
    start: float  # 0..1 along the axis
    end: float
    active: bool = False


@dataclass
class Scale:
    """What the template draws: bands, an optional marker, and a text alternative."""

    kind: str  # "activity", "ordinal" or "none"
    bands: list[Band] = field(default_factory=list)
    marker: float | None = None  # 0..1
    axis_min: str = ""
    axis_max: str = ""
    description: str = ""


def _parse_score(score: str | None) -> float | None:
    if not score:
        return None
    m = re.search(r"\d+(?:\.\d+)?", score)
    return float(m.group()) if m else None


def _base_term(phenotype: str) -> str:
    low = phenotype.strip().lower()
    for prefix in ("likely ", "possible "):
        low = low.removeprefix(prefix)
    return low


def _term_info(phenotype: str) -> tuple[str, str] | None:
    """(short label, band class) of a CPIC phenotype term, or None when it is not an ordinal term."""
    base = _base_term(phenotype)
    for vocab in _VOCABULARIES:
        for label, css, term in vocab:
            if base == term:
                return label, css
    return None


def _thresholds(gene: str, gene_def: Any) -> list[tuple[str, float, float | None, float | None]] | None:
    rule = getattr(gene_def, "activity_score", None)
    ths = getattr(rule, "thresholds", None)
    if ths:
        out = []
        for t in ths:
            above = getattr(t, "above", None)
            lo, hi = getattr(t, "min", None), getattr(t, "max", None)
            out.append((str(t.phenotype), float(lo or 0), float(hi) if hi is not None else None,
                        float(above) if above is not None else None))
        return out
    if gene_def is None:
        return _FALLBACK_AS.get(gene)
    return None


def _ordinal_terms(gene: str, gene_def: Any) -> list[tuple[str, str, str]] | None:
    """The gene's phenotypes placed on one vocabulary, lowest to highest, or None."""
    phenos = list(getattr(gene_def, "phenotypes", None) or []) if gene_def is not None else []
    phenos = phenos or _FALLBACK_PHENOTYPES.get(gene, [])
    bases = {_base_term(p) for p in phenos}
    for vocab in _VOCABULARIES:
        steps = [s for s in vocab if s[2] in bases]
        if len(steps) >= 2:
            return steps
    return None


def scale_for(gene: str, phenotype: str | None, activity_score: str | None, gene_def: Any = None) -> Scale:
    """Place a phenotype / activity score on the gene's CPIC scale (kind 'none' when there is none)."""
    pheno = (phenotype or "").strip()
    indeterminate = not pheno or pheno.lower().startswith("indeterminate") or pheno.lower() in ("n/a", "unknown")
    ths = _thresholds(gene, gene_def)
    if ths:
        return _activity_scale(gene, pheno, activity_score, ths, indeterminate)
    steps = _ordinal_terms(gene, gene_def)
    if not steps:
        return Scale("none", description=f"{gene}: {pheno or 'no phenotype'}")
    n = len(steps)
    base = _base_term(pheno)
    bands, marker = [], None
    for i, (label, css, term) in enumerate(steps):
        active = not indeterminate and base == term
        bands.append(Band(label, css, i / n, (i + 1) / n, active))
        if active:
            marker = (i + 0.5) / n
    if marker is None:
        desc = f"{gene}: {pheno or 'phenotype'} not placed on the function scale"
    else:
        desc = f"{gene} {pheno}: step {int(marker * n) + 1} of {n} on the function scale, lowest to highest"
    return Scale("ordinal", bands, marker, steps[0][0], steps[-1][0], desc)


def _activity_scale(
    gene: str,
    pheno: str,
    activity_score: str | None,
    ths: list[tuple[str, float, float | None, float | None]],
    indeterminate: bool,
) -> Scale:
    # each threshold as a closed range on the axis; an open "above X" range is drawn up to X + 0.75
    ranges = []
    for name, lo, hi, above in ths:
        if above is not None:
            ranges.append((name, above + _STEP, above + 3 * _STEP))
        else:
            ranges.append((name, lo, hi if hi is not None else lo))
    ranges.sort(key=lambda r: r[1])
    top = max(r[2] for r in ranges) or 1.0
    edges = [0.0] + [(ranges[i][2] + ranges[i + 1][1]) / 2 / top for i in range(len(ranges) - 1)] + [1.0]
    score = _parse_score(activity_score)
    bands = []
    for i, (name, lo, hi) in enumerate(ranges):
        info = _term_info(name) or ("".join(w[0] for w in name.split()).upper(), "normal")
        open_top = i == len(ranges) - 1 and any(t[3] is not None for t in ths)
        inside = score is not None and (lo - 1e-9 <= score <= hi + 1e-9 or (open_top and score >= lo - 1e-9))
        bands.append(Band(info[0], info[1], edges[i], edges[i + 1], bool(inside) and not indeterminate))
    marker = None if score is None or indeterminate else min(score, top) / top
    if marker is None:
        desc = f"{gene}: activity score not determined"
    else:
        desc = f"{gene} activity score {activity_score} on a scale from 0 to {top:g}: {pheno}"
    open_end = "+" if any(t[3] is not None for t in ths) else ""
    return Scale("activity", bands, marker, "0", f"{top:g}{open_end}", desc)

