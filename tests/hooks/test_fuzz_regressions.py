"""Issue 12: inputs that used to produce a 500, each pinned (found by the attack run and by
test_fuzz_resources)."""

from __future__ import annotations

import json

import pytest

from service.hooks.bodies import MAX_JSON_DEPTH
from tests.hooks import requests as rq

SELECT = "/cds-services/pgx-order-select"


class _nest:  # noqa: N801 - a placeholder that _post_raw writes as `levels` nested arrays
    def __init__(self, levels: int) -> None:
        self.levels = levels


def _post_raw(client, url: str, body: dict):
    """The body as JSON text, written by hand: no encoder writes 1000 levels (orjson stops at 254, the
    stdlib at Python's recursion limit)."""
    deep: list[_nest] = []

    def default(o):
        deep.append(o)
        return "@@deep@@"

    text = json.dumps(body, default=default)
    for d in deep:
        text = text.replace('"@@deep@@"', "[" * d.levels + '"x"' + "]" * d.levels, 1)
    return client.post(url, content=text.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("code", [{"a": 1}, ["29463-7"], None, 29463, True])
@pytest.mark.parametrize("key", ["vitals", "pgxObservations"])
def test_a_coding_code_of_any_json_type_is_not_a_500(client, key, code):
    """Regression: a Coding whose `code` was an object or array raised `TypeError: unhashable` in the
    vitals reader (every Observation of the request passes through it)."""
    body = rq.order_select()
    odd = {**rq.CYP2C19_NM, "id": "odd", "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
           "valueQuantity": {"value": 70, "unit": "kg"}}
    if key == "vitals":
        body["prefetch"]["vitals"] = rq.bundle(odd)
    else:
        body["prefetch"]["pgxObservations"] = rq.bundle(rq.CYP2C19_PM, odd)
    r = client.post(SELECT, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["cards"][0]["indicator"] == "critical"  # the readable result still counts


def test_a_weight_next_to_an_odd_coding_is_still_read(client):
    body = rq.order_select()
    weight = {"resourceType": "Observation", "id": "w", "status": "final",
              "code": {"coding": [{"code": {"x": 1}}, {"system": "http://loinc.org", "code": "29463-7"}]},
              "effectiveDateTime": "2026-01-01", "valueQuantity": {"value": 80, "unit": "kg", "code": "kg"}}
    body["prefetch"]["vitals"] = rq.bundle(weight)
    assert client.post(SELECT, json=body).status_code == 200


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 600, 1020])
@pytest.mark.parametrize("where", ["draftOrders", "prefetch"])
def test_deep_nesting_the_parser_accepts_is_a_clear_400(client, where, depth):
    """Regression: nesting between 255 and 1024 levels parsed, then failed when the pipeline serialised
    the request (cache key, de-duplication digest) -> 500."""
    body = rq.order_select()
    if where == "draftOrders":
        body["context"]["draftOrders"]["entry"][0]["resource"]["note"] = _nest(depth - 6)  # 6 levels above
    else:
        body["prefetch"]["extra"] = _nest(depth - 2)  # body, prefetch
    r = _post_raw(client, SELECT, body)
    assert r.status_code == 400, r.text
    assert f"nested more than {MAX_JSON_DEPTH} levels" in r.json()["issue"][0]["diagnostics"]


def test_nesting_up_to_the_limit_is_answered(client):
    body = rq.order_select()
    body["prefetch"]["extra"] = _nest(MAX_JSON_DEPTH - 2)
    assert _post_raw(client, SELECT, body).status_code == 200


def test_deep_feedback_is_a_clear_400(client):
    body = {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:05:31Z",
                          "overrideReason": {"reason": _nest(500), "userComment": "x"}}]}
    r = _post_raw(client, "/cds-services/pgx-order-select/feedback", body)
    assert r.status_code == 400 and "nested" in r.text


@pytest.mark.parametrize("condition", [
    {"clinicalStatus": {"coding": [{"code": ["active"]}]}},
    {"clinicalStatus": {"coding": 5}},
    {"verificationStatus": {"coding": [{"code": {"x": 1}}]}},
    {"code": {"coding": 7}},
    {"code": {"coding": [{"system": ["x"], "code": {"y": 1}}]}},
    {"code": ["not", "a", "CodeableConcept"]},
])
def test_odd_conditions_are_not_a_500(client, condition):
    """Regression (found by test_fuzz_resources): a Condition whose status or code Coding had a list or
    object `code`, or a `coding` that was not a list, raised TypeError in population matching."""
    body = rq.order_select()
    body["prefetch"]["conditions"] = rq.bundle({"resourceType": "Condition", "id": "c1",
                                                "subject": {"reference": "Patient/pgx-demo-1"}, **condition})
    r = client.post(SELECT, json=body)
    assert r.status_code == 200, r.text



@pytest.mark.parametrize("concept", [
    {"coding": 5},
    {"coding": [{"system": ["http://www.nlm.nih.gov/research/umls/rxnorm"], "code": "32968"}]},
    {"coding": [{"system": {"a": 1}, "code": "x"}], "text": 7},
])
def test_odd_current_medications_are_not_a_500(client, concept):
    """Regression (found after rebasing onto the suggestion-safety screen): a current
    MedicationRequest whose `coding` was not a list, or whose Coding `system` was a list or object,
    raised TypeError while screening the one-click alternatives."""
    body = rq.order_select()
    med = {**rq.med_request("m1", "1191", "aspirin"), "status": "active", "medicationCodeableConcept": concept}
    body["prefetch"]["medications"] = rq.bundle(med)
    r = client.post(SELECT, json=body)
    assert r.status_code == 200, r.text
