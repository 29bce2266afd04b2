"""Where a result sits on its CPIC scale, for the small visual next to each gene.

Display only: the phenotype itself always comes from the engine (``GeneResult.call``); these tables
just place it. Activity-score genes use the CPIC activity-score ranges (CYP2D6: CPIC 2019/2026 tables;
CYP2C9: CPIC 2020 phenytoin/NSAID; DPYD: CPIC 2017/2024 fluoropyrimidines). Other genes use the
ordinal CPIC phenotype or function terms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_AS_SCALES: dict[str, tuple[float, list[tuple[str, str, float, float]]]] = {
    # gene: (axis maximum, [(short label, band class, lowest AS, highest AS)])
    "CYP2D6": (
        3.0,
        [
            ("PM", "poor", 0.0, 0.0),
            ("IM", "intermediate", 0.25, 1.0),
            ("NM", "normal", 1.25, 2.25),
            ("UM", "increased", 2.5, 3.0),
        ],
    ),
    "CYP2C9": (2.0, [("PM", "poor", 0.0, 0.5), ("IM", "intermediate", 1.0, 1.5), ("NM", "normal", 2.0, 2.0)]),
    "DPYD": (2.0, [("PM", "poor", 0.0, 0.5), ("IM", "intermediate", 1.0, 1.5), ("NM", "normal", 2.0, 2.0)]),
}

# Ordinal scales, lowest to highest function. Each entry: (short label, band class, matching words).
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
_GENE_SCALES: dict[str, list[tuple[str, str, str]]] = {
    "CYP2C19": _METABOLIZER,
    "CYP3A5": _METABOLIZER[:3],
    "CYP3A4": _METABOLIZER[:3],
    "CYP2B6": _METABOLIZER,
    "TPMT": _METABOLIZER[:3],
    "NUDT15": _METABOLIZER[:3],
    "UGT1A1": _METABOLIZER[:3],
    "NAT2": [("Slow", "poor", "slow"), ("Intermediate", "intermediate", "intermediate"), ("Rapid", "normal", "rapid")],
    "SLCO1B1": _FUNCTION,
    "ABCG2": _FUNCTION[:3],
}


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


def scale_for(gene: str, phenotype: str | None, activity_score: str | None) -> Scale:
    """Place a phenotype / activity score on the gene's CPIC scale (kind 'none' when there is none)."""
    pheno = (phenotype or "").strip()
    indeterminate = not pheno or pheno.lower().startswith("indeterminate") or pheno.lower() in ("n/a", "unknown")
    if gene in _AS_SCALES:
        top, bands_def = _AS_SCALES[gene]
        score = _parse_score(activity_score)
        width = 0.25 / top  # CPIC activity values move in steps of 0.25
        bands = []
        for label, css, lo, hi in bands_def:
            start = max(0.0, lo / top - width / 2)
            end = min(1.0, hi / top + width / 2)
            active = score is not None and not indeterminate and lo - 1e-9 <= min(score, top) <= hi + 1e-9
            bands.append(Band(label, css, start, end, active))
        marker = None if score is None or indeterminate else min(score, top) / top
        if marker is None:
            desc = f"{gene}: activity score not determined"
        else:
            desc = f"{gene} activity score {activity_score} on a scale from 0 to {top:g}: {pheno}"
        return Scale("activity", bands, marker, "0", f"{top:g}" + ("+" if gene == "CYP2D6" else ""), desc)
    steps = _GENE_SCALES.get(gene)
    if steps is None:
        return Scale("none", description=f"{gene}: {pheno or 'no phenotype'}")
    n = len(steps)
    low = pheno.lower().replace("likely ", "").replace("possible ", "")
    bands = []
    marker = None
    for i, (label, css, words) in enumerate(steps):
        active = not indeterminate and (low == words or low.startswith(words + " "))
        bands.append(Band(label, css, i / n, (i + 1) / n, active))
        if active:
            marker = (i + 0.5) / n
    if marker is None:
        desc = f"{gene}: {pheno or 'phenotype'} not placed on the function scale"
    else:
        desc = f"{gene} {pheno}: position {int(marker * n) + 1} of {n} on the function scale, from lowest to highest"
    return Scale("ordinal", bands, marker, steps[0][0], steps[-1][0], desc)
