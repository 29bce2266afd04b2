"""Phenoconversion through the real app (issue 13): prefetched medications, other drafts of the same
order-sign, selections at order-select, the reverse direction, the evidence extension, and the FHIR fetch
of current medications for drugs whose genes co-medication can convert."""

from __future__ import annotations

import httpx
import respx

from service.config import REPO_ROOT
from service.hooks.pipeline import _data_needs
from service.pgx.knowledge import load_knowledge
from tests.hooks import requests as rq

CYP2D6_NM = rq.genotype("obs-2d6", "CYP2D6", "HGNC:2625", "*1/*1")
CODEINE = rq.med_request("draft-codeine", "2670", "codeine", dose=30)
PAROXETINE = rq.med_request("draft-parox", "32937", "paroxetine", dose=20)
BUPROPION = rq.med_request("draft-bup", "42347", "bupropion", dose=150)


def active(mid: str, rxnorm: str, name: str, status: str = "active") -> dict:
    m = rq.med_request(mid, rxnorm, name)
    m["status"] = status
    m["authoredOn"] = "2025-11-02"
    return m


def post(client, service, body):
    r = client.post(f"/cds-services/{service}", json=body)
    assert r.status_code == 200, r.text
    return r.json()["cards"]


def with_meds(body: dict, *meds: dict) -> dict:
    body["prefetch"]["medications"] = rq.bundle(*meds)
    return body


def test_order_select_codeine_with_paroxetine_in_medications(client):
    plain = post(client, "pgx-order-select", rq.order_select(obs=[CYP2D6_NM], orders=[CODEINE]))
    assert plain == []  # normal metabolizer: no card
    body = with_meds(rq.order_select(obs=[CYP2D6_NM], orders=[CODEINE]), active("parox-1", "32937", "paroxetine"))
    cards = post(client, "pgx-order-select", body)
    assert len(cards) == 1
    ext = cards[0]["extension"]["pgx-cds"]
    assert ext["recommendation"]["action"] == "avoid"
    gene = ext["genes"][0]
    assert (gene["phenotype"], gene["activityScore"]) == ("Poor Metabolizer", "0.0")
    assert gene["phenoconversion"] == {
        "genotypePhenotype": "Normal Metabolizer", "genotypeActivityScore": "2.0",
        "effectivePhenotype": "Poor Metabolizer", "effectiveActivityScore": "0.0",
        "perpetrators": [{"name": "paroxetine", "rxnorm": "32937", "strength": "strong_inhibitor",
                          "medicationRequest": "MedicationRequest/parox-1"}],
    }
    assert "while paroxetine is taken" in cards[0]["detail"]


def test_stopped_paroxetine_in_medications_gives_no_card(client):
    body = with_meds(rq.order_select(obs=[CYP2D6_NM], orders=[CODEINE]),
                     active("parox-1", "32937", "paroxetine", status="stopped"))
    assert post(client, "pgx-order-select", body) == []


def test_order_sign_other_draft_is_a_perpetrator_and_reverse_card_not_duplicated(client):
    cards = post(client, "pgx-order-sign", rq.order_sign(obs=[CYP2D6_NM], orders=[CODEINE, PAROXETINE]))
    codeine = [c for c in cards if c["extension"]["pgx-cds"]["drug"]["name"] == "codeine"]
    assert len(codeine) == 1  # the forward card; the paroxetine order does not add a second one about codeine
    ext = codeine[0]["extension"]["pgx-cds"]
    assert ext["order"] == "MedicationRequest/draft-codeine"
    assert ext["genes"][0]["phenoconversion"]["perpetrators"][0]["medicationRequest"] == "MedicationRequest/draft-parox"


def test_order_select_selection_of_perpetrator_sees_other_draft(client):
    # the paroxetine selection converts the codeine draft's advice at order-select too
    body = rq.order_select(obs=[CYP2D6_NM], orders=[CODEINE, PAROXETINE],
                           selections=["MedicationRequest/draft-codeine", "MedicationRequest/draft-parox"])
    cards = post(client, "pgx-order-select", body)
    assert [c["extension"]["pgx-cds"]["drug"]["name"] for c in cards] == ["codeine"]


def test_reverse_at_order_select_inhibitor_for_patient_on_tamoxifen(client):
    body = with_meds(rq.order_select(obs=[CYP2D6_NM], orders=[PAROXETINE]), active("tam-1", "10324", "tamoxifen"))
    cards = post(client, "pgx-order-select", body)
    assert len(cards) == 1
    c = cards[0]
    ext = c["extension"]["pgx-cds"]
    assert ext["drug"]["name"] == "tamoxifen" and ext["order"] == "MedicationRequest/draft-parox"
    assert ext["recommendation"]["ruleId"] == "tamoxifen-cyp2d6/as0.0"
    assert ext["genes"][0]["phenoconversion"]["effectivePhenotype"] == "Poor Metabolizer"
    assert not c.get("suggestions")  # never a one-click change of the inhibitor order into tamoxifen's alternative


def test_reverse_at_order_sign_non_cpic_inhibitor_for_patient_on_codeine(client):
    body = with_meds(rq.order_sign(obs=[CYP2D6_NM], orders=[BUPROPION]), active("cod-1", "2670", "codeine"))
    cards = post(client, "pgx-order-sign", body)
    assert [c["extension"]["pgx-cds"]["drug"]["name"] for c in cards] == ["codeine"]
    assert cards[0]["indicator"] == "critical"


def test_perpetrator_only_order_without_results_is_not_a_412(client):
    body = rq.order_select(orders=[BUPROPION], prefetch=False)
    r = client.post("/cds-services/pgx-order-select", json=body)
    assert r.status_code == 200 and r.json()["cards"] == []


def test_patient_view_lists_conversion(client):
    body = rq.patient_view(obs=[CYP2D6_NM])
    body["prefetch"]["medications"] = rq.bundle(active("parox-1", "32937", "paroxetine"))
    cards = post(client, "pgx-patient-view", body)
    codeine = [c for c in cards if c["extension"]["pgx-cds"]["drug"]["name"] == "codeine"]
    assert codeine and codeine[0]["extension"]["pgx-cds"]["genes"][0]["phenoconversion"]["effectivePhenotype"] == "Poor Metabolizer"


def test_data_needs_fetch_medications_for_convertible_genes_and_perpetrators():
    k = load_knowledge(REPO_ROOT / "cards")
    assert "medications" in _data_needs(k, {"codeine"})
    assert "medications" in _data_needs(k, {"clopidogrel"})
    assert "medications" in _data_needs(k, {"bupropion"})
    assert "medications" not in _data_needs(k, {"abacavir"})


def test_medications_fetched_from_fhir_when_not_prefetched(client):
    body = rq.order_select(obs=[CYP2D6_NM], orders=[CODEINE])
    del body["prefetch"]["medications"]
    body["fhirServer"] = "https://ehr.example.org/fhir"
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(url__regex=r"https://ehr\.example\.org/fhir/MedicationRequest.*").mock(
            return_value=httpx.Response(200, json=rq.bundle(active("parox-9", "32937", "paroxetine"))))
        cards = post(client, "pgx-order-select", body)
    assert route.called
    assert cards and cards[0]["extension"]["pgx-cds"]["genes"][0]["phenoconversion"]["perpetrators"][0][
        "medicationRequest"] == "MedicationRequest/parox-9"
