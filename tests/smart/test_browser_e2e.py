"""End to end in a real browser: Chromium (Playwright) -> the service (uvicorn) -> a real OAuth2
authorization server (oauth2-mock-server, node 22) -> a real FHIR server (sekmet) seeded with synthetic
bundles. Full EHR launch with PKCE, state and nonce, the profile page, the print view, and failure paths.

Skips with a reason when chromium / playwright / node / sekmet are missing; tests/smart/setup.sh
installs them.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import quote

import httpx
import pytest

from tests.helpers import ServiceProcess
from tests.smart import harness

pytestmark = pytest.mark.e2e

_missing = harness.missing_tools()
if _missing:
    # installed by `make test` (tests/setup.sh): a missing tool is a broken set-up, not a reason to skip
    raise RuntimeError("SMART browser tests need: " + ", ".join(_missing) + " (run tests/setup.sh)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """sekmet (seeded) + the test EHR + the service; yields a namespace with urls and the FHIR token."""
    work = tmp_path_factory.mktemp("smart-e2e")
    sekmet = harness.load_sekmet_module()
    fhir = sekmet.start_sekmet(work / "sekmet", seed_bundles=False)
    ehr = svc = None
    try:
        fhir.seed(json.loads(harness.DEMO_BUNDLE.read_text(encoding="utf-8")))
        token = fhir.token()
        ehr = harness.EhrProcess(fhir.base_url, token, harness.DEMO_PATIENT, work).start()
        svc = ServiceProcess(env=harness.service_env()).start("smart-e2e")
        yield type("Stack", (), {"fhir": fhir, "ehr": ehr, "svc": svc, "token": token})
    finally:
        if svc is not None:
            svc.stop()
        if ehr is not None:
            ehr.stop()
        sekmet.stop_sekmet(fhir)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(harness.CHROMIUM), args=harness.CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    yield pg
    ctx.close()


def _launch_url(stack, **ctx) -> str:
    return (f"{stack.svc.url}/app/launch?iss={quote(stack.ehr.iss, safe='')}"
            f"&launch={harness.launch_param(patient=harness.DEMO_PATIENT, **ctx)}")


def test_full_ehr_launch_shows_the_profile_focused_on_the_card_drug(stack, page):
    app_context = {"drug": "clopidogrel", "rule": "clopidogrel-cyp2c19/acs-pci-pm-lpm"}
    resp = page.goto(_launch_url(stack, need_patient_banner=True, appContext=app_context))
    page.wait_for_selector("body[data-ready]")
    assert resp is not None and resp.status == 200
    assert re.fullmatch(re.escape(stack.svc.url) + r"/app/\?k=[0-9a-f]{12}", page.url), page.url
    assert page.title().startswith("PGx profile")

    # banner (the EHR asked for it)
    banner = page.locator(".patient-banner")
    assert "Theodora Marlowe" in banner.inner_text() and "SYN-000417" in banner.inner_text()
    # focused on the card's drug, with the engine's recommendation and no "rule changed" note
    focus = page.locator("#focus")
    assert "clopidogrel" in focus.inner_text().lower()
    assert "Avoid" in focus.inner_text() and "prasugrel" in focus.inner_text()
    assert "The card was based on rule" not in focus.inner_text()
    assert page.evaluate("document.activeElement && document.activeElement.id") == "focus"

    # results table: gene, diplotype, phenotype, activity score, date, lab, Observation
    c19 = page.locator('tbody[data-gene="CYP2C19"] .result-row').inner_text()
    assert "*2/*2" in c19 and "Poor Metabolizer" in c19 and "2024-05-14" in c19
    assert "Synthetic Genomics Laboratory" in c19 and "Observation/pgx-smart-demo-cyp2c19" in c19
    d6 = page.locator('tbody[data-gene="CYP2D6"] .result-row').inner_text()
    assert "*4/*41" in d6 and "Intermediate Metabolizer" in d6 and "0.25" in d6
    # the scale visual, with its text alternative
    svg = page.locator('tbody[data-gene="CYP2D6"] svg.scale')
    assert svg.get_attribute("aria-label") == (
        "CYP2D6 activity score 0.25 on a scale from 0 to 3: Intermediate Metabolizer")
    assert page.locator('tbody[data-gene="CYP2C19"] svg.scale rect.band.active').count() == 1
    # drugs under each result, one line, guideline link
    c19_drugs = page.locator('tbody[data-gene="CYP2C19"] .drug-row').inner_text()
    assert "Clopidogrel" in c19_drugs or "clopidogrel" in c19_drugs
    link = page.locator('tbody[data-gene="CYP2C19"] li.drug.focused a.guideline')
    assert link.get_attribute("href").startswith("https://")
    # current medications affected, highlighted
    meds = page.locator("section.meds li.med.affected")
    names = [m.inner_text() for m in meds.all()]
    assert any("Clopidogrel 75 mg" in n for n in names) and any("Simvastatin 40 mg" in n for n in names)
    assert "1 other active medication" in page.locator("section.meds").inner_text()
    assert page.locator('tbody[data-gene="SLCO1B1"] li.drug.current').count() == 1
    # unreadable and conflicting results listed as such
    problems = page.locator("section.problems").inner_text()
    assert "could not be read" in problems and "pgx-smart-demo-tpmt" in problems
    assert "conflicting results" in problems and "pgx-smart-demo-cyp2c9-old" in problems

    # the session cookie: HttpOnly, Secure, SameSite=Lax, short-lived, only a random id
    cookies = [c for c in page.context.cookies() if c["name"].startswith("pgx_smart_sid_")]
    assert len(cookies) == 1
    sid = cookies[0]
    assert sid["httpOnly"] and sid["secure"] and sid["sameSite"] == "Lax"
    assert sid["path"] == "/app" and 0 < sid["expires"] - time.time() <= 900 + 5
    assert stack.token not in sid["value"] and stack.token not in page.content()

    # basic accessibility structure
    assert page.get_attribute("html", "lang") == "en"
    assert page.locator("h1").count() == 1 and page.locator("main").count() == 1
    assert page.locator("table.results-table th[scope=col]").count() == 8  # incl. the effective phenotype (issue 13)
    for svg_el in page.locator("svg.scale").all():
        assert svg_el.get_attribute("role") == "img" and svg_el.get_attribute("aria-label")
    assert page.locator("a.guideline .sr-only").count() == page.locator("a.guideline").count()

    shot = page.screenshot(path=str(harness.ROOT / "test-artifacts" / "smart-profile.png"), full_page=True,
                           clip={"x": 0, "y": 0, "width": 1280, "height": 1500})
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    page.screenshot(path=str(harness.ROOT / "test-artifacts" / "smart-profile-full.png"), full_page=True)

    # printable view, and a real PDF from it
    profile_url = page.url
    page.click("text=Printable view")
    page.wait_for_selector("body[data-ready]")
    assert "/app/print?k=" in page.url
    resp = page.goto(page.url)
    page.wait_for_selector("body[data-ready]")
    assert resp.status == 200
    text = page.locator("main").inner_text()
    assert "Pharmacogenomic consult summary" in text and "Question: clopidogrel" in text
    assert "Theodora Marlowe" in text and "[current medication]" in text
    pdf = page.pdf(path=str(harness.ROOT / "test-artifacts" / "smart-profile.pdf"), format="A4")
    assert pdf[:5] == b"%PDF-" and len(pdf) > 10_000
    page.screenshot(path=str(harness.ROOT / "test-artifacts" / "smart-print.png"), full_page=True)

    # closing the session: the page is gone afterwards
    page.goto(profile_url)
    page.click("text=Close session")
    page.wait_for_selector("text=You have left the PGx profile")
    resp = page.goto(profile_url)
    assert resp.status == 401 and "Your session has expired" in page.content()


def test_app_and_cards_agree(stack, page):
    """The order-select card and the app come from one engine: same rule for the same patient."""
    draft = {
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": {
            "resourceType": "MedicationRequest", "id": "draft-clop", "status": "draft", "intent": "order",
            "subject": {"reference": f"Patient/{harness.DEMO_PATIENT}"},
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                      "code": "32968", "display": "clopidogrel"}]},
        }}],
    }
    body = {
        "hookInstance": "d1a4b9d2-6b8c-4c0e-9a39-3c6f7a3f0e11",
        "hook": "order-select",
        "fhirServer": stack.fhir.base_url,
        "fhirAuthorization": {"access_token": stack.token, "token_type": "Bearer", "expires_in": 300,
                              "scope": "patient/Observation.read", "subject": "pgx-cds"},
        "context": {"userId": "Practitioner/pgx-dr-1", "patientId": harness.DEMO_PATIENT,
                    "draftOrders": draft, "selections": ["MedicationRequest/draft-clop"]},
    }
    r = httpx.post(f"{stack.svc.url}/cds-services/pgx-order-select", json=body, timeout=20)
    assert r.status_code == 200, r.text
    cards = [c for c in r.json()["cards"] if (c.get("extension") or {}).get("pgx-cds", {}).get("drug", {}).get("name") == "clopidogrel"]
    assert cards, r.text
    card_rule = cards[0]["extension"]["pgx-cds"]["recommendation"]["ruleId"]

    page.goto(_launch_url(stack, appContext={"drug": "clopidogrel", "rule": card_rule}))
    page.wait_for_selector("body[data-ready]")
    focus = page.locator("#focus").inner_text()
    assert "The card was based on rule" not in focus  # the app applies the very rule the card named
    assert cards[0]["summary"][:40] in focus


def test_drug_focus_from_the_launch_url(stack, page):
    page.goto(_launch_url(stack, need_patient_banner=False) + "&drug=simvastatin")
    page.wait_for_selector("body[data-ready]")
    assert page.locator(".patient-banner").count() == 0  # the EHR shows its own banner
    focus = page.locator("#focus").inner_text()
    assert "simvastatin" in focus.lower() and "SLCO1B1" in focus
    assert page.locator('tbody[data-gene="SLCO1B1"].focused').count() == 1


def test_standalone_launch(stack, page):
    resp = page.goto(f"{stack.svc.url}/app/launch?iss={quote(stack.ehr.iss, safe='')}")
    page.wait_for_selector("body[data-ready]")
    assert resp.status == 200
    assert page.locator('tbody[data-gene="CYP2C19"]').count() == 1


def test_denied_consent(stack, page):
    resp = page.goto(_launch_url(stack, deny=True))
    assert resp.status == 403
    assert "Access was not granted" in page.locator("h1").inner_text()
    assert "Traceback" not in page.content()
    assert not [c for c in page.context.cookies() if c["name"].startswith("pgx_smart_sid")]


def test_bad_state(stack, page):
    resp = page.goto(_launch_url(stack, bad_state=True))
    assert resp.status == 400
    assert "The sign-in could not be verified" in page.locator("h1").inner_text()
    assert "state mismatch" in page.content()


def test_revoked_token_is_a_fhir_401_page(stack, page):
    resp = page.goto(_launch_url(stack, revoked=True))
    assert resp.status == 401
    assert "Access to the patient record has expired" in page.locator("h1").inner_text()
    assert page.locator("[data-error-kind]").get_attribute("data-error-kind") == "fhir_unauthorized"


def test_expired_token_without_refresh(stack, page):
    resp = page.goto(_launch_url(stack, expires_in=1))
    assert resp.status == 401
    assert "Your session has expired" in page.locator("h1").inner_text()


def test_expired_token_is_refreshed_when_offered(stack, page):
    resp = page.goto(_launch_url(stack, expires_in=1, refresh=True))
    page.wait_for_selector("body[data-ready]")
    assert resp.status == 200
    assert page.locator('tbody[data-gene="CYP2C19"]').count() == 1
    # and again: the refreshed token is kept server-side
    resp = page.goto(page.url)
    assert resp.status == 200


def test_no_tokens_or_patient_ids_in_service_logs(stack):
    logs = stack.svc.logs()
    assert "smart_launch" in logs  # the log is real
    assert stack.token not in logs
    assert harness.DEMO_PATIENT not in logs
    assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.", logs)  # no JWTs

