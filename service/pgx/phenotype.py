"""The phenotype engine: diplotypes and lab-reported phenotypes -> CPIC phenotype calls.

Public API:

* :func:`parse_diplotype` - tolerant reading of lab diplotype strings into allele tokens;
* :func:`call_phenotype` - a diplotype -> :class:`PhenotypeCall` (CPIC phenotype, activity
  score, per-allele function, a human-readable derivation and, when Indeterminate, why);
* :func:`call_reported_phenotype` - a phenotype-only lab result -> the CPIC term;
* :func:`call_allele_presence` - "HLA-B*57:01 positive" style results;
* :func:`annotate_profile` - fills ``GeneResult.call`` for every gene of a profile;
* :func:`phenotype_json` - the CLI/JSON view of one call.

Safety rule: anything not in the CPIC tables (an unknown allele, an unreadable string, a
missing rule) gives ``Indeterminate`` with a ``reason`` - never a silent Normal.
All lookups are dictionary reads on tables built when the gene files are loaded.
"""

from __future__ import annotations

import re
from functools import lru_cache
from decimal import Decimal
from pathlib import Path
from typing import Any

from service.pgx.diplotype import clean_result_text
from service.pgx.genes import (
    AlleleDef,
    GeneDefinition,
    GeneDefinitionError,
    phenotype_key,
    allele_key,
    format_activity,
    load_genes,
)
from service.pgx.models import AlleleCall, GenomicProfile, GeneResult, PhenotypeCall

__all__ = [
    "INDETERMINATE",
    "annotate_profile",
    "call_allele_presence",
    "call_phenotype",
    "call_reported_phenotype",
    "names_known_alleles",
    "parse_diplotype",
    "phenotype_json",
]

INDETERMINATE = "Indeterminate"
_DEFAULT_GENES_DIR = Path(__file__).resolve().parents[2] / "cards" / "genes"


def _default_genes_dir() -> Path:
    """The gene files used when a caller passes no definition (the FHIR reader): the configured
    knowledge directory (``$PGX_CDS_KNOWLEDGE_DIR``), else the source checkout's ``cards/genes``."""
    from service.config import configured_knowledge_dir

    configured = configured_knowledge_dir()
    if configured and (configured / "genes").is_dir():
        return configured / "genes"
    return _DEFAULT_GENES_DIR

_PHARMVAR_SUFFIX = re.compile(r"(\*\d+[A-Za-z]?)\.\d{3,}")
_ZYGOSITY = re.compile(
    r"^(?P<a>.+?)[\s,;:(]+(?P<z>het(?:erozygous|erozygote)?|hom(?:ozygous|ozygote)?|hemizygous|hemi)\)?\.?$",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"[/|;]")
_HLA_PREFIX = re.compile(r"^(?:HLA-?)?[A-Z][A-Z0-9]*(?=\*)", re.IGNORECASE)
_HLA_NAME = re.compile(r"^\*?(\d{2,3})((?::\d{2,4})*)([A-Z])?$", re.IGNORECASE)
_PRESENCE = re.compile(
    r"(?P<allele>(?:HLA-?[A-Z0-9]+)?\*\d{2,3}(?::\d{2,4})*[A-Z]?)\s*[:=]?\s*\(?\s*"
    r"(?P<state>positive|negative|not detected|detected|present|absent|non-?carrier|carrier|pos|neg)\b",
    re.IGNORECASE,
)
_POSITIVE_WORDS = {"positive", "detected", "present", "carrier", "pos"}
_MALE = {"male", "m", "man", "boy"}
_FEMALE = {"female", "f", "woman", "girl"}

# LOINC answers used for therapeutic-implication values (HL7 Genomics Reporting IG)
_LOINC_ANSWERS = {
    "LA10315-2": "Ultrarapid metabolizer",
    "LA25390-8": "Rapid metabolizer",
    "LA25391-6": "Normal metabolizer",
    "LA10317-8": "Intermediate metabolizer",
    "LA9657-3": "Poor metabolizer",
    "LA25392-4": "Increased function",
    "LA25393-2": "Normal function",
    "LA25395-7": "Decreased function",
    "LA25394-0": "Poor function",
}

# spelling variants labs use -> the CPIC wording (compared after phenotype_key normalisation)
_SYNONYMS = {
    "pm": "poor metabolizer",
    "im": "intermediate metabolizer",
    "nm": "normal metabolizer",
    "rm": "rapid metabolizer",
    "um": "ultrarapid metabolizer",
    "likely pm": "likely poor metabolizer",
    "likely im": "likely intermediate metabolizer",
    "possible im": "possible intermediate metabolizer",
    "extensive metabolizer": "normal metabolizer",
    "em": "normal metabolizer",
    "ultra-rapid metabolizer": "ultrarapid metabolizer",
    "ultra rapid metabolizer": "ultrarapid metabolizer",
    "g6pd deficient": "deficient",
    "g6pd normal": "normal",
    "mh susceptible": "malignant hyperthermia susceptibility",
    "mhs": "malignant hyperthermia susceptibility",
}


# =============================================================================================
# Parsing


def parse_diplotype(gene: str, text: str, gene_def: GeneDefinition | None = None) -> tuple[str, ...] | None:
    """Read a lab diplotype string into allele tokens (not yet checked against the table).

    Returns a 2-tuple for a diplotype (``("*1", "*2")``), a 1-tuple for a single allele
    (G6PD hemizygous males, MT-RNR1, a lone HLA allele), more than two tokens for DPYD
    variant lists, or None when the text cannot be read. Accepted forms include
    ``*1/*2``, ``CYP2C19*1/*2``, ``CYP2C19 *1/*17``, ``CYP2D6*7.001 / CYP2D6*1.001``,
    ``*1x2/*4``, ``*1/*36+*10``, ``HLA-B*57:01/HLA-B*08:01``, GL strings
    (``hla#3.33.0#HLA-B*08:01+HLA-B*40:01``), HGVS names, ``c.1905+1G>A het``, and SNP
    genotypes (``rs9923231 C/T``, ``-1639 GA``, ``GA``).
    """
    if not text or not text.strip():
        return None
    gd = gene_def if gene_def is not None else _default_definition(gene)
    s = text.strip().strip("\"'").strip()
    if "#" in s:  # GL string: namespace#version#value
        s = s.rsplit("#", 1)[1].strip()
    s = clean_result_text(gene, s)  # the same cleaning as the FHIR reader (service.pgx.diplotype)
    if not s:
        return None
    if (gd is not None and gd.method == "allele_status") or gene.upper().startswith("HLA"):
        return _parse_hla(s)
    if gd is not None and gd.snp is not None:
        snp = _parse_snp(gd, s)
        if snp is not None:
            return snp
    zyg = None
    m = _ZYGOSITY.match(s)
    if m:
        s, zyg = m.group("a").strip(), m.group("z").lower()
    s = _PHARMVAR_SUFFIX.sub(r"\1", s)
    gene_re, tandem_re = _gene_res(gene)
    parts = [tandem_re.sub("+", gene_re.sub("", p.strip())).strip() for p in _SPLIT.split(s)]
    if not parts or any(not p for p in parts):
        return None
    if zyg is not None:
        if len(parts) != 1:
            return None
        if zyg.startswith("het"):
            if gd is None or gd.reference_allele is None:
                return None
            return (gd.reference_allele, parts[0])
        if zyg.startswith("hom"):
            return (parts[0], parts[0])
        return (parts[0],)
    return tuple(parts)


@lru_cache(maxsize=256)
def _gene_res(gene: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    return (re.compile(rf"^{re.escape(gene)}\b[\s:]*", re.IGNORECASE),
            re.compile(rf"\+\s*{re.escape(gene)}\b\s*", re.IGNORECASE))


@lru_cache(maxsize=4096)  # the shipped gene tables do not change while the process runs
def names_known_alleles(gene: str, text: str) -> bool:
    """True when ``text`` parses (``parse_diplotype``) into alleles that are all in the gene's table,
    e.g. ``ivacaftor non-responsive CFTR sequence/F508del``: the FHIR reader then takes the text as a
    diplotype rather than looking for phenotype words inside allele names."""
    gd = _default_definition(gene)
    if gd is None or gd.method == "allele_status":
        return False
    tokens = parse_diplotype(gd.gene, text, gd)
    return bool(tokens) and all(_resolve(gd, t)[0] is not None for t in tokens)


def _parse_snp(gd: GeneDefinition, s: str) -> tuple[str, ...] | None:
    assert gd.snp is not None
    t = s.strip()
    for p in sorted([gd.snp.rsid, *gd.snp.prefixes, gd.gene], key=len, reverse=True):
        if t.lower().startswith(p.lower()):
            t = t[len(p):].strip(" :=")
            break
    m = re.fullmatch(r"([ACGT])\s*[/|]?\s*([ACGT])", t, re.IGNORECASE)
    if not m:
        return None
    letters = {k.upper(): v for k, v in gd.snp.letters.items()}
    a, b = m.group(1).upper(), m.group(2).upper()
    if a not in letters or b not in letters:
        return None
    return (letters[a], letters[b])


def _parse_hla(s: str) -> tuple[str, ...] | None:
    s = re.sub(r"\s+", "", s)
    copies = s.split("+") if "+" in s else s.split("/") if "/" in s else s.split(",")  # "B*15:02, B*40:01"
    if not 1 <= len(copies) <= 2 or any(not c for c in copies):
        return None
    out = []
    for c in copies:
        names = [_HLA_PREFIX.sub("", n) for n in c.split("/")]
        if any(not n for n in names):
            return None
        out.append("/".join(names))
    return tuple(out)


def _hla_name(token: str) -> tuple[str, bool] | None:
    """``HLA-B*57:01:01`` -> ("*57:01", True); ``*57`` -> ("*57", False); junk -> None."""
    t = _HLA_PREFIX.sub("", token.strip())
    m = _HLA_NAME.match(t)
    if not m:
        return None
    first, rest, suffix = m.group(1), m.group(2), (m.group(3) or "").upper()
    fields = [f for f in rest.split(":") if f]
    if not fields:
        return f"*{first}{suffix}", False
    return f"*{first}:{fields[0]}{suffix}", True


_DEFAULT_DEFS: dict[str, GeneDefinition] | None = None


@lru_cache(maxsize=128)
def _default_definition(gene: str) -> GeneDefinition | None:
    """The shipped definition of ``gene`` (only used when the caller passes none)."""
    global _DEFAULT_DEFS
    if _DEFAULT_DEFS is None:
        try:
            _DEFAULT_DEFS = load_genes(_default_genes_dir())
        except GeneDefinitionError:
            _DEFAULT_DEFS = {}
    return _find(_DEFAULT_DEFS, gene)


def _find(genes: dict[str, GeneDefinition], gene: str) -> GeneDefinition | None:
    if gene in genes:
        return genes[gene]
    want = re.sub(r"[^A-Z0-9]", "", gene.upper())
    for name, gd in genes.items():
        if re.sub(r"[^A-Z0-9]", "", name.upper()) == want:
            return gd
    return None


# =============================================================================================
# Calls from diplotypes


def call_phenotype(gene_def: GeneDefinition, diplotype_text: str, *, sex: str | None = None) -> PhenotypeCall:
    """Turn a reported diplotype into a CPIC phenotype call for ``gene_def``.

    ``sex`` matters only for X-linked G6PD ("male"/"female"; anything else counts as unknown).
    """
    gd = gene_def
    text = (diplotype_text or "").strip()
    if not text:
        return _indet(gd, None, "no diplotype was reported")
    if gd.method == "allele_status":
        return _call_hla(gd, text)
    tokens = parse_diplotype(gd.gene, text, gd)
    if tokens is None:
        return _indet(gd, text, f"the {gd.gene} diplotype {text!r} could not be read")
    resolved: list[AlleleDef] = []
    notes: list[str] = []
    unknown: list[str] = []
    for t in tokens:
        a, note = _resolve(gd, t)
        if a is None:
            unknown.append(t)
        else:
            resolved.append(a)
            if note:
                notes.append(note)
    if unknown:
        what = ", ".join(unknown)
        verb = "is" if len(unknown) == 1 else "are"
        return _indet(
            gd, text, f"allele {what} {verb} not in the CPIC {gd.gene} allele table ({gd.version})", resolved
        )
    return _call_resolved(gd, text, resolved, notes, sex)


def _resolve(gd: GeneDefinition, token: str) -> tuple[AlleleDef | None, str | None]:
    """Find a token in the allele table, with the documented CPIC/PharmVar reading rules."""
    a = gd.lookup(token)
    if a is not None:
        return a, None
    k = allele_key(token)
    if k.startswith("*") and not any(x.name.startswith("*") for x in gd.alleles):
        # GL-style "G6PD*A-" for a gene whose alleles are not star names: the name after the '*'
        a = gd.lookup(k[1:])
        if a is not None:
            return a, None
    if gd.copy_number_synonyms:
        m = re.fullmatch(r"(\*\d+)x(\d+|n|≥\d+)", k)
        if m:
            base, n = m.groups()
            if n == "n" or n.startswith("≥") or int(n) >= 3:
                a = gd.lookup(f"{base}x≥3")
                if a is not None:
                    return a, f"{token.strip()} read as {a.name} (CPIC groups three or more copies)"
    if gd.star_suballele_fallback:
        m = re.fullmatch(r"(\*\d+)([a-z]+)", k)
        if m and not gd.has_lettered_suballeles(m.group(1)):
            a = gd.lookup(m.group(1))
            if a is not None:
                return a, f"{token.strip()} read as {a.name} (sub-allele of the same core allele)"
    return None, None


def _call_resolved(
    gd: GeneDefinition, text: str | None, alleles: list[AlleleDef], notes: list[str], sex: str | None
) -> PhenotypeCall:
    if gd.method == "activity_score":
        return _call_activity(gd, text, alleles, notes)
    if gd.method == "x_linked":
        return _call_x_linked(gd, text, alleles, notes, sex)
    if gd.method == "mitochondrial":
        return _call_single(gd, text, alleles, notes)
    return _call_function(gd, text, alleles, notes)


def _ordered(gd: GeneDefinition, alleles: list[AlleleDef]) -> list[AlleleDef]:
    return sorted(alleles, key=lambda a: gd.allele_order(a.name))


def _calls(alleles: list[AlleleDef]) -> list[AlleleCall]:
    return [AlleleCall(allele=a.name, function=a.function, activity_value=a.activity_value) for a in alleles]


def _with_notes(method: str, notes: list[str]) -> str:
    return method + ("; " + "; ".join(notes) if notes else "")


def _call_function(gd: GeneDefinition, text: str | None, alleles: list[AlleleDef], notes: list[str]) -> PhenotypeCall:
    if len(alleles) != 2:
        n = len(alleles)
        return _indet(gd, text, f"{gd.gene} needs two alleles; {n} {'was' if n == 1 else 'were'} reported", alleles)
    a, b = _ordered(gd, alleles)
    dip = f"{a.name}/{b.name}"
    exc = gd.exception_for([a.name, b.name])
    if exc is not None:
        return _made(gd, dip, exc.phenotype, [a, b], _with_notes(f"{dip}: named CPIC exception: {exc.reason}", notes),
                     exc.activity_score)
    if a.function is None or b.function is None:
        return _indet(gd, dip, f"no CPIC function is recorded for {a.name if a.function is None else b.name}", [a, b])
    ph = gd.pair_phenotype(a.function, b.function)
    if ph is None:
        return _indet(gd, dip, f"CPIC gives no {gd.gene} phenotype for the function pair {a.function} + {b.function}", [a, b])
    method = _with_notes(f"{a.name} ({a.function}) + {b.name} ({b.function}) -> {ph} (CPIC function-pair rule)", notes)
    if ph == INDETERMINATE:
        return _made(gd, dip, ph, [a, b], method, reason=_uncertain_reason(gd, [a, b]))
    return _made(gd, dip, ph, [a, b], method)


def _uncertain_reason(gd: GeneDefinition, alleles: list[AlleleDef]) -> str:
    bad = [a for a in alleles if a.function and ("ncertain" in a.function or "nknown" in a.function)]
    seen: dict[str, AlleleDef] = {a.name: a for a in bad}
    if seen:
        parts = [f"{a.name} has {a.function[0].lower() + a.function[1:]}" for a in seen.values()]
        return "; ".join(parts) + f" in the CPIC {gd.gene} table, so CPIC assigns no phenotype"
    fs = " + ".join(a.function or "?" for a in alleles)
    return f"CPIC assigns no {gd.gene} phenotype to the combination {fs}"


def _call_activity(gd: GeneDefinition, text: str | None, alleles: list[AlleleDef], notes: list[str]) -> PhenotypeCall:
    rule = gd.activity_score
    assert rule is not None
    n = len(alleles)
    if n < 2 or (rule.combine == "sum" and n != 2):
        return _indet(gd, text, f"{gd.gene} needs two alleles; {n} {'was' if n == 1 else 'were'} reported", alleles)
    ordered = _ordered(gd, alleles)
    dip = "/".join(a.name for a in ordered)
    na = [a for a in ordered if a.activity_value == "n/a"]
    if na:
        names = ", ".join(dict.fromkeys(a.name for a in na))
        return _indet(gd, dip, f"{names} has no CPIC activity value (n/a), so the activity score cannot be computed",
                      ordered, activity="n/a")
    chosen = ordered
    intro = "activity score {s} = "
    if rule.combine == "two_lowest" and n > 2:
        chosen = _ordered(gd, sorted(ordered, key=lambda a: _num(a.activity_value))[:2])
        intro = "activity score {s} = the two lowest-value variants " + f"(of {n} reported) "
    exc = gd.exception_for([a.name for a in chosen])
    if exc is not None:
        return _made(gd, dip, exc.phenotype, ordered, _with_notes(f"{dip}: named CPIC exception: {exc.reason}", notes),
                     exc.activity_score or "n/a")
    at_least = any((a.activity_value or "").startswith("≥") for a in chosen)
    total = sum((_num(a.activity_value) for a in chosen), Decimal(0))
    s = format_activity(total, at_least)
    parts = " + ".join(f"{a.name} ({a.activity_value})" for a in chosen)
    hits = [t for t in rule.thresholds if t.contains(total)]
    if len(hits) != 1:
        return _indet(gd, dip, f"activity score {s} is outside the CPIC {gd.gene} ranges", ordered, activity=s)
    t = hits[0]
    if at_least and t.above is None:
        return _indet(gd, dip, f"activity score {s} is only a lower bound and may exceed the {t.describe()} range",
                      ordered, activity=s)
    method = _with_notes(intro.format(s=s) + f"{parts}; {t.describe()} -> {t.phenotype} (CPIC)", notes)
    return _made(gd, dip, t.phenotype, ordered, method, s)


def _num(v: str | None) -> Decimal:
    return Decimal((v or "0").removeprefix("≥"))


def _norm_sex(sex: str | None) -> str | None:
    s = (sex or "").strip().lower()
    return "male" if s in _MALE else "female" if s in _FEMALE else None


def _call_x_linked(
    gd: GeneDefinition, text: str | None, alleles: list[AlleleDef], notes: list[str], sex: str | None
) -> PhenotypeCall:
    sx = _norm_sex(sex)
    if len(alleles) == 1:
        a = alleles[0]
        if sx == "male":
            return _single(gd, a.name, a, f"male, hemizygous: {a.name}", notes)
        if sx == "female":
            return _indet(gd, a.name, f"one {gd.gene} allele was reported for a female patient; two are needed", alleles)
        return _indet(gd, a.name, f"sex is not known: a single {gd.gene} allele is read as hemizygous only for a male",
                      alleles)
    if len(alleles) != 2:
        return _indet(gd, text, f"{gd.gene} needs one allele (male) or two (female); {len(alleles)} were reported", alleles)
    a, b = _ordered(gd, alleles)
    if sx == "male":
        if a.name == b.name:
            return _single(gd, f"{a.name}/{b.name}", a, f"male, hemizygous ({a.name} written twice)", notes)
        return _indet(gd, f"{a.name}/{b.name}", f"two different {gd.gene} alleles were reported for a male patient",
                      [a, b])
    call = _call_function(gd, text, [a, b], notes + ([] if sx == "female" else ["two alleles: read as female"]))
    if call.phenotype != INDETERMINATE and call.method:
        call = call.model_copy(update={"method": call.method.replace("(CPIC function-pair rule)", "(CPIC, two X chromosomes)")})
    return call


def _call_single(gd: GeneDefinition, text: str | None, alleles: list[AlleleDef], notes: list[str]) -> PhenotypeCall:
    names = {a.name for a in alleles}
    if len(names) != 1:
        return _indet(gd, text, f"{gd.gene} is called from one (homoplasmic) allele; {len(names)} different were reported",
                      alleles)
    a = alleles[0]
    return _single(gd, a.name, a, a.name, notes)


def _single(gd: GeneDefinition, dip: str, a: AlleleDef, what: str, notes: list[str]) -> PhenotypeCall:
    if a.function is None:
        return _indet(gd, dip, f"no CPIC function is recorded for {a.name}", [a])
    ph = gd.single_phenotype(a.function)
    if ph is None:
        return _indet(gd, dip, f"CPIC gives no {gd.gene} phenotype for an allele with {a.function}", [a])
    cls = f", WHO class {a.who_class}" if a.who_class else ""
    method = _with_notes(f"{what} ({a.function}{cls}) -> {ph} (CPIC)", notes)
    reason = _uncertain_reason(gd, [a]) if ph == INDETERMINATE else None
    return _made(gd, dip, ph, [a], method, reason=reason)


def _call_hla(gd: GeneDefinition, text: str) -> PhenotypeCall:
    m = _PRESENCE.search(text)
    if m:
        state = m.group("state").lower().replace("-", "")
        return call_allele_presence(gd, m.group("allele"), state in _POSITIVE_WORDS)
    copies = parse_diplotype(gd.gene, text, gd)
    if copies is None:
        return _indet(gd, text, f"the {gd.gene} result {text!r} could not be read")
    if len(copies) == 1 and "/" not in copies[0]:
        return call_allele_presence(gd, copies[0], True)
    parsed: list[list[tuple[str, bool]]] = []
    for c in copies:
        names = [_hla_name(x) for x in c.split("/")]
        if any(n is None for n in names):
            return _indet(gd, text, f"{c!r} is not a valid {gd.gene} allele name")
        parsed.append([n for n in names if n is not None])
    statuses: list[str] = []
    uncertain: list[str] = []
    for aoi in gd.alleles_of_interest:
        st = "negative"
        for copy in parsed:
            hits = [_hla_matches(n, full, aoi.allele) for n, full in copy]
            if all(h is True for h in hits):
                st = "positive"
                break
            if any(h is not False for h in hits):
                st = "uncertain"
        if st == "uncertain":
            uncertain.append(aoi.allele)
        else:
            statuses.append(f"{aoi.allele} {st}")
    sep = "+" if any(len(c) > 1 for c in parsed) else "/"
    dip = sep.join("/".join(n for n, _ in c) for c in parsed)
    alleles = [AlleleCall(allele=n) for c in parsed for n, _ in c]
    summary = ", ".join(statuses)
    if uncertain:
        return PhenotypeCall(
            gene=gd.gene, diplotype=dip, phenotype=INDETERMINATE, allele_status=statuses, alleles=alleles,
            method=f"{gd.gene} allele status from {dip}: {summary or 'none determinable'} (CPIC allele-status lookup)",
            reason=f"the result is not specific enough to tell whether {', '.join(uncertain)} is present "
                   "(low-resolution or ambiguous typing)",
        )
    positives = [s for s in statuses if s.endswith("positive")]
    shown = positives or statuses
    phenotype = "; ".join(f"{gd.gene}{s}" for s in shown)
    return PhenotypeCall(
        gene=gd.gene, diplotype=dip, phenotype=phenotype, allele_status=statuses, alleles=alleles,
        method=f"{gd.gene} allele status from {dip}: {summary} (CPIC allele-status lookup)",
    )


def _hla_matches(name: str, full: bool, target: str) -> bool | None:
    """True/False, or None when a one-field name could be the target allele."""
    if full:
        return name == target
    return None if target.startswith(name + ":") else False


# =============================================================================================
# Phenotype-only and presence results


def call_reported_phenotype(gene_def: GeneDefinition, text: str) -> PhenotypeCall:
    """Normalise a lab-reported phenotype ("CYP2C19 Poor Metabolizer", "poor metabolizer",
    "PM", a LOINC answer display or code) to the gene's CPIC term; unknown -> Indeterminate."""
    gd = gene_def
    raw = (text or "").strip()
    if not raw:
        return _indet(gd, None, "no phenotype was reported")
    code = re.search(r"\bLA\d{4,5}-\d\b", raw)
    value = _LOINC_ANSWERS.get(code.group(0), raw) if code else raw
    if gd.method == "allele_status":
        m = _PRESENCE.search(value)
        if m:
            state = m.group("state").lower().replace("-", "")
            return call_allele_presence(gd, m.group("allele"), state in _POSITIVE_WORDS)
        return _indet(gd, None, f"reported result {raw!r} does not state an {gd.gene} allele as positive or negative",
                      activity=None)
    t = phenotype_key(value)
    t = re.sub(rf"^{re.escape(gd.gene.lower())}\b[\s:\-]*", "", t).strip(" .:;-")
    t = re.sub(r"\s+phenotype$", "", t)
    if gd.activity_score is not None:
        m = re.fullmatch(r"(?:activity score|as|score)\s*[:=]?\s*(≥|>=)?\s*(\d+(?:\.\d+)?)(?:\s*\(.*\))?", t)
        if m:
            return _reported_score(gd, raw, Decimal(m.group(2)), bool(m.group(1)))
    ph = gd.phenotype_for_key(t) or gd.phenotype_for_key(_SYNONYMS.get(t, "\0"))
    if ph is None:
        return _indet(gd, None, f"reported phenotype {raw!r} is not a CPIC {gd.gene} phenotype term", activity=None)
    method = f"lab-reported phenotype {raw!r} -> CPIC term {ph!r}"
    if ph == INDETERMINATE:
        return _made(gd, None, ph, [], method, reason="the laboratory reported the phenotype as Indeterminate")
    if gd.activity_score is not None:
        method += " (activity score not reported)"
    return _made(gd, None, ph, [], method)


def _reported_score(gd: GeneDefinition, raw: str, value: Decimal, at_least: bool) -> PhenotypeCall:
    assert gd.activity_score is not None
    s = format_activity(value, at_least)
    hits = [t for t in gd.activity_score.thresholds if t.contains(value)]
    if len(hits) != 1 or (at_least and hits[0].above is None):
        return _indet(gd, None, f"reported activity score {s} does not fall in one CPIC {gd.gene} range", activity=s)
    t = hits[0]
    return _made(gd, None, t.phenotype, [], f"lab-reported activity score {s}; {t.describe()} -> {t.phenotype} (CPIC)", s)


def call_allele_presence(gene_def: GeneDefinition, allele: str, present: bool) -> PhenotypeCall:
    """A result that only says an allele/variant is present or absent ("HLA-B*57:01 positive",
    a Variant observation with LA9633-4 Present)."""
    gd = gene_def
    state = "positive" if present else "negative"
    if gd.method == "allele_status":
        parsed = _hla_name(allele)
        if parsed is None:
            return _indet(gd, None, f"{allele!r} is not a valid {gd.gene} allele name", activity=None)
        name, full = parsed
        interest = [a.allele for a in gd.alleles_of_interest]
        if not full:
            return _indet(gd, None, f"{gd.gene}{name} is low-resolution typing; CPIC needs two-field alleles "
                                    f"({', '.join(interest)})", activity=None)
        if name not in interest:
            return _indet(gd, None, f"{gd.gene}{name} is not a CPIC allele of interest ({', '.join(interest)}); "
                                    f"a {state} result for it says nothing about them", [], activity=None)
        return PhenotypeCall(
            gene=gd.gene, phenotype=f"{gd.gene}{name} {state}", allele_status=[f"{name} {state}"],
            alleles=[AlleleCall(allele=name)] if present else [],
            method=f"{gd.gene}{name} reported {state} (CPIC allele-status lookup)",
        )
    a, note = _resolve(gd, allele)
    if a is None:
        return _indet(gd, None, f"allele {allele} is not in the CPIC {gd.gene} allele table ({gd.version})")
    if not present:
        return _indet(gd, None, f"{a.name} reported absent; the absence of one variant does not determine the "
                                f"{gd.gene} phenotype", [a])
    if gd.method == "mitochondrial":
        return _call_single(gd, a.name, [a], [note] if note else [])
    ref = gd.lookup(gd.reference_allele) if gd.reference_allele else None
    if ref is None:
        return _indet(gd, None, f"{gd.gene} has no reference allele to pair {a.name} with", [a])
    het = _call_resolved(gd, None, [ref, a], [], None)
    hom = _call_resolved(gd, None, [a, a], [], None)
    if het.phenotype == INDETERMINATE or het.phenotype != hom.phenotype or het.activity_score != hom.activity_score:
        return _indet(gd, None, f"{a.name} reported present without zygosity; heterozygous gives {het.phenotype}, "
                                f"homozygous {hom.phenotype}", [a])
    method = f"{a.name} reported present, zygosity not stated: heterozygous and homozygous both give {het.phenotype}"
    return het.model_copy(update={"diplotype": None, "method": _with_notes(method, [note] if note else [])})


# =============================================================================================
# Profiles and JSON


def annotate_profile(
    genes: dict[str, GeneDefinition], profile: GenomicProfile, sex: str | None = None
) -> GenomicProfile:
    """Return a copy of ``profile`` with ``GeneResult.call`` filled for every gene result.

    A diplotype wins over a lab-reported phenotype; when both are given and disagree, a note
    says so. A gene without a definition gets an Indeterminate call with the reason.
    """
    out: dict[str, GeneResult] = {}
    for key, gr in profile.genes.items():
        gd = _find(genes, gr.gene) or _find(genes, key)
        notes = list(gr.notes)
        try:
            call = _annotate_one(gd, gr, sex, notes)
        except Exception:  # noqa: BLE001 - fail safe: one odd result never breaks the request
            call = PhenotypeCall(gene=gr.gene, diplotype=gr.diplotype, phenotype=INDETERMINATE,
                                 reason="the result could not be interpreted (internal error)")
        out[key] = gr.model_copy(update={"call": call, "notes": notes})
    return profile.model_copy(update={"genes": out})


def _annotate_one(gd: GeneDefinition | None, gr: GeneResult, sex: str | None, notes: list[str]) -> PhenotypeCall:
    if gd is None:
        return PhenotypeCall(gene=gr.gene, diplotype=gr.diplotype, phenotype=INDETERMINATE,
                             reason=f"no CPIC gene definition for {gr.gene}")
    if gr.diplotype:
        call = call_phenotype(gd, gr.diplotype, sex=sex)
        if gr.reported_phenotype:
            lab = call_reported_phenotype(gd, gr.reported_phenotype)
            if lab.phenotype != INDETERMINATE and call.phenotype != lab.phenotype:
                notes.append(f"laboratory reported {gr.reported_phenotype!r}; the CPIC call from "
                             f"{call.diplotype or gr.diplotype} is {call.phenotype!r}")
        return call
    if gr.reported_phenotype:
        return call_reported_phenotype(gd, gr.reported_phenotype)
    return _indet(gd, None, "the result has neither a diplotype nor a phenotype")


def phenotype_json(
    gene_defs: dict[str, GeneDefinition], gene: str, diplotype: str, *, sex: str | None = None
) -> dict[str, Any]:
    """One call as JSON for the CLI: gene, diplotype, phenotype, activityScore, alleles
    (allele, function, activityValue), method, reason/alleleStatus when set; or an ``error``
    field for an unknown gene or an unreadable diplotype."""
    gd = _find(gene_defs, gene)
    if gd is None:
        return {"gene": gene, "diplotype": diplotype,
                "error": f"unknown gene {gene!r}; known genes: {', '.join(sorted(gene_defs))}"}
    if parse_diplotype(gd.gene, diplotype or "", gd) is None and not (
        gd.method == "allele_status" and _PRESENCE.search(diplotype or "")
    ):
        return {"gene": gd.gene, "diplotype": diplotype, "error": f"the {gd.gene} diplotype {diplotype!r} could not be read"}
    call = call_phenotype(gd, diplotype, sex=sex)
    out: dict[str, Any] = {
        "gene": gd.gene,
        "diplotype": call.diplotype if call.diplotype is not None else diplotype,
        "phenotype": call.phenotype,
        "activityScore": call.activity_score,
        "alleles": [{"allele": a.allele, "function": a.function, "activityValue": a.activity_value} for a in call.alleles],
        "method": call.method,
    }
    if call.allele_status:
        out["alleleStatus"] = list(call.allele_status)
    if call.reason:
        out["reason"] = call.reason
    return out


# =============================================================================================
# Construction helpers


def _made(
    gd: GeneDefinition, dip: str | None, phenotype: str, alleles: list[AlleleDef], method: str,
    activity: str | None = None, reason: str | None = None,
) -> PhenotypeCall:
    return PhenotypeCall(
        gene=gd.gene, diplotype=dip, phenotype=phenotype,
        activity_score=activity if gd.method == "activity_score" else None,
        alleles=_calls(alleles), method=method, reason=reason,
    )


_UNSET: Any = object()


def _indet(
    gd: GeneDefinition, dip: str | None, reason: str, alleles: list[AlleleDef] | None = None,
    activity: Any = _UNSET,
) -> PhenotypeCall:
    if activity is _UNSET:
        activity = "n/a" if gd.method == "activity_score" else None
    return PhenotypeCall(
        gene=gd.gene, diplotype=dip, phenotype=INDETERMINATE,
        activity_score=activity if gd.method == "activity_score" else None,
        alleles=_calls(alleles or []), method=f"Indeterminate: {reason}", reason=reason,
    )
