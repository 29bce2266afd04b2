"""Issue 16: taking a suggestion must never leave the prescriber with an empty order.

Two small EHR clients apply our suggestions to their list of draft orders: one applies every action in
order (the CDS Hooks spec), one applies only the first action (what the CDS Hooks Sandbox did). Every
suggestion shape the service produces (switch to an alternative, dose update, order a test) is taken
with both; the draft list must still hold a medication order, and the follow-up order-select must work.
"""

from __future__ import annotations

import copy
import itertools

import pytest

from tests.hooks import requests as rq

_ids = itertools.count(1)


class DraftList:
    """The EHR's draft orders for one ordering session."""

    def __init__(self, orders: list[dict]) -> None:
        self.orders = {f"MedicationRequest/{o['id']}": copy.deepcopy(o) for o in orders}
        self.other: list[dict] = []  # ServiceRequests etc.

    def apply(self, action: dict) -> None:
        kind = action["type"]
        if kind == "create":
            res = copy.deepcopy(action["resource"])
            if res["resourceType"] != "MedicationRequest":
                self.other.append(res)
                return
            res.setdefault("id", f"new-{next(_ids)}")
            self.orders[f"MedicationRequest/{res['id']}"] = res
        elif kind == "update":
            res = copy.deepcopy(action["resource"])
            ref = f"{res['resourceType']}/{res['id']}"
            assert ref in self.orders, f"update of an unknown draft {ref}"
            self.orders[ref] = res
        elif kind == "delete":
            self.orders.pop(action["resourceId"], None)
        else:  # pragma: no cover - the spec has no other action types
            raise AssertionError(kind)

    def medication_orders(self) -> list[dict]:
        return [o for o in self.orders.values()
                if (o.get("medicationCodeableConcept") or {}).get("coding") or o.get("medicationReference")]


def take(suggestion: dict, drafts: DraftList, *, first_only: bool) -> None:
    actions = suggestion["actions"][:1] if first_only else suggestion["actions"]
    for a in actions:
        drafts.apply(a)


def post(client, body):
    r = client.post(f"/cds-services/pgx-{body['hook']}", json=body)
    assert r.status_code == 200, r.text
    return r.json()["cards"]


D6_PM = rq.genotype("o-2d6", "CYP2D6", "HGNC:2625", "*4/*4")
SCENARIOS = {
    "switch-alternative": ([rq.CYP2C19_PM], [rq.CLOPIDOGREL]),
    "switch-with-other-drafts": ([rq.CYP2C19_PM], [rq.CLOPIDOGREL, rq.ACETAMINOPHEN]),
    "dose-update": ([D6_PM], [rq.med_request("d-par", "32937", "paroxetine", dose=20)]),
    "pre-test-order": ([], [rq.CLOPIDOGREL]),
    "switch-tamoxifen": ([D6_PM], [rq.med_request("d-tam", "10324", "tamoxifen", dose=20)]),
}


@pytest.mark.parametrize("first_only", [False, True], ids=["all-actions", "first-action-only"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_suggestion_leaves_a_medication_order(client, name, first_only):
    obs, orders = SCENARIOS[name]
    cards = post(client, rq.order_select(obs=obs, orders=orders))
    suggestions = [s for c in cards for s in c.get("suggestions", [])]
    assert suggestions, f"{name}: expected at least one suggestion"
    for s in suggestions:
        drafts = DraftList(orders)
        take(s, drafts, first_only=first_only)
        meds = drafts.medication_orders()
        assert meds, f"{name}: taking {s['label']!r} left no medication order"
        types = [a["type"] for a in s["actions"]]
        if "delete" in types:
            assert types.index("create") < types.index("delete"), types
        # the EHR calls again with what it now has: the service answers (and the new order is recognised)
        follow = rq.order_select(obs=obs, orders=meds, selections=[f"MedicationRequest/{meds[-1]['id']}"])
        post(client, follow)


def test_all_actions_replace_the_draft_with_the_alternative(client):
    cards = post(client, rq.order_select(obs=[rq.CYP2C19_PM], orders=[rq.CLOPIDOGREL]))
    s = next(s for s in cards[0]["suggestions"] if "ticagrelor" in s["label"])
    assert [a["type"] for a in s["actions"]] == ["create", "delete"]
    drafts = DraftList([rq.CLOPIDOGREL])
    take(s, drafts, first_only=False)
    names = [o["medicationCodeableConcept"]["text"] for o in drafts.medication_orders()]
    assert names == ["ticagrelor"]


def test_first_action_only_client_keeps_both_orders_never_none(client):
    cards = post(client, rq.order_select(obs=[rq.CYP2C19_PM], orders=[rq.CLOPIDOGREL]))
    s = cards[0]["suggestions"][0]
    drafts = DraftList([rq.CLOPIDOGREL])
    take(s, drafts, first_only=True)
    names = sorted(o["medicationCodeableConcept"]["text"] for o in drafts.medication_orders())
    assert names == sorted(["clopidogrel", s["actions"][0]["resource"]["medicationCodeableConcept"]["text"]])
