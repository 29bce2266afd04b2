"""report.html in the real browser the SMART tests use (Chromium via Playwright): self-contained (no request
leaves the page), shows the summary's numbers, carries no identifier. Screenshot: test-artifacts/screen-report.png."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pytest

from service.screen.progress import NoProgress
from service.screen.report import render_report
from service.screen.run import ScreenRequest, screen
from tests.screen.synth import write_export

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("report")
    write_export(d / "in", 400, seed=11, tested=0.5)
    summary = screen(ScreenRequest(input=str(d / "in"), output=d / "out", workers=2, formats=("ndjson", "html"),
                                   today=date.today()), NoProgress())
    return d / "out" / "report.html", summary


def test_report_is_self_contained_and_free_of_identifiers(report):
    path, summary = report
    html = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing loaded from elsewhere
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert not re.search(r"p\d{7}", html) and not re.search(r"\*\d+[A-Z]?\s*/\s*\*\d+", html)
    assert f"{summary['patients']['read']:,}" in html


def test_report_escapes_what_it_shows():
    summary = json.loads((Path(__file__).parent / "data" / "summary-minimal.json").read_text())
    summary["unreadable_results"] = [{"gene": "CYP2D6", "reason": "<script>alert(1)</script>", "count": 1}]
    html = render_report(summary)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html


@pytest.mark.e2e
def test_report_in_the_browser(report):
    from playwright.sync_api import sync_playwright

    path, summary = report
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(path.as_uri())
            page.wait_for_load_state("networkidle")
            assert requests == [path.as_uri()]  # the page itself, nothing else
            assert not errors
            assert page.title().startswith("PGx population screening")
            tiles = page.locator("#tiles .tile").all_inner_texts()
            assert f"{summary['patients']['read']:,}\npatients screened" in tiles
            assert f"{summary['findings']['by_kind']['active_drug_conflict']:,}\nactive drug conflicts" in tiles
            for section in ("how-to-read", "findings", "conflicts", "test-candidates", "phenotypes", "unreadable", "run"):
                assert page.locator(f"#{section}").is_visible(), section
            # charts rendered as SVG with real size, one bar per top conflict / drug
            assert page.locator("#conflicts svg rect").count() == min(10, len(summary["top_conflicts"]))
            assert page.locator("#test-candidates svg rect").count() == min(15, len(summary["test_candidates_by_drug"]))
            box = page.locator("#findings svg").bounding_box()
            assert box and box["width"] > 300 and box["height"] > 40
            top = summary["top_conflicts"][0]
            assert top["drug"] in page.locator("#conflicts table").inner_text()
            out = ROOT / "test-artifacts"
            out.mkdir(exist_ok=True)
            shot = page.screenshot(path=str(out / "screen-report.png"), full_page=True)
            assert len(shot) > 20_000
            page.screenshot(path=str(out / "screen-report-top.png"))  # the first screen (README picture)
        finally:
            browser.close()
