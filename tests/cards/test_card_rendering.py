"""Cards as EHR clients show them, through the real service: every card for every synthetic patient in
fhir_profiles/bundles (patient-view, and order-sign with a draft order for every CPIC drug) is rendered by
a real CommonMark renderer (markdown-it-py) and checked; lab implications appear only on their drug's
card; patient-view gives one informational card per result with no order suggestions; cards come most
severe first.
"""

from __future__ import annotations

import re
import uuid

import pytest
from markdown_it import MarkdownIt

from service.config import REPO_ROOT
from service.pgx.knowledge import load_knowledge
from tests.fhir.conftest import load_bundle, patient_id_of, prefetch_from
from tests.hooks.conftest import make_client

MD = MarkdownIt("commonmark").enable("table")
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
BUNDLES = sorted(p.stem for p in (REPO_ROOT / "fhir_profiles" / "bundles").glob("*.json"))
RANK = {"critical": 0, "warning": 1, "info": 2}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with make_client(feedback_file=tmp_path_factory.mktemp("fb") / "fb.ndjson",
                     public_base_url="https://pgx.example.org") as c:
        yield c


@pytest.fixture(scope="module")
def all_drugs() -> list[tuple[str, str]]:
    k = load_knowledge(REPO_ROOT / "cards")
    return sorted({(d.name, d.rxnorm) for g in k.guidelines.values() for d in g.drugs})


def _draft(i: int, name: str, rxnorm: str, pid: str) -> dict:
    return {"resourceType": "MedicationRequest", "id": f"draft-{i}", "status": "draft", "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm, "display": name}], "text": name},
            "subject": {"reference": f"Patient/{pid}"}}


def _call(client, hook: str, name: str, *, drugs=(), prefetch: dict | None = None) -> list[dict]:
    b = load_bundle(name)
    pid = patient_id_of(b)
    body = {"hook": hook, "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/prac-1", "patientId": pid},
            "prefetch": prefetch if prefetch is not None else prefetch_from(b, hook)}
    if hook == "order-sign":
        body["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": _draft(i, n, rx, pid)} for i, (n, rx) in enumerate(drugs)]}
    service = {"patient-view": "pgx-patient-view", "order-sign": "pgx-order-sign"}[hook]
    r = client.post(f"/cds-services/{service}", json=body)
    assert r.status_code == 200, r.text
    return r.json()["cards"]


def _markdown_problems(card: dict) -> list[str]:
    detail = card["detail"]
    out: list[str] = []
    tokens = MD.parse(detail)
    html = MD.render(detail)
    if not tokens or tokens[0].type != "paragraph_open":
        out.append("detail does not open with a paragraph")
    else:
        lead = tokens[1].content
        if "|" in lead or "\n" in lead.strip() or "see below" in lead.lower():
            out.append("first paragraph is not readable on its own")
        if not re.search(r"\*\*Result:\*\*", lead):
            out.append("first paragraph does not state the result")
    inline = [t.content for t in tokens if t.type == "inline"]
    for text in inline:
        if text.count("⚠") > 1:
            out.append(f"several warnings run together: {text[:80]}")
    if "**" in re.sub(r"<[^>]+>", "", html):
        out.append("unbalanced bold")
    if re.search(r"<em>[\d/]|\*\d+/\*?\d+</em>", html):  # *2/*2 or *1/*41 eaten as emphasis
        out.append("a diplotype rendered as emphasis")
    if "<table>" not in html:
        out.append("evidence table not rendered as a table")
    ext = card["extension"]["pgx-cds"]
    notes = ext.get("notes", []) + ext.get("infoNotes", [])
    items = [t for t in tokens if t.type == "list_item_open"]
    if notes and not items:
        out.append("notes not rendered as a list")
    return out


@pytest.mark.parametrize("name", BUNDLES)
def test_every_card_of_every_bundle_renders_as_commonmark(client, all_drugs, name) -> None:
    cards = _call(client, "patient-view", name) + _call(client, "order-sign", name, drugs=all_drugs)
    assert cards, name
    problems = {f"{c['summary'][:70]}: {p}" for c in cards for p in _markdown_problems(c)}
    assert not problems, "\n".join(sorted(problems))


@pytest.mark.parametrize("name", BUNDLES)
def test_cards_come_most_severe_first(client, all_drugs, name) -> None:
    # draft orders in reverse alphabetical order: the answer must not follow the order of the drafts
    for cards in (_call(client, "patient-view", name), _call(client, "order-sign", name, drugs=all_drugs[::-1])):
        ranks = [RANK[c["indicator"]] for c in cards]
        assert ranks == sorted(ranks), [c["indicator"] for c in cards]


def test_order_sign_puts_the_critical_card_before_earlier_drafts(client) -> None:
    # omeprazole (warning) drafted before clopidogrel (critical) for a CYP2C19 poor metabolizer
    cards = _call(client, "order-sign", "ada-cyp2c19-pm", drugs=[("omeprazole", "7646"), ("clopidogrel", "32968")])
    assert [c["extension"]["pgx-cds"]["drug"]["name"] for c in cards] == ["clopidogrel", "omeprazole"]


@pytest.mark.parametrize("name", BUNDLES)
def test_patient_view_one_card_per_result_informational_no_orders(client, name) -> None:
    cards = _call(client, "patient-view", name)
    keys = [tuple((g["gene"], g["phenotype"]) for g in c["extension"]["pgx-cds"]["genes"]) for c in cards]
    assert len(keys) == len(set(keys)), keys  # one card per result
    drugs = [d["name"] for c in cards for d in c["extension"]["pgx-cds"]["drugs"]]
    for c in cards:
        assert "suggestions" not in c and "selectionBehavior" not in c
        assert any(link["type"] == "smart" for link in c["links"])
        listed = c["extension"]["pgx-cds"]["drugs"]
        for d in listed:
            assert d["name"] in c["detail"]
    assert len(drugs) == len(set(drugs)) or len(cards) > 1


def test_patient_view_single_cyp2c19_result_is_one_card(client) -> None:
    cards = _call(client, "patient-view", "ada-cyp2c19-pm")
    c2c19 = [c for c in cards if [g["gene"] for g in c["extension"]["pgx-cds"]["genes"]] == ["CYP2C19"]]
    assert len(c2c19) == 1
    card = c2c19[0]
    names = [d["name"] for d in card["extension"]["pgx-cds"]["drugs"]]
    assert {"clopidogrel", "citalopram", "omeprazole", "voriconazole"} <= set(names)
    assert card["indicator"] == "critical" and names[0] == "clopidogrel"
    assert card["summary"].startswith("CYP2C19 poor metabolizer:")


def test_patient_view_uses_conditions_when_present(client) -> None:
    b = load_bundle("ada-cyp2c19-pm")
    pid = patient_id_of(b)
    acs = {"resourceType": "Condition", "id": "acs-1", "subject": {"reference": f"Patient/{pid}"},
           "clinicalStatus": {"coding": [{"code": "active"}]},
           "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I21.4"}]}}
    prefetch = prefetch_from(b, "patient-view")
    without = _call(client, "patient-view", "ada-cyp2c19-pm", prefetch=prefetch)
    prefetch["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": acs}]}
    with_ = _call(client, "patient-view", "ada-cyp2c19-pm", prefetch=prefetch)

    def clopidogrel(cards):
        return next(d for c in cards for d in c["extension"]["pgx-cds"]["drugs"] if d["name"] == "clopidogrel"), \
            next(c for c in cards if "clopidogrel" in c["detail"])

    d, card = clopidogrel(with_)
    assert d["population"].startswith("Cardiovascular: acute coronary syndrome")
    line = next(x for x in card["detail"].splitlines() if x.startswith("- **clopidogrel**"))
    assert "(assumed)" not in line
    _, card0 = clopidogrel(without)
    line0 = next(x for x in card0["detail"].splitlines() if x.startswith("- **clopidogrel**"))
    assert "(assumed)" in line0


def test_lab_implication_only_on_its_drugs_card_and_flagged_only_on_disagreement(client) -> None:
    # ada's report carries a therapeutic implication for clopidogrel that agrees with *2/*2
    drugs = [("clopidogrel", "32968"), ("sertraline", "36437"), ("citalopram", "2556"), ("omeprazole", "7646"),
             ("voriconazole", "121243")]
    cards = _call(client, "order-sign", "ada-cyp2c19-pm", drugs=drugs)
    by_drug = {c["extension"]["pgx-cds"]["drug"]["name"]: c for c in cards}
    assert "clopidogrel" in by_drug and len(by_drug) >= 4
    for drug, card in by_drug.items():
        if drug == "clopidogrel":
            assert "Lab-reported implication for clopidogrel" in card["detail"]
            line = next(x for x in card["detail"].splitlines() if "Lab-reported implication" in x)
            assert "⚠" not in line and "agrees" in line
        else:
            assert "implication" not in card["detail"].lower(), drug


def test_population_note_said_once(client) -> None:
    prefetch = prefetch_from(load_bundle("ada-cyp2c19-pm"), "order-sign")
    prefetch["conditions"] = None  # no conditions on record: the primary population is assumed, and said once
    cards = _call(client, "order-sign", "ada-cyp2c19-pm", drugs=[("clopidogrel", "32968")], prefetch=prefetch)
    detail = cards[0]["detail"]
    assert detail.count("could not be determined") == 1
    assert cards[0]["extension"]["pgx-cds"]["recommendation"]["population"].startswith("Cardiovascular")


def test_notes_render_as_separate_list_items(client) -> None:
    # several notes on one card (warfarin-like): every note is its own list item, none run together
    from service.cards.builder import build_card_template
    from service.pgx.models import Action, DrugRef, GeneEvidence, Recommendation

    rec = Recommendation(
        drug=DrugRef(name="warfarin", rxnorm="11289"), guideline_id="warfarin", guideline_name="CPIC warfarin",
        guideline_url="https://cpicpgx.org/guidelines/", rule_id="warfarin/x", action=Action.reduce_dose,
        strength="Strong", indicator="warning", summary="Warfarin: lower dose", detail="Use the algorithm.",
        genes=[GeneEvidence(gene="CYP4F2", diplotype="*1/*3", phenotype="*3 carrier")],
        notes=["Height and weight are not in the record.", "CYP4F2 *3 carrier: dose 5-10% higher.",
               "Genotype-guided dosing <needs> INR | monitoring."],
        info_notes=["INR monitoring stays as usual."], knowledge_version="test")
    detail = build_card_template(rec, patient_id="p1").detail
    tokens = MD.parse(detail)
    items = [tokens[i + 2].content for i, t in enumerate(tokens) if t.type == "list_item_open"]
    assert len([i for i in items if i.startswith("⚠")]) == 3 and "INR monitoring stays as usual." in items
    html = MD.render(detail)
    assert "<needs>" not in html and "&lt;needs&gt;" in html
    assert "<em>" not in html  # *1/*3 and *3 stay literal
