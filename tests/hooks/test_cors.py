"""Checklist 40: CORS preflight on all endpoints, configurable allowlist."""

import pytest

from tests.hooks.conftest import make_client

PATHS = ["/cds-services", "/cds-services/pgx-order-select", "/cds-services/pgx-order-select/feedback"]


@pytest.mark.parametrize("path", PATHS)
def test_preflight_allowed_for_listed_origin(tmp_path, path):
    with make_client(cors_origins=["https://sandbox.cds-hooks.org"], feedback_file=tmp_path / "f") as c:
        r = c.options(path, headers={"Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST",
                                     "Access-Control-Request-Headers": "authorization,content-type"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
        allowed = r.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "POST" in r.headers["access-control-allow-methods"]


def test_preflight_refused_for_other_origin(tmp_path):
    with make_client(cors_origins=["https://sandbox.cds-hooks.org"], feedback_file=tmp_path / "f") as c:
        r = c.options(PATHS[0], headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in r.headers


def test_simple_request_gets_cors_header(tmp_path):
    with make_client(cors_origins=["https://sandbox.cds-hooks.org"], feedback_file=tmp_path / "f") as c:
        r = c.get("/cds-services", headers={"Origin": "https://sandbox.cds-hooks.org"})
        assert r.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"


def test_service_call_from_a_browser_gets_cors_headers_and_the_same_answer(tmp_path):
    """Hook calls without an Origin header take the fast path (HookFastPath); browser calls (the CDS Hooks
    sandbox) take the full stack with CORS. Both give the same answer, errors included."""
    from tests.hooks import requests as rq

    origin = {"Origin": "https://sandbox.cds-hooks.org"}
    with make_client(cors_origins=["https://sandbox.cds-hooks.org"], feedback_file=tmp_path / "f") as c:
        ok = rq.order_select()
        fast, browser = c.post(PATHS[1], json=ok), c.post(PATHS[1], json=ok, headers=origin)
        assert fast.status_code == browser.status_code == 200 and fast.json()["cards"]
        assert fast.json() == browser.json()
        assert browser.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
        assert "access-control-allow-origin" not in fast.headers
        for path, body, status in [
            (PATHS[1], {**ok, "hook": "patient-view"}, 400),
            ("/cds-services/no-such-service", ok, 404),
            (PATHS[1], {**ok, "prefetch": None, "context": {**ok["context"], "patientId": "not-cached"}}, 412),
        ]:
            fast, browser = c.post(path, json=body), c.post(path, json=body, headers=origin)
            assert fast.status_code == browser.status_code == status
            assert fast.json() == browser.json() and fast.json()["resourceType"] == "OperationOutcome"
            assert fast.headers["x-request-id"] and browser.headers["x-request-id"]


async def test_behind_a_proxy_prefix_hook_calls_take_the_fast_path_and_metrics_name_the_service(
        tmp_path, monkeypatch, hook_fast_path):
    """uvicorn --root-path /pgx gives the app paths like /pgx/cds-services/...: still the fast path (when it
    is on), and the latency metric still names the service (not "other")."""
    import httpx

    import service.hooks.router as router
    from service.config import Settings
    from service.main import create_app
    from tests.hooks import requests as rq

    fast = []
    real = router.call_service

    async def counting(request):
        fast.append(request.url.path)
        return await real(request)

    monkeypatch.setattr(router, "call_service", counting)  # the fast path looks it up per call; the route does not
    app = create_app(Settings(feedback_file=tmp_path / "f", log_level="warning"))
    transport = httpx.ASGITransport(app=app, root_path="/pgx")
    series = 'pgx_cds_request_seconds_count{service="pgx-order-select",status="200"} '

    async def count(c) -> float:  # the registry is process-wide: compare before and after
        lines = [x for x in (await c.get("/pgx/metrics")).text.splitlines() if x.startswith(series)]
        return float(lines[0].split()[-1]) if lines else 0.0

    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        before = await count(c)
        r = await c.post("/pgx/cds-services/pgx-order-select", json=rq.order_select())
        assert r.status_code == 200 and r.json()["cards"]
        assert len(fast) == (1 if hook_fast_path else 0)
        assert await count(c) == before + 1


PNA = {"Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST",
       "Access-Control-Request-Headers": "authorization,content-type", "Access-Control-Request-Private-Network": "true"}


@pytest.mark.parametrize("path", PATHS)
def test_private_network_preflight_is_answered_in_dev_mode(tmp_path, path):
    """A hosted sandbox (an https page) calling a service on loopback sends a Private Network Access preflight;
    Starlette refused it with 400 'Disallowed CORS private-network' (issue 16)."""
    with make_client(feedback_file=tmp_path / "f") as c:  # dev mode: no issuers
        r = c.options(path, headers=PNA)
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-private-network"] == "true"


def test_private_network_preflight_follows_the_setting(tmp_path):
    issuer = {"iss": "https://ehr.example", "jwks": {"keys": []}, "audiences": ["https://pgx-cds.example/cds"]}
    with make_client(cors_origins=["https://sandbox.cds-hooks.org"], issuers=[issuer],
                     feedback_file=tmp_path / "f") as c:  # production profile: off by default
        r = c.options(PATHS[1], headers=PNA)
        assert r.status_code == 400 and "access-control-allow-private-network" not in r.headers
    with make_client(cors_origins=["https://sandbox.cds-hooks.org"], issuers=[issuer], cors_private_network=True,
                     feedback_file=tmp_path / "f") as c:
        r = c.options(PATHS[1], headers=PNA)
        assert r.status_code == 200 and r.headers["access-control-allow-private-network"] == "true"
    with make_client(feedback_file=tmp_path / "f", cors_private_network=False) as c:
        assert c.options(PATHS[1], headers=PNA).status_code == 400
