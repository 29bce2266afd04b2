"""Issue 16: EHRs and the CDS Hooks sandbox send single objects where FHIR has arrays (`category` first
among them). The genomic reader reads them as a list of one instead of dropping the data, and a result is
never lost or misread because of it (a dropped gene-studied component or coding would leave the result
without its gene, or without its LOINC kind)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from service.fhir.genomics import build_profile
from service.fhir.models import PatientData
from tests.hooks import requests as rq
from tests.hooks.conftest import make_client

LOINC = "http://loinc.org"
CATEGORY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}


def _base() -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": "o1", "status": "final", "effectiveDateTime": "2024-01-01",
        "category": [CATEGORY],
        "code": {"coding": [{"system": LOINC, "code": "84413-4"}]},
        "valueCodeableConcept": {"coding": [{"system": "http://www.pharmvar.org", "code": "*2/*2"}]},
        "component": [{"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
                       "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId",
                                                            "code": "HGNC:2621"}]}}],
    }


def _quirk(name: str) -> dict[str, Any]:
    o = _base()
    if name == "category object":
        o["category"] = CATEGORY
    elif name == "category object with coding object":
        o["category"] = {"coding": CATEGORY["coding"][0]}
    elif name == "code.coding object":
        o["code"]["coding"] = o["code"]["coding"][0]
    elif name == "component object":
        o["component"] = o["component"][0]
    elif name == "gene coding object":
        cc = o["component"][0]["valueCodeableConcept"]
        cc["coding"] = cc["coding"][0]
    elif name == "value coding object":
        o["valueCodeableConcept"]["coding"] = o["valueCodeableConcept"]["coding"][0]
    elif name == "value as bare string":
        o["valueCodeableConcept"] = "CYP2C19 *2/*2"
    elif name == "everything at once":
        o["category"] = {"coding": CATEGORY["coding"][0]}
        o["code"]["coding"] = o["code"]["coding"][0]
        o["component"] = o["component"][0]
        o["component"]["valueCodeableConcept"]["coding"] = o["component"]["valueCodeableConcept"]["coding"][0]
        o["valueCodeableConcept"]["coding"] = o["valueCodeableConcept"]["coding"][0]
    return o


QUIRKS = ["category object", "category object with coding object", "code.coding object", "component object",
          "gene coding object", "value coding object", "value as bare string", "everything at once"]


@pytest.mark.parametrize("quirk", QUIRKS)
def test_single_objects_for_arrays_are_read(quirk):
    prof = build_profile(PatientData(patient_id="p1", observations=[_quirk(quirk)]))
    assert prof.unreadable == []
    r = prof.genes["CYP2C19"]
    assert r.diplotype == "*2/*2" and r.observation == "Observation/o1"


def test_derived_from_object_links_the_implication():
    geno = _base()
    impl = {"resourceType": "Observation", "id": "o2", "status": "final", "effectiveDateTime": "2024-01-01",
            "code": {"coding": {"system": "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs",
                                "code": "therapeutic-implication"}},
            "derivedFrom": {"reference": "Observation/o1"},
            "component": {"code": {"coding": [{"code": "therapeutic-implication"}]},
                          "valueCodeableConcept": {"text": "Poor metabolizer"}}}
    prof = build_profile(PatientData(patient_id="p1", observations=[geno, impl]))
    r = prof.genes["CYP2C19"]
    assert r.diplotype == "*2/*2" and r.reported_phenotype == "Poor metabolizer" and prof.unreadable == []


@pytest.mark.parametrize("quirk", ["category object", "everything at once"])
def test_quirky_observation_still_gives_the_card(quirk):
    obs = copy.deepcopy(_quirk(quirk))
    with make_client(dedupe_order_sign=False) as c:
        for hook, build in (("order-select", rq.order_select), ("order-sign", rq.order_sign)):
            r = c.post(f"/cds-services/pgx-{hook}", json=build(obs=[obs]))
            assert r.status_code == 200
            cards = r.json()["cards"]
            assert cards and cards[0]["indicator"] == "critical", (hook, quirk)
