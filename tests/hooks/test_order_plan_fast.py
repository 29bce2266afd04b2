"""The cheap "no ordered drug is known" check (service/hooks/order_plan.names_no_drug) never concludes
more than the full plan: whenever it says "no drug", the full plan of the same draft orders has no drug
order and needs no fetch. Checked on the benchmark's synthetic population and on odd shapes."""

from __future__ import annotations

import copy

import pytest

from bench.population import generate
from service.config import REPO_ROOT
from service.fhir.orders import extract_orders
from service.hooks.order_plan import names_no_drug, needs_fetch, plan_draft_orders
from service.pgx.drugs import recognise
from service.pgx.knowledge import load_knowledge
from service.pgx.phenoconversion import perpetrators_in_order
from tests.hooks import requests as rq
from tests.hooks.test_fuzz_regressions import _post_raw, _nest

K = load_knowledge(REPO_ROOT / "cards")
SELECT = "/cds-services/pgx-order-select"


def _full_no_cards(draft_orders, selections) -> bool:
    """The plan as it was before the fast check: every order built, recognised and checked."""
    orders = extract_orders(draft_orders, selections)
    if needs_fetch(orders):
        return False
    return not any(recognise(K, o) or perpetrators_in_order(K, o) for o in orders)


def _bodies():
    for hook, body in generate(K, 400, block=64, fhir_server="https://fhir.example/r4", seed=5):
        ctx = body["context"]
        yield ctx["draftOrders"], ctx.get("selections") if hook == "order-select" else None


def test_it_agrees_with_the_full_plan_on_the_synthetic_population():
    said_none = 0
    for draft, selections in _bodies():
        fast = names_no_drug(K, draft, selections)
        full = _full_no_cards(draft, selections)
        assert not fast or full, (draft, selections)
        assert plan_draft_orders(K, draft, selections).no_cards == full
        said_none += fast
    assert said_none > 300  # and it decides the common case (most orders name no CPIC drug)


def _mr(**kw):
    return {**copy.deepcopy(rq.ACETAMINOPHEN), **kw}


FLUOXETINE = rq.med_request("draft-flx", "4493", "fluoxetine", dose=20)  # phenoconverts CYP2D6: the full path


@pytest.mark.parametrize("draft, selections", [
    (rq.bundle(rq.CLOPIDOGREL), None),
    (rq.bundle(rq.ACETAMINOPHEN, rq.CLOPIDOGREL), None),  # order-sign: every order counts
    (rq.bundle(FLUOXETINE), None),
    (rq.bundle(_mr(medicationCodeableConcept={"text": "Plavix 75 mg"})), None),  # a brand, by text only
    (rq.bundle(_mr(medicationCodeableConcept={"coding": [{"display": "clopidogrel"}]})), None),
    (rq.bundle(_mr(medicationCodeableConcept={})), None),  # names no drug: needs a fetch
    (rq.bundle(_mr(medicationReference={"reference": "Medication/m1"})), None),
    (rq.bundle(_mr(medicationCodeableConcept=None, medicationReference={"display": "codeine"})), None),
    (rq.bundle(rq.ACETAMINOPHEN, rq.CLOPIDOGREL), ["MedicationRequest/draft-clop"]),
    (rq.bundle(rq.ACETAMINOPHEN, rq.CLOPIDOGREL), ["https://ehr/fhir/MedicationRequest/draft-clop"]),
    ({"resourceType": "Bundle", "entry": [{"fullUrl": "urn:uuid:1", "resource": {**rq.CLOPIDOGREL, "id": None}}]},
     ["urn:uuid:1"]),
    (rq.CLOPIDOGREL, None),  # a bare MedicationRequest (not the common shape)
    ([{"resource": rq.CLOPIDOGREL}], None),
    ({"entry": "x"}, None),
    (None, None),
])
def test_it_never_says_no_drug_when_the_full_plan_finds_one_or_needs_a_fetch(draft, selections):
    if not _full_no_cards(draft, selections):
        assert not names_no_drug(K, draft, selections)


@pytest.mark.parametrize("draft, selections", [
    (rq.bundle(rq.ACETAMINOPHEN), None),
    (rq.bundle(rq.ACETAMINOPHEN, rq.CLOPIDOGREL), ["MedicationRequest/draft-apap"]),  # the other is not selected
    (rq.bundle(rq.ACETAMINOPHEN, {"resourceType": "ServiceRequest", "id": "s"}), None),
])
def test_it_decides_the_common_case(draft, selections):
    assert names_no_drug(K, draft, selections) and _full_no_cards(draft, selections)


def test_a_deep_body_naming_a_cpic_drug_is_still_a_400_and_one_naming_none_is_answered(client):
    """The nesting check guards what is serialised. An order with a CPIC drug goes on to the full path
    (which serialises the request): a body nested beyond the limit is refused as before. Draft orders that
    name no known drug are answered with no cards from the draft orders alone, nothing of the body
    serialised, so the rest of the body is not walked for its depth."""
    cpic = rq.order_select()
    cpic["prefetch"]["extra"] = _nest(300)
    assert _post_raw(client, SELECT, cpic).status_code == 400
    none = rq.order_select(orders=[rq.ACETAMINOPHEN])
    none["prefetch"]["extra"] = _nest(300)
    r = _post_raw(client, SELECT, none)
    assert r.status_code == 200 and r.json() == {"cards": []}
    deep_concept = rq.order_select(orders=[_mr(medicationCodeableConcept={"text": "x", "extension": _nest(300)})])
    assert _post_raw(client, SELECT, deep_concept).status_code == 400  # in the part read: refused
