"""Issue 14: work an order hook can skip on distinct traffic, with the same answers.

- Draft orders with no CPIC drug are answered from the draft orders alone: the prefetch is not read and
  nothing is derived or remembered from it.
- order-sign reuses the patient snapshot order-select derived from the same prefetch moments before (the
  two hooks' prefetch templates are the same, so reuse is keyed on them, not on the hook).
"""

from __future__ import annotations

import copy

from service.config import Settings
from service.hooks import snapshots
from service.hooks.discovery import SERVICES
from service.hooks.order_plan import plan_draft_orders
from service.hooks.pipeline import run_hook
from service.hooks.schemas import HookRequest
from service.main import create_app
from tests.hooks import requests as rq

FHIR = "https://fhir.plan.example/r4"


def _app(**kw):
    return create_app(Settings(log_level="warning", **kw))


async def test_orders_without_a_cpic_drug_are_answered_without_touching_the_prefetch(monkeypatch):
    app = _app()
    deps = app.state.deps

    def untouchable(*a, **kw):
        raise AssertionError("the prefetch was read for an order without a CPIC drug")

    monkeypatch.setattr(snapshots, "load_patient_data", untouchable)
    for hook, body in (("pgx-order-select", rq.order_select(orders=[rq.ACETAMINOPHEN], fhirServer=FHIR)),
                       ("pgx-order-sign", rq.order_sign(orders=[rq.ACETAMINOPHEN], fhirServer=FHIR))):
        out = await run_hook(SERVICES[hook], HookRequest.model_validate(body), deps, None)
        assert out.body == b'{"cards":[]}' and out.source == "none" and out.patient_key is None
    # nothing derived from the request was kept (on distinct traffic such entries only evict useful ones)
    assert len(deps.reuse) == 0
    await app.state.fhir.aclose()


async def test_a_cpic_drug_among_the_orders_still_reads_the_patient():
    app = _app()
    body = rq.order_sign(orders=[rq.ACETAMINOPHEN, rq.CLOPIDOGREL], fhirServer=FHIR)
    out = await run_hook(SERVICES["pgx-order-sign"], HookRequest.model_validate(body), app.state.deps, None)
    assert out.response.cards and out.source == "prefetch"
    await app.state.fhir.aclose()


def test_an_order_named_only_by_a_medication_reference_is_not_decided_early():
    """Its drug is known only after reading the Medication: the full path resolves it."""
    order = copy.deepcopy(rq.ACETAMINOPHEN)
    del order["medicationCodeableConcept"]
    order["medicationReference"] = {"reference": "Medication/med-1"}
    plan = plan_draft_orders(_app().state.deps.knowledge, {"resourceType": "Bundle", "entry": [{"resource": order}]}, None)
    assert plan.needs_fetch and not plan.no_cards


async def test_a_medication_reference_that_is_not_an_object_is_not_a_500():
    """Regression: `medicationReference` given as a string beside a coded drug raised AttributeError."""
    order = dict(copy.deepcopy(rq.ACETAMINOPHEN), medicationReference="Medication/med-1")
    app = _app()
    body = rq.order_sign(orders=[order], fhirServer=FHIR)
    out = await run_hook(SERVICES["pgx-order-sign"], HookRequest.model_validate(body), app.state.deps, None)
    assert out.body == b'{"cards":[]}'
    await app.state.fhir.aclose()


async def test_order_sign_reuses_the_snapshot_order_select_derived_from_the_same_prefetch(monkeypatch):
    calls = []
    real = snapshots.fetch_snapshot

    async def counting(*a, **kw):
        calls.append(1)
        return await real(*a, **kw)

    monkeypatch.setattr(snapshots, "fetch_snapshot", counting)
    select = rq.order_select(fhirServer=FHIR)
    sign = rq.order_sign(fhirServer=FHIR)
    app = _app(dedupe_order_sign=False)
    await run_hook(SERVICES["pgx-order-select"], HookRequest.model_validate(select), app.state.deps, None)
    reused = await run_hook(SERVICES["pgx-order-sign"], HookRequest.model_validate(sign), app.state.deps, None)
    assert len(calls) == 1  # order-sign did not derive the snapshot again
    fresh_app = _app(dedupe_order_sign=False)
    fresh = await run_hook(SERVICES["pgx-order-sign"], HookRequest.model_validate(sign), fresh_app.state.deps, None)
    assert len(calls) == 2
    strip = lambda out: [c.model_dump(exclude={"uuid", "suggestions"}) for c in out.response.cards]  # noqa: E731
    assert reused.response.cards and strip(reused) == strip(fresh)  # the same answer as without the reuse

    # another prefetch content for the same patient is derived afresh
    changed = rq.order_sign(fhirServer=FHIR, obs=[rq.CYP2C19_NM])
    out = await run_hook(SERVICES["pgx-order-sign"], HookRequest.model_validate(changed), app.state.deps, None)
    assert len(calls) == 3 and not out.response.cards
    for a in (app, fresh_app):
        await a.state.fhir.aclose()
