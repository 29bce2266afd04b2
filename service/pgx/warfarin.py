"""Warfarin: CPIC's approach (Johnson JA, et al. Clin Pharmacol Ther. 2017;102(3):397-404).

CPIC recommends calculating the warfarin dose with a validated pharmacogenetic algorithm. When age,
height and weight are known we compute the IWPC pharmacogenetic algorithm (International Warfarin
Pharmacogenetics Consortium, N Engl J Med. 2009;360(8):753-764) for the expected weekly maintenance
dose; otherwise we show the genotype-based expected daily dose ranges from the FDA-approved warfarin
label table. Either way we add CPIC's adjustments that the algorithm does not contain (CYP4F2 *3;
CYP2C9 alleles common in people of African ancestry).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date

IWPC_CITATION = "Klein TE, et al. (IWPC). N Engl J Med. 2009;360(8):753-764. PMID: 19228618"
FDA_LABEL = "Coumadin (warfarin) US prescribing information, Table 5"

# IWPC pharmacogenetic algorithm coefficients (sqrt of weekly dose in mg)
_IWPC = {
    "intercept": 5.6044,
    "age_decades": -0.2614,
    "height_cm": 0.0087,
    "weight_kg": 0.0128,
    "vkorc1_AG": -0.8677,
    "vkorc1_AA": -1.6974,
    "vkorc1_unknown": -0.4854,
    "cyp2c9_*1/*2": -0.5211,
    "cyp2c9_*1/*3": -0.9357,
    "cyp2c9_*2/*2": -1.0616,
    "cyp2c9_*2/*3": -1.9206,
    "cyp2c9_*3/*3": -2.3312,
    "cyp2c9_unknown": -0.2188,
    "race_asian": -0.1092,
    "race_black": -0.2760,
    "race_missing_or_mixed": -0.1032,
    "enzyme_inducer": 1.1816,
    "amiodarone": -0.5503,
}

# FDA label: expected maintenance daily dose ranges (mg) by CYP2C9 x VKORC1 -1639
_LABEL_TABLE: dict[str, dict[str, str]] = {
    "GG": {"*1/*1": "5-7", "*1/*2": "5-7", "*1/*3": "3-4", "*2/*2": "3-4", "*2/*3": "3-4", "*3/*3": "0.5-2"},
    "AG": {"*1/*1": "5-7", "*1/*2": "3-4", "*1/*3": "3-4", "*2/*2": "3-4", "*2/*3": "0.5-2", "*3/*3": "0.5-2"},
    "AA": {"*1/*1": "3-4", "*1/*2": "3-4", "*1/*3": "0.5-2", "*2/*2": "0.5-2", "*2/*3": "0.5-2", "*3/*3": "0.5-2"},
}

# RxNorm ingredients: amiodarone, and the enzyme inducers the IWPC algorithm names
AMIODARONE = {"703"}
ENZYME_INDUCERS = {"2002": "carbamazepine", "8183": "phenytoin", "9384": "rifampin"}
_AFRICAN_VARIANT_ALLELES = {"*5", "*6", "*8", "*11"}


@dataclass
class WarfarinInputs:
    age_years: float | None = None
    height_cm: float | None = None
    weight_kg: float | None = None
    vkorc1: str | None = None  # "GG" | "AG" | "AA" (c.-1639G>A); None unknown
    cyp2c9: str | None = None  # "*1/*3" etc. (any alleles); None unknown
    cyp4f2: str | None = None  # diplotype, e.g. "*1/*3"
    amiodarone: bool = False
    enzyme_inducer: bool = False


@dataclass
class WarfarinResult:
    method: str  # "iwpc" | "label-table" | "none"
    weekly_dose_mg: float | None = None
    daily_dose_mg: float | None = None
    label_range_mg_day: str | None = None
    lower_than_usual: bool = False
    text: str = ""
    notes: list[str] = field(default_factory=list)


def vkorc1_genotype(text: str | None) -> str | None:
    """Normalise a VKORC1 -1639G>A (rs9923231) genotype to "GG", "AG" or "AA".

    Accepts "-1639G>A G/A", "GA", "A/A", "rs9923231 C/T" (C = G allele, T = A allele on the plus strand).
    """
    if not text:
        return None
    t = text.upper()
    plus_strand = "RS9923231" in t
    t = re.sub(r"RS9923231|VKORC1|C\.|-1639|1639|G>A|C>T|\bREF\b", " ", t)
    letters = re.findall(r"[ACGT]", t)
    if len(letters) != 2:
        return None
    if plus_strand or set(letters) <= {"C", "T"}:
        letters = [{"C": "G", "T": "A"}.get(x, x) for x in letters]
    if not set(letters) <= {"A", "G"}:
        return None
    return "".join(sorted(letters))  # "AA", "AG", "GG"


def _alleles(diplotype: str | None) -> list[str] | None:
    if not diplotype:
        return None
    parts = re.findall(r"\*\d+[A-Z]?", diplotype)
    return parts if len(parts) == 2 else None


def _cyp2c9_term(diplotype: str | None) -> tuple[str, list[str]]:
    """IWPC term for a CYP2C9 diplotype, plus notes for alleles the algorithm does not have."""
    alleles = _alleles(diplotype)
    if alleles is None:
        return "cyp2c9_unknown", []
    notes = []
    known = []
    for a in alleles:
        if a in ("*2", "*3"):
            known.append(a)
        else:
            if a != "*1":
                notes.append(a)
            known.append("*1")
    term = "cyp2c9_" + "/".join(sorted(known, key=lambda x: int(x[1:])))
    return term, notes


def iwpc_weekly_dose(inp: WarfarinInputs) -> float:
    """IWPC pharmacogenetic weekly dose (mg). Needs age, height and weight.

    Ancestry is not in the record, so the algorithm's "missing or mixed race" term is used.
    """
    assert inp.age_years is not None and inp.height_cm is not None and inp.weight_kg is not None
    c = _IWPC
    s = c["intercept"]
    s += c["age_decades"] * math.floor(inp.age_years / 10)
    s += c["height_cm"] * inp.height_cm
    s += c["weight_kg"] * inp.weight_kg
    if inp.vkorc1 == "AG":
        s += c["vkorc1_AG"]
    elif inp.vkorc1 == "AA":
        s += c["vkorc1_AA"]
    elif inp.vkorc1 != "GG":
        s += c["vkorc1_unknown"]
    term, _ = _cyp2c9_term(inp.cyp2c9)
    if term != "cyp2c9_*1/*1":
        s += c[term]
    s += c["race_missing_or_mixed"]
    if inp.enzyme_inducer:
        s += c["enzyme_inducer"]
    if inp.amiodarone:
        s += c["amiodarone"]
    return max(s, 0.0) ** 2


def age_years(birth: date | None, today: date) -> float | None:
    if birth is None:
        return None
    years = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
    return float(years)


def recommend(inp: WarfarinInputs) -> WarfarinResult:
    """Dose guidance for warfarin from whatever is known."""
    term, extra_alleles = _cyp2c9_term(inp.cyp2c9)
    notes: list[str] = []
    lower = inp.vkorc1 in ("AG", "AA") or term not in ("cyp2c9_*1/*1", "cyp2c9_unknown") or bool(extra_alleles)
    geno = f"CYP2C9 {inp.cyp2c9 or 'unknown'}, VKORC1 -1639 {inp.vkorc1 or 'unknown'}"
    if extra_alleles:
        notes.append(
            f"CYP2C9 {', '.join(extra_alleles)} is not part of the IWPC algorithm (treated as *1 there). "
            "CPIC: CYP2C9 *5, *6, *8 and *11 also reduce warfarin clearance, mainly relevant for people of "
            "African ancestry; expect a lower dose than calculated."
            if set(extra_alleles) & _AFRICAN_VARIANT_ALLELES
            else f"CYP2C9 {', '.join(extra_alleles)} is not part of the IWPC algorithm (treated as *1 there)."
        )
    notes.append(
        "CPIC: for people of African ancestry, variants not in the algorithm (CYP2C9 *5, *6, *8, *11 and "
        "the CYP2C cluster variant rs12777823) lower the dose requirement; ancestry is not in the record."
    )
    if inp.cyp4f2 and ("*3" in (_alleles(inp.cyp4f2) or []) or "*3 carrier" in inp.cyp4f2):
        notes.append("CYP4F2 *3 carrier: CPIC suggests increasing the calculated dose by 5-10% (non-African ancestry).")
    if inp.age_years is not None and inp.height_cm is not None and inp.weight_kg is not None:
        weekly = iwpc_weekly_dose(inp)
        daily = weekly / 7
        extras = []
        if inp.amiodarone:
            extras.append("amiodarone")
        if inp.enzyme_inducer:
            extras.append("an enzyme inducer")
        with_ = f", with {' and '.join(extras)} in use" if extras else ""
        text = (
            f"Expected maintenance dose by the IWPC pharmacogenetic algorithm: about {weekly:.1f} mg/week "
            f"({daily:.1f} mg/day) for {geno}, age {inp.age_years:.0f} y, {inp.height_cm:.0f} cm, "
            f"{inp.weight_kg:.0f} kg{with_}. Ancestry is not recorded, so the algorithm's 'missing or mixed' "
            f"term is used. Adjust to INR as usual. Algorithm: {IWPC_CITATION}."
        )
        return WarfarinResult("iwpc", round(weekly, 1), round(daily, 2), None, lower, text, notes)
    vk = inp.vkorc1
    cy = None
    if term.startswith("cyp2c9_*"):
        cy = term.removeprefix("cyp2c9_")
    missing = [n for n, v in (("age", inp.age_years), ("height", inp.height_cm), ("weight", inp.weight_kg)) if v is None]
    if vk in _LABEL_TABLE and cy is not None:
        rng = _LABEL_TABLE[vk][cy]
        text = (
            f"{geno}: expected maintenance dose {rng} mg/day (FDA label genotype table). CPIC prefers a "
            f"pharmacogenetic algorithm, which needs {', '.join(missing)} (not in the record). "
            f"Adjust to INR as usual."
        )
        return WarfarinResult("label-table", None, None, rng, lower, text, notes)
    text = (
        f"{geno}: a dose could not be calculated ({'genotype incomplete' if vk is None or cy is None else 'data missing'}"
        f"{'; missing ' + ', '.join(missing) if missing else ''}). "
        + ("Variant alleles found predict a lower dose requirement. " if lower else "")
        + "Use a validated pharmacogenetic dosing algorithm (e.g. IWPC, warfarindosing.org) and adjust to INR."
    )
    return WarfarinResult("none", None, None, None, lower, text, notes)
