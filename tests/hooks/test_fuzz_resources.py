"""Issue 12: no input produces a 5xx. Every field of every FHIR resource is untrusted.

A property-based test (hypothesis) takes real requests built from the synthetic patients in
`fhir_profiles/bundles` (prefetch, draft orders, vitals) and replaces fields anywhere in them with hostile
values: wrong JSON types, nulls, deep nesting, huge arrays and strings, objects where a code should be.
Every hook and the feedback endpoint must answer below 500, and the process must still answer a normal
request correctly afterwards.

The runs are derandomised (the same examples every time, so the suite cannot flake); set
PGX_CDS_FUZZ_EXAMPLES=2000 PGX_CDS_FUZZ_RANDOM=1 for a longer exploratory run.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.fhir.prefetch import templates_for
from tests.hooks import requests as rq
from tests.hooks.conftest import make_client

BUNDLES = Path(__file__).resolve().parents[2] / "fhir_profiles" / "bundles"
WEIGHT = {"resourceType": "Observation", "id": "w1", "status": "final",
          "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
          "subject": {"reference": "Patient/pgx-demo-1"}, "effectiveDateTime": "2026-01-02",
          "valueQuantity": {"value": 70.5, "unit": "kg", "code": "kg"}}
HOOKS = {"order-select": "pgx-order-select", "order-sign": "pgx-order-sign", "patient-view": "pgx-patient-view"}
EXAMPLES = int(os.environ.get("PGX_CDS_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("PGX_CDS_FUZZ_RANDOM"),
                database=None, suppress_health_check=list(HealthCheck), print_blob=True)


def _bundle_requests() -> list[dict[str, Any]]:
    """One request per synthetic patient and hook: its results, conditions and medications as prefetch,
    its weight/height as vitals, its MedicationRequests (or clopidogrel) as the draft orders."""
    out = []
    for path in sorted(BUNDLES.glob("*.json")):
        res = [e["resource"] for e in json.loads(path.read_text(encoding="utf-8"))["entry"]]
        patient = next(r for r in res if r["resourceType"] == "Patient")

        def searchset(*types: str) -> dict[str, Any]:
            return {"resourceType": "Bundle", "type": "searchset",
                    "entry": [{"fullUrl": f"http://ehr.example/fhir/{r['resourceType']}/{r['id']}", "resource": r}
                              for r in res if r["resourceType"] in types]}

        vitals = {"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": r} for r in res if r["resourceType"] == "Observation"
            and any(c.get("code") in ("29463-7", "8302-2", "3141-9") for c in r["code"].get("coding", []))]
            + [{"resource": {**WEIGHT, "subject": {"reference": f"Patient/{patient['id']}"}}}]}
        drafts = [dict(r, status="draft") for r in res if r["resourceType"] == "MedicationRequest"] or [
            dict(rq.CLOPIDOGREL, subject={"reference": f"Patient/{patient['id']}"})]
        for hook in HOOKS:
            context: dict[str, Any] = {"userId": "Practitioner/prac-1", "patientId": patient["id"]}
            every = {"patient": patient, "pgxObservations": searchset("Observation", "DiagnosticReport"),
                     "conditions": searchset("Condition"), "medications": searchset("MedicationRequest"),
                     "vitals": vitals}
            prefetch = {k: every[k] for k in templates_for(hook)}  # complete: no FHIR server is needed
            if hook != "patient-view":
                context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": d} for d in drafts]}
                if hook == "order-select":
                    context["selections"] = [f"MedicationRequest/{drafts[0]['id']}"]
            out.append({"hook": hook, "hookInstance": f"fuzz-{path.stem}-{hook}", "context": context,
                        "prefetch": prefetch})
    return out


BASE = _bundle_requests()


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a request whose value comes from a FHIR resource (prefetch, draft orders)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


PATHS = [[p for p in _paths(req) if p[0] == "prefetch" or p[:2] == ("context", "draftOrders")] for req in BASE]


def _nest(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"coding": leaf}
    return leaf


scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**63, max_value=2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                    st.sampled_from(["", "Patient/other", "#", "urn:uuid:x", "Observation/../../x", "2026-13-45",
                                     "*2/*2", "kg", "[lb_av]", "29463-7", "84413-4", "HGNC:2621", "\u0000", "💊" * 50]))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)


def hostile(original: Any) -> st.SearchStrategy[Any]:
    """A replacement for one field."""
    return st.one_of(
        json_values,
        st.just({"code": {"coding": []}}), st.just([{"code": ["x"]}]), st.just({}), st.just([]),
        st.builds(_nest, st.integers(min_value=5, max_value=240), json_values),  # deep but parseable
        st.builds(lambda n: [copy.deepcopy(original)] * n, st.integers(min_value=50, max_value=400)),  # huge array
        st.builds(lambda n: "x" * n, st.integers(min_value=1000, max_value=50_000)),  # huge string
        st.just(original if not isinstance(original, dict) else {**original, "resourceType": 7}),
    )


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    which = draw(st.integers(min_value=0, max_value=len(BASE) - 1))
    body = copy.deepcopy(BASE[which])
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(PATHS[which]))
        parent: Any = body
        try:
            for step in path[:-1]:
                parent = parent[step]
            original = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced this part
        if not isinstance(parent, (dict, list)):
            continue  # ... with a string (indexable, not assignable)
        parent[path[-1]] = draw(hostile(original))
    return body


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    with make_client(feedback_file=tmp_path_factory.mktemp("fuzz") / "fb.ndjson", log_level="error") as c:
        yield c
    # the process is still healthy: a normal request after all of the above is answered correctly
    # (checked in test_still_healthy_after_fuzzing, which runs last in this module)


@FUZZ
@given(body=mutated())
def test_no_mutated_resource_causes_a_server_error(app_client, body):
    r = app_client.post(f"/cds-services/{HOOKS[body['hook']]}", json=body)
    assert r.status_code < 500, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    r.json()


feedback_items = st.fixed_dictionaries({"card": json_values, "outcome": st.sampled_from(["accepted", "overridden"]),
                                        "outcomeTimestamp": st.sampled_from(["2026-11-21T10:05:31Z", "x", 5]),
                                        "acceptedSuggestions": json_values, "overrideReason": json_values})


@FUZZ
@given(items=st.lists(feedback_items, min_size=0, max_size=5), deep=st.integers(min_value=0, max_value=260))
def test_no_feedback_body_causes_a_server_error(app_client, items, deep):
    body = {"feedback": items}
    if deep and items:
        items[0]["overrideReason"] = {"reason": _nest(deep, "x"), "userComment": "c"}
    r = app_client.post("/cds-services/pgx-order-select/feedback", json=body) if deep < 250 else app_client.post(
        "/cds-services/pgx-order-select/feedback", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text[:500]


def test_still_healthy_after_fuzzing(app_client):
    assert app_client.get("/healthz").status_code == 200
    r = app_client.post("/cds-services/pgx-order-select", json=rq.order_select())
    assert r.status_code == 200 and r.json()["cards"][0]["indicator"] == "critical"
