"""FhirClient with respx: headers, encoding, paging, retries, budget, garbage, URL validation."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from service.config import FhirSettings
from service.fhir.client import Budget, FhirClient, FhirError, encode_params, validate_fhir_server

BASE = "https://ehr.example/fhir"
TOKEN = "sekrit-token-value"


def _bundle(n: int, next_url: str | None = None) -> dict:
    b = {"resourceType": "Bundle", "type": "searchset",
         "entry": [{"resource": {"resourceType": "Observation", "id": f"o{n}-{i}"}} for i in range(2)]}
    if next_url:
        b["link"] = [{"relation": "self", "url": "x"}, {"relation": "next", "url": next_url}]
    return b


@respx.mock
async def test_read_sends_bearer_and_accept(client):
    route = respx.get(f"{BASE}/Patient/p1").respond(json={"resourceType": "Patient", "id": "p1"})
    res = await client.read(BASE, "Patient/p1", TOKEN, budget=Budget(2))
    assert res["id"] == "p1"
    req = route.calls.last.request
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.headers["Accept"] == "application/fhir+json"


@respx.mock
async def test_no_token_no_header(client):
    route = respx.get(f"{BASE}/Patient/p1").respond(json={"resourceType": "Patient", "id": "p1"})
    await client.read(BASE, "Patient/p1", None, budget=Budget(2))
    assert "Authorization" not in route.calls.last.request.headers


@respx.mock
async def test_search_percent_encodes_tokens_and_sets_count(client, fhir_settings):
    route = respx.get(url__startswith=f"{BASE}/Observation").respond(json=_bundle(0))
    await client.search(BASE, "Observation",
                        [("patient", "p1"), ("code", "http://loinc.org|84413-4,http://loinc.org|84414-2")],
                        TOKEN, budget=Budget(2))
    raw = route.calls.last.request.url.query.decode()
    assert raw == ("patient=p1&code=http%3A%2F%2Floinc.org%7C84413-4,http%3A%2F%2Floinc.org%7C84414-2"
                   f"&_count={fhir_settings.page_size}")
    assert route.calls.last.request.url.params["code"] == "http://loinc.org|84413-4,http://loinc.org|84414-2"


def test_encode_params_keeps_explicit_count():
    assert encode_params({"_count": 5, "status": ["active", "draft"]}) == "_count=5&status=active&status=draft"


@respx.mock
async def test_next_links_followed_up_to_max_pages(client):
    respx.get(f"{BASE}/Observation", params={"patient": "p1"}).respond(json=_bundle(1, f"{BASE}/Observation?page=2"))
    p2 = respx.get(f"{BASE}/Observation", params={"page": "2"}).respond(json=_bundle(2, f"{BASE}/Observation?page=3"))
    p3 = respx.get(f"{BASE}/Observation", params={"page": "3"}).respond(json=_bundle(3, f"{BASE}/Observation?page=4"))
    budget = Budget(2)
    bundle = await client.search(BASE, "Observation", {"patient": "p1"}, TOKEN, budget=budget)
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["o1-0", "o1-1", "o2-0", "o2-1", "o3-0", "o3-1"]
    assert budget.calls == 3  # max_pages = 3 in the test settings
    assert bundle["link"] == [{"relation": "next", "url": f"{BASE}/Observation?page=4"}]  # incomplete marker
    assert p2.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert p3.called


@respx.mock
async def test_relative_next_link_and_foreign_next_link(client):
    respx.get(f"{BASE}/Observation", params={"patient": "p1"}).respond(json=_bundle(1, "Observation?page=2"))
    respx.get(f"{BASE}/Observation", params={"page": "2"}).respond(
        json=_bundle(2, "https://evil.example/fhir/Observation?page=3"))
    evil = respx.get(url__startswith="https://evil.example").respond(json=_bundle(9))
    bundle = await client.search(BASE, "Observation", {"patient": "p1"}, TOKEN, budget=Budget(2))
    assert len(bundle["entry"]) == 4
    assert not evil.called  # the token never goes to another server
    assert bundle["link"][0]["url"].startswith("https://evil.example")


@respx.mock
async def test_retry_on_503_then_success(client):
    route = respx.get(f"{BASE}/Patient/p1").mock(side_effect=[
        httpx.Response(503), httpx.Response(200, json={"resourceType": "Patient", "id": "p1"})])
    budget = Budget(2)
    assert (await client.read(BASE, "Patient/p1", TOKEN, budget=budget))["id"] == "p1"
    assert route.call_count == 2 and budget.calls == 2


@respx.mock
async def test_retries_are_bounded(client):
    route = respx.get(f"{BASE}/Patient/p1").respond(502)
    with pytest.raises(FhirError) as ei:
        await client.read(BASE, "Patient/p1", TOKEN, budget=Budget(2))
    assert (ei.value.kind, ei.value.status) == ("http", 502)
    assert route.call_count == 2  # 1 try + settings.retries (1)


@respx.mock
async def test_retry_on_timeout_and_connect_error(client):
    route = respx.get(f"{BASE}/Patient/p1").mock(side_effect=[
        httpx.ReadTimeout("slow"), httpx.Response(200, json={"resourceType": "Patient", "id": "p1"})])
    assert (await client.read(BASE, "Patient/p1", TOKEN, budget=Budget(2)))["id"] == "p1"
    assert route.call_count == 2
    respx.get(f"{BASE}/Patient/p2").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(FhirError) as ei:
        await client.read(BASE, "Patient/p2", TOKEN, budget=Budget(2))
    assert ei.value.kind == "connect"


@pytest.mark.parametrize(("status", "kind"), [(401, "unauthorized"), (403, "forbidden"), (404, "not_found"),
                                              (400, "http")])
@respx.mock
async def test_4xx_not_retried(client, status, kind):
    route = respx.get(f"{BASE}/Patient/p1").respond(status, json={"resourceType": "OperationOutcome"})
    with pytest.raises(FhirError) as ei:
        await client.read(BASE, "Patient/p1", TOKEN, budget=Budget(2))
    assert (ei.value.kind, ei.value.status, route.call_count) == (kind, status, 1)
    assert TOKEN not in str(ei.value) and "p1" not in str(ei.value)


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[1,2]", b'{"resourceType": 5}', b"",
                                  b'{"resourceType":"OperationOutcome"}'])
@respx.mock
async def test_garbage_is_invalid_response(client, body):
    respx.get(f"{BASE}/Patient/p1").respond(200, content=body)
    with pytest.raises(FhirError) as ei:
        await client.read(BASE, "Patient/p1", TOKEN, budget=Budget(2))
    assert ei.value.kind == "invalid_response"
    assert TOKEN not in str(ei.value)


@respx.mock
async def test_search_wrong_resource_type(client):
    respx.get(url__startswith=f"{BASE}/Observation").respond(json={"resourceType": "Patient", "id": "x"})
    with pytest.raises(FhirError) as ei:
        await client.search(BASE, "Observation", {"patient": "p1"}, TOKEN, budget=Budget(2))
    assert ei.value.kind == "invalid_response"


@respx.mock
async def test_spent_budget_makes_no_call(client):
    route = respx.get(f"{BASE}/Patient/p1").respond(json={"resourceType": "Patient", "id": "p1"})
    with pytest.raises(FhirError) as ei:
        await client.read(BASE, "Patient/p1", TOKEN, budget=Budget(0))
    assert ei.value.kind == "budget_exhausted" and not route.called


@respx.mock
async def test_budget_deadline_cuts_a_hanging_call():
    async def hang(request):
        await asyncio.sleep(30)
        return httpx.Response(200, json={"resourceType": "Patient"})

    respx.get(f"{BASE}/Patient/p1").mock(side_effect=hang)
    client = FhirClient(FhirSettings(timeout_s=0.3, retries=1))
    budget = Budget(0.3)
    with pytest.raises(FhirError) as ei:
        await asyncio.wait_for(client.read(BASE, "Patient/p1", TOKEN, budget=budget), 10)
    assert ei.value.kind in ("timeout", "budget_exhausted")
    assert 1 <= budget.calls <= 2  # at most one retry, both inside the budget
    await client.aclose()


async def test_one_shared_pool(client):
    assert client._http() is client._http()
    await client.aclose()
    assert client._client is None


@pytest.mark.parametrize(
    ("url", "allowed", "allow_http", "expected"),
    [
        ("https://ehr.example/fhir/", None, False, "https://ehr.example/fhir"),
        ("https://EHR.example/fhir", ["https://ehr.example/fhir/"], False, "https://ehr.example/fhir"),
        ("https://ehr.example/fhir/r4", ["https://ehr.example/fhir"], False, "https://ehr.example/fhir/r4"),
        ("http://localhost:8090/fhir", [], True, "http://localhost:8090/fhir"),
    ],
)
def test_validate_fhir_server_ok(url, allowed, allow_http, expected):
    assert validate_fhir_server(url, allowed=allowed, allow_http=allow_http) == expected


@pytest.mark.parametrize(
    ("url", "allowed", "allow_http", "message"),
    [
        ("http://ehr.example/fhir", None, False, "https"),
        ("ftp://ehr.example/fhir", None, True, "http(s)"),
        ("https://user:pw@ehr.example/fhir", None, False, "credentials"),
        ("https://ehr.example/fhirevil", ["https://ehr.example/fhir"], False, "not one of"),
        ("https://ehr.example.evil.com/fhir", ["https://ehr.example"], False, "not one of"),
        ("https://ehr.example/fhir?x=1", None, False, "query"),
        ("", None, False, "non-empty"),
        ("https:///fhir", None, False, "host"),
    ],
)
def test_validate_fhir_server_rejects(url, allowed, allow_http, message):
    with pytest.raises(ValueError, match=None) as ei:
        validate_fhir_server(url, allowed=allowed, allow_http=allow_http)
    assert message in str(ei.value)
