"""Phenoconversion: the patient's other medicines turn the genotype-predicted phenotype into an effective one.

Knowledge is data (`cards/phenoconversion.yaml`, format in cards/README.md): perpetrator drugs with their
strength per enzyme, and per gene the conversion rule (activity-score factor or phenotype mapping).

Perpetrators ("exposures") are found in the patient's current medications, in the other draft orders of the
same hook call (order-sign: every other draft; order-select: the selections and the other drafts), never in
medications whose status is not current (cards/medication_status.yaml, `phenoconversion`) or whose period has
ended. The guideline rule is then looked up with the effective phenotype/activity score; :func:`adjust`
rewrites a recommendation so the card names both values, the medicine and that the advice holds while it is
taken, and adds nothing when the advice does not change.
:func:`reverse` is the other direction: an inhibitor being ordered for a patient who takes an affected drug.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.pgx import medications as _meds
from service.pgx.context import DraftOrder, HasContext, Medication, PatientContext, as_context
from service.pgx.drugs import _RXNORM_SYSTEMS, DrugIndex, recognise_codes
from service.pgx.genes import format_activity
from service.pgx.guidelines import (
    INDETERMINATE,
    GuidelineFileError,
    _rxnorm,
    drug_name,
    line_of,
    read_yaml_with_lines,
)
from service.pgx.models import Action, DrugRef, GeneResult, GenomicProfile, PhenotypeCall, Recommendation
from service.pgx.policy import EnginePolicy, as_policy

if TYPE_CHECKING:
    from service.pgx.guidelines import Guideline
    from service.pgx.knowledge import Knowledge

FILE_NAME = "phenoconversion.yaml"
Strength = Literal["strong_inhibitor", "moderate_inhibitor", "weak_inhibitor",
                   "strong_inducer", "moderate_inducer", "weak_inducer"]
_STRENGTH_RANK: dict[str, int] = {"strong_inhibitor": 0, "moderate_inhibitor": 1, "weak_inhibitor": 2,
                                  "strong_inducer": 3, "moderate_inducer": 4, "weak_inducer": 5}
_WORD = re.compile(r"[a-z0-9]+")


# --------------------------------------------------------------------------------------------
# The data file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    title: str
    url: str

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith("https://"):
            raise ValueError("citation url must be https")
        return v


class Conversion(_Strict):
    """What one perpetrator strength does to one gene (exactly one of the three)."""

    activity_factor: Decimal | None = None
    phenotype: str | None = None
    phenotype_map: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one(self) -> "Conversion":
        given = [self.activity_factor is not None, self.phenotype is not None, bool(self.phenotype_map)]
        if sum(given) != 1:
            raise ValueError("give exactly one of activity_factor, phenotype, phenotype_map")
        if self.activity_factor is not None and not (0 <= self.activity_factor <= 1):
            raise ValueError("activity_factor must be between 0 and 1")
        return self


class GeneRule(_Strict):
    gene: str
    citation: str  # a key of `sources`
    note: str = ""
    enabled: bool = True
    convert: dict[Strength, Conversion] = Field(default_factory=dict)
    round_down_to: Decimal | None = None  # activity-score grid the converted score is rounded down to


class Effect(_Strict):
    gene: str
    strength: Strength


class Perpetrator(_Strict):
    name: str
    rxnorm: str | None = None  # RxNorm ingredient; None: recognised by name only
    brands: list[str] = Field(default_factory=list)
    effects: list[Effect] = Field(min_length=1)
    source: str  # a key of `sources`
    note: str | None = None
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _lower(cls, v: str) -> str:
        return drug_name(v)

    @field_validator("rxnorm")
    @classmethod
    def _rx(cls, v: str | None) -> str | None:
        return None if v is None else _rxnorm(v)


class Texts(_Strict):
    """Card wording (our own words), with {placeholders} filled by the engine."""

    changed: str = (
        "**Drug interaction changes this result.** The {gene} genotype{diplotype} predicts a {genotype} ({genotype_as}), "
        "but {medicines} ({strength} of {gene}{since}) lowers {gene} activity to that of a {effective} "
        "({effective_as}). The advice below is for the effective phenotype and applies while {medicines_short} "
        "is taken. On genotype alone it would be: {genotype_advice}"
    )
    unchanged: str = (
        "{gene}: {medicines} ({strength} of {gene}) gives an effective {effective} ({effective_as}) instead of "
        "{genotype} ({genotype_as}); the recommendation is the same either way."
    )
    noted: str = (
        "{gene}: {medicines} is a {strength} of {gene}; noted only, the phenotype is not converted for it."
    )
    summary_suffix: str = " (while on {medicines_short})"
    reverse_summary: str = "{perpetrator} with {drug}: {advice}"
    reverse_detail: str = (
        "The patient takes **{drug}**{drug_since}. {perpetrator_cap}, being ordered, is a {strength} of {gene}: "
        "with it the {gene} genotype{diplotype}, a {genotype} ({genotype_as}), behaves like a "
        "{effective} ({effective_as}), and CPIC's advice for {drug} changes while both are taken. Consider an alternative to "
        "{perpetrator} that does not inhibit {gene}, or review {drug} therapy as follows:"
    )
    pretest: str = (
        "{medicines} ({strength} of {gene}) is being taken: whatever the {gene} genotype, the effective phenotype "
        "while it is taken is expected to be {effective}; a genotype result still guides therapy once it is stopped."
    )


class PhenoconversionFile(_Strict):
    version: str
    sources: dict[str, Source]
    genes: list[GeneRule] = Field(default_factory=list)
    perpetrators: list[Perpetrator] = Field(default_factory=list)
    texts: Texts = Field(default_factory=Texts)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) else v


@dataclass
class PhenoKnowledge:
    """The loaded file with its indexes."""

    data: PhenoconversionFile
    rules: dict[str, GeneRule]
    perpetrators: dict[str, Perpetrator]
    index: DrugIndex
    path: Path | None = None
    single_words: dict[str, DrugRef] = field(default_factory=dict)  # lower-case one-word name/brand -> drug
    multi_words: list[tuple[str, DrugRef]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, ref in self.index.by_name.items():
            if _WORD.fullmatch(name):
                self.single_words[name] = ref
            else:
                self.multi_words.append((name, ref))

    def source_title(self, key: str) -> str:
        s = self.data.sources.get(key)
        return s.title if s else key


def load(path: Path) -> tuple[PhenoKnowledge | None, list[tuple[int | None, str]]]:
    """Read and validate the file: (knowledge, problems as (line, message))."""
    try:
        raw, lines = read_yaml_with_lines(path)
    except GuidelineFileError as exc:
        return None, list(exc.problems)
    if not isinstance(raw, dict):
        return None, [(1, "file must hold a mapping (see cards/README.md)")]
    try:
        data = PhenoconversionFile.model_validate(raw)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
            out.append((line_of(lines, loc), f"{'.'.join(str(x) for x in loc) or '(file)'}: {err['msg']}"))
        return None, out
    problems: list[tuple[int | None, str]] = []
    rules: dict[str, GeneRule] = {}
    for i, r in enumerate(data.genes):
        if r.gene in rules:
            problems.append((line_of(lines, ("genes", i)), f"duplicate gene {r.gene}"))
        if r.citation not in data.sources:
            problems.append((line_of(lines, ("genes", i, "citation")), f"citation {r.citation!r} is not in sources"))
        rules[r.gene] = r
    perps: dict[str, Perpetrator] = {}
    for i, p in enumerate(data.perpetrators):
        if p.name in perps:
            problems.append((line_of(lines, ("perpetrators", i)), f"duplicate perpetrator {p.name}"))
        if p.source not in data.sources:
            problems.append((line_of(lines, ("perpetrators", i, "source")), f"source {p.source!r} is not in sources"))
        perps[p.name] = p
    return PhenoKnowledge(data, rules, perps, _build_index(data.perpetrators), path), problems


def check(pk: PhenoKnowledge, genes: dict[str, Any]) -> list[tuple[str, str]]:
    """Cross-checks against the gene files: (severity, message)."""
    out: list[tuple[str, str]] = []
    for r in pk.data.genes:
        gd = genes.get(r.gene)
        if gd is None:
            out.append(("error", f"genes: {r.gene} has no file in genes/"))
            continue
        phenos = set(getattr(gd, "phenotypes", []) or [])
        for strength, conv in r.convert.items():
            if conv.activity_factor is not None and getattr(gd, "activity_score", None) is None:
                out.append(("error", f"genes: {r.gene} {strength}: activity_factor needs an activity-score gene"))
            targets = ([conv.phenotype] if conv.phenotype else []) + list(conv.phenotype_map.values()) + list(conv.phenotype_map)
            for t in targets:
                if phenos and t not in phenos:
                    out.append(("error", f"genes: {r.gene} {strength}: {t!r} is not a phenotype of genes/{r.gene}.yaml"))
    for p in pk.data.perpetrators:
        for e in p.effects:
            if e.gene not in pk.rules:
                out.append(("warning", f"perpetrators: {p.name}: {e.gene} has no conversion rule (noted only)"))
    return out


def _build_index(perps: Iterable[Perpetrator]) -> DrugIndex:
    by_code: dict[str, tuple[DrugRef, ...]] = {}
    by_name: dict[str, DrugRef] = {}
    for p in perps:
        ref = DrugRef(name=p.name, rxnorm=p.rxnorm or "")
        if p.rxnorm:
            by_code[p.rxnorm] = (ref,)
        for n in [p.name, *p.brands]:
            by_name.setdefault(n.lower(), ref)
    names = sorted(by_name, key=len, reverse=True)
    pattern = None
    if names:
        alt = "|".join(re.escape(n) for n in names)
        pattern = re.compile(rf"(?<![A-Za-z0-9])({alt})(?![A-Za-z0-9])", re.IGNORECASE)
    return DrugIndex(by_code, by_name, pattern)


# --------------------------------------------------------------------------------------------
# Exposures: perpetrator medicines the patient takes or is being ordered


@dataclass(frozen=True)
class Exposure:
    name: str
    rxnorm: str | None
    gene: str
    strength: str
    reference: str | None  # "MedicationRequest/123"
    origin: str  # "active medication" | "draft order" | "this order"
    authored: str | None = None
    period_start: str | None = None
    period_end: str | None = None

    def evidence(self) -> dict[str, Any]:
        return {"name": self.name, "rxnorm": self.rxnorm, "strength": self.strength,
                "medicationRequest": self.reference}

    def dates(self) -> str:
        parts = []
        if self.authored:
            parts.append(f"ordered {self.authored[:10]}")
        if self.period_start or self.period_end:
            parts.append(f"valid {(self.period_start or '?')[:10]} to {(self.period_end or 'open')[:10]}")
        return ", ".join(parts)


def _enabled(k: "Knowledge", policy: EnginePolicy) -> PhenoKnowledge | None:
    pk = getattr(k, "phenoconversion", None)
    if pk is None or not policy.phenoconversion.enabled:
        return None
    return pk


def _gene_on(pk: PhenoKnowledge, policy: EnginePolicy, gene: str) -> bool:
    return gene not in policy.phenoconversion.disabled_genes


def _drug_on(pk: PhenoKnowledge, policy: EnginePolicy, name: str) -> bool:
    p = pk.perpetrators.get(name)
    return p is not None and p.enabled and name not in policy.phenoconversion.disabled_drugs


def perpetrators_in_order(k: "Knowledge", order: DraftOrder) -> list[DrugRef]:
    """The perpetrator drugs a draft order contains (for recognising orders worth evaluating)."""
    pk = getattr(k, "phenoconversion", None)
    if pk is None:
        return []
    return _recognise(pk, [(c.system, c.code) for c in order.codes], [order.text, *(c.display for c in order.codes)])



def _recognise(pk: PhenoKnowledge, codes: Iterable[tuple[Any, Any]], texts: Iterable[Any]) -> list[DrugRef]:
    """RxNorm codes, then whole-word names/brands (the same matches as drugs.recognise_codes, but a word-set
    lookup instead of a long regex alternation: this runs for every current medication of every request)."""
    out: dict[str, DrugRef] = {}
    for system, code in codes:
        if isinstance(code, str) and isinstance(system, str) and system in _RXNORM_SYSTEMS:  # untrusted types
            for ref in pk.index.by_code.get(code.strip(), ()):
                out.setdefault(ref.name, ref)
    for text in texts:
        if not isinstance(text, str) or not text:
            continue
        low = text.lower()
        for w in _WORD.findall(low):
            ref = pk.single_words.get(w)
            if ref is not None:
                out.setdefault(ref.name, ref)
        for name, ref in pk.multi_words:
            if name in low and re.search(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9])", low):
                out.setdefault(ref.name, ref)
    return list(out.values())


def _medication_drugs(pk: PhenoKnowledge, med: Medication) -> list[DrugRef]:
    return _recognise(pk, med.codes(), med.texts())


def data_needs(k: "Knowledge", drug_names: Iterable[str]) -> set[str]:
    """Prefetch keys phenoconversion reads for these drugs: current medications when a drug's genes can be
    converted (forward direction) or the drug is itself a perpetrator (reverse direction)."""
    pk = getattr(k, "phenoconversion", None)
    if pk is None:
        return set()
    for name in drug_names:
        if name in pk.perpetrators:
            return {"medications"}
        for g in k.guidelines_for_drug(name):
            if g.algorithm is None and any(gene in pk.rules for gene in g.drug_genes(name)):
                return {"medications"}
    return set()


def co_order_key(k: "Knowledge", co_orders: Sequence[DraftOrder], order: DraftOrder) -> tuple:
    """What the co-medication part of an evaluation depends on (for memo keys)."""
    if getattr(k, "phenoconversion", None) is None:
        return ()
    return tuple((o.reference, tuple((c.system, c.code) for c in o.codes), o.text) for o in co_orders
                 if not _same(o, order))


def _same(a: DraftOrder, b: DraftOrder) -> bool:
    """The same draft order? Drafts can share an id (sandbox, some EHRs), so the id alone is not enough."""
    if a is b or (a.resource and a.resource is b.resource):
        return True
    return bool(a.reference) and a.reference == b.reference and \
        [(c.system, c.code) for c in a.codes] == [(c.system, c.code) for c in b.codes] and a.text == b.text


def find_exposures(k: "Knowledge", patient: HasContext | None, order: DraftOrder | None,
                   co_orders: Sequence[DraftOrder], policy: EnginePolicy | Any, today: date,
                   *, exclude: Iterable[str] = ()) -> list[Exposure]:
    """Perpetrators in the active medications and the other draft orders (not in `order` itself; not
    drugs named in `exclude`, e.g. the ordered drug, which does not convert its own guideline)."""
    policy = as_policy(policy)
    pk = _enabled(k, policy)
    if pk is None:
        return []
    skip = set(exclude)
    own = order.id if order is not None else None
    ctx = as_context(patient) if patient is not None else None
    out = [e for e in _medication_exposures(pk, ctx, policy, today, k.medication_status.phenoconversion)
           if e.name not in skip and not (own and e.reference == f"MedicationRequest/{own}")]
    for o in co_orders:
        if order is not None and _same(o, order):
            continue
        for ref in perpetrators_in_order(k, o):
            out += _exposures(pk, policy, ref, o.reference, "draft order", None, None, None, skip)
    return _dedupe(out)


# The medication list of a snapshot is scanned once (every order of a request, and the next requests for the
# same snapshot, reuse it): keyed by the list's identity, holding the list so the identity stays valid.
_MED_MEMO: "OrderedDict[tuple, tuple[list, list[Exposure]]]" = OrderedDict()


def _medication_exposures(pk: PhenoKnowledge, patient: PatientContext | None, policy: EnginePolicy,
                          today: date, not_current: frozenset[str]) -> list[Exposure]:
    meds = patient.medications if patient is not None else []
    if not meds:
        return []
    ps = policy.phenoconversion
    key = (id(meds), len(meds), id(pk), today, ps.disabled_genes, ps.disabled_drugs, not_current)
    hit = _MED_MEMO.get(key)
    if hit is not None and hit[0] is meds:
        return hit[1]
    out: list[Exposure] = []
    for m in _meds.current(meds, None, not_current):
        refs = _medication_drugs(pk, m)
        if not refs or m.ended_before(today):
            continue
        for ref in refs:
            out += _exposures(pk, policy, ref, m.reference, "active medication",
                              m.authored, m.validity_start, m.validity_end, set())
    _MED_MEMO[key] = (meds, out)
    if len(_MED_MEMO) > 256:
        _MED_MEMO.popitem(last=False)
    return out


def order_exposures(k: "Knowledge", order: DraftOrder, policy: EnginePolicy | Any) -> list[Exposure]:
    """Perpetrators in the order being evaluated (reverse direction)."""
    policy = as_policy(policy)
    pk = _enabled(k, policy)
    if pk is None:
        return []
    out: list[Exposure] = []
    for ref in perpetrators_in_order(k, order):
        out += _exposures(pk, policy, ref, order.reference, "this order", None, None, None, set())
    return _dedupe(out)


def _exposures(pk: PhenoKnowledge, policy: EnginePolicy, ref: DrugRef, reference: str | None, origin: str,
               authored: str | None, start: str | None, end: str | None, skip: set[str]) -> list[Exposure]:
    if ref.name in skip or not _drug_on(pk, policy, ref.name):
        return []
    p = pk.perpetrators[ref.name]
    return [Exposure(p.name, p.rxnorm, e.gene, e.strength, reference, origin, authored, start, end)
            for e in p.effects if _gene_on(pk, policy, e.gene)]


def _dedupe(items: list[Exposure]) -> list[Exposure]:
    seen: dict[tuple[str, str, str | None], Exposure] = {}
    for e in items:
        seen.setdefault((e.name, e.gene, e.reference), e)
    return list(seen.values())


# --------------------------------------------------------------------------------------------
# Conversion


@dataclass
class GeneConversion:
    """One gene's genotype-predicted and effective values, and the medicines involved."""

    gene: str
    diplotype: str | None
    genotype_phenotype: str
    genotype_as: str | None
    effective_phenotype: str
    effective_as: str | None
    exposures: list[Exposure]  # every perpetrator found for the gene
    applied: list[Exposure] = field(default_factory=list)  # the ones that set the effective value
    noted: list[Exposure] = field(default_factory=list)  # not converted (weak, inducer, no rule)
    problem: str | None = None  # why a conversion could not be computed

    @property
    def converted(self) -> bool:
        return bool(self.applied) and (self.effective_phenotype, self.effective_as) != (self.genotype_phenotype, self.genotype_as)

    def evidence(self) -> dict[str, Any]:
        return {
            "genotypePhenotype": self.genotype_phenotype,
            "genotypeActivityScore": self.genotype_as,
            "effectivePhenotype": self.effective_phenotype,
            "effectiveActivityScore": self.effective_as,
            "perpetrators": [e.evidence() for e in self.exposures],
        }


@dataclass
class Phenoconversion:
    profile: GenomicProfile  # with effective calls
    genes: dict[str, GeneConversion]
    exposures: list[Exposure]
    original: GenomicProfile | None = None  # the genotype-only profile

    def without(self, k: "Knowledge", name: str) -> "Phenoconversion | None":
        """The same without one drug's exposures (a drug never phenoconverts its own guideline)."""
        if not any(e.name == name for e in self.exposures):
            return self
        return convert(k, self.original or self.profile, [e for e in self.exposures if e.name != name])


def convert(k: "Knowledge", profile: GenomicProfile, exposures: list[Exposure]) -> Phenoconversion | None:
    """The effective profile for these exposures (None when there are none)."""
    if not exposures:
        return None
    pk = getattr(k, "phenoconversion", None)
    if pk is None:
        return None
    by_gene: dict[str, list[Exposure]] = {}
    for e in exposures:
        by_gene.setdefault(e.gene, []).append(e)
    genes: dict[str, GeneConversion] = {}
    new_results: dict[str, GeneResult] = dict(profile.genes)
    for gene, exps in by_gene.items():
        result = profile.genes.get(gene)
        if result is None or result.call is None or result.call.phenotype == INDETERMINATE:
            continue
        gc = _convert_gene(k, pk, gene, result.call, exps)
        genes[gene] = gc
        if gc.converted:
            call = result.call
            names = ", ".join(sorted({e.name for e in gc.applied}))
            method = (f"{call.method}; phenoconverted by {names}: {gc.genotype_phenotype}"
                      f"{_as_text(gc.genotype_as, ' (AS ', ')')} -> {gc.effective_phenotype}{_as_text(gc.effective_as, ' (AS ', ')')}")
            new_results[gene] = result.model_copy(update={"call": call.model_copy(update={
                "phenotype": gc.effective_phenotype, "activity_score": gc.effective_as, "method": method})})
    if not genes:
        return Phenoconversion(profile, {}, exposures, profile)
    return Phenoconversion(profile.model_copy(update={"genes": new_results}), genes, exposures, profile)


def _as_text(v: str | None, pre: str = "", post: str = "") -> str:
    return f"{pre}{v}{post}" if v else ""


def _convert_gene(k: "Knowledge", pk: PhenoKnowledge, gene: str, call: PhenotypeCall, exps: list[Exposure]) -> GeneConversion:
    gc = GeneConversion(gene, call.diplotype, call.phenotype, call.activity_score, call.phenotype, call.activity_score,
                        sorted(exps, key=lambda e: (_STRENGTH_RANK[e.strength], e.name)))
    rule = pk.rules.get(gene)
    convertible = [e for e in gc.exposures if rule is not None and rule.enabled and e.strength in rule.convert]
    gc.noted = [e for e in gc.exposures if e not in convertible]
    if not convertible or rule is None:
        return gc
    best = min(_STRENGTH_RANK[e.strength] for e in convertible)
    applied = [e for e in convertible if _STRENGTH_RANK[e.strength] == best]
    gc.noted += [e for e in convertible if e not in applied]  # weaker than the strongest: listed, not applied again
    conv = rule.convert[applied[0].strength]  # type: ignore[index]
    if conv.activity_factor is not None:
        res = _convert_as(k, gene, call, conv.activity_factor, rule.round_down_to)
        if isinstance(res, str):
            gc.problem = res
            gc.noted = list(gc.exposures)
            return gc
        gc.effective_phenotype, gc.effective_as = res
    elif conv.phenotype is not None:
        gc.effective_phenotype = conv.phenotype
    else:
        gc.effective_phenotype = conv.phenotype_map.get(call.phenotype, call.phenotype)
    gc.applied = applied
    return gc


def _convert_as(k: "Knowledge", gene: str, call: PhenotypeCall, factor: Decimal,
                step: Decimal | None) -> tuple[str, str] | str:
    """(effective phenotype, effective activity score), or the reason it cannot be computed."""
    gd = k.genes.get(gene)
    rule = getattr(gd, "activity_score", None)
    if rule is None:
        return f"{gene} has no activity-score table"
    raw = call.activity_score
    if factor == 0:
        value, at_least = Decimal(0), False
    else:
        if not raw or raw == "n/a":
            return f"{gene} result has no activity score to convert"
        try:
            value = Decimal(raw.removeprefix("≥")) * factor
        except InvalidOperation:
            return f"{gene} activity score {raw!r} cannot be read"
        at_least = raw.startswith("≥")
        if step:
            value = (value / step).to_integral_value(rounding=ROUND_FLOOR) * step
    hits = [t for t in rule.thresholds if t.contains(value)]
    if len(hits) != 1:
        return f"converted {gene} activity score {format_activity(value)} is outside the CPIC ranges"
    if at_least and hits[0].above is None:
        return (f"the {gene} activity score {raw} is only a lower bound, so the converted score "
                f"(≥{format_activity(value)}) does not fix a phenotype")
    return hits[0].phenotype, format_activity(value, at_least)


# --------------------------------------------------------------------------------------------
# Recommendations


def _names(exps: Iterable[Exposure]) -> str:
    names = list(dict.fromkeys(e.name for e in exps))
    return " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]


def _strength(exps: list[Exposure]) -> str:
    return exps[0].strength.replace("_", " ") if exps else ""


def _since(exps: Iterable[Exposure]) -> str:
    parts = []
    for e in exps:
        d = e.dates()
        parts.append(f"{e.reference or e.origin}" + (f", {d}" if d else "") if e.reference else e.origin)
    return "; " + "; ".join(parts) if parts else ""


def _fmt(text: str, **kw: Any) -> str:
    try:
        return text.format(**kw)
    except (KeyError, IndexError, ValueError):
        return text


def _as_label(v: str | None) -> str:
    return f"activity score {v}" if v else "no activity score"


def _vars(gc: GeneConversion, exps: list[Exposure]) -> dict[str, Any]:
    return dict(gene=gc.gene, diplotype=f" ({gc.diplotype})" if gc.diplotype else "",
                genotype=gc.genotype_phenotype, genotype_as=_as_label(gc.genotype_as),
                effective=gc.effective_phenotype, effective_as=_as_label(gc.effective_as),
                medicines=_names(exps), medicines_short=_names(exps), strength=_strength(exps), since=_since(exps))


def _with_evidence(rec: Recommendation, pc: Phenoconversion, genes: list[str]) -> Recommendation:
    ev = []
    for g in rec.genes:
        gc = pc.genes.get(g.gene)
        ev.append(g.model_copy(update={"phenoconversion": gc.evidence()}) if gc is not None and g.gene in genes else g)
    return rec.model_copy(update={"genes": ev})


def adjust(k: "Knowledge", pc: Phenoconversion | None, g: "Guideline", drug: DrugRef,
           base: Recommendation | None, evaluate: Callable[[GenomicProfile], Recommendation | None]) -> Recommendation | None:
    """The recommendation for the effective phenotypes, explained; `base` is the genotype-only one."""
    if pc is not None:
        pc = pc.without(k, drug.name)
    if pc is None or g.algorithm is not None:
        return base
    pk = getattr(k, "phenoconversion", None)
    if pk is None:
        return base
    texts = pk.data.texts
    dgenes = g.drug_genes(drug.name)
    if base is not None and base.action == Action.test_before_prescribing:
        return _pretest(pk, pc, dgenes, base)
    involved = [gene for gene in dgenes if gene in pc.genes]
    if not involved:
        return base
    converted = [gene for gene in involved if pc.genes[gene].converted]
    eff = evaluate(pc.profile) if converted else base
    if eff is None:
        return None
    eff = _with_evidence(eff, pc, involved)
    notes = list(eff.notes)
    for gene in involved:
        gc = pc.genes[gene]
        if gc.problem:
            notes.append(f"{gene}: {_names(gc.exposures)} taken, but the phenotype could not be converted: {gc.problem}.")
        elif gc.noted:
            noted = [e for e in gc.noted if e not in gc.applied]
            if noted:
                notes.append(_fmt(texts.noted, **_vars(gc, noted)))
    changed = bool(converted) and (base is None or (base.rule_id, base.action) != (eff.rule_id, eff.action))
    if converted and not changed:
        for gene in converted:
            notes.append(_fmt(texts.unchanged, **_vars(pc.genes[gene], pc.genes[gene].applied)))
    if not changed:
        # same advice: the card reads as for the genotype; the evidence carries the effective values
        text = {"summary": base.summary, "detail": base.detail} if base is not None else {}
        return eff.model_copy(update={"notes": list(dict.fromkeys(notes)), **text})
    paragraphs = []
    for gene in converted:
        gc = pc.genes[gene]
        v = _vars(gc, gc.applied)
        v["genotype_advice"] = _base_advice(base)
        paragraphs.append(_fmt(texts.changed, **v))
        rule = pk.rules[gene]
        notes.append(f"{gene} phenoconversion rule: {rule.note.strip()} Source: {pk.source_title(rule.citation)}."
                     if rule.note else f"{gene} phenoconversion source: {pk.source_title(rule.citation)}.")
        for e in gc.applied:
            p = pk.perpetrators.get(e.name)
            if p is not None:
                notes.append(f"{e.name}: {e.strength.replace('_', ' ')} of {gene} ({pk.source_title(p.source)})"
                             + (f"; {p.note}" if p.note else ""))
    applied = [e for gene in converted for e in pc.genes[gene].applied]
    suffix = _fmt(texts.summary_suffix, medicines_short=_names(applied))
    summary = eff.summary + suffix if len(eff.summary + suffix) < 140 else eff.summary
    return eff.model_copy(update={
        "summary": summary,
        "detail": "\n\n".join(paragraphs) + "\n\n" + eff.detail,
        "notes": list(dict.fromkeys(notes)),
        "interruptive": eff.interruptive,
    })


def _base_advice(base: Recommendation | None) -> str:
    if base is None:
        return "no card (rule switched off)."
    if base.action in (Action.standard_dosing, Action.no_recommendation):
        return f"{base.summary} ({base.action.value.replace('_', ' ')})."
    return base.summary + "."


def _pretest(pk: PhenoKnowledge, pc: Phenoconversion, dgenes: list[str], rec: Recommendation) -> Recommendation:
    """A 'no result on file' card: say what the perpetrator implies whatever the genotype (strong inhibitors)."""
    notes = list(rec.notes)
    for gene in dgenes:
        rule = pk.rules.get(gene)
        exps = [e for e in pc.exposures if e.gene == gene]
        if rule is None or not rule.enabled or not exps:
            continue
        for e in exps:
            conv = rule.convert.get(e.strength)  # type: ignore[call-overload]
            if conv is None:
                continue
            fixed = conv.phenotype or ("Poor Metabolizer" if conv.activity_factor == 0 else None)
            if fixed:
                notes.append(_fmt(pk.data.texts.pretest, gene=gene, medicines=e.name, strength=_strength([e]),
                                  effective=fixed))
    return rec.model_copy(update={"notes": list(dict.fromkeys(notes))}) if len(notes) != len(rec.notes) else rec


def reverse(k: "Knowledge", profile: GenomicProfile, patient: HasContext, order: DraftOrder,
            co_orders: Sequence[DraftOrder], policy: EnginePolicy | Any, today: date,
            evaluate: Callable[["Guideline", DrugRef, GenomicProfile], Recommendation | None]) -> list[Recommendation]:
    """Cards about the drugs the patient takes whose CPIC advice changes with the perpetrator being ordered."""
    policy = as_policy(policy)
    new = order_exposures(k, order, policy)
    pk = getattr(k, "phenoconversion", None)
    if not new or pk is None:
        return []
    genes = {e.gene for e in new if e.gene in profile.genes}
    if not genes:
        return []
    ordered_names = {e.name for e in new}
    ctx = as_context(patient)
    existing = find_exposures(k, ctx, order, co_orders, policy, today)
    before = convert(k, profile, existing)
    after = convert(k, profile, existing + new)
    if after is None:
        return []
    base_profile = before.profile if before is not None else profile
    out: list[Recommendation] = []
    seen: set[tuple[str, str]] = set()
    for m in _meds.current(ctx.medications, None, k.medication_status.phenoconversion):
        if m.ended_before(today):
            continue
        for drug in _meds.medication_drugs(k.drug_index, m):
            if drug.name in ordered_names:
                continue
            for g in k.guidelines_for_drug(drug.name):
                if g.algorithm is not None or (g.id, drug.name) in seen:
                    continue
                dgenes = [gene for gene in g.drug_genes(drug.name) if gene in genes]
                conv = [gene for gene in dgenes if gene in after.genes and after.genes[gene].converted
                        and any(e in new for e in after.genes[gene].applied)]
                if not conv:
                    continue
                seen.add((g.id, drug.name))
                base = evaluate(g, drug, base_profile)
                eff = evaluate(g, drug, after.profile)
                if eff is None or not eff.interruptive:
                    continue
                if base is not None and (base.rule_id, base.action) == (eff.rule_id, eff.action):
                    continue
                out.append(_reverse_rec(pk, after, conv, drug, eff, base, order, new, m.reference, m))
    return out


def _reverse_rec(pk: PhenoKnowledge, pc: Phenoconversion, genes: list[str], drug: DrugRef, eff: Recommendation,
                 base: Recommendation | None, order: DraftOrder, new: list[Exposure], med_ref: str | None,
                 med: Medication) -> Recommendation:
    texts = pk.data.texts
    gene = genes[0]
    gc = pc.genes[gene]
    perps = [e for e in new if e.gene == gene]
    perp = _names(perps)
    authored = med.authored
    drug_since = f" ({med_ref or 'active medication'}" + (f", ordered {authored[:10]}" if authored else "") + ")"
    v = _vars(gc, perps)
    detail = _fmt(texts.reverse_detail, drug=drug.name, drug_since=drug_since, perpetrator=perp,
                  perpetrator_cap=perp[:1].upper() + perp[1:], **{x: v[x] for x in v if x not in ("medicines",)})
    dose = f"\n\nDose guidance for {drug.name}: {eff.dose.text}" if eff.dose and eff.dose.text else ""
    withheld = getattr(eff, "withheld", None) or []
    alts = ", ".join(dict.fromkeys([a.name for a in eff.alternatives] + [w.name for w in withheld]))
    alt_text = f"\n\nCPIC alternatives to {drug.name}: {alts}." if alts else ""
    summary = _fmt(texts.reverse_summary, perpetrator=perp[:1].upper() + perp[1:], drug=drug.name, advice=eff.summary)
    if len(summary) >= 140:
        summary = summary[:138].rstrip() + "…"
    notes = list(eff.notes)
    notes.append(f"On genotype alone the advice for {drug.name} would be: {_base_advice(base)}")
    rule = pk.rules.get(gene)
    if rule is not None:
        notes.append(f"{gene} phenoconversion source: {pk.source_title(rule.citation)}.")
    eff = _with_evidence(eff, pc, genes)
    return eff.model_copy(update={
        "order_ref": order.reference,
        "summary": summary,
        "detail": detail + "\n\n" + eff.detail + dose + alt_text,
        "alternatives": [],  # they would replace the inhibitor order: never offered one-click here
        "dose": None,  # a dose change would apply to the inhibitor order
        "notes": list(dict.fromkeys(notes)),
    })


def conversions(k: "Knowledge", profile: GenomicProfile, patient: HasContext, policy: EnginePolicy | Any,
                today: date) -> dict[str, GeneConversion]:
    """Per gene, the conversion by the patient's current medicines (for the SMART profile page)."""
    pc = convert(k, profile, find_exposures(k, patient, None, (), policy, today))
    return dict(pc.genes) if pc is not None else {}


# --------------------------------------------------------------------------------------------
# CLI helper


def describe_with(k: "Knowledge", gene: str, call: PhenotypeCall, medicines: list[str],
                  policy: EnginePolicy | Any) -> dict[str, Any]:
    """For `pgx-cds phenotype --with`: the effective values of one call with these co-medications."""
    policy = as_policy(policy)
    pk = _enabled(k, policy)
    out: dict[str, Any] = {}
    if pk is None:
        return {"effectivePhenotype": call.phenotype, "effectiveActivityScore": call.activity_score,
                "note": "phenoconversion is switched off"}
    exps: list[Exposure] = []
    unknown = []
    for name in medicines:
        refs = recognise_codes(pk.index, [("http://www.nlm.nih.gov/research/umls/rxnorm", name.strip())], [name])
        if not refs:
            unknown.append(name)
        for ref in refs:
            exps += _exposures(pk, policy, ref, None, "given", None, None, None, set())
    exps = [e for e in exps if e.gene == call.gene]
    profile = GenomicProfile(patient_id="cli", genes={call.gene: GeneResult(gene=call.gene, diplotype=call.diplotype, call=call)})
    pc = convert(k, profile, exps)
    gc = pc.genes.get(call.gene) if pc else None
    out["effectivePhenotype"] = gc.effective_phenotype if gc else call.phenotype
    out["effectiveActivityScore"] = gc.effective_as if gc else call.activity_score
    if gc is not None:
        out["phenoconversion"] = gc.evidence()
        if gc.problem:
            out["phenoconversionNote"] = gc.problem
        elif gc.noted and not gc.converted:
            out["phenoconversionNote"] = "noted only: " + ", ".join(f"{e.name} ({e.strength})" for e in gc.noted)
    if unknown:
        out["unknownMedicines"] = unknown
    return out
