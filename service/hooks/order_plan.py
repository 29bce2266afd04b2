"""What an order hook's draft orders ask of us, read from the raw draft orders alone.

Most orders are for drugs no CPIC guideline covers. For those the answer is "no cards", and it is known
from the draft orders before anything is done with the prefetch (no patient data read, no phenotype
called, no key built from the prefetch). An order whose drug can only be known by fetching its
Medication (a `medicationReference` to another resource, or no code and no text) is left undecided:
the full path resolves it as before.

The common case is decided cheaply (`names_no_drug`): each raw MedicationRequest's drug (its
`medicationCodeableConcept`) is looked up in a bounded memo of what the knowledge makes of that concept,
so the handful of concepts real traffic orders are recognised once, not on every request.
"""

from __future__ import annotations

from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.fhir.context import medication_drugs_of as medication_request_drugs
from service.fhir.models import DraftOrder
from service.fhir.orders import extract_orders, select_orders
from service.pgx.drugs import recognise
from service.pgx.phenoconversion import perpetrators_in_order
from service.pgx.knowledge import Knowledge

ORDER_HOOKS = ("order-select", "order-sign")


@dataclass(frozen=True)
class DraftPlan:
    """The selected draft orders, those with a recognised CPIC drug, and whether any order's drug is
    known only after a FHIR read (then nothing may be concluded from this plan). When no selected order
    names a drug the knowledge knows (`no_cards`), `orders` may be left empty: there is nothing to
    evaluate."""

    orders: list[DraftOrder]
    drug_orders: list[tuple[DraftOrder, list]]
    needs_fetch: bool
    every: list[DraftOrder] = field(default_factory=list)  # every draft order (order-select: the co-orders)

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
                      selections: list[str] | None, prefetch: Any = None) -> DraftPlan:
    """`prefetch` (optional) lets an order for a phenoconverting drug without a guideline of its own be
    decided early too: see `names_no_drug`."""
    if _decided(knowledge, draft_orders, selections, prefetch):
        return DraftPlan([], [], False)
    orders, every = select_orders(draft_orders, selections)
    if needs_fetch(orders):
        return DraftPlan(orders, [], True, every)
    # a drug with a guideline, or a phenoconverting co-medication (reverse direction: it can change the
    # advice for a drug the patient already takes)
    drug_orders = [(o, d) for o, d in ((o, _drugs(knowledge, o)) for o in orders) if d]
    return DraftPlan(orders, drug_orders, False, every)


def _drugs(knowledge: Knowledge, order: DraftOrder) -> list:
    return recognise(knowledge, order) or perpetrators_in_order(knowledge, order)


# ---------------------------------------------------------------------------------------- fast check

# The router's early decision for the request being served, by the identity of what it was made from: the
# pipeline's plan of the same request reuses it instead of deciding again (validation copies the dicts
# around the draft orders' entry list and the medications Bundle, not those). Set only by
# `decide_for_request`, read once by `plan_draft_orders`, per request (a context variable).
_DECIDED: ContextVar[tuple | None] = ContextVar("pgx_cds_order_plan", default=None)


def _identity(knowledge: Knowledge, draft_orders: Any, selections: Any, prefetch: Any) -> tuple:
    return (knowledge, draft_orders.get("entry") if isinstance(draft_orders, dict) else None,
            tuple(selections) if isinstance(selections, list) else selections,
            prefetch.get("medications") if isinstance(prefetch, dict) else None)


def decide_for_request(knowledge: Knowledge, draft_orders: Any, selections: Any, prefetch: Any) -> bool:
    """`names_no_drug` for the request being served, remembered for its plan."""
    answer = names_no_drug(knowledge, draft_orders, selections, prefetch)
    _DECIDED.set((_identity(knowledge, draft_orders, selections, prefetch), answer))
    return answer


def _decided(knowledge: Knowledge, draft_orders: Any, selections: Any, prefetch: Any) -> bool:
    earlier = _DECIDED.get()
    if earlier is not None:
        _DECIDED.set(None)
        ident = _identity(knowledge, draft_orders, selections, prefetch)
        if ident[1] is not None and all(a is b for a, b in zip(earlier[0][:2], ident[:2])) \
                and earlier[0][2] == ident[2] and earlier[0][3] is ident[3]:
            return earlier[1]
    return names_no_drug(knowledge, draft_orders, selections, prefetch)

_NONE, _PERPETRATOR, _DECISIVE = 0, 1, 2
_MEMO_SIZE = 4096  # distinct drug concepts remembered per knowledge (real formularies order a few thousand)


class _ConceptMemo:
    """What the knowledge makes of a drug concept, remembered by the concept's JSON:

    - an ordered `medicationCodeableConcept`: `_NONE` (no drug it knows), `_PERPETRATOR` (only a drug
      that phenoconverts, e.g. fluoxetine: it can change the advice for a guideline drug the patient
      already takes) or `_DECISIVE` (a guideline drug, or no code and no text: the full path decides);
    - a current medication (MedicationRequest of the `medications` prefetch): whether it names a drug
      with a guideline."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.knowledge = knowledge
        self.data: OrderedDict[bytes, int | bool] = OrderedDict()

    def _remember(self, key: bytes, value: int | bool) -> None:
        self.data[key] = value
        if len(self.data) > _MEMO_SIZE:
            self.data.popitem(last=False)

    def ordered(self, concept: dict[str, Any]) -> int:
        try:
            key = b"o" + orjson.dumps(concept)
        except orjson.JSONEncodeError:  # nested beyond what can be serialised: the full path answers 400
            return _DECISIVE
        known = self.data.get(key)
        if known is None:
            order = extract_orders({"resourceType": "MedicationRequest", "medicationCodeableConcept": concept}, None)[0]
            if needs_fetch([order]) or recognise(self.knowledge, order):
                known = _DECISIVE
            else:
                known = _PERPETRATOR if perpetrators_in_order(self.knowledge, order) else _NONE
            self._remember(key, known)
        return known

    def takes_guideline_drug(self, med: dict[str, Any]) -> bool:
        parts = [med.get("medicationCodeableConcept"), med.get("code"), med.get("medicationReference")]
        try:
            key = b"m" + orjson.dumps(parts)
        except (orjson.JSONEncodeError, TypeError):
            return True
        known = self.data.get(key)
        if known is None:
            known = bool(medication_request_drugs(self.knowledge.drug_index, {"medicationCodeableConcept": parts[0],
                                                                                "code": parts[1],
                                                                                "medicationReference": parts[2]}))
            self._remember(key, known)
        return bool(known)


_MEMOS: OrderedDict[int, _ConceptMemo] = OrderedDict()  # id(knowledge) -> its memo (a few knowledges per process)


def _memo(knowledge: Knowledge) -> _ConceptMemo:
    memo = _MEMOS.get(id(knowledge))
    if memo is None or memo.knowledge is not knowledge:
        memo = _MEMOS[id(knowledge)] = _ConceptMemo(knowledge)
        if len(_MEMOS) > 8:
            _MEMOS.popitem(last=False)
    return memo


def names_no_drug(knowledge: Knowledge, draft_orders: Any, selections: Any, prefetch: Any = None) -> bool:
    """True when it is certain, from the raw request, that no card applies: no selected order (every order
    when `selections` is None) names a drug with a guideline or needs a FHIR read to name its drug, and
    where one names only a phenoconverting drug, the `medications` prefetch (the patient's current
    medications: a Bundle of one page) names no drug with a guideline either, so there is no advice for
    it to change. The same conclusion as the full plan and evaluation, without building the orders or
    reading the rest of the prefetch. False when it may be otherwise, or when the input is not the
    common shape (a Bundle of MedicationRequests with a medicationCodeableConcept each): the full path
    decides then."""
    if not isinstance(draft_orders, dict) or (draft_orders.get("resourceType") != "Bundle" and "entry" not in draft_orders):
        return False
    entries = draft_orders.get("entry")
    if not isinstance(entries, list):
        return False
    wanted = None
    if selections is not None:
        if not isinstance(selections, list) or not selections:
            return False
        wanted = {s.strip() for s in selections if isinstance(s, str)}
    memo = _memo(knowledge)
    perpetrator = False
    for item in entries:
        if not isinstance(item, dict):
            continue
        res = item.get("resource") if "resource" in item else item
        if not isinstance(res, dict) or res.get("resourceType") != "MedicationRequest":
            continue
        if wanted is not None and not _selected(res, item.get("fullUrl"), wanted):
            continue
        if "medicationReference" in res:
            return False
        concept = res.get("medicationCodeableConcept")
        if not isinstance(concept, dict):
            return False
        kind = memo.ordered(concept)
        if kind == _DECISIVE:
            return False
        perpetrator = perpetrator or kind == _PERPETRATOR
    return not perpetrator or _takes_no_guideline_drug(memo, prefetch)


def _takes_no_guideline_drug(memo: _ConceptMemo, prefetch: Any) -> bool:
    """The `medications` prefetch is there, complete (one page) and names no drug with a guideline (as
    service/pgx/phenoconversion.reverse reads the patient's medications). Anything else: not certain."""
    meds = prefetch.get("medications") if isinstance(prefetch, dict) else None
    if not isinstance(meds, dict) or meds.get("resourceType") != "Bundle" or meds.get("link"):
        return False
    entries = meds.get("entry", [])
    if not isinstance(entries, list):
        return False
    for item in entries:
        res = item.get("resource") if isinstance(item, dict) else None
        if res is None:
            continue
        if not isinstance(res, dict) or "contained" in res or memo.takes_guideline_drug(res):
            return False
    return True


def _selected(res: dict[str, Any], full_url: Any, wanted: set[str]) -> bool:
    """As service/fhir/orders.extract_orders selects (by `MedicationRequest/id`, fullUrl, or a reference
    ending in it)."""
    rid = res.get("id")
    ref = f"MedicationRequest/{rid}" if isinstance(rid, str) and rid else None
    if ref and ref in wanted:
        return True
    if isinstance(full_url, str) and full_url and full_url in wanted:
        return True
    return bool(ref) and any(w.endswith("/" + ref) for w in wanted)
