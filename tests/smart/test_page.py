"""The profile page, print view, refresh and failure paths, with the engine output stubbed by fixtures."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from types import SimpleNamespace

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

import service.smart.router as smart_router
from service.pgx.drugs import build_index
from service.smart.config import SmartSettings
from service.smart.data import LoadedProfile, TokenRejected
from service.smart.session import KEY_PREFIX, SmartSession
from tests.smart import fixtures
from tests.smart.conftest import ISS, TOKEN, make_app

PATIENT = {
    "resourceType": "Patient",
    "id": "pgx-pat-1",
    "name": [{"use": "official", "given": ["Ada", "K"], "family": "Lovelace"}],
    "birthDate": "1970-01-01",
    "gender": "female",
    "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": "MRN-0042"}],
}


def _store(app, sid: str, **over) -> None:
    sess = SmartSession(
        phase="active",
        iss=ISS,
        token_endpoint=TOKEN,
        access_token="at-secret-1",
        refresh_token=None,
        expires_at=time.time() + 300,
        scope="patient/Observation.rs",
        patient="pgx-pat-1",
        need_patient_banner=True,
    ).model_copy(update=over)
    key = KEY_PREFIX + hashlib.sha256(sid.encode()).hexdigest()
    asyncio.run(app.state.kv.set(key, sess.model_dump_json().encode(), 900))


def _load(app, sid: str) -> SmartSession | None:
    raw = asyncio.run(app.state.kv.get(KEY_PREFIX + hashlib.sha256(sid.encode()).hexdigest()))
    return SmartSession.model_validate_json(raw) if raw else None


class FakeEngine:
    """Stands in for service.smart.data.load_profile; records tokens, can reject the first call(s)."""

    def __init__(self, reject: int = 0, error: Exception | None = None, profile=None) -> None:
        self.tokens: list[str] = []
        self.reject = reject
        self.error = error
        self.profile = profile

    async def __call__(self, state, *, iss, patient_id, token, budget_s):
        self.tokens.append(token)
        if self.error:
            raise self.error
        if self.reject:
            self.reject -= 1
            raise TokenRejected()
        return LoadedProfile(
            fixtures.patient_data(), self.profile or fixtures.profile(), fixtures.recommendations(), PATIENT
        )


@pytest.fixture
def app():
    app = make_app()
    drugs = [SimpleNamespace(name="clopidogrel", rxnorm="32968", products=["309362"], brands=["Plavix"]),
             SimpleNamespace(name="codeine", rxnorm="2670", products=[], brands=[])]
    app.state.knowledge.drug_index = build_index([SimpleNamespace(drugs=drugs)])
    return app


@pytest.fixture
def engine(monkeypatch):
    fake = FakeEngine()
    monkeypatch.setattr(smart_router, "load_profile", fake)
    return fake


@pytest.fixture
def client(app):
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        yield c


KEY = "0123456789ab"


def _open(client, app, sid="sid-1", path="/app/", key=KEY, **over):
    _store(app, sid, **over)
    client.cookies.set(f"pgx_smart_sid_{key}", sid, domain="testserver.local", path="/app")
    return client.get(path, params={"k": key})


def test_profile_page_shows_results_scale_drugs_and_medications(app, client, engine):
    resp = _open(client, app)
    assert resp.status_code == 200, resp.text
    html = resp.text
    assert engine.tokens == ["at-secret-1"]
    # banner (need_patient_banner true)
    assert "Ada K Lovelace" in html and "MRN-0042" in html and "1970-01-01" in html
    # results table, one tbody per gene, with phenotype, activity score, date, lab and Observation
    assert 'data-gene="CYP2C19"' in html and 'data-gene="CYP2D6"' in html and 'data-gene="SLCO1B1"' in html
    assert "Poor Metabolizer" in html and "*2/*2" in html and "1.25" in html
    assert "2024-03-01" in html and "Synthetic Genomics Lab" in html and "Observation/obs-2c19" in html
    # the scale visual carries a text alternative
    assert 'aria-label="CYP2D6 activity score 1.25 on a scale from 0 to 3: Normal Metabolizer"' in html
    # each result's drugs, one line each, with the guideline link
    assert "avoid clopidogrel; use prasugrel or ticagrelor" in html
    assert 'href="https://cpicpgx.org/guidelines/clopidogrel-cyp2c19/"' in html
    # current medication affected, highlighted; the other one only counted
    assert "Clopidogrel 75 mg oral tablet" in html and "affected by a result" in html
    assert "1 other active medication without CPIC PGx guidance" in html
    # problems listed as such
    assert "could not be read" in html and "conflicting results" in html and "unknown allele *99" in html
    # secrets never reach the page
    assert "at-secret-1" not in html
    # headers
    assert resp.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert "Max-Age=900" in resp.headers["set-cookie"]


def test_banner_only_when_the_ehr_asks_for_it(app, client, engine):
    html = _open(client, app, need_patient_banner=False).text
    assert "Ada K Lovelace" not in html and 'class="patient-banner"' not in html
    assert "Poor Metabolizer" in html


def test_focus_from_session_and_from_query(app, client, engine):
    html = _open(client, app, focus_drug="clopidogrel", focus_rule="clopidogrel-cyp2c19/acs-pm").text
    assert 'id="focus"' in html and "Opened for" in html
    focus = html.split('id="focus"', 1)[1].split("</section>", 1)[0]
    assert "clopidogrel" in focus and "Avoid" in focus
    assert "The card was based on rule" not in focus
    # ?drug= on the page overrides the launch focus
    html2 = client.get("/app/", params={"k": KEY, "drug": "codeine"}).text
    focus2 = html2.split('id="focus"', 1)[1].split("</section>", 1)[0]
    assert "codeine" in focus2 and "Standard dosing" in focus2 and "clopidogrel" not in focus2


def test_focus_rule_changed_since_the_card_is_explained(app, client, engine):
    html = _open(client, app, focus_drug="clopidogrel", focus_rule="clopidogrel-cyp2c19/acs-im").text
    assert "The card was based on rule clopidogrel-cyp2c19/acs-im" in html
    assert "clopidogrel-cyp2c19/acs-pm applies" in html


def test_focus_on_a_drug_without_a_result(app, client, monkeypatch):
    prof = fixtures.profile()
    del prof.genes["CYP2C19"]
    monkeypatch.setattr(smart_router, "load_profile", FakeEngine(profile=prof))
    _store(app, "s")
    client.cookies.set(f"pgx_smart_sid_{KEY}", "s", domain="testserver.local", path="/app")
    # without ?k= the browser's only launch is used
    html = client.get("/app/", params={"drug": "warfarin"}).text
    assert "warfarin has no CPIC pharmacogenomic guideline" in html


def test_print_view(app, client, engine):
    resp = _open(client, app, path="/app/print", focus_drug="clopidogrel")
    assert resp.status_code == 200
    html = resp.text
    assert "Pharmacogenomic consult summary" in html
    assert "/app/static/print.css" in html and "data-print" in html
    assert "Question: clopidogrel" in html and "[current medication]" in html
    assert "Ada K Lovelace" in html


def test_no_session_is_an_expired_page(client, engine):
    resp = client.get("/app/")
    assert resp.status_code == 401 and "Your session has expired" in resp.text
    assert engine.tokens == []


def test_session_past_its_absolute_lifetime_is_expired(app, client, engine):
    resp = _open(client, app, created_at=time.time() - 50_000)
    assert resp.status_code == 401 and engine.tokens == []


def test_expired_token_without_refresh_token_ends_the_session(app, client, engine):
    resp = _open(client, app, expires_at=time.time() - 5)
    assert resp.status_code == 401 and "Your session has expired" in resp.text
    assert engine.tokens == []
    assert _load(app, "sid-1") is None


def test_expired_token_is_refreshed_when_a_refresh_token_was_offered(app, client, engine):
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(TOKEN).respond(
            200, json={"access_token": "at-secret-2", "token_type": "Bearer", "expires_in": 300, "refresh_token": "rt-2"}
        )
        resp = _open(client, app, expires_at=time.time() - 5, refresh_token="rt-1")
    assert resp.status_code == 200
    form = route.calls[0].request.content.decode()
    assert "grant_type=refresh_token" in form and "refresh_token=rt-1" in form and "client_id=pgx-cds" in form
    assert engine.tokens == ["at-secret-2"]
    sess = _load(app, "sid-1")
    assert sess.access_token == "at-secret-2" and sess.refresh_token == "rt-2"


def test_refused_refresh_is_an_expired_page(app, client, engine):
    with respx.mock() as mock:
        mock.post(TOKEN).respond(400, json={"error": "invalid_grant"})
        resp = _open(client, app, expires_at=time.time() - 5, refresh_token="rt-1")
    assert resp.status_code == 401 and "Your session has expired" in resp.text
    assert _load(app, "sid-1") is None


def test_fhir_401_refreshes_once_then_succeeds(app, client, monkeypatch):
    fake = FakeEngine(reject=1)
    monkeypatch.setattr(smart_router, "load_profile", fake)
    with respx.mock() as mock:
        mock.post(TOKEN).respond(200, json={"access_token": "at-secret-2", "token_type": "bearer", "expires_in": 60})
        resp = _open(client, app, refresh_token="rt-1")
    assert resp.status_code == 200
    assert fake.tokens == ["at-secret-1", "at-secret-2"]
    assert _load(app, "sid-1").refresh_token == "rt-1"  # kept when not rotated


def test_fhir_401_without_refresh_token_is_a_clear_page(app, client, monkeypatch):
    monkeypatch.setattr(smart_router, "load_profile", FakeEngine(reject=5))
    resp = _open(client, app)
    assert resp.status_code == 401
    assert "Access to the patient record has expired" in resp.text
    assert 'data-error-kind="fhir_unauthorized"' in resp.text
    assert _load(app, "sid-1") is None


def test_unexpected_error_is_a_generic_page_without_details(app, client, monkeypatch):
    monkeypatch.setattr(smart_router, "load_profile", FakeEngine(error=RuntimeError("secret detail at-secret-1")))
    resp = _open(client, app)
    assert resp.status_code == 500
    assert "Something went wrong" in resp.text
    for leak in ("Traceback", "RuntimeError", "secret detail", "at-secret-1"):
        assert leak not in resp.text


def test_logout_discards_the_session(app, client, engine):
    _open(client, app)
    resp = client.post("/app/logout", params={"k": KEY})
    assert resp.status_code == 200 and "You have left the PGx profile" in resp.text
    assert _load(app, "sid-1") is None
    assert f'pgx_smart_sid_{KEY}=""' in resp.headers["set-cookie"]


def test_static_files_are_allowlisted(client):
    css = client.get("/app/static/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "@media print" in css.text
    assert client.get("/app/static/app.js").status_code == 200
    assert client.get("/app/static/router.py").status_code == 404
    assert client.get("/app/static/..%2Frouter.py").status_code == 404


def test_cookie_settings_are_configurable():
    app = make_app(smart=SmartSettings(cookie_samesite="none", cookie_name="x_sid", session_ttl_s=300))
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c, respx.mock() as mock:
        from tests.smart.conftest import smart_config

        mock.get(f"{ISS}/.well-known/smart-configuration").respond(200, json=smart_config())
        resp = c.get("/app/launch", params={"iss": ISS, "launch": "l"})
    cookie = resp.headers["set-cookie"]
    assert re.match(r"x_sid_[0-9a-f]{12}=", cookie) and "SameSite=none" in cookie and "Secure" in cookie


def test_real_engine_path_reports_fhir_401_as_token_rejected(monkeypatch):
    """load_profile itself: a 401 from the FHIR client becomes TokenRejected (no engine call needed)."""
    from service.fhir.client import FhirClient
    from service.smart.data import load_profile

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"resourceType": "OperationOutcome"})

    state = SimpleNamespace(
        settings=make_app().state.settings,
        knowledge=SimpleNamespace(genes={}),
        fhir=FhirClient(make_app().state.settings, transport=httpx.MockTransport(handler)),
    )
    with pytest.raises(TokenRejected):
        asyncio.run(load_profile(state, iss="http://fhir.test/fhir", patient_id="p1", token="t", budget_s=2))


def test_two_launches_in_one_browser_each_keep_their_patient(app, client, monkeypatch):
    """Two tabs, two patients: ?k= selects the launch, so a reload never shows the other patient."""
    seen: list[str] = []

    async def fake(state, *, iss, patient_id, token, budget_s):
        seen.append(patient_id)
        return LoadedProfile(fixtures.patient_data(), fixtures.profile(), [], None)

    monkeypatch.setattr(smart_router, "load_profile", fake)
    _store(app, "sid-a", patient="patient-a")
    _store(app, "sid-b", patient="patient-b")
    client.cookies.set("pgx_smart_sid_aaaaaaaaaaaa", "sid-a", domain="testserver.local", path="/app")
    client.cookies.set("pgx_smart_sid_bbbbbbbbbbbb", "sid-b", domain="testserver.local", path="/app")
    assert client.get("/app/", params={"k": "aaaaaaaaaaaa"}).status_code == 200
    assert client.get("/app/", params={"k": "bbbbbbbbbbbb"}).status_code == 200
    assert client.get("/app/", params={"k": "aaaaaaaaaaaa"}).status_code == 200
    assert seen == ["patient-a", "patient-b", "patient-a"]
    # ambiguous (no k) or unknown k: never guess a patient
    assert client.get("/app/").status_code == 401
    assert client.get("/app/", params={"k": "cccccccccccc"}).status_code == 401
    assert client.get("/app/", params={"k": "../../x"}).status_code == 401
    assert seen == ["patient-a", "patient-b", "patient-a"]


def test_page_links_carry_the_launch_key(app, client, engine):
    html = _open(client, app).text
    assert f'href="/app/print?k={KEY}' in html and f'action="/app/logout?k={KEY}"' in html


def test_profile_page_shows_genotype_and_effective_phenotype_side_by_side(app, client, monkeypatch):
    """Issue 13: a strong CYP2D6 inhibitor among the current medicines; the page shows both phenotypes."""
    from datetime import date

    from service.config import REPO_ROOT, Settings
    from service.pgx.knowledge import load_knowledge
    from service.pgx.phenoconversion import conversions

    k = load_knowledge(REPO_ROOT / "cards")
    pat = fixtures.patient_data()
    pat.medications.append({"resourceType": "MedicationRequest", "id": "mr-parox", "status": "active",
                            "medicationCodeableConcept": {"text": "Paroxetine 20 mg oral tablet"}})
    prof = fixtures.profile()
    conv = conversions(k, prof, pat, Settings(), date(2026, 6, 1))
    assert conv["CYP2D6"].converted

    async def fake(state, *, iss, patient_id, token, budget_s):
        return LoadedProfile(pat, prof, fixtures.recommendations(), PATIENT, conv)

    monkeypatch.setattr(smart_router, "load_profile", fake)
    html = _open(client, app).text
    assert "Effective phenotype (current medicines)" in html
    assert "Poor Metabolizer</strong> (activity score 0.0)" in html
    assert "while taking paroxetine (strong inhibitor of CYP2D6)" in html
    printed = _open(client, app, sid="sid-2", path="/app/print").text
    assert "while taking paroxetine (strong inhibitor of CYP2D6)" in printed
