"""Phenotype rules that need more than a table row: Indeterminate reasons, DPYD's two-lowest
rule, G6PD and sex, HLA allele status, phenotype-only results, presence results, profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.pgx.genes import GeneDefinition, load_genes
from service.pgx.models import GeneResult, GenomicProfile
from service.pgx.phenotype import (
    annotate_profile,
    call_allele_presence,
    call_phenotype,
    call_reported_phenotype,
    phenotype_json,
)

GENES = load_genes(Path(__file__).resolve().parents[2] / "cards" / "genes")


# -- unknown and uncertain alleles -------------------------------------------------------------

def test_unknown_allele_is_indeterminate_with_reason():
    call = call_phenotype(GENES["CYP2C19"], "*1/*99")
    assert call.phenotype == "Indeterminate"
    assert call.reason.startswith("allele *99 is not in the CPIC CYP2C19 allele table")
    assert [a.allele for a in call.alleles] == ["*1"]


def test_two_unknown_alleles_are_both_named():
    call = call_phenotype(GENES["CYP2C19"], "*98/*99")
    assert call.phenotype == "Indeterminate"
    assert "*98, *99 are not in the CPIC CYP2C19 allele table" in call.reason


def test_uncertain_function_is_indeterminate_never_normal():
    call = call_phenotype(GENES["CYP2C19"], "*1/*12")
    assert call.phenotype == "Indeterminate"
    assert "*12 has uncertain function" in call.reason


def test_cyp2d6_na_activity_value_gives_na_score():
    call = call_phenotype(GENES["CYP2D6"], "*1/*22")
    assert (call.phenotype, call.activity_score) == ("Indeterminate", "n/a")
    assert "*22 has no CPIC activity value" in call.reason


def test_unknown_duplication_is_not_extrapolated():
    call = call_phenotype(GENES["CYP2D6"], "*17x3/*1")
    assert call.phenotype == "Indeterminate"
    assert "*17x3" in call.reason


def test_unreadable_diplotype():
    call = call_phenotype(GENES["CYP2C19"], "*1//")
    assert call.phenotype == "Indeterminate" and "could not be read" in call.reason
    assert call_phenotype(GENES["CYP2C19"], "").reason == "no diplotype was reported"


def test_one_allele_for_an_autosomal_gene_is_indeterminate():
    call = call_phenotype(GENES["CYP2C19"], "*2")
    assert call.phenotype == "Indeterminate" and "needs two alleles" in call.reason


# -- derivation text ---------------------------------------------------------------------------

def test_activity_score_method_text():
    call = call_phenotype(GENES["CYP2D6"], "*1/*41")
    assert call.method == "activity score 1.25 = *1 (1.0) + *41 (0.25); 1.25-2.25 -> Normal Metabolizer (CPIC)"
    assert [(a.allele, a.function, a.activity_value) for a in call.alleles] == [
        ("*1", "Normal function", "1.0"), ("*41", "Decreased function", "0.25")]


def test_function_pair_method_text():
    call = call_phenotype(GENES["CYP2C19"], "*2/*17")
    assert call.phenotype == "Intermediate Metabolizer"
    assert call.method == "*2 (No function) + *17 (Increased function) -> Intermediate Metabolizer (CPIC function-pair rule)"
    assert call.activity_score is None


# -- DPYD: the two lowest-value variants -------------------------------------------------------

def test_dpyd_two_lowest_of_three_variants():
    call = call_phenotype(GENES["DPYD"], "c.2846A>T/c.1905+1G>A/c.1129-5923C>G, c.1236G>A (HapB3)")
    # values 0.5, 0.0, 0.5 -> two lowest 0.0 + 0.5
    assert (call.phenotype, call.activity_score) == ("Poor Metabolizer", "0.5")
    assert "two lowest-value variants (of 3 reported)" in call.method
    assert len(call.alleles) == 3


def test_dpyd_two_lowest_ignores_normal_variants():
    call = call_phenotype(GENES["DPYD"], "c.85T>C (*9A)/c.2846A>T/c.557A>G")
    # 1.0, 0.5, 0.5 -> 1.0: Intermediate (a plain sum of the first two would give 1.5)
    assert (call.phenotype, call.activity_score) == ("Intermediate Metabolizer", "1.0")


def test_dpyd_star_and_hgvs_names_are_the_same_allele():
    a = call_phenotype(GENES["DPYD"], "Reference/*13")
    b = call_phenotype(GENES["DPYD"], "Reference/c.1679T>G")
    c = call_phenotype(GENES["DPYD"], "Reference/c.1679T>G (*13)")
    assert a.diplotype == b.diplotype == c.diplotype == "Reference/c.1679T>G (*13)"
    assert a.activity_score == "1.0" and a.phenotype == "Intermediate Metabolizer"


# -- G6PD and sex ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "sex", "phenotype"),
    [
        ("B", "male", "Normal"),
        ("A-", "male", "Deficient"),
        ("A-", "M", "Deficient"),
        ("Mediterranean", "male", "Deficient"),
        ("Aachen", "male", "Deficient with CNSHA"),
        ("Dagua", "male", "Indeterminate"),
        ("B/A-", "female", "Variable"),
        ("A-/A-", "female", "Deficient"),
        ("B/B", "female", "Normal"),
        ("Aachen/Aachen", "female", "Deficient with CNSHA"),
        ("Aachen/A-", "female", "Deficient"),
        ("B/Dagua", "female", "Indeterminate"),
        ("A-/A-", "male", "Deficient"),
        ("B/A-", "male", "Indeterminate"),
        ("A-", "female", "Indeterminate"),
        ("A-", None, "Indeterminate"),
        ("B/A-", None, "Variable"),
    ],
)
def test_g6pd_sex_aware(text, sex, phenotype):
    assert call_phenotype(GENES["G6PD"], text, sex=sex).phenotype == phenotype


def test_g6pd_reasons():
    assert "hemizygous only for a male" in call_phenotype(GENES["G6PD"], "A-").reason
    assert "two different" in call_phenotype(GENES["G6PD"], "B/A-", sex="male").reason
    male = call_phenotype(GENES["G6PD"], "A-", sex="male")
    assert "WHO class III" in male.method


# -- HLA ---------------------------------------------------------------------------------------

def test_hla_b_status_for_every_allele_of_interest():
    call = call_phenotype(GENES["HLA-B"], "HLA-B*58:01/HLA-B*08:01")
    assert call.allele_status == ["*57:01 negative", "*58:01 positive", "*15:02 negative"]
    assert call.phenotype == "HLA-B*58:01 positive"
    assert call.diplotype == "*58:01/*08:01"


def test_hla_b_all_negative():
    call = call_phenotype(GENES["HLA-B"], "hla#3.33.0#HLA-B*08:01/HLA-B*40:01")
    assert call.allele_status == ["*57:01 negative", "*58:01 negative", "*15:02 negative"]
    assert call.phenotype == "HLA-B*57:01 negative; HLA-B*58:01 negative; HLA-B*15:02 negative"


def test_hla_four_field_names_reduce_to_two_fields():
    call = call_phenotype(GENES["HLA-B"], "HLA-B*57:01:01:02/HLA-B*15:02:01")
    assert call.allele_status == ["*57:01 positive", "*58:01 negative", "*15:02 positive"]


def test_hla_low_resolution_is_indeterminate_for_the_hidden_allele():
    call = call_phenotype(GENES["HLA-B"], "HLA-B*57/HLA-B*08:01")
    assert call.phenotype == "Indeterminate"
    assert "*57:01" in call.reason
    assert call.allele_status == ["*58:01 negative", "*15:02 negative"]


def test_hla_gl_ambiguity_is_indeterminate():
    call = call_phenotype(GENES["HLA-B"], "hla#3.33.0#HLA-B*57:01/HLA-B*57:03+HLA-B*08:01")
    assert call.phenotype == "Indeterminate"


def test_hla_a():
    call = call_phenotype(GENES["HLA-A"], "HLA-A*31:01/HLA-A*02:01")
    assert (call.phenotype, call.allele_status) == ("HLA-A*31:01 positive", ["*31:01 positive"])


@pytest.mark.parametrize(
    ("text", "phenotype", "status"),
    [
        ("HLA-B*57:01 positive", "HLA-B*57:01 positive", ["*57:01 positive"]),
        ("HLA-B*57:01 detected", "HLA-B*57:01 positive", ["*57:01 positive"]),
        ("HLA-B*57:01: Not detected", "HLA-B*57:01 negative", ["*57:01 negative"]),
        ("*15:02 negative", "HLA-B*15:02 negative", ["*15:02 negative"]),
        ("HLA-B*15:02", "HLA-B*15:02 positive", ["*15:02 positive"]),
    ],
)
def test_hla_presence_statements(text, phenotype, status):
    call = call_phenotype(GENES["HLA-B"], text)
    assert (call.phenotype, call.allele_status) == (phenotype, status)


def test_allele_presence_api():
    pos = call_allele_presence(GENES["HLA-B"], "HLA-B*57:01", True)
    assert (pos.phenotype, pos.allele_status) == ("HLA-B*57:01 positive", ["*57:01 positive"])
    neg = call_allele_presence(GENES["HLA-B"], "*58:01", False)
    assert neg.allele_status == ["*58:01 negative"]
    other = call_allele_presence(GENES["HLA-B"], "HLA-B*44:02", True)
    assert other.phenotype == "Indeterminate" and "not a CPIC allele of interest" in other.reason


def test_variant_presence():
    ryr1 = call_allele_presence(GENES["RYR1"], "c.7300G>A", True)
    assert ryr1.phenotype == "Malignant Hyperthermia Susceptibility"
    dpyd = call_allele_presence(GENES["DPYD"], "c.1905+1G>A", True)  # het IM vs hom PM: zygosity matters
    assert dpyd.phenotype == "Indeterminate" and "zygosity" in dpyd.reason
    absent = call_allele_presence(GENES["RYR1"], "c.7300G>A", False)
    assert absent.phenotype == "Indeterminate"
    unknown = call_allele_presence(GENES["RYR1"], "c.1A>T", True)
    assert unknown.phenotype == "Indeterminate" and "not in the CPIC RYR1 allele table" in unknown.reason


# -- phenotype-only results --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("gene", "text", "phenotype"),
    [
        ("CYP2C19", "CYP2C19 Poor Metabolizer", "Poor Metabolizer"),
        ("CYP2C19", "poor metabolizer", "Poor Metabolizer"),
        ("CYP2C19", "Poor metaboliser", "Poor Metabolizer"),
        ("CYP2C19", "PM", "Poor Metabolizer"),
        ("CYP2C19", "LA9657-3", "Poor Metabolizer"),
        ("CYP2C19", "Rapid metabolizer", "Rapid Metabolizer"),
        ("CYP2C19", "Likely intermediate metabolizer", "Likely Intermediate Metabolizer"),
        ("CYP2C19", "Extensive metabolizer", "Normal Metabolizer"),
        ("CYP2D6", "Ultrarapid metabolizer", "Ultrarapid Metabolizer"),
        ("CYP2D6", "ultra-rapid metabolizer phenotype", "Ultrarapid Metabolizer"),
        ("TPMT", "Possible Intermediate Metabolizer", "Possible Intermediate Metabolizer"),
        ("SLCO1B1", "Decreased function", "Decreased Function"),
        ("SLCO1B1", "LA25395-7", "Decreased Function"),
        ("G6PD", "G6PD Deficient", "Deficient"),
        ("RYR1", "Malignant Hyperthermia Susceptibility", "Malignant Hyperthermia Susceptibility"),
        ("MT-RNR1", "Increased risk of aminoglycoside-induced hearing loss",
         "increased risk of aminoglycoside-induced hearing loss"),
    ],
)
def test_reported_phenotype_normalisation(gene, text, phenotype):
    call = call_reported_phenotype(GENES[gene], text)
    assert call.phenotype == phenotype
    assert call.diplotype is None


@pytest.mark.parametrize(("gene", "text"), [("CYP2C19", "slow"), ("CYP2C19", "CYP2D6 Poor Metabolizer"),
                                             ("CYP2C19", "Ultrarapid acetylator"), ("SLCO1B1", ""), ("G6PD", "Poor Metabolizer")])
def test_unknown_reported_phenotype_is_indeterminate(gene, text):
    call = call_reported_phenotype(GENES[gene], text)
    assert call.phenotype == "Indeterminate" and call.reason


def test_reported_activity_score():
    call = call_reported_phenotype(GENES["CYP2D6"], "Activity score 1.25")
    assert (call.phenotype, call.activity_score) == ("Normal Metabolizer", "1.25")
    assert call_reported_phenotype(GENES["CYP2D6"], "Intermediate Metabolizer").activity_score is None


def test_reported_hla_phenotype():
    call = call_reported_phenotype(GENES["HLA-B"], "HLA-B*57:01 positive")
    assert call.allele_status == ["*57:01 positive"]


# -- exceptions (diplotype-specific overrides) -------------------------------------------------

def test_named_exception_overrides_the_general_rule():
    data = GENES["CYP2C19"].model_dump()
    data["exceptions"] = [{"diplotype": "*1/*2", "phenotype": "Likely Intermediate Metabolizer", "reason": "test override"}]
    gd = GeneDefinition.model_validate(data)
    call = call_phenotype(gd, "*2/*1")
    assert call.phenotype == "Likely Intermediate Metabolizer"
    assert "named CPIC exception: test override" in call.method
    assert call_phenotype(gd, "*1/*3").phenotype == "Intermediate Metabolizer"


# -- profiles and JSON -------------------------------------------------------------------------

def test_annotate_profile_fills_every_call():
    profile = GenomicProfile(patient_id="p1", genes={
        "CYP2C19": GeneResult(gene="CYP2C19", diplotype="*1/*2", reported_phenotype="Normal Metabolizer"),
        "CYP2D6": GeneResult(gene="CYP2D6", reported_phenotype="CYP2D6 Poor Metabolizer"),
        "G6PD": GeneResult(gene="G6PD", diplotype="A-"),
        "HLA-B": GeneResult(gene="HLA-B", diplotype="HLA-B*57:01 positive"),
        "NAT2": GeneResult(gene="NAT2", diplotype="*4/*5"),
        "TPMT": GeneResult(gene="TPMT"),
    })
    out = annotate_profile(GENES, profile, sex="male")
    assert out.genes["CYP2C19"].call.phenotype == "Intermediate Metabolizer"
    assert any("laboratory reported 'Normal Metabolizer'" in n for n in out.genes["CYP2C19"].notes)
    assert out.genes["CYP2D6"].call.phenotype == "Poor Metabolizer"
    assert out.genes["G6PD"].call.phenotype == "Deficient"
    assert out.genes["HLA-B"].call.allele_status == ["*57:01 positive"]
    assert out.genes["NAT2"].call.phenotype == "Indeterminate"
    assert out.genes["NAT2"].call.reason == "no CPIC gene definition for NAT2"
    assert out.genes["TPMT"].call.phenotype == "Indeterminate"
    assert profile.genes["CYP2C19"].call is None  # the input is not modified


def test_annotate_profile_without_sex_keeps_g6pd_single_allele_indeterminate():
    profile = GenomicProfile(patient_id="p1", genes={"G6PD": GeneResult(gene="G6PD", diplotype="A-")})
    assert annotate_profile(GENES, profile, None).genes["G6PD"].call.phenotype == "Indeterminate"


def test_phenotype_json():
    out = phenotype_json(GENES, "CYP2D6", "*1/*41")
    assert out == {
        "gene": "CYP2D6", "diplotype": "*1/*41", "phenotype": "Normal Metabolizer", "activityScore": "1.25",
        "alleles": [{"allele": "*1", "function": "Normal function", "activityValue": "1.0"},
                    {"allele": "*41", "function": "Decreased function", "activityValue": "0.25"}],
        "method": "activity score 1.25 = *1 (1.0) + *41 (0.25); 1.25-2.25 -> Normal Metabolizer (CPIC)",
    }


def test_phenotype_json_errors_and_reasons():
    assert "unknown gene" in phenotype_json(GENES, "ABC1", "*1/*2")["error"]
    assert "could not be read" in phenotype_json(GENES, "CYP2C19", "*1/")["error"]
    out = phenotype_json(GENES, "cyp2c19", "*1/*99")
    assert out["phenotype"] == "Indeterminate" and "*99" in out["reason"] and "error" not in out
    hla = phenotype_json(GENES, "HLA-B", "HLA-B*57:01/HLA-B*08:01")
    assert hla["alleleStatus"] == ["*57:01 positive", "*58:01 negative", "*15:02 negative"]
    assert phenotype_json(GENES, "G6PD", "A-", sex="male")["phenotype"] == "Deficient"


def test_thousand_calls_use_precomputed_tables():
    """Not a timing test: the same definition object answers repeatedly and identically."""
    gd = GENES["CYP2D6"]
    calls = {call_phenotype(gd, "*1/*41").model_dump_json() for _ in range(1000)}
    assert len(calls) == 1


def test_annotate_profile_is_fail_safe(monkeypatch):
    import service.pgx.phenotype as ph

    def boom(*_a, **_k):
        raise RuntimeError("bug")

    monkeypatch.setattr(ph, "call_phenotype", boom)
    profile = GenomicProfile(patient_id="p1", genes={"CYP2C19": GeneResult(gene="CYP2C19", diplotype="*1/*2")})
    call = ph.annotate_profile(GENES, profile, None).genes["CYP2C19"].call
    assert call.phenotype == "Indeterminate" and "internal error" in call.reason


@pytest.mark.parametrize("sex", ["other", "unknown", ""])
def test_fhir_administrative_gender_other_than_male_female_counts_as_unknown(sex):
    assert call_phenotype(GENES["G6PD"], "A-", sex=sex).phenotype == "Indeterminate"
