"""Genomic FHIR Observations -> :class:`GenomicProfile` (one result per gene, evidence kept).

Reads every form of the HL7 Genomics Reporting IG we know (STU1-STU4): Genotype (84413-4), Haplotype
(84414-2), Variant (69548-6), Therapeutic Implication (STU2 ``predicted-therapeutic-implication``, STU3+
``therapeutic-implication``), STU1 53040-2 / 51961-1 / 83009-1; values as PharmVar / ClinVar / GL String
codings, LOINC answers, ``valueString`` or ``CodeableConcept.text``; HLA allele presence.

Parsing is plain, tolerant dict walking (full ``fhir.resources`` validation costs ~1 ms per resource and
rejects the messy data real EHRs send). A PGx result we cannot read becomes an :class:`UnreadableResult`,
never a silent drop and never "Normal". Codes and the HGNC table live in ``fhir_profiles/codes.yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any


from service.config import REPO_ROOT, configured_fhir_profiles_dir, configured_knowledge_dir
from service.fhir.models import PatientData
from service.fhir.patient_data import REF_KEY, observation_time
from service.pgx import yamlfile
from service.pgx.diplotype import clean_result_text, strip_gene
from service.pgx.models import GeneResult, GenomicProfile, UnreadableResult
from service.pgx.phenotype import names_known_alleles, parse_diplotype

def codes_file() -> Path:
    """Where ``codes.yaml`` is: ``$PGX_CDS_FHIR_PROFILES_DIR``, else ``fhir_profiles/`` beside the knowledge
    directory (``$PGX_CDS_KNOWLEDGE_DIR``, as in the container image: /app/cards and /app/fhir_profiles),
    else the source checkout's ``fhir_profiles/``."""
    explicit = configured_fhir_profiles_dir()
    if explicit:
        return explicit / "codes.yaml"
    knowledge = configured_knowledge_dir()
    if knowledge and (knowledge.parent / "fhir_profiles" / "codes.yaml").is_file():
        return knowledge.parent / "fhir_profiles" / "codes.yaml"
    return REPO_ROOT / "fhir_profiles" / "codes.yaml"

_USED = frozenset({"final", "amended", "corrected"})
_IGNORED = frozenset({"entered-in-error", "cancelled"})

_GENOTYPE, _HAPLOTYPE, _VARIANT, _IMPLICATION, _STU1 = "genotype", "haplotype", "variant", "implication", "stu1"
_LOINC_KIND = {"84413-4": _GENOTYPE, "84414-2": _HAPLOTYPE, "69548-6": _VARIANT,
               "53040-2": _STU1, "51961-1": _STU1, "83009-1": _STU1}
_GENE_STUDIED = "48018-6"
_MED_ASSESSED = "51963-7"
_IMPL_COMPONENTS = frozenset({"predicted-therapeutic-implication", "therapeutic-implication",
                              "53040-2", "51961-1", "83009-1"})
_PRESENT, _ABSENT = "LA9633-4", "LA9634-2"

_BAD_WORDS = re.compile(
    r"\b(see|report|unknown|pending|fail(ed|ure)?|n/?a|none|not|no call|error|inconclusive|invalid|"
    r"undetermined|comment|attached|scanned)\b|\?", re.I)
_ALLELE_OK = re.compile(r"[\w*.:+\-<>≥()\[\];=,' ]{1,80}")
_SUBALLELE = re.compile(r"(\*\d+[A-Z]?)\.\d{3}")
_PHENO = re.compile(
    r"(?<![\w-])(?:(?:likely|possible)\s+)?(?:ultra-?rapid|rapid|normal|intermediate|poor)\s+metaboli[sz]ers?\b"
    r"|\b(?:possible\s+)?(?:decreased|increased|normal|poor)\s+function\b"
    r"|\bindeterminate\b"
    r"|\bdeficient(?:\s+with\s+CNSHA)?\b"
    r"|\bmalignant\s+hyperthermia\s+susceptib\w*"
    r"|\buncertain\s+susceptibility\b"
    r"|\b(?:normal|increased|uncertain)\s+risk\s+of\s+aminoglycoside[- ]induced\s+hearing\s+loss\b"
    r"|\bivacaftor\s+(?:non-?)?responsive(?:\s+in\s+CF\s+patients)?"
    r"|\b(?:un)?favou?rable\s+response\s+genotype\b"
    r"|\b(?:slow|intermediate|rapid)\s+acetylator\b"
    r"|(?<![\w-])-1639\s*[GA]{2}\b"
    r"|\b(?:high|low)\s+risk\b",
    re.I,
)
_RISK = re.compile(r"^(?:high|low)\s+risk$", re.I)
_HLA_STATUS = (
    r"(?P<status>not\s+detected|not\s+present|non-?carrier|negative|absent|positive|detected|present|carrier)"
)
_HLA_ALLELE = r"(?P<gene>HLA-[A-Z]{1,4}\d?)?\s*\*\s*(?P<allele>\d{2,4}(?::\d{2,4}){1,3}[A-Z]?)"
_HLA_PRESENCE = re.compile(_HLA_ALLELE + r"\s*(?:allele\s*)?(?:[:\-–=]\s*)?" + _HLA_STATUS + r"\b", re.I)
_HLA_PRESENCE_REV = re.compile(_HLA_STATUS + r"\s+(?:for\s+)?" + _HLA_ALLELE, re.I)
_HLA_ALLELE_ONLY = re.compile(r"^\s*" + _HLA_ALLELE + r"\s*$", re.I)
_HLA_IN_TEXT = re.compile(r"(?P<gene>HLA-[A-Z]{1,4}\d?)\s*\*\s*(?P<allele>\d{2,4}(?::\d{2,4}){1,3}[A-Z]?)", re.I)
_HGNC_ID = re.compile(r"(?:HGNC:)?\d+", re.I)
_PV_ID = re.compile(r"PV\d+")
_GENOMIC_WORDS = re.compile(r"genotyp|diplotyp|phenotyp|haplotyp|metaboli|allele|\bstar\b|pgx|pharmacogen", re.I)
_SPACES = re.compile(r"\s+")
_POSITIVE = frozenset({"positive", "detected", "present", "carrier"})


# ------------------------------------------------------------------------------------------ code tables


@dataclass(frozen=True, slots=True)
class _Tables:
    genes: frozenset[str]
    by_hgnc: dict[str, str]
    by_upper: dict[str, str]
    gene_re: re.Pattern[str]
    answers: dict[str, str]
    single_allele: frozenset[str]
    hla: frozenset[str]
    systems: dict[str, frozenset[str]]


def tables(path: Path | None = None) -> _Tables:
    """Code tables from ``fhir_profiles/codes.yaml`` (located and loaded once)."""
    return _tables(path) if path is not None else _default_tables()


@lru_cache(maxsize=1)
def _default_tables() -> _Tables:
    return _tables(codes_file())


@lru_cache(maxsize=4)
def _tables(path: Path) -> _Tables:
    if not path.is_file():
        raise RuntimeError(f"code table {path} is missing: pgx-cds needs fhir_profiles/codes.yaml")
    data = yamlfile.safe_load(path.read_text(encoding="utf-8"))
    by_hgnc: dict[str, str] = {}
    by_upper: dict[str, str] = {}
    for sym, info in data["genes"].items():
        hgnc = str(info["hgnc"])
        by_hgnc[hgnc.upper()] = sym
        by_hgnc[hgnc.split(":", 1)[-1]] = sym
        by_upper[sym.upper()] = sym
        for alias in info.get("aliases", []) or []:
            by_upper[str(alias).upper()] = sym
    names = sorted(by_upper, key=len, reverse=True)
    gene_re = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(re.escape(n) for n in names) + r")(?![A-Za-z0-9])", re.I)
    systems = {k: frozenset([v] if isinstance(v, str) else v) for k, v in data["systems"].items()}
    return _Tables(frozenset(data["genes"]), by_hgnc, by_upper, gene_re, dict(data["loinc_answers"]),
                   frozenset(data["single_allele_genes"]), frozenset(data["hla_genes"]), systems)


def gene_for_hgnc(code: str) -> str | None:
    """Gene symbol for ``HGNC:2621`` or ``2621``."""
    t = tables()
    return t.by_hgnc.get(code.strip().upper()) or t.by_hgnc.get(code.strip().split(":", 1)[-1])


# ------------------------------------------------------------------------------------------ candidates


@dataclass(slots=True)
class _Cand:
    gene: str
    ref: str | None
    effective: datetime | None
    status: str
    style: str
    diplotype: str | None = None
    phenotype: str | None = None
    allele: str | None = None  # HLA presence: "*57:01"
    present: bool | None = None
    derived_from: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    drug: str | None = None


@dataclass(slots=True)
class _Ctx:
    cands: list[_Cand] = field(default_factory=list)  # genotype-level results (diplotype / presence / phenotype)
    impls: list[_Cand] = field(default_factory=list)  # therapeutic implications (phenotype, maybe no gene)
    haplos: list[_Cand] = field(default_factory=list)  # single haplotypes
    variants: list[_Cand] = field(default_factory=list)  # non-HLA variant calls
    unreadable: list[UnreadableResult] = field(default_factory=list)
    only: frozenset[str] | None = None  # read only results for these genes (None: all)
    skipped: set[str] = field(default_factory=set)  # references of the Observations not read (other genes)


class _Unreadable(Exception):
    def __init__(self, reason: str, gene: str | None = None, text: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.gene, self.text = reason, gene, text


class _NotPgx(Exception):
    """The resource is not a pharmacogenomic result (ignored)."""


# ------------------------------------------------------------------------------------------ public API


def build_profile(patient: PatientData, genes: Collection[str] | None = None) -> GenomicProfile:
    """One :class:`GeneResult` per gene (newest result wins; disagreements named), plus unreadable results.

    ``genes``: only these genes' results are needed (None: all). A Genotype or Haplotype Observation whose
    gene studied is another gene is then not read: everything it can give (results, conflicts, unreadable
    results) belongs to that gene, as do therapeutic implications derived from it without a gene of their
    own. Every other Observation is read as without ``genes``, so what a needed gene gets is the same."""
    ctx = _Ctx(only=frozenset(genes) if genes is not None else None)
    seen: set[str] = set()
    for obs in patient.observations:
        ref = _ref(obs)
        if ref is not None:
            if ref in seen:  # the same Observation delivered twice (e.g. entry and report result)
                continue
            seen.add(ref)
        try:
            _read(obs, ref, ctx)
        except _NotPgx:
            continue
        except _Unreadable as u:
            ctx.unreadable.append(UnreadableResult(observation=ref, gene=u.gene, text=_clip(u.text), reason=u.reason))
        except Exception as e:  # noqa: BLE001 - a bad resource must never break the request
            ctx.unreadable.append(UnreadableResult(observation=ref, reason=f"could not be parsed ({type(e).__name__})"))
    genes = _combine(ctx)
    return GenomicProfile(
        patient_id=patient.patient_id,
        genes=genes,
        unreadable=ctx.unreadable,
        source="fhir" if patient.fhir_calls else "prefetch",
    )


# ------------------------------------------------------------------------------------------ reading


def _read(obs: Any, ref: str | None, ctx: _Ctx) -> None:
    if not isinstance(obs, dict) or obs.get("resourceType") != "Observation":
        raise _NotPgx
    t = tables()
    code = obs.get("code") if isinstance(obs.get("code"), dict) else {}
    kind, holder = _kind(obs, code)
    comp_gene, comp_gene_raw = _component_gene(obs)
    if ctx.only is not None and comp_gene is not None and comp_gene not in ctx.only and kind in (_GENOTYPE, _HAPLOTYPE):
        # its values are checked against the gene studied: all it can give is about that gene
        if ref is not None:
            ctx.skipped.update((ref, _type_id(ref)))
        raise _NotPgx
    if comp_gene_raw and comp_gene is None:
        if kind is None:
            raise _NotPgx
        # a gene studied we do not know: only PGx genes matter; unknown HGNC ids with no symbol are unreadable
        if not _HGNC_ID.fullmatch(comp_gene_raw):
            raise _NotPgx
    code_text = _cc_text(code)
    code_gene = _gene_in(code_text)
    if kind is None:
        # non-standard code: accept when the code names a PGx gene and the result looks genomic
        if not (comp_gene or code_gene) or not _GENOMIC_WORDS.search(code_text or ""):
            raise _NotPgx
        kind, holder = _GENOTYPE, obs
    status = obs.get("status") if isinstance(obs.get("status"), str) else "unknown"
    if status in _IGNORED:
        raise _NotPgx
    gene_hint = comp_gene or code_gene
    if status not in _USED and status != "preliminary":
        raise _Unreadable(f"status '{status}' is not a usable result", gene_hint)
    effective = observation_time(obs)
    cand = _Cand(gene=gene_hint or "", ref=ref, effective=effective, status=status, style="")
    if status == "preliminary":
        cand.notes.append(f"preliminary result ({ref or 'Observation'})")
    cand.derived_from = [r["reference"] for r in _list(obs.get("derivedFrom"))
                         if isinstance(r, dict) and isinstance(r.get("reference"), str)]

    if kind in (_IMPLICATION, _STU1):
        _read_implication(obs, kind, cand, comp_gene, ctx)
        return
    if kind == _VARIANT:
        _read_variant(holder, code_text, cand, comp_gene, t, ctx)
        return
    _read_genotype(holder, kind, code_text, cand, comp_gene, code_gene, t, ctx)


def _kind(obs: dict[str, Any], code: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    for c in _list(code.get("coding")):
        if not isinstance(c, dict):
            continue
        k = c.get("code")
        if k in _LOINC_KIND and c.get("system") in (None, "http://loinc.org"):
            return _LOINC_KIND[k], obs
        if k == "therapeutic-implication":
            return _IMPLICATION, obs
    # panel with the genotype in a component (seen in some lab feeds)
    for comp in _list(obs.get("component")):
        ccode = comp.get("code") if isinstance(comp, dict) else None
        for c in _list(ccode.get("coding") if isinstance(ccode, dict) else None):
            if isinstance(c, dict) and c.get("code") in ("84413-4", "84414-2"):
                return _LOINC_KIND[c["code"]], comp
    return None, obs


def _read_genotype(holder: dict[str, Any], kind: str, code_text: str | None, cand: _Cand, comp_gene: str | None,
                   code_gene: str | None, t: _Tables, ctx: _Ctx) -> None:
    values = _values(holder)
    if not values:
        raise _Unreadable(_no_value_reason(holder), cand.gene or None)
    # coded presence (LA9633-4 Present / LA9634-2 Absent) on a Genotype/Haplotype
    for style, text, code in values:
        if code in (_PRESENT, _ABSENT):
            _presence_from_context(holder, code_text, code == _PRESENT, cand, comp_gene, ctx, "coded")
            return
    first_text = values[0][1]
    last_error: _Unreadable | None = None
    for style, text, _code in values:
        try:
            parsed = _parse_value(text, style, comp_gene or code_gene, t, haplotype=kind == _HAPLOTYPE)
        except _Unreadable as u:
            last_error = u
            continue
        for gene, dip, pheno, allele, present, notes in parsed:
            if comp_gene and gene != comp_gene:
                raise _Unreadable(f"gene in value ({gene}) differs from gene studied ({comp_gene})", comp_gene, text)
            c = _Cand(gene=gene, ref=cand.ref, effective=cand.effective, status=cand.status,
                      style=style if (dip or allele) else "phenotype-only", diplotype=dip, phenotype=pheno,
                      allele=allele, present=present, derived_from=cand.derived_from,
                      notes=[*cand.notes, *notes])
            if allele is not None and style not in ("gl-string", "clinvar-coding"):
                c.style = "hla-presence-text" if style == "text" else "hla-presence-coded"
            if kind == _HAPLOTYPE and dip and "/" not in dip and gene not in t.single_allele:
                ctx.haplos.append(c)
            else:
                ctx.cands.append(c)
        return
    if last_error is not None:
        raise _Unreadable(last_error.reason, last_error.gene or cand.gene or None, last_error.text or first_text)
    raise _Unreadable("value not recognised as a diplotype or phenotype", cand.gene or None, first_text)


def _read_variant(holder: dict[str, Any], code_text: str | None, cand: _Cand, comp_gene: str | None,
                  t: _Tables, ctx: _Ctx) -> None:
    values = _values(holder)
    present: bool | None = None
    for _style, text, code in values:
        if code in (_PRESENT, _ABSENT):
            present = code == _PRESENT
            break
        low = (text or "").strip().lower()
        if low in ("present", "positive", "detected"):
            present = True
        elif low in ("absent", "negative", "not detected"):
            present = False
    # HLA presence written as text in the value ("HLA-B*57:01 positive")
    for _style, text, _code in values:
        m = _HLA_PRESENCE.search(text) or _HLA_PRESENCE_REV.search(text)
        if m:
            _add_presence(m, comp_gene, cand, ctx, "hla-presence-text")
            return
    if present is None:
        raise _Unreadable("variant result without Present/Absent value", comp_gene, values[0][1] if values else None)
    if _presence_from_context(holder, code_text, present, cand, comp_gene, ctx, "coded", strict=False):
        return
    gene = comp_gene or _gene_in(code_text)
    if not gene:
        raise _NotPgx  # a variant call for a gene we do not handle
    cand.gene, cand.present, cand.style = gene, present, "variant"
    ctx.variants.append(cand)


def _presence_from_context(holder: dict[str, Any], code_text: str | None, present: bool, cand: _Cand,
                           comp_gene: str | None, ctx: _Ctx, how: str, strict: bool = True) -> bool:
    """Find the HLA allele a Present/Absent answer is about (components, code text)."""
    texts = [code_text or ""]
    for comp in _list(holder.get("component")):
        if isinstance(comp, dict):
            texts.extend(tx for _s, tx, _c in _values(comp))
    for tx in texts:
        m = _HLA_IN_TEXT.search(tx or "")
        if m:
            gene = _hla_gene(m.group("gene"))
            if comp_gene and gene != comp_gene:
                raise _Unreadable(f"allele {m.group(0)} does not belong to gene studied {comp_gene}", comp_gene, tx)
            cand.gene, cand.allele, cand.present = gene, "*" + m.group("allele"), present
            cand.style = f"hla-presence-{how}"
            ctx.cands.append(cand)
            return True
    if strict:
        raise _Unreadable("Present/Absent result without an identifiable allele", comp_gene, code_text)
    return False


def _add_presence(m: re.Match[str], gene_hint: str | None, cand: _Cand, ctx: _Ctx, style: str) -> None:
    gene = _hla_gene(m.group("gene")) if m.group("gene") else gene_hint
    if not gene or gene not in tables().hla:
        raise _Unreadable("HLA allele statement without an HLA gene", gene_hint, m.group(0))
    cand.gene, cand.allele = gene, "*" + m.group("allele")
    cand.present = m.group("status").lower().replace("  ", " ") in _POSITIVE
    cand.style = style
    ctx.cands.append(cand)


def _read_implication(obs: dict[str, Any], kind: str, cand: _Cand, comp_gene: str | None, ctx: _Ctx) -> None:
    texts: list[tuple[str, str]] = []  # (style, phenotype text)
    if kind == _STU1:
        texts.extend(("therapeutic-implication-stu1", tx) for _s, tx, _c in _values(obs))
    for comp in _list(obs.get("component")):
        if not isinstance(comp, dict):
            continue
        codes = _codes(comp.get("code"))
        if codes & _IMPL_COMPONENTS:
            style = ("therapeutic-implication-stu2" if "predicted-therapeutic-implication" in codes
                     else "therapeutic-implication-stu3" if "therapeutic-implication" in codes
                     else "therapeutic-implication-stu1")
            texts.extend((style, tx) for _s, tx, _c in _values(comp))
        elif _MED_ASSESSED in codes:
            vals = _values(comp)
            cand.drug = vals[0][1] if vals else None
    if kind == _IMPLICATION and not texts:  # STU2/3 without the component: try the value
        texts.extend(("therapeutic-implication", tx) for _s, tx, _c in _values(obs))
    if not texts:
        raise _Unreadable("therapeutic implication without a phenotype", comp_gene)
    style, text = texts[0]
    gene = comp_gene or _gene_in(text)
    pres = _HLA_PRESENCE.search(text) or _HLA_PRESENCE_REV.search(text)
    if pres:
        cand.style = style
        _add_presence(pres, gene, cand, ctx, style)
        return
    m = _PHENO.search(text)
    if not m:
        raise _Unreadable("therapeutic implication value not recognised", gene, text)
    cand.gene, cand.phenotype, cand.style = gene or "", _clean_pheno(m.group(0)), style
    ctx.impls.append(cand)


# ------------------------------------------------------------------------------------------ value parsing


_Parsed = list[tuple[str, str | None, str | None, str | None, bool | None, list[str]]]
_PARSED: dict[tuple[str, str, str | None, bool, int], tuple[_Tables, _Parsed]] = {}
_PARSED_MAX = 4096


def _parse_value(text: str, style: str, gene_hint: str | None, t: _Tables, haplotype: bool = False) -> _Parsed:
    """(gene, diplotype, phenotype, hla allele, present, notes) tuples for one value text.

    A pure function of its arguments and the gene tables (as :func:`_tokens`): a population repeats few
    value texts, so each distinct one is parsed once (bounded; a value that raises is parsed every time).
    The caller only reads the answer."""
    key = (text, style, gene_hint, haplotype, id(t))
    hit = _PARSED.get(key)
    if hit is not None and hit[0] is t:  # the entry holds the tables, so their id is not reused while it lives
        return list(hit[1])
    out = _parse_value_text(text, style, gene_hint, t, haplotype)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[key] = (t, out)
    return list(out)


def _parse_value_text(text: str, style: str, gene_hint: str | None, t: _Tables, haplotype: bool = False) -> _Parsed:
    if style == "gl-string" or text.lower().startswith("hla#"):
        return _parse_gl(text, gene_hint, t)
    m = _HLA_PRESENCE.search(text) or _HLA_PRESENCE_REV.search(text)
    if m:
        gene = _hla_gene(m.group("gene")) if m.group("gene") else gene_hint
        if not gene or gene not in t.hla:
            raise _Unreadable("HLA allele statement without an HLA gene", gene_hint, text)
        return [(gene, None, None, "*" + m.group("allele"), m.group("status").lower() in _POSITIVE, [])]
    m = _HLA_ALLELE_ONLY.match(text)
    if m and (m.group("gene") or (gene_hint in t.hla)):
        # a Genotype valued with one HLA allele (IG HLA-B*15:02 example): the allele is carried
        gene = _hla_gene(m.group("gene")) if m.group("gene") else gene_hint
        return [(gene, None, None, "*" + m.group("allele"), True, [])]  # type: ignore[list-item]
    text_gene = _gene_in(text)
    if gene_hint and text_gene and text_gene != gene_hint:
        raise _Unreadable(f"gene in value ({text_gene}) differs from gene studied ({gene_hint})", gene_hint, text)
    gene = gene_hint or text_gene
    if not gene:
        raise _Unreadable("gene not identified", None, text)
    if gene not in t.genes:
        raise _NotPgx
    whole = clean_result_text(gene, text)
    if whole and names_known_alleles(gene, whole):  # allele names win over phenotype words inside them
        dip = _diplotype(whole, gene, t, single_ok=haplotype)
        if dip is not None:
            return [(gene, dip, None, None, None, [])]
    pheno = None
    rest = text
    pm = _PHENO.search(text)
    if pm:
        pheno = _clean_pheno(pm.group(0))
        rest = (text[: pm.start()] + " " + text[pm.end():])
    rest = clean_result_text(gene, rest)  # shared with `pgx-cds phenotype`: allele punctuation is kept
    if not rest:
        if pheno and not _RISK.match(pheno):
            return [(gene, None, pheno, None, None, [])]
        raise _Unreadable("value not recognised as a diplotype or phenotype", gene, text)
    dip = _diplotype(rest, gene, t, single_ok=haplotype)
    if dip is None:
        raise _Unreadable("value not recognised as a diplotype or phenotype", gene, text)
    return [(gene, dip, None if pheno and _RISK.match(pheno) else pheno, None, None, [])]


def _diplotype(rest: str, gene: str, t: _Tables, single_ok: bool = False) -> str | None:
    """``a/b`` from a cleaned value; a single allele only for haplotypes and single-allele genes.

    Whether the text is a diplotype is decided by the same parser the phenotype engine and the CLI use
    (``parse_diplotype``), so what we keep here is read there the same way."""
    tokens = _tokens(gene, rest)
    if tokens is None or not all(_allele_ok(p) for p in tokens):
        return None
    parts = [p.strip() for p in rest.split("/")]
    if len(parts) == 1:
        if len(tokens) == 1 and not (single_ok or gene in t.single_allele):
            return None
        return _strip_gene(parts[0], gene).strip()
    if len(parts) != 2:
        return None
    parts = [_strip_gene(p, gene).strip() for p in parts]
    if not all(_allele_ok(p) for p in parts):
        return None
    return f"{parts[0]}/{parts[1]}"


@lru_cache(maxsize=4096)  # parse_diplotype with the shipped gene tables: a pure function of its arguments
def _tokens(gene: str, text: str) -> tuple[str, ...] | None:
    return parse_diplotype(gene, text)


def _allele_ok(part: str) -> bool:
    return bool(part) and _ALLELE_OK.fullmatch(part) is not None and _BAD_WORDS.search(part) is None


def _parse_gl(text: str, gene_hint: str | None, t: _Tables
              ) -> list[tuple[str, str | None, str | None, str | None, bool | None, list[str]]]:
    """GL String (``hla#3.33.0#HLA-B*08:01+HLA-B*40:01``): one result per locus."""
    body = text.rsplit("#", 1)[-1].strip()
    if any(ch in body for ch in "|~"):
        raise _Unreadable("GL String with genotype ambiguity or phasing is not supported", gene_hint, text)
    out = []
    for locus in body.split("^"):
        notes: list[str] = []
        if "+" in locus:
            sides = locus.split("+")
            if len(sides) != 2 or any("/" in s for s in sides):
                raise _Unreadable("ambiguous GL String (allele list) is not supported", gene_hint, text)
        else:
            sides = locus.split("/")
            if len(sides) == 2:
                notes.append("GL String alleles separated by '/' read as the two alleles (genomics-operations style)")
            elif len(sides) != 1:
                raise _Unreadable("ambiguous GL String (allele list) is not supported", gene_hint, text)
        alleles = []
        gene = None
        for s in sides:
            m = _HLA_ALLELE_ONLY.match(s)
            if not m or not m.group("gene"):
                raise _Unreadable("GL String allele not recognised", gene_hint, text)
            g = _hla_gene(m.group("gene"))
            if gene and g != gene:
                raise _Unreadable("GL String mixes loci without '^'", gene_hint, text)
            gene = g
            alleles.append("*" + m.group("allele"))
        if gene not in t.genes:
            continue
        if len(alleles) == 1:
            out.append((gene, None, None, alleles[0], True, notes))
        else:
            out.append((gene, f"{alleles[0]}/{alleles[1]}", None, None, None, notes))
    if not out:
        raise _NotPgx
    return out


# ------------------------------------------------------------------------------------------ combining


def _combine(ctx: _Ctx) -> dict[str, GeneResult]:
    t = tables()
    by_ref: dict[str, _Cand] = {}
    for c in ctx.cands:
        if c.ref:
            by_ref[c.ref] = c
            if "/" in c.ref:
                by_ref[_type_id(c.ref)] = c
    # therapeutic implications: attach to the genotype they derive from, else a phenotype-only result
    for imp in ctx.impls:
        src = next((by_ref[k] for r in imp.derived_from for k in (r, _type_id(r)) if k in by_ref), None)
        if src is None and not imp.gene and ctx.skipped and any(
                k in ctx.skipped for r in imp.derived_from for k in (r, _type_id(r))):
            continue  # derived from a result of a gene not needed: it would have been that gene's
        if not imp.gene and src is not None:
            imp.gene = src.gene
        if not imp.gene:
            ctx.unreadable.append(UnreadableResult(observation=imp.ref, text=imp.phenotype,
                                                   reason="therapeutic implication without an identifiable gene"))
            continue
        if src is not None and src.gene == imp.gene:
            if _RISK.match(imp.phenotype or ""):
                src.notes.append(_impl_note(imp))
            elif src.phenotype is None:
                src.phenotype = imp.phenotype
                src.notes.append(_impl_note(imp))
            elif _pheno_key(src.phenotype) != _pheno_key(imp.phenotype):
                src.notes.append(f"lab implication {imp.ref} states '{imp.phenotype}', the genotype result "
                                 f"states '{src.phenotype}'")
            continue
        if _RISK.match(imp.phenotype or ""):
            ctx.unreadable.append(UnreadableResult(observation=imp.ref, gene=imp.gene, text=imp.phenotype,
                                                   reason="risk implication without the genotype it derives from"))
            continue
        imp.notes.append(_impl_note(imp))
        ctx.cands.append(imp)
    # single haplotypes: a pair makes a diplotype when the gene has no genotype result
    with_geno = {c.gene for c in ctx.cands if c.diplotype or c.allele}
    haplos: dict[str, list[_Cand]] = {}
    for h in ctx.haplos:
        if h.gene not in with_geno:
            haplos.setdefault(h.gene, []).append(h)
    for gene, hs in haplos.items():
        if len(hs) == 2:
            a, b = hs
            dated = [x.effective for x in hs if x.effective]
            ctx.cands.append(_Cand(gene=gene, ref=a.ref, effective=max(dated) if dated else None,
                                   status="preliminary" if "preliminary" in (a.status, b.status) else a.status,
                                   style="haplotype-pair", diplotype=f"{a.diplotype}/{b.diplotype}",
                                   notes=[*a.notes, *b.notes,
                                          f"diplotype assembled from Haplotype results {a.ref} and {b.ref}"]))
        else:
            for h in hs:
                ctx.unreadable.append(UnreadableResult(
                    observation=h.ref, gene=gene, text=h.diplotype,
                    reason=f"{len(hs)} haplotype result(s) and no genotype: cannot derive a diplotype"))
    # variant-level calls for a gene with no genotype/phenotype result
    have = {c.gene for c in ctx.cands}
    for v in ctx.variants:
        if v.gene not in have and v.gene in t.genes:
            ctx.unreadable.append(UnreadableResult(
                observation=v.ref, gene=v.gene,
                reason="variant-level result without a genotype or phenotype: cannot derive a diplotype"))

    groups: dict[str, list[_Cand]] = {}
    for c in ctx.cands:
        if c.gene:
            groups.setdefault(c.gene, []).append(c)
    return {gene: (_hla_result(gene, cs) if gene in t.hla else _pick(gene, cs)) for gene, cs in groups.items()}


def _order_key(c: _Cand) -> tuple[Any, ...]:
    return (c.effective.timestamp() if c.effective else float("-inf"), c.diplotype is not None,
            c.status in _USED)


def _pick(gene: str, cands: list[_Cand]) -> GeneResult:
    ranked = sorted(cands, key=_order_key, reverse=True)
    win = ranked[0]
    notes = list(win.notes)
    conflicts: list[str] = []
    phenotype = win.phenotype
    for other in ranked[1:]:
        if other.ref == win.ref:
            continue
        same_time = other.effective == win.effective
        if win.diplotype and other.diplotype:
            disagree = _dip_key(win.diplotype) != _dip_key(other.diplotype)
        elif phenotype and other.phenotype:
            disagree = _pheno_key(phenotype) != _pheno_key(other.phenotype)
        elif win.diplotype and other.phenotype and phenotype is None:
            if same_time:
                phenotype = other.phenotype
                notes.extend(n for n in other.notes if n not in notes)
                continue
            notes.append(f"older phenotype-only result {other.ref} ('{other.phenotype}'{_date(other)}) "
                         "was not used")
            continue
        elif other.diplotype and not win.diplotype:
            notes.append(f"older genotype result {other.ref} ({other.diplotype}{_date(other)}) was not used; "
                         f"the newer phenotype-only result {win.ref} is")
            continue
        else:
            disagree = False
        if disagree:
            conflicts.append(other.ref or "an unidentified Observation")
            notes.append(
                f"conflicting results: {win.ref} ({_describe(win)}{_date(win)}) and {other.ref} "
                f"({_describe(other)}{_date(other)}); the newest ({win.ref}) is used")
    return GeneResult(gene=gene, diplotype=win.diplotype, reported_phenotype=phenotype, observation=win.ref,
                      effective=win.effective, status=win.status, source_style=win.style,
                      notes=notes, conflicts_with=conflicts)


def _hla_result(gene: str, cands: list[_Cand]) -> GeneResult:
    dips = [c for c in cands if c.diplotype]
    presence = [c for c in cands if c.allele]
    base = _pick(gene, dips) if dips else None
    notes = list(base.notes) if base else []
    conflicts = list(base.conflicts_with) if base else []
    statements: list[str] = []
    newest_presence: _Cand | None = None
    by_allele: dict[str, list[_Cand]] = {}
    for c in presence:
        by_allele.setdefault(c.allele or "", []).append(c)
    for allele, cs in by_allele.items():
        ranked = sorted(cs, key=_order_key, reverse=True)
        win = ranked[0]
        if newest_presence is None or _order_key(win) > _order_key(newest_presence):
            newest_presence = win
        notes.extend(n for n in win.notes if n not in notes)
        statements.append(f"{gene}{allele} {'positive' if win.present else 'negative'}")
        for other in ranked[1:]:
            if other.present != win.present and other.ref != win.ref:
                conflicts.append(other.ref or "an unidentified Observation")
                notes.append(f"conflicting results: {win.ref} ({gene}{allele} "
                             f"{'positive' if win.present else 'negative'}{_date(win)}) and {other.ref} "
                             f"({'positive' if other.present else 'negative'}{_date(other)}); the newest is used")
        if base and base.diplotype:
            carried = any(_allele_match(a, allele) for a in base.diplotype.split("/"))
            if carried != bool(win.present):
                conflicts.append(win.ref or "an unidentified Observation")
                notes.append(f"conflicting results: genotype {base.observation} ({base.diplotype}) and "
                             f"{win.ref} ({gene}{allele} {'positive' if win.present else 'negative'})")
    if base is not None:
        return base.model_copy(update={"reported_phenotype": "; ".join(statements) or base.reported_phenotype,
                                       "notes": notes, "conflicts_with": conflicts})
    assert newest_presence is not None
    return GeneResult(gene=gene, diplotype=None, reported_phenotype="; ".join(statements),
                      observation=newest_presence.ref, effective=newest_presence.effective,
                      status=newest_presence.status, source_style=newest_presence.style, notes=notes,
                      conflicts_with=conflicts)


def _allele_match(carried: str, allele: str) -> bool:
    """``*57:01:01`` carries ``*57:01`` (field-boundary prefix match)."""
    carried, allele = carried.strip(), allele.strip()
    return carried == allele or carried.startswith(allele + ":")


# ------------------------------------------------------------------------------------------ small helpers


def _values(holder: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(style, text, code) of an element's value[x], best first."""
    out: list[tuple[str, str, str | None]] = []
    t = tables()
    cc = holder.get("valueCodeableConcept")
    if isinstance(cc, str):  # a bare string where a CodeableConcept belongs: read as its text
        cc = {"text": cc}
    if isinstance(cc, dict):
        for c in _list(cc.get("coding")):
            if not isinstance(c, dict):
                continue
            system, code, display = c.get("system"), _s(c.get("code")), _s(c.get("display"))
            if system in t.systems["glstring"] or (code or "").lower().startswith("hla#"):
                if code:
                    out.append(("gl-string", code, code))
            elif system in t.systems["pharmvar"]:
                for v in (code, display):
                    if v and not _PV_ID.fullmatch(v):
                        out.append(("pharmvar-coding", v, code))
            elif system in t.systems["clinvar"]:
                if display:
                    out.append(("clinvar-coding", display, code))
            elif system == "http://loinc.org" and code in t.answers:
                out.append(("loinc-answer", display or t.answers[code], code))
            else:
                for v in (display, code):
                    if v:
                        out.append(("coding", v, code))
        text = _s(cc.get("text"))
        if text:
            out.append(("text", text, None))
    for key in ("valueString", "valueCode"):
        v = _s(holder.get(key))
        if v:
            out.append(("text", v, None))
    if isinstance(holder.get("valueBoolean"), bool):
        out.append(("text", "present" if holder["valueBoolean"] else "absent", None))
    return out


def _no_value_reason(holder: dict[str, Any]) -> str:
    dar = holder.get("dataAbsentReason")
    if isinstance(dar, dict):
        return f"no result value (dataAbsentReason: {_cc_text(dar) or 'given'})"
    return "no result value"


def _component_gene(obs: dict[str, Any]) -> tuple[str | None, str | None]:
    """(known gene symbol, raw gene text) from the gene-studied component."""
    for comp in _list(obs.get("component")):
        if not isinstance(comp, dict) or _GENE_STUDIED not in _codes(comp.get("code")):
            continue
        # candidates in the order they are trusted: per coding an HGNC id, then its display and code;
        # then the concept's text; then a valueString
        candidates: list[tuple[bool, str]] = []  # (is an HGNC id, value)
        cc = comp.get("valueCodeableConcept")
        if isinstance(cc, dict):
            for c in _list(cc.get("coding")):
                if not isinstance(c, dict):
                    continue
                code, display = _s(c.get("code")), _s(c.get("display"))
                if code and _HGNC_ID.fullmatch(code):
                    if not candidates and (g := gene_for_hgnc(code)):
                        return g, code  # the first candidate, and a known gene (the usual case)
                    candidates.append((True, code))
                candidates += [(False, v) for v in (display, code) if v]
            candidates += [(False, v) for v in (_s(cc.get("text")),) if v]
        candidates += [(False, v) for v in (_s(comp.get("valueString")),) if v]
        for is_hgnc, v in candidates:
            g = gene_for_hgnc(v) if is_hgnc else tables().by_upper.get(v.strip().upper())
            if g:
                return g, v
        return None, next((v for is_hgnc, v in candidates if not is_hgnc), None)
    return None, None


def _gene_in(text: str | None) -> str | None:
    if not text:
        return None
    m = tables().gene_re.search(text)
    return tables().by_upper.get(m.group(1).upper()) if m else None


def _hla_gene(raw: str) -> str:
    return tables().by_upper.get(raw.upper(), raw.upper())


_strip_gene = strip_gene


def _clean_pheno(text: str) -> str:
    return _SPACES.sub(" ", text.strip())


def _pheno_key(text: str | None) -> str:
    t = (text or "").lower().replace("metaboliser", "metabolizer").replace("ultra-rapid", "ultrarapid")
    t = re.sub(r"metabolizers\b", "metabolizer", t)
    return re.sub(r"\s+", " ", t).strip()


def _dip_key(dip: str) -> tuple[str, ...]:
    parts = [_SUBALLELE.sub(r"\1", p.strip().replace(" ", "")).lower() for p in dip.split("/")]
    return tuple(sorted(parts))


def _describe(c: _Cand) -> str:
    return c.diplotype or c.phenotype or "?"


def _date(c: _Cand) -> str:
    return f", {c.effective.date().isoformat()}" if c.effective else ""


def _impl_note(imp: _Cand) -> str:
    drug = f" for {imp.drug}" if imp.drug else ""
    return f"lab-reported implication{drug}: {imp.phenotype} ({imp.ref})"


def _ref(obs: Any) -> str | None:
    if not isinstance(obs, dict):
        return None
    if isinstance(obs.get(REF_KEY), str):
        return obs[REF_KEY]
    rid = obs.get("id")
    return f"Observation/{rid}" if isinstance(rid, str) and rid else None


def _type_id(ref: str) -> str:
    segs = ref.split("/")
    return "/".join(segs[-2:]) if len(segs) >= 2 else ref


def _codes(cc: Any) -> set[str]:
    if not isinstance(cc, dict):
        return set()
    return {c["code"] for c in _list(cc.get("coding")) if isinstance(c, dict) and isinstance(c.get("code"), str)}


def _cc_text(cc: Any) -> str | None:
    if not isinstance(cc, dict):
        return None
    text = _s(cc.get("text"))
    if text:
        return text
    for c in _list(cc.get("coding")):
        if isinstance(c, dict) and _s(c.get("display")):
            return c["display"]
    return None


def _clip(text: str | None, n: int = 200) -> str | None:
    return text if text is None or len(text) <= n else text[: n - 1] + "…"


def _list(value: Any) -> list[Any]:
    """A FHIR array; a single object where an array belongs (``category``, ``coding``, ``component``,
    ``derivedFrom`` sent as an object: seen from the CDS Hooks sandbox and EHRs) is read as a list of one."""
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, dict) else []


def _s(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
