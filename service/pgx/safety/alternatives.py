"""Which CPIC-named alternatives may be offered as one-click orders for this patient and order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from service.pgx.context import DraftOrder, PatientContext
from service.pgx.guidelines import AlternativeDef
from service.pgx.models import Alternative, DrugRef, WithheldAlternative
from service.pgx.safety.data import SafetyData
from service.pgx.safety.record import RXNORM_SYSTEMS, Record, evaluate_check

# --------------------------------------------------------------------------------------------
# Alternatives


@dataclass
class Screened:
    alternatives: list[Alternative]  # what may be offered one-click
    withheld: list[WithheldAlternative]  # named by CPIC but not offered (or not as the recommended one)
    notes: list[str]  # what the card says about it


def combination_others(data: SafetyData, order: DraftOrder | None, drugs: Sequence[DrugRef]) -> list[str]:
    """The other ingredients of a combination product ordered (empty when the order is a single ingredient)."""
    if order is None:
        return []
    ordered = {d.name for d in drugs}
    others: list[str] = []
    for c in order.codes:
        if c.code and c.system in RXNORM_SYSTEMS:
            p = data.products.get(c.code.strip())
            if p is not None and len(p.ingredients) > 1:
                others += [i for i in p.ingredients if i not in ordered]
    if data.partners_re is not None:
        for text in [order.text, *(c.display for c in order.codes)]:
            if text:
                found = [data.partner_names.get(m.group(1).lower(), m.group(1).lower())
                         for m in data.partners_re.finditer(text)]
                others += [f for f in found if f not in ordered]
    if len(ordered) > 1:
        others += sorted(ordered)
    return list(dict.fromkeys(others))


def screen_alternatives(data: SafetyData, alts: Sequence[AlternativeDef], drug: DrugRef, patient: PatientContext,
                        order: DraftOrder | None, today: date, *, order_drugs: Sequence[DrugRef] = (),
                        not_current: frozenset[str]) -> Screened:
    """Which of a rule's alternatives may be offered one-click for this patient, and why the others are not."""
    out = Screened([], [], [])
    if not alts:
        return out
    others = [o for o in combination_others(data, order, order_drugs or [drug]) if o != drug.name]
    if others and data.policy is not None:
        ingredients = " / ".join([drug.name, *others])
        reason = data.policy.reason.strip().format(ingredients=ingredients, others=" and ".join(others))
        for a in alts:
            out.withheld.append(WithheldAlternative(name=a.name, rxnorm=a.rxnorm, effect="not_offered",
                                                    reason=reason, citation=data.policy.citation))
        out.notes.append(f"No one-click switch: {reason}")
        return out
    rec = Record(patient, order, today, not_current)
    for a in alts:
        if a.rxnorm is None:
            why = a.why or "no verified RxNorm code for the product to order"
            out.withheld.append(WithheldAlternative(name=a.name, effect="not_offered", reason=why))
            out.notes.append(f"{a.name.capitalize()} is not offered as a one-click order: {why}.")
            continue
        if not a.one_click:
            out.withheld.append(WithheldAlternative(name=a.name, rxnorm=a.rxnorm, effect="not_offered", reason=a.why or ""))
            out.notes.append(f"{a.name.capitalize()} is not offered as a one-click order: {a.why}")
            continue
        recommended = a.recommended
        excluded = False
        for check in data.checks.get(a.name.lower(), ()):
            res = evaluate_check(data, check, rec)
            if res.fires is False:
                continue
            reason = check.reason + (f" ({res.detail} on record)" if res.detail else "")
            if res.fires is None:
                reason = (f"could not be ruled out ({', '.join(res.missing)} not available in the record): "
                          f"{check.reason}")
            if check.effect == "exclude":
                excluded = True
                out.withheld.append(WithheldAlternative(name=a.name, rxnorm=a.rxnorm, effect="excluded", check=check.id,
                                                        reason=reason, citation=check.citation))
                out.notes.append(f"{a.name.capitalize()} left out of the one-click choices: {reason}. "
                                 f"Source: {check.citation}.")
                break
            if recommended or res.fires is True:
                out.withheld.append(WithheldAlternative(name=a.name, rxnorm=a.rxnorm, effect="not_recommended",
                                                        check=check.id, reason=reason, citation=check.citation))
                out.notes.append(f"{a.name.capitalize()} is offered but not as the recommended choice: {reason}. "
                                 f"Source: {check.citation}.")
            recommended = False
        if not excluded:
            out.alternatives.append(Alternative(name=a.name, rxnorm=a.rxnorm, recommended=recommended))
    return out
