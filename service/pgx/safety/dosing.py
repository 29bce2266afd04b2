"""Dose changes only where CPIC's number applies: new start vs. continuing therapy, loading doses,
age/weight bounds and maximum doses (rule `dose` fields, cards/README.md "Dose applicability")."""

from __future__ import annotations

import re
from datetime import date
from service.pgx import medications as _meds
from service.pgx.context import Dosage, DraftOrder, PatientContext
from service.pgx.drugs import DrugIndex
from service.pgx.guidelines import DoseDef
from service.pgx.models import DoseAdjustment, DrugRef
from service.pgx.safety.record import _age_state, _unavailable

# --------------------------------------------------------------------------------------------
# Dose changes

_LOADING_WORDS = re.compile(
    r"\b(loading|load|bolus|stat|single[- ]dose|one[- ]time|once[- ]only|x\s*1\s*dose|"
    r"once(?!\s*(a|per|every|each|daily|weekly|monthly|nightly|day|week|month)\b))\b", re.IGNORECASE)


def loading_dose_reason(dosage: Dosage) -> str | None:
    """Why the order's dosage looks like a loading or once-only dose (None if it does not)."""
    if dosage.phases:
        return "several dosing phases (dosageInstruction.sequence)"
    if dosage.single:
        return "timing count 1 (a single dose)"
    for t in dosage.texts:
        m = _LOADING_WORDS.search(t)
        if m:
            return f"dosing text says {m.group(0)!r}"
    return None


def doses_per_day(dosage: Dosage) -> float | None:
    """Administrations per day from the first dosage instruction's timing (None when it cannot be read)."""
    return dosage.per_day


def drug_in_use(drug: DrugRef, patient: PatientContext, order: DraftOrder | None, today: date,
                index: DrugIndex, not_current: frozenset[str]) -> tuple[bool | None, int | None]:
    """(is the drug already an active medication — None if we cannot tell, days since the earliest start)."""
    found, days = _meds.drug_use(index, drug, _meds.current(patient.medications, order, not_current), today)
    if not found and _unavailable(patient, "medications"):
        return None, None
    return found, days


def _bounds_state(d: DoseDef, patient: PatientContext, today: date) -> bool | None:
    states: list[bool | None] = []
    for b in d.applies_if:
        parts: list[bool | None] = []
        if b.age is not None:
            parts.append(_age_state(b.age, patient, today))
        if b.weight_kg is not None:
            w = patient.weight_kg
            parts.append(None if w is None else ((b.weight_kg.min is None or w >= b.weight_kg.min)
                                                 and (b.weight_kg.max is None or w <= b.weight_kg.max)))
        states.append(False if any(p is False for p in parts) else (True if all(p is True for p in parts) else None))
    if any(s is True for s in states):
        return True
    return None if any(s is None for s in states) else False


def _describe_bounds(d: DoseDef) -> str:
    out = []
    for b in d.applies_if:
        parts = []
        if b.age is not None:
            parts.append("age " + (f"{b.age.min:g} or over" if b.age.max is None else
                                   f"up to {b.age.max:g}" if b.age.min is None else f"{b.age.min:g}-{b.age.max:g}"))
        if b.weight_kg is not None:
            w = b.weight_kg
            parts.append("weight " + (f"{w.min:g} kg or more" if w.max is None else
                                      f"up to {w.max:g} kg" if w.min is None else f"{w.min:g}-{w.max:g} kg"))
        out.append(" and ".join(parts))
    return " or ".join(out)


def plan_dose(d: DoseDef | None, drug: DrugRef, patient: PatientContext, order: DraftOrder | None, today: date,
              index: DrugIndex, not_current: frozenset[str]) -> tuple[DoseAdjustment | None, list[str]]:
    """CPIC's dose advice for this patient and order: whether its number applies and may be applied with one click."""
    if d is None:
        return None, []
    notes: list[str] = []
    adj = DoseAdjustment(factor=d.factor, max_daily_mg=d.max_daily_mg, text=d.text)
    blocked: list[str] = []
    if d.applies_if:
        state = _bounds_state(d, patient, today)
        if state is False:
            notes.append(f"CPIC's dose numbers for {drug.name} apply to patients with {_describe_bounds(d)}; "
                         "this patient is outside that range, so they are not shown: dose by the label and, "
                         "where available, drug levels.")
            return None, notes
        if state is None:
            blocked.append("bounds")
            notes.append(f"CPIC's dose numbers for {drug.name} apply to patients with {_describe_bounds(d)}; "
                         "age or weight is not in the record: check before using them.")
    in_use, days = drug_in_use(drug, patient, order, today, index, not_current)
    if d.applies == "start":
        if in_use is True:
            blocked.append("in-use")
            notes.append(f"{drug.name.capitalize()} is already an active medication: CPIC's advice is for starting "
                         "therapy, so no dose change is suggested. Adjust by response, side effects and drug levels "
                         "(therapeutic drug monitoring) where available.")
        elif in_use is None:
            blocked.append("in-use-unknown")
            notes.append(f"Whether {drug.name} is already being taken could not be checked (current medications "
                         "not available): CPIC's starting-dose advice applies only to a new start.")
    elif d.applies == "continuing":
        need = d.in_use_days or 1
        if in_use is not True or days is None or days < need:
            blocked.append("not-continuing")
            since = ("not an active medication yet" if in_use is False else
                     "current medications not available" if in_use is None else
                     "start date unknown" if days is None else f"taken for {days} days")
            notes.append(f"CPIC's dose change for {drug.name} applies to continuing therapy after more than "
                         f"{need} days with efficacy achieved ({since}): no dose change is suggested on this order.")
    if not d.one_click:
        blocked.append("rule")
        if d.why:
            notes.append(f"No one-click dose change: {d.why}")
    if d.factor and order is not None and not blocked:
        loading = loading_dose_reason(order.dosage)
        if loading:
            blocked.append("loading")
            notes.append(f"The draft order looks like a loading or once-only dose ({loading}); CPIC's change is for "
                         "the maintenance dose, so the loading dose is left as ordered.")
        elif d.max_daily_mg and order.dose_quantity is not None and not _within_daily_max(d, order, notes, drug):
            blocked.append("daily-max")
        elif d.max_mg_per_kg_day and order.dose_quantity is not None:
            per_day = doses_per_day(order.dosage)
            unit = (order.dose_unit or "").strip().lower()
            if per_day is None or patient.weight_kg is None or unit not in ("mg", "milligram", "milligrams"):
                blocked.append("limit-unknown")
                notes.append(f"CPIC limits {drug.name} to {d.max_mg_per_kg_day:g} mg/kg/day; the new dose cannot be "
                             "checked against it (weight, dose unit or frequency missing), so no one-click change.")
            else:
                daily = order.dose_quantity * d.factor * per_day
                limit = d.max_mg_per_kg_day * patient.weight_kg
                if daily > limit + 1e-9:
                    blocked.append("limit")
                    notes.append(f"The adjusted {drug.name} dose ({daily:g} mg/day) would exceed CPIC's limit of "
                                 f"{d.max_mg_per_kg_day:g} mg/kg/day ({limit:g} mg/day at {patient.weight_kg:g} kg): "
                                 "no one-click change.")
    if blocked:
        adj = adj.model_copy(update={"one_click": False, "informational": "in-use" in blocked})
    return adj, notes


def _within_daily_max(d: DoseDef, order: DraftOrder, notes: list[str], drug: DrugRef) -> bool:
    """Does the adjusted dose stay within CPIC's maximum daily dose? (False, with a note, when not or unknown.)"""
    assert d.max_daily_mg is not None and d.factor is not None and order.dose_quantity is not None
    unit = (order.dose_unit or "").strip().lower()
    single = order.dose_quantity * d.factor
    per_day = doses_per_day(order.dosage)
    if unit in ("mg", "milligram", "milligrams") and single <= d.max_daily_mg + 1e-9 and per_day is not None:
        if single * per_day <= d.max_daily_mg + 1e-9:
            return True
    if unit in ("mg", "milligram", "milligrams") and (single > d.max_daily_mg + 1e-9 or per_day is not None):
        daily = single * (per_day or 1)
        notes.append(f"The adjusted {drug.name} dose ({daily:g} mg/day) would exceed CPIC's maximum of "
                     f"{d.max_daily_mg:g} mg/day: no one-click change.")
    else:
        notes.append(f"CPIC's maximum for {drug.name} is {d.max_daily_mg:g} mg/day; the adjusted daily dose cannot "
                     "be checked against it (dose unit or frequency missing), so no one-click change.")
    return False
