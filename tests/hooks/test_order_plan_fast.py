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


# ------------------------------------------------------------- an order for a phenoconverting drug only

from tests.hooks.test_phenoconversion_hooks import CODEINE, CYP2D6_NM, active, with_meds  # noqa: E402

BUPROPION = rq.med_request("draft-bup", "42347", "bupropion", dose=150)  # strong CYP2D6 inhibitor, no guideline
CPIC_MEDS = [active("m-codeine", "2670", "codeine"), active("m-tamox", "10324", "tamoxifen")]
OTHER_MEDS = [active("m-apap", "161", "acetaminophen"), active("m-lis", "29046", "lisinopril")]


def _sign(orders, meds):
    body = rq.order_sign(obs=[rq.genotype("obs-2d6", "CYP2D6", "HGNC:2625", "*1/*1")], orders=orders)
    if meds is None:
        body["prefetch"].pop("medications", None)
        return body
    return with_meds(body, *meds)


def _full_cards(client, monkeypatch, body) -> list:
    """The answer with the early decision switched off (the full plan and evaluation)."""
    import service.hooks.order_plan as op

    with monkeypatch.context() as m:
        m.setattr(op, "names_no_drug", lambda *a, **kw: False)
        import service.hooks.router as router

        m.setattr(router, "decide_for_request", lambda *a, **kw: False)
        r = client.post("/cds-services/pgx-order-sign", json=body)
    assert r.status_code == 200, r.text
    return r.json()["cards"]


@pytest.mark.parametrize("orders", [[FLUOXETINE], [BUPROPION], [FLUOXETINE, rq.ACETAMINOPHEN]])
def test_a_perpetrator_for_a_patient_taking_no_guideline_drug_is_decided_early(client, monkeypatch, orders):
    body = _sign(orders, OTHER_MEDS)
    assert names_no_drug(K, body["context"]["draftOrders"], None, body["prefetch"])
    assert _full_cards(client, monkeypatch, body) == []  # what the full path answers
    assert client.post("/cds-services/pgx-order-sign", json=body).json() == {"cards": []}


@pytest.mark.parametrize("meds", [CPIC_MEDS, CPIC_MEDS[:1], None], ids=["codeine+tamoxifen", "codeine", "not-prefetched"])
def test_a_perpetrator_for_a_patient_who_may_take_a_guideline_drug_takes_the_full_path(meds):
    body = _sign([BUPROPION], meds)
    assert not names_no_drug(K, body["context"]["draftOrders"], None, body["prefetch"])
    assert not names_no_drug(K, body["context"]["draftOrders"], None, None)  # no prefetch given


def test_the_reverse_card_is_still_given(client):
    """bupropion ordered for a CYP2D6 normal metabolizer on codeine: the reverse-direction card."""
    body = _sign([BUPROPION], [active("m-codeine", "2670", "codeine")])
    cards = client.post("/cds-services/pgx-order-sign", json=body).json()["cards"]
    assert cards and any("codeine" in c["summary"].lower() for c in cards)


@pytest.mark.parametrize("meds", [
    {"resourceType": "Bundle", "entry": [], "link": [{"relation": "next", "url": "https://fhir/x?page=2"}]},
    {"resourceType": "OperationOutcome"},
    {"resourceType": "Bundle", "entry": [{"resource": {**OTHER_MEDS[0], "contained": [{"resourceType": "Medication"}]}}]},
    {"resourceType": "Bundle", "entry": "x"},
])
def test_medications_not_plainly_readable_leave_it_undecided(meds):
    body = _sign([BUPROPION], [])
    body["prefetch"]["medications"] = meds
    assert not names_no_drug(K, body["context"]["draftOrders"], None, body["prefetch"])


def test_on_the_synthetic_population_every_early_answer_is_the_full_paths_answer(client, monkeypatch):
    """Where the prefetch decides it (a phenoconverting order, current medications without a guideline
    drug), the full path gives no card either."""
    checked = 0
    for hook, body in generate(K, 300, block=64, fhir_server="https://fhir.example/r4", seed=8):
        ctx = body["context"]
        selections = ctx.get("selections") if hook == "order-select" else None
        if names_no_drug(K, ctx["draftOrders"], selections, body["prefetch"]) and \
                not names_no_drug(K, ctx["draftOrders"], selections):
            r = None
            with monkeypatch.context() as m:
                import service.hooks.order_plan as op
                import service.hooks.router as router

                m.setattr(op, "names_no_drug", lambda *a, **kw: False)
                m.setattr(router, "decide_for_request", lambda *a, **kw: False)
                r = client.post(f"/cds-services/pgx-{hook}", json=body)
            assert r.status_code == 200 and r.json()["cards"] == [], r.text
            checked += 1
    assert checked > 10


def test_the_routers_decision_is_reused_once_and_only_for_the_same_request(monkeypatch):
    import service.hooks.order_plan as op

    calls = []
    real = op.names_no_drug
    monkeypatch.setattr(op, "names_no_drug", lambda *a: calls.append(1) or real(*a))
    none, cpic = rq.bundle(rq.ACETAMINOPHEN), rq.bundle(rq.CLOPIDOGREL)
    assert op.decide_for_request(K, none, None, None) and len(calls) == 1
    copied = {**none}  # validation copies the dict around the entry list
    assert op.plan_draft_orders(K, copied, None).no_cards and len(calls) == 1  # reused
    assert op.plan_draft_orders(K, copied, None).no_cards and len(calls) == 2  # once only
    assert op.decide_for_request(K, none, None, None)
    assert not op.plan_draft_orders(K, cpic, None).no_cards  # another request's orders: decided afresh
    assert op.decide_for_request(K, none, ["MedicationRequest/draft-apap"], None)
    assert op.plan_draft_orders(K, none, ["MedicationRequest/x"]).no_cards is names_no_drug(
        K, none, ["MedicationRequest/x"])  # other selections: decided afresh
