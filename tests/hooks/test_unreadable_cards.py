"""Issue 11: a result that exists but cannot be interpreted never silences the alert at order time.

Through the real app (pipeline, engine, card builder): the card is at least as strong as the drug's
pre-test card (warning for the high-risk drugs in cards/unreadable.yaml), says what could not be read and
what to do, carries the raw value in the extension, shows at order-select and at order-sign, and orders
the right follow-up test (enzyme activity for G6PD/TPMT, not genotyping again)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from service.pgx.knowledge import load_knowledge
from tests.hooks import requests as rq
from tests.hooks.conftest import make_client

K = load_knowledge(Path(__file__).resolve().parents[2] / "cards")
HGNC = {"CYP2C19": "HGNC:2621", "CYP2D6": "HGNC:2625", "DPYD": "HGNC:3012", "G6PD": "HGNC:4057",
        "TPMT": "HGNC:12014", "NUDT15": "HGNC:23063", "HLA-B": "HGNC:4932", "CYP2B6": "HGNC:2615"}
MALE = {**rq.PATIENT, "gender": "male"}


def _rx(drug: str) -> str:
    d = K.guidelines_for_drug(drug)[0].drug(drug)
    assert d is not None
    return d.rxnorm


def _geno(gene: str, text: str, oid: str | None = None) -> dict:
    return rq.genotype(oid or f"obs-{gene.lower()}", gene, HGNC[gene], text)


def _absent(gene: str) -> dict:
    o = _geno(gene, "x")
    del o["valueCodeableConcept"]
    o["dataAbsentReason"] = {"text": "sample failed quality control"}
    return o


def _cards(client, hook: str, drug: str, obs: list[dict], patient: dict | None = None) -> list[dict]:
    builder = rq.order_select if hook == "order-select" else rq.order_sign
    body = builder(obs=obs, orders=[rq.med_request("draft-1", _rx(drug), drug)])
    if patient is not None:
        body["prefetch"]["patient"] = patient
    r = client.post(f"/cds-services/pgx-{hook}", json=body)
    assert r.status_code == 200, r.text
    return r.json()["cards"]


def _ext(card: dict) -> dict:
    return card["extension"]["pgx-cds"]


def _tests_ordered(card: dict) -> list[dict]:
    return [a["resource"]["code"] for s in card.get("suggestions", []) for a in s["actions"]
            if a.get("resource", {}).get("resourceType") == "ServiceRequest"]


@pytest.fixture
def client(tmp_path):
    with make_client(feedback_file=tmp_path / "fb.ndjson", dedupe_order_sign=False) as c:
        yield c


# (drug, genotype observations, raw value expected in the evidence, gene that could not be read)
HIGH_RISK = [
    ("fluorouracil", [_geno("DPYD", "see scanned report")], "DPYD see scanned report", "DPYD"),
    ("capecitabine", [_geno("DPYD", "c.1905+1G>A (*2A)/c.9999X>Y")], "c.1905+1G>A (*2A)/c.9999X>Y", "DPYD"),
    ("clopidogrel", [_geno("CYP2C19", "*1/*99")], "*1/*99", "CYP2C19"),
    ("codeine", [_absent("CYP2D6")], None, "CYP2D6"),
    ("abacavir", [_geno("HLA-B", "HLA-B*57")], "HLA-B HLA-B*57", "HLA-B"),
    ("azathioprine", [_geno("TPMT", "*1/*99"), _geno("NUDT15", "*1/*1")], "*1/*99", "TPMT"),
]


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
@pytest.mark.parametrize(("drug", "obs", "raw", "gene"), HIGH_RISK, ids=[c[0] for c in HIGH_RISK])
def test_high_risk_drug_unreadable_result_warns(client, hook, drug, obs, raw, gene):
    cards = _cards(client, hook, drug, obs)
    assert cards, f"{drug}: a result we cannot read silenced the alert"
    card = cards[0]
    assert card["indicator"] in ("warning", "critical")
    assert gene in card["summary"]
    assert "could not be interpreted" in (card["summary"] + card["detail"]).lower()
    assert "confirm the result with the laboratory" in card["detail"]
    assert card["detail"].count("Could not be interpreted") <= 1  # said once
    unread = _ext(card)["unreadable"]
    assert [u["gene"] for u in unread] == [gene]
    if raw is not None:
        assert unread[0]["value"] == raw
    assert unread[0]["reason"]


def test_unreadable_card_is_not_the_pretest_card(client):
    card = _cards(client, "order-select", "clopidogrel", [_geno("CYP2C19", "*1/*99")])[0]
    assert "No CYP2C19 result on file" not in card["summary"]
    assert _ext(card)["recommendation"]["ruleId"] == "clopidogrel-cyp2c19/unreadable"
    pretest = _cards(client, "order-select", "clopidogrel", [])[0]
    assert ["info", "warning", "critical"].index(card["indicator"]) >= ["info", "warning", "critical"].index(
        pretest["indicator"])


@pytest.mark.parametrize(("drug", "obs"), [
    ("citalopram", [_geno("CYP2C19", "*1/*99")]),         # pre-test info
    ("ondansetron", [_geno("CYP2D6", "*1/*999")]),        # pre-test off: still never silent
    ("efavirenz", [_geno("CYP2B6", "CYP2B6 result: pending")]),
])
def test_other_drugs_get_at_least_an_info_card(client, drug, obs):
    for hook in ("order-select", "order-sign"):
        cards = _cards(client, hook, drug, obs)
        assert cards and cards[0]["indicator"] in ("info", "warning", "critical"), (drug, hook)
        assert _ext(cards[0])["unreadable"]


def test_site_pretest_setting_raises_the_unreadable_card(tmp_path):
    with make_client(feedback_file=tmp_path / "fb.ndjson", pretest_cards={"citalopram": "warning"}) as c:
        card = _cards(c, "order-select", "citalopram", [_geno("CYP2C19", "*1/*99")])[0]
    assert card["indicator"] == "warning"


def test_readable_result_gets_no_unreadable_card(client):
    card = _cards(client, "order-select", "clopidogrel", [_geno("CYP2C19", "*2/*2")])[0]
    assert "unreadable" not in _ext(card) and card["indicator"] == "critical"
    assert _cards(client, "order-select", "clopidogrel", [_geno("CYP2C19", "*1/*1")]) == []


# ---- the right follow-up test ------------------------------------------------------------------------

def test_g6pd_indeterminate_orders_enzyme_activity_not_genotyping(client):
    cards = _cards(client, "order-select", "rasburicase", [_geno("G6PD", "G6PD Atlantis-unknown")], MALE)
    assert cards and cards[0]["indicator"] == "warning"
    codes = _tests_ordered(cards[0])
    assert codes and all("enzyme activity" in c["text"] for c in codes)
    assert codes[0]["coding"] == [{"system": "http://loinc.org", "code": "32546-4"}]
    assert not any("genotyping" in c["text"] for c in codes)


def test_g6pd_variable_female_orders_enzyme_activity(client):
    cards = _cards(client, "order-select", "primaquine", [_geno("G6PD", "B/A-")])
    codes = _tests_ordered(cards[0])
    assert codes and "enzyme activity" in codes[0]["text"]


def test_tpmt_indeterminate_orders_tpmt_activity_and_nudt15_genotyping(client):
    cards = _cards(client, "order-select", "mercaptopurine", [_geno("TPMT", "*1/*99")])
    codes = {c["text"]: c for c in _tests_ordered(cards[0])}
    tpmt = [c for t, c in codes.items() if t.startswith("TPMT")]
    assert tpmt and "enzyme activity" in tpmt[0]["text"]
    assert tpmt[0]["coding"] == [{"system": "http://loinc.org", "code": "21563-2"}]
    assert any(t.startswith("NUDT15") and "genotyping" in t for t in codes)


def test_dpyd_unreadable_repeats_genotyping(client):
    card = _cards(client, "order-select", "fluorouracil", [_geno("DPYD", "see scanned report")])[0]
    codes = _tests_ordered(card)
    assert codes and codes[0]["text"].startswith("DPYD genotyping") and "coding" not in codes[0]


def test_partly_recognised_result_names_the_known_allele(client):
    card = _cards(client, "order-select", "capecitabine", [_geno("DPYD", "c.1905+1G>A (*2A)/c.9999X>Y")])[0]
    assert _ext(card)["unreadable"][0]["recognised"] == ["c.1905+1G>A (*2A) (No function)"]
    assert "must not be read as normal" in card["detail"]


def test_pretest_card_still_orders_genotyping(client):
    card = _cards(client, "order-select", "rasburicase", [], MALE)[0]
    assert _tests_ordered(card)[0]["text"] == "G6PD genotyping (pharmacogenomics)"


# ---- the headline G6PD bug, through the whole service -------------------------------------------------

@pytest.mark.parametrize("text", ["G6PD A-", "A-", "G6PD*A-"])
def test_g6pd_a_minus_man_gets_the_avoid_card(client, text):
    for drug in ("rasburicase", "dapsone", "primaquine"):
        cards = _cards(client, "order-select", drug, [_geno("G6PD", text)], MALE)
        assert cards and cards[0]["indicator"] == "critical", (drug, text)
        assert _ext(cards[0])["genes"][0]["phenotype"] == "Deficient"


# ---- de-duplication and templates stay as they were ---------------------------------------------------

def test_order_sign_after_select_is_deduplicated_until_content_changes(tmp_path):
    with make_client(feedback_file=tmp_path / "fb.ndjson") as c:
        obs = [_geno("CYP2C19", "*1/*99")]
        assert _cards(c, "order-select", "clopidogrel", obs)
        assert _cards(c, "order-sign", "clopidogrel", obs) == []  # shown at order-select already
        other = [_geno("CYP2C19", "*1/*98")]
        signed = _cards(c, "order-sign", "clopidogrel", other)  # the raw value changed: shown again
        assert signed and _ext(signed[0])["unreadable"][0]["value"] == "*1/*98"


def test_unreadable_card_is_stable_across_hook_instances(client):
    body = rq.order_select(obs=[_geno("CYP2C19", "*1/*99")])
    a = client.post("/cds-services/pgx-order-select", json=body).json()["cards"]
    b = client.post("/cds-services/pgx-order-select", json={**copy.deepcopy(body), "hookInstance": "other"}).json()["cards"]
    assert [x["summary"] for x in a] == [x["summary"] for x in b] and a[0]["uuid"] != b[0]["uuid"]


def test_readable_result_with_another_unreadable_one_names_it(client):
    obs = [_geno("CYP2C19", "*2/*2", "obs-a"), _geno("CYP2C19", "see attached PDF", "obs-b")]
    card = _cards(client, "order-select", "clopidogrel", obs)[0]
    assert card["indicator"] == "critical"  # the readable poor-metabolizer result is used
    assert any("Another CYP2C19 result" in n and "obs-b" in n for n in _ext(card)["notes"])


def test_unattributed_unreadable_result_is_named_on_the_pretest_card(client):
    o = _geno("CYP2C19", "see attached report")
    o["component"] = []  # no gene studied and none in the value: the reader cannot tell which gene this is
    o["valueCodeableConcept"] = {"text": "see attached report"}
    card = _cards(client, "order-select", "clopidogrel", [o])[0]
    assert _ext(card)["recommendation"]["ruleId"] == "clopidogrel-cyp2c19/pretest"
    assert any("its gene is not known" in n for n in _ext(card)["notes"])
