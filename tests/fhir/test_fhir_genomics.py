"""Genomic result parsing: every IG form and value style, from our synthetic bundles and inline cases."""

from __future__ import annotations

from typing import Any

import pytest

from service.config import FhirSettings
from service.fhir.client import FhirClient
from service.fhir.genomics import build_profile, gene_for_hgnc, tables
from service.fhir.models import PatientData
from service.fhir.patient_data import load_patient_data
from service.pgx.models import GenomicProfile

LOINC = "http://loinc.org"


async def _profile(bundles, make_prefetch, name: str) -> tuple[PatientData, GenomicProfile]:
    bundle = bundles(name)
    pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    data = await load_patient_data(hook="order-sign", patient_id=pid, fhir_server=None, access_token=None,
                                   prefetch=make_prefetch(bundle), client=FhirClient(), settings=FhirSettings())
    assert data.fhir_calls == 0
    return data, build_profile(data)


def _obs(value: dict[str, Any] | None = None, *, code: str = "84413-4", gene: str | None = None, oid: str = "o1",
         status: str = "final", date: str | None = "2024-01-01", **extra: Any) -> dict[str, Any]:
    o: dict[str, Any] = {"resourceType": "Observation", "id": oid, "status": status,
                         "code": {"coding": [{"system": LOINC, "code": code}]}}
    if date:
        o["effectiveDateTime"] = date
    if gene:
        o["component"] = [{"code": {"coding": [{"system": LOINC, "code": "48018-6"}]},
                           "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId",
                                                                 "code": gene}]}}]
    o.update(value or {})
    o.update(extra)
    return o


def _build(*observations: dict[str, Any]) -> GenomicProfile:
    return build_profile(PatientData(patient_id="p1", observations=list(observations)))


# ---------------------------------------------------------------------------------------------- bundles


async def test_stu3_genotype_with_implication(bundles, make_prefetch):
    data, prof = await _profile(bundles, make_prefetch, "ada-cyp2c19-pm")
    r = prof.genes["CYP2C19"]
    assert (r.diplotype, r.reported_phenotype, r.source_style) == ("*2/*2", "Poor metabolizer", "pharmvar-coding")
    assert r.observation == "Observation/pgx-ada-cyp2c19-pm-cyp2c19"
    assert r.effective is not None and r.effective.year == 2022
    assert any("clopidogrel" in n for n in r.notes)
    assert prof.unreadable == [] and prof.source == "prefetch"
    assert (data.weight_kg, data.height_cm, data.sex, str(data.birth_date)) == (68.0, 165.0, "female", "1958-04-12")
    assert [m["id"] for m in data.medications] == ["pgx-ada-cyp2c19-pm-clopidogrel"]
    assert [c["id"] for c in data.conditions] == ["pgx-ada-cyp2c19-pm-acs"]
    # vital signs are pulled out, not handed to the genomics stage
    assert all(o["code"]["coding"][0]["code"] not in ("29463-7", "8302-2") for o in data.observations)


async def test_stu2_text_value_gene_as_text(bundles, make_prefetch):
    _, prof = await _profile(bundles, make_prefetch, "bruno-cyp2d6-um")
    assert prof.genes["CYP2D6"].diplotype == "*1/*2x2"
    assert prof.genes["CYP2D6"].reported_phenotype == "Ultrarapid Metabolizer"
    assert prof.genes["CYP2D6"].source_style == "text"
    assert prof.genes["CYP2C19"].diplotype == "*1/*17"
    assert prof.genes["CYP2C19"].reported_phenotype == "Rapid Metabolizer"


async def test_hla_presence_forms(bundles, make_prefetch):
    _, prof = await _profile(bundles, make_prefetch, "chidi-hla-b5701")
    b = prof.genes["HLA-B"]
    assert b.diplotype is None
    assert b.reported_phenotype == "HLA-B*57:01 positive; HLA-B*58:01 negative"
    assert b.source_style == "hla-presence-coded"
    assert prof.genes["HLA-A"].reported_phenotype == "HLA-A*31:01 negative"
    assert prof.genes["HLA-A"].source_style == "hla-presence-text"


async def test_dpyd_hgvs_names_and_supporting_variant_ignored(bundles, make_prefetch):
    _, prof = await _profile(bundles, make_prefetch, "dana-dpyd")
    assert prof.genes["DPYD"].diplotype == "c.1905+1G>A (*2A)/Reference"
    assert prof.unreadable == []  # the Variant supports the genotype; not a separate result


async def test_stu1_implication_numeric_hgnc_and_haplotype_pair(bundles, make_prefetch):
    data, prof = await _profile(bundles, make_prefetch, "emil-thiopurine")
    assert prof.genes["TPMT"].diplotype == "*1/*3A"
    assert prof.genes["TPMT"].reported_phenotype == "Intermediate metabolizer"
    n = prof.genes["NUDT15"]
    assert (n.diplotype, n.source_style) == ("*1/*3", "haplotype-pair")
    assert any("Haplotype" in note for note in n.notes)
    assert data.weight_kg == pytest.approx(31.98, abs=0.01)  # 70.5 [lb_av]


async def test_conflicts_status_unreadable(bundles, make_prefetch):
    _, prof = await _profile(bundles, make_prefetch, "farah-conflicts")
    c = prof.genes["CYP2C19"]
    assert c.diplotype == "*1/*2" and c.status == "amended"
    assert c.conflicts_with == ["Observation/pgx-farah-conflicts-cyp2c19-2019"]
    assert any("pgx-farah-conflicts-cyp2c19-2019" in n and "pgx-farah-conflicts-cyp2c19-2023" in n for n in c.notes)
    assert "CYP2D6" not in prof.genes  # entered-in-error ignored
    s = prof.genes["SLCO1B1"]
    assert s.status == "preliminary" and any("preliminary" in n for n in s.notes)
    unreadable = {u.gene: u for u in prof.unreadable}
    assert set(unreadable) == {"CYP2C9", "UGT1A1"}
    assert unreadable["CYP2C9"].text == "see scanned report"
    assert unreadable["CYP2C9"].observation == "Observation/pgx-farah-conflicts-cyp2c9-unreadable"
    assert "registered" in unreadable["UGT1A1"].reason
    assert "CYP2C9" not in prof.genes  # never turned into a result


async def test_diagnostic_report_contained_and_has_member(bundles, make_prefetch):
    data, prof = await _profile(bundles, make_prefetch, "gwen-report")
    assert prof.genes["CYP2C9"].diplotype == "*1/*3"
    assert prof.genes["CYP2C9"].source_style == "clinvar-coding"
    assert prof.genes["CYP2B6"].diplotype == "*1/*6"
    assert prof.genes["CYP2B6"].observation == "DiagnosticReport/pgx-gwen-report-dr#cyp2b6"
    assert prof.genes["VKORC1"].diplotype == "rs9923231 reference (C)/rs9923231 variant (T)"
    assert prof.genes["CYP4F2"].diplotype == "*1/*3"
    g6 = prof.genes["G6PD"]
    assert (g6.diplotype, g6.reported_phenotype, g6.source_style) == (None, "Deficient", "phenotype-only")
    assert prof.unreadable == []
    ids = [o.get("id") for o in data.observations]
    assert len(ids) == len(set(ids))  # results listed in the report and as entries appear once


async def test_stu1_hla_genotype_single_allele_and_phenotype_only(bundles, make_prefetch):
    _, prof = await _profile(bundles, make_prefetch, "hiro-stu1")
    assert prof.genes["HLA-B"].reported_phenotype == "HLA-B*15:02 positive"
    assert prof.genes["HLA-B"].diplotype is None
    assert any("High risk" in n and "carbamazepine" in n for n in prof.genes["HLA-B"].notes)
    c = prof.genes["CYP2C19"]
    assert (c.diplotype, c.reported_phenotype) == (None, "Rapid metabolizer")
    assert c.source_style == "therapeutic-implication-stu1"


async def test_gl_strings_suballeles_local_code(bundles, make_prefetch):
    _, prof = await _profile(bundles, make_prefetch, "ines-gl-strings")
    assert prof.genes["HLA-B"].diplotype == "*08:01/*40:01"
    assert prof.genes["HLA-B"].source_style == "gl-string"
    assert any("GL String" in n for n in prof.genes["HLA-B"].notes)
    assert prof.genes["HLA-A"].diplotype == "*02:01/*31:01"
    assert prof.genes["CYP2D6"].diplotype == "*7.001/*1.001"
    assert prof.genes["CYP2C19"].diplotype == "*1/*1"


async def test_every_gene_in_mixed_styles(bundles, make_prefetch):
    _, prof = await _profile(bundles, make_prefetch, "jonas-panel")
    expected = {
        "RYR1": "Reference/c.7300G>A", "CACNA1S": "Reference/Reference", "MT-RNR1": "m.1555A>G",
        "CFTR": "F508del/G551D", "NAT2": "*4/*5", "CYP3A4": "*1/*22", "SLCO1B1": "*1/*15",
        "IFNL3": "rs12979860 reference (C)/rs12979860 variant (T)",
        "ABCG2": "rs2231142 reference (G)/rs2231142 variant (T)",
    }
    assert {g: prof.genes[g].diplotype for g in expected} == expected
    assert prof.genes["CYP2C9"].reported_phenotype == "Intermediate Metabolizer"


async def test_bundles_cover_every_gene(bundles, make_prefetch):
    names = ["ada-cyp2c19-pm", "bruno-cyp2d6-um", "chidi-hla-b5701", "dana-dpyd", "emil-thiopurine",
             "farah-conflicts", "gwen-report", "hiro-stu1", "ines-gl-strings", "jonas-panel"]
    seen: set[str] = set()
    for name in names:
        _, prof = await _profile(bundles, make_prefetch, name)
        seen |= set(prof.genes)
    assert tables().genes - seen == {"IFNL4", "POLG"}


# ---------------------------------------------------------------------------------------------- inline


def test_genomics_operations_style_stu2():
    geno = _obs({"valueCodeableConcept": {"coding": [{"system": "https://www.pharmvar.org", "code": "CYP2C19 *1/*17",
                                                      "display": "CYP2C19 *1/*17"}]}}, gene="HGNC:2621", oid="g1",
                date=None)
    impl = {"resourceType": "Observation", "id": "i1", "status": "final",
            "code": {"coding": [{"system": "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs",
                                 "code": "therapeutic-implication"}]},
            "component": [{"code": {"coding": [{"code": "predicted-therapeutic-implication"}]},
                           "valueCodeableConcept": {"text": "CYP2C19 Rapid Metabolizer"}}],
            "derivedFrom": [{"reference": "Observation/g1"}]}
    r = _build(geno, impl).genes["CYP2C19"]
    assert (r.diplotype, r.reported_phenotype, r.effective) == ("*1/*17", "Rapid Metabolizer", None)


@pytest.mark.parametrize(
    ("value", "diplotype", "phenotype"),
    [
        ({"valueString": "CYP2D6*7.001 / CYP2D6*1.001"}, "*7.001/*1.001", None),
        ({"valueString": "*1/*41"}, "*1/*41", None),
        ({"valueString": "CYP2D6 *1/*4 (Intermediate Metabolizer)"}, "*1/*4", "Intermediate Metabolizer"),
        ({"valueCodeableConcept": {"text": "Genotype: *1/*2"}}, "*1/*2", None),
        ({"valueCodeableConcept": {"coding": [{"system": "http://www.pharmvar.org", "code": "PV00155",
                                               "display": "CYP2D6 *2/*4"}]}}, "*2/*4", None),
        ({"valueString": "Poor metabolizer"}, None, "Poor metabolizer"),
        ({"valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA10315-2"}]}}, None,
         "Ultrarapid metabolizer"),
    ],
)
def test_value_styles(value, diplotype, phenotype):
    r = _build(_obs(value, gene="HGNC:2625")).genes["CYP2D6"]
    assert (r.diplotype, r.reported_phenotype) == (diplotype, phenotype)


@pytest.mark.parametrize("text", ["Normal", "see report", "*1/", "*1/*2/*3", "unknown/unknown", "pending", "*1"])
def test_unparseable_values_are_unreadable_never_normal(text):
    prof = _build(_obs({"valueString": text}, gene="HGNC:2621"))
    assert prof.genes == {}
    assert len(prof.unreadable) == 1
    u = prof.unreadable[0]
    assert (u.gene, u.observation, u.text) == ("CYP2C19", "Observation/o1", text)


def test_gene_from_value_or_code_text():
    prof = _build(_obs({"valueString": "CYP2C9 *2/*3"}, oid="a"),
                  {"resourceType": "Observation", "id": "b", "status": "final",
                   "code": {"text": "TPMT genotype"}, "valueString": "*1/*1"})
    assert prof.genes["CYP2C9"].diplotype == "*2/*3"
    assert prof.genes["TPMT"].diplotype == "*1/*1"


def test_gene_mismatch_and_missing_gene_unreadable():
    prof = _build(_obs({"valueString": "CYP2D6 *1/*2"}, gene="HGNC:2621", oid="a"),
                  _obs({"valueString": "*1/*2"}, oid="b"))
    reasons = sorted(u.reason for u in prof.unreadable)
    assert prof.genes == {}
    assert reasons == ["gene in value (CYP2D6) differs from gene studied (CYP2C19)", "gene not identified"]


def test_statuses():
    prof = _build(_obs({"valueString": "*1/*2"}, gene="HGNC:2621", oid="a", status="cancelled"),
                  _obs({"valueString": "*1/*2"}, gene="HGNC:2623", oid="b", status="corrected"),
                  _obs({"valueString": "*1/*2"}, gene="HGNC:2625", oid="c", status="unknown"),
                  _obs({"valueString": "*1/*2"}, gene="HGNC:12014", oid="d", status="preliminary"))
    assert set(prof.genes) == {"CYP2C9", "TPMT"}
    assert prof.genes["TPMT"].notes == ["preliminary result (Observation/d)"]
    assert [u.gene for u in prof.unreadable] == ["CYP2D6"]


def test_newest_wins_and_agreeing_results_do_not_conflict():
    prof = _build(_obs({"valueString": "*2/*1"}, gene="HGNC:2621", oid="old", date="2020-01-01"),
                  _obs({"valueString": "*1/*2"}, gene="HGNC:2621", oid="new", date="2023-01-01"),
                  _obs({"valueString": "*1/*2"}, gene="HGNC:2621", oid="mid", issued="2021-06-01T00:00:00Z",
                       date=None))
    r = prof.genes["CYP2C19"]
    assert r.observation == "Observation/new" and r.conflicts_with == [] and r.notes == []


def test_phenotype_conflict_and_older_genotype_named():
    prof = _build(_obs({"valueString": "Poor metabolizer"}, gene="HGNC:2621", oid="p1", date="2020-01-01"),
                  _obs({"valueString": "Intermediate metabolizer"}, gene="HGNC:2621", oid="p2", date="2024-01-01"),
                  _obs({"valueString": "*1/*2"}, gene="HGNC:2621", oid="g", date="2019-01-01"))
    r = prof.genes["CYP2C19"]
    assert r.reported_phenotype == "Intermediate metabolizer" and r.diplotype is None
    assert r.conflicts_with == ["Observation/p1"]
    assert any("Observation/g" in n and "not used" in n for n in r.notes)


def test_hla_presence_conflict_and_genotype_crosscheck():
    pos = _obs({"valueString": "HLA-B*57:01 positive"}, oid="pos", date="2024-01-01")
    neg = _obs({"valueString": "HLA-B*57:01 not detected"}, oid="neg", date="2020-01-01")
    r = _build(pos, neg).genes["HLA-B"]
    assert r.reported_phenotype == "HLA-B*57:01 positive" and r.conflicts_with == ["Observation/neg"]
    gl = _obs({"valueCodeableConcept": {"coding": [{"system": "http://glstring.org",
                                                    "code": "hla#3.59.0#HLA-B*57:01:01+HLA-B*08:01"}]}},
              oid="gl", date="2022-01-01")
    r = _build(gl, neg).genes["HLA-B"]
    assert r.diplotype == "*57:01:01/*08:01"
    assert r.conflicts_with == ["Observation/neg"]


@pytest.mark.parametrize("gl", ["hla#3.59.0#HLA-B*57:01/HLA-B*57:03+HLA-B*08:01", "hla#HLA-B*57:01|HLA-B*08:01",
                                "hla#3.59.0#HLA-B*57:01/HLA-B*08:01/HLA-B*40:01"])
def test_ambiguous_gl_strings_unreadable(gl):
    prof = _build(_obs({"valueCodeableConcept": {"coding": [{"system": "http://glstring.org", "code": gl}]}}))
    assert prof.genes == {} and len(prof.unreadable) == 1


def test_multilocus_gl_string():
    prof = _build(_obs({"valueCodeableConcept": {"coding": [{"system": "http://glstring.org",
                        "code": "hla#3.59.0#HLA-A*02:01+HLA-A*31:01^HLA-B*15:02+HLA-B*44:02"}]}}))
    assert prof.genes["HLA-A"].diplotype == "*02:01/*31:01"
    assert prof.genes["HLA-B"].diplotype == "*15:02/*44:02"


def test_variant_without_genotype_is_reported():
    var = _obs({"valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA9633-4"}]}}, code="69548-6",
               gene="HGNC:3012")
    prof = _build(var)
    assert prof.genes == {}
    assert prof.unreadable[0].gene == "DPYD" and "variant-level" in prof.unreadable[0].reason


def test_single_haplotype_without_genotype_is_reported():
    prof = _build(_obs({"valueString": "TPMT*3A"}, code="84414-2", gene="HGNC:12014"))
    assert prof.genes == {} and "haplotype" in prof.unreadable[0].reason


def test_non_pgx_and_garbage_never_raise():
    garbage: list[Any] = [
        None, 3, "x", {"resourceType": "Observation"}, {"resourceType": "Patient", "id": "p"},
        {"resourceType": "Observation", "id": "bp", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": {"value": 120}},
        {"resourceType": "Observation", "id": "brca", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "69548-6"}]},
         "component": [{"code": {"coding": [{"code": "48018-6"}]}, "valueCodeableConcept": {"text": "BRCA1"}}],
         "valueCodeableConcept": {"coding": [{"code": "LA9633-4"}]}},
        {"resourceType": "Observation", "id": "weird", "status": "final", "code": {"coding": "nope"},
         "component": "nope", "valueString": 5},
        {"resourceType": "Observation", "id": "nv", "status": "final",
         "code": {"coding": [{"system": LOINC, "code": "84413-4"}]},
         "component": [{"code": {"coding": [{"code": "48018-6"}]}, "valueCodeableConcept": {"text": "CYP2C19"}}],
         "dataAbsentReason": {"text": "test failed"}},
    ]
    prof = build_profile(PatientData.model_construct(patient_id="p1", observations=garbage, fhir_calls=0))
    assert prof.genes == {}
    assert [u.observation for u in prof.unreadable] == ["Observation/nv"]
    assert "test failed" in prof.unreadable[0].reason


def test_hgnc_table():
    assert gene_for_hgnc("HGNC:2621") == "CYP2C19"
    assert gene_for_hgnc("2625") == "CYP2D6"
    assert gene_for_hgnc("HGNC:4932") == "HLA-B"
    assert gene_for_hgnc("HGNC:999999") is None
