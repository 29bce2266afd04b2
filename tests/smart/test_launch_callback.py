"""Launch and callback handlers against a mocked (respx) SMART authorization server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from service.smart.config import SmartSettings
from service.smart.session import KEY_PREFIX, SmartSession
from tests.smart.conftest import AUTHZ, CLIENT_ID, ISS, JWKS, TOKEN, id_token, make_app, smart_config


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _sid(resp) -> tuple[str, str]:
    """(launch key, session id) from the launch cookie a response set."""
    names = [n for n in resp.cookies.keys() if n.startswith("pgx_smart_sid_")]
    assert len(names) == 1, resp.headers.get("set-cookie")
    return names[0].removeprefix("pgx_smart_sid_"), resp.cookies[names[0]]


def _session(app, sid: str) -> SmartSession | None:
    raw = asyncio.run(app.state.kv.get(KEY_PREFIX + hashlib.sha256(sid.encode()).hexdigest()))
    return SmartSession.model_validate_json(raw) if raw else None


def _launch(client, mock, **params):
    mock.get(f"{ISS}/.well-known/smart-configuration").respond(200, json=smart_config())
    resp = client.get("/app/launch", params={"iss": ISS, "launch": "xyz123", **params})
    assert resp.status_code == 302, resp.text
    return resp, _query(resp.headers["location"])


def _token_route(mock, rsa_key, *, captured: list | None = None, body: dict | None = None, nonce_override=None):
    key, jwks = rsa_key
    mock.get(JWKS).respond(200, json=jwks)

    def _answer(request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if captured is not None:
            captured.append(form)
        data = {
            "access_token": "at-secret-1",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "launch openid fhirUser patient/Patient.rs patient/Observation.rs patient/MedicationRequest.rs",
            "patient": "pgx-pat-1",
            "need_patient_banner": True,
            "refresh_token": "rt-secret-1",
            "id_token": id_token(key, nonce=nonce_override or _answer.nonce, fhirUser="Practitioner/dr-1"),
        }
        data.update(body or {})
        return httpx.Response(200, json=data)

    _answer.nonce = ""
    route = mock.post(TOKEN).mock(side_effect=_answer)
    return route, _answer


# ----------------------------------------------------------------------------------------- launch


def test_ehr_launch_redirects_with_pkce_state_nonce_and_sets_a_safe_cookie(app, client):
    with respx.mock(assert_all_called=True) as mock:
        resp, q = _launch(client, mock)
    assert resp.headers["location"].startswith(AUTHZ + "?")
    assert q["response_type"] == "code"
    assert q["client_id"] == CLIENT_ID
    assert q["redirect_uri"] == "https://testserver/app/callback"
    assert q["aud"] == ISS
    assert q["launch"] == "xyz123"
    assert q["code_challenge_method"] == "S256"
    scopes = q["scope"].split()
    assert "launch" in scopes and "openid" in scopes and "fhirUser" in scopes
    assert "patient/Observation.rs" in scopes and "patient/MedicationRequest.rs" in scopes
    assert "patient/Condition.rs" in scopes
    assert len(q["state"]) >= 40 and len(q["nonce"]) >= 30

    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=lax" in cookie
    assert "Max-Age=600" in cookie and "Path=/app" in cookie
    key, sid = _sid(resp)
    assert len(key) == 12 and cookie.startswith(f"pgx_smart_sid_{key}=")
    sess = _session(app, sid)
    assert sess is not None and sess.phase == "pending"
    assert sess.state == q["state"] and sess.nonce == q["nonce"]
    assert _s256(sess.code_verifier) == q["code_challenge"]
    # nothing secret in the browser-visible redirect or cookie
    assert sess.code_verifier not in resp.headers["location"] and sess.code_verifier not in cookie


def test_standalone_launch_asks_for_patient_selection(client):
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{ISS}/.well-known/smart-configuration").respond(200, json=smart_config())
        resp = client.get("/app/launch", params={"iss": ISS})
    q = _query(resp.headers["location"])
    assert resp.status_code == 302
    assert "launch/patient" in q["scope"].split() and "launch" not in q["scope"].split()
    assert "launch" not in q


def test_v1_scope_style_can_be_configured():
    app = make_app(smart=SmartSettings(scope_style="v1"))
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c, respx.mock(assert_all_called=False) as mock:
        mock.get(f"{ISS}/.well-known/smart-configuration").respond(200, json=smart_config())
        q = _query(c.get("/app/launch", params={"iss": ISS, "launch": "a"}).headers["location"])
    assert "patient/Observation.read" in q["scope"].split()


def test_launch_without_iss_is_a_clear_400_page(client):
    resp = client.get("/app/launch")
    assert resp.status_code == 400
    assert "text/html" in resp.headers["content-type"]
    assert "launched from the EHR" in resp.text
    assert "Traceback" not in resp.text


def test_iss_not_on_the_allowlist_is_refused_in_production():
    from fastapi.testclient import TestClient

    app = make_app(production=True)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c, respx.mock(assert_all_called=False) as mock:
        disc = mock.get(url__regex=r".*smart-configuration").respond(200, json=smart_config())
        bad = c.get("/app/launch", params={"iss": "https://evil.test/fhir", "launch": "a"})
        assert bad.status_code == 403 and "not registered" in bad.text
        assert not disc.called  # never contacted
        http = c.get("/app/launch", params={"iss": "http://ehr.test/fhir", "launch": "a"})
        assert http.status_code == 400
        good = c.get("/app/launch", params={"iss": ISS + "/", "launch": "a"})
        assert good.status_code == 302


def test_discovery_failure_and_missing_s256_are_error_pages(client):
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{ISS}/.well-known/smart-configuration").respond(404)
        mock.get(f"{ISS}/metadata").respond(500)
        resp = client.get("/app/launch", params={"iss": ISS, "launch": "a"})
    assert resp.status_code == 502 and "authorization server" in resp.text
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{ISS}/.well-known/smart-configuration").respond(
            200, json=smart_config(code_challenge_methods_supported=["plain"])
        )
        resp = client.get("/app/launch", params={"iss": ISS, "launch": "a"})
    assert resp.status_code == 502 and "PKCE" in resp.text


def test_discovery_falls_back_to_capability_statement(client):
    cs = {
        "resourceType": "CapabilityStatement",
        "rest": [{"security": {"extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": "authorize", "valueUri": AUTHZ}, {"url": "token", "valueUri": TOKEN}],
        }]}}],
    }
    with respx.mock(assert_all_called=False) as mock:
        mock.get(f"{ISS}/.well-known/smart-configuration").respond(404)
        mock.get(f"{ISS}/metadata").respond(200, json=cs)
        resp = client.get("/app/launch", params={"iss": ISS, "launch": "a"})
    assert resp.status_code == 302 and resp.headers["location"].startswith(AUTHZ)


# --------------------------------------------------------------------------------------- callback


def test_callback_exchanges_code_with_pkce_and_stores_tokens_server_side(app, client, rsa_key):
    captured: list[dict] = []
    with respx.mock(assert_all_called=False) as mock:
        launch_resp, q = _launch(client, mock, drug="Clopidogrel")
        key, old_sid = _sid(launch_resp)
        pending = _session(app, old_sid)
        route, answer = _token_route(mock, rsa_key, captured=captured, body={
            "appContext": json.dumps({"drug": "warfarin", "rule": "warfarin/x"}),
        })
        answer.nonce = q["nonce"]
        resp = client.get("/app/callback", params={"code": "c-1", "state": q["state"]})
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == f"/app/?k={key}"
    form = captured[0]
    assert form["grant_type"] == "authorization_code" and form["code"] == "c-1"
    assert form["redirect_uri"] == "https://testserver/app/callback"
    assert form["client_id"] == CLIENT_ID
    assert _s256(form["code_verifier"]) == q["code_challenge"] == _s256(pending.code_verifier)
    new_key, new_sid = _sid(resp)
    assert new_key == key  # the same launch handle, a new secret
    assert new_sid != old_sid  # rotated after sign-in
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "Max-Age=900" in cookie
    assert "at-secret-1" not in cookie and "at-secret-1" not in resp.text
    assert _session(app, old_sid) is None  # pending record is single-use
    sess = _session(app, new_sid)
    assert sess.phase == "active" and sess.access_token == "at-secret-1" and sess.refresh_token == "rt-secret-1"
    assert sess.patient == "pgx-pat-1" and sess.need_patient_banner is True
    assert sess.fhir_user == "Practitioner/dr-1"
    assert sess.focus_drug == "clopidogrel"  # ?drug= at launch wins over appContext
    assert sess.app_context == {"drug": "warfarin", "rule": "warfarin/x"}
    assert sess.state == "" and sess.code_verifier == "" and sess.nonce == ""


def test_callback_takes_focus_from_app_context(app, client, rsa_key):
    with respx.mock(assert_all_called=False) as mock:
        _, q = _launch(client, mock)
        _, answer = _token_route(mock, rsa_key, body={
            "appContext": '{"drug":"clopidogrel","rule":"clopidogrel-cyp2c19/acs-pm"}',
        })
        answer.nonce = q["nonce"]
        resp = client.get("/app/callback", params={"code": "c", "state": q["state"]})
    sess = _session(app, _sid(resp)[1])
    assert sess.focus_drug == "clopidogrel" and sess.focus_rule == "clopidogrel-cyp2c19/acs-pm"


def test_callback_with_wrong_state_is_refused_and_never_calls_the_token_endpoint(app, client, rsa_key):
    with respx.mock(assert_all_called=False) as mock:
        launch_resp, q = _launch(client, mock)
        route, _ = _token_route(mock, rsa_key)
        resp = client.get("/app/callback", params={"code": "c", "state": q["state"] + "x"})
    assert resp.status_code == 400
    assert "state mismatch" in resp.text and 'data-error-kind="bad_state"' in resp.text
    assert not route.called
    key, sid = _sid(launch_resp)
    assert _session(app, sid) is None
    assert f'pgx_smart_sid_{key}=""' in resp.headers.get("set-cookie", "")  # cookie cleared


def test_denied_consent_shows_a_clear_page(client, rsa_key):
    with respx.mock(assert_all_called=False) as mock:
        _, q = _launch(client, mock)
        route, _ = _token_route(mock, rsa_key)
        resp = client.get("/app/callback", params={"error": "access_denied", "state": q["state"]})
    assert resp.status_code == 403
    assert "Access was not granted" in resp.text and "nothing was read" in resp.text
    assert not route.called


def test_callback_without_a_launch_cookie_is_an_expired_sign_in(client):
    resp = client.get("/app/callback", params={"code": "c", "state": "s"})
    assert resp.status_code == 400 and "sign-in has expired" in resp.text


def test_callback_rejects_an_id_token_with_the_wrong_nonce(client, rsa_key):
    with respx.mock(assert_all_called=False) as mock:
        _, q = _launch(client, mock)
        _token_route(mock, rsa_key, nonce_override="someone-else")
        resp = client.get("/app/callback", params={"code": "c", "state": q["state"]})
    assert resp.status_code == 401 and 'data-error-kind="id_token_invalid"' in resp.text


def test_callback_rejects_an_id_token_signed_by_another_key(client, rsa_key):
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with respx.mock(assert_all_called=False) as mock:
        _, q = _launch(client, mock)
        _token_route(mock, rsa_key, body={"id_token": id_token(other, nonce=q["nonce"])})
        resp = client.get("/app/callback", params={"code": "c", "state": q["state"]})
    assert resp.status_code == 401 and 'data-error-kind="id_token_invalid"' in resp.text


def test_token_endpoint_error_is_a_clear_page(client):
    with respx.mock(assert_all_called=False) as mock:
        _, q = _launch(client, mock)
        mock.post(TOKEN).respond(400, json={"error": "invalid_grant"})
        resp = client.get("/app/callback", params={"code": "c", "state": q["state"]})
    assert resp.status_code == 401 and "invalid_grant" in resp.text and "Traceback" not in resp.text


def test_v1_read_scopes_are_accepted_and_missing_observation_scope_is_refused(app, client, rsa_key):
    with respx.mock(assert_all_called=False) as mock:
        _, q = _launch(client, mock)
        _, answer = _token_route(mock, rsa_key, body={"scope": "launch openid patient/Observation.read"})
        answer.nonce = q["nonce"]
        ok = client.get("/app/callback", params={"code": "c", "state": q["state"]})
    assert ok.status_code == 303
    with respx.mock(assert_all_called=False) as mock:
        _, q = _launch(client, mock)
        _, answer = _token_route(mock, rsa_key, body={"scope": "launch openid patient/Patient.rs"})
        answer.nonce = q["nonce"]
        bad = client.get("/app/callback", params={"code": "c", "state": q["state"]})
    assert bad.status_code == 403 and "lab results" in bad.text


def test_token_without_patient_context_is_refused(client, rsa_key):
    with respx.mock(assert_all_called=False) as mock:
        _, q = _launch(client, mock)
        _, answer = _token_route(mock, rsa_key, body={"patient": None})
        answer.nonce = q["nonce"]
        resp = client.get("/app/callback", params={"code": "c", "state": q["state"]})
    assert resp.status_code == 400 and "No patient was selected" in resp.text


def test_confidential_client_uses_basic_auth(rsa_key):
    from fastapi.testclient import TestClient

    app = make_app(smart=SmartSettings(client_secret="s3cret"))
    seen: list[httpx.Request] = []
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c, respx.mock(assert_all_called=False) as mock:
        _, q = _launch(c, mock)
        key, jwks = rsa_key
        mock.get(JWKS).respond(200, json=jwks)

        def _answer(request):
            seen.append(request)
            return httpx.Response(200, json={"access_token": "a", "token_type": "bearer", "patient": "p",
                                             "id_token": id_token(key, nonce=q["nonce"])})

        mock.post(TOKEN).mock(side_effect=_answer)
        resp = c.get("/app/callback", params={"code": "c", "state": q["state"]})
    assert resp.status_code == 303
    auth = seen[0].headers["authorization"]
    assert auth == "Basic " + base64.b64encode(b"pgx-cds:s3cret").decode()
    assert "client_id=" not in seen[0].content.decode()


@pytest.mark.parametrize(
    ("granted", "ok"),
    [
        ("patient/Observation.rs", True),
        ("patient/Observation.r", True),
        ("patient/Observation.cruds", True),
        ("patient/*.rs", True),
        ("patient/Observation.read", True),
        ("patient/*.read", True),
        ("user/Observation.read", True),
        ("patient/Observation.rs?category=laboratory", True),
        ("patient/Observation.c", False),
        ("patient/Observation.write", False),
        ("patient/Patient.rs launch openid", False),
        ("system/Observation.rs", False),
        ("", False),
    ],
)
def test_scope_allows_read(granted, ok):
    from service.smart.oauth import scope_allows_read

    assert scope_allows_read(granted, "Observation") is ok


def test_two_pending_launches_in_one_browser_are_kept_apart(app, client, rsa_key):
    with respx.mock(assert_all_called=False) as mock:
        first, q1 = _launch(client, mock, drug="codeine")
        second, q2 = _launch(client, mock, drug="clopidogrel")
        k1, sid1 = _sid(first)
        k2, sid2 = _sid(second)
        assert k1 != k2
        _, answer = _token_route(mock, rsa_key)
        answer.nonce = q2["nonce"]
        resp = client.get("/app/callback", params={"code": "c", "state": q2["state"]})
    assert resp.status_code == 303 and resp.headers["location"] == f"/app/?k={k2}"
    assert _session(app, sid2) is None  # used
    assert _session(app, sid1).phase == "pending"  # the other tab's launch is untouched
    assert _session(app, _sid(resp)[1]).focus_drug == "clopidogrel"
