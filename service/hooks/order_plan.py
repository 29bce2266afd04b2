"""What an order hook's draft orders ask of us, read from the raw draft orders alone.

Most orders are for drugs no CPIC guideline covers. For those the answer is "no cards", and it is known
from the draft orders before anything is done with the prefetch (no patient data read, no phenotype
called, no key built from the prefetch). An order whose drug can only be known by fetching its
Medication (a `medicationReference` to another resource, or no code and no text) is left undecided:
the full path resolves it as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.fhir.models import DraftOrder
from service.fhir.orders import extract_orders
from service.pgx.drugs import recognise
from service.pgx.phenoconversion import perpetrators_in_order
from service.pgx.knowledge import Knowledge

ORDER_HOOKS = ("order-select", "order-sign")


@dataclass(frozen=True)
class DraftPlan:
    """The selected draft orders, those with a recognised CPIC drug, and whether any order's drug is
    known only after a FHIR read (then nothing may be concluded from this plan)."""

    orders: list[DraftOrder]
    drug_orders: list[tuple[DraftOrder, list]]
    needs_fetch: bool

    @property
    def no_cards(self) -> bool:
        """No ordered drug has a guideline or phenoconverts one, so no card applies."""
        return not self.needs_fetch and not self.drug_orders


def needs_fetch(orders: list[DraftOrder]) -> bool:
    """An order whose drug we cannot name without reading its Medication from the FHIR server."""
    return any(o.codes == [] and not o.text for o in orders) or any(
        isinstance(ref := o.resource.get("medicationReference"), dict) and ref.get("reference") for o in orders
    )


def plan_draft_orders(knowledge: Knowledge, draft_orders: dict[str, Any] | None,
                      selections: list[str] | None) -> DraftPlan:
    orders = extract_orders(draft_orders, selections)
    if needs_fetch(orders):
        return DraftPlan(orders, [], True)
    # a drug with a guideline, or a phenoconverting co-medication (reverse direction: it can change the
    # advice for a drug the patient already takes)
    drug_orders = [(o, d) for o, d in ((o, recognise(knowledge, o) or perpetrators_in_order(knowledge, o))
                                       for o in orders) if d]
    return DraftPlan(orders, drug_orders, False)
