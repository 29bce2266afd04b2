"""Guideline files (`cards/guidelines/<id>.yaml`): pydantic models and a loader with file:line errors.

The format is documented in `cards/README.md`. This module only parses and validates one file at a
time (schema, ids, value syntax); cross-file checks (genes exist, values producible, coverage) live in
:mod:`service.pgx.knowledge`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.pgx import yamlfile
from service.pgx.models import Action

LookupMethod = Literal["phenotype", "activity_score", "allele_status"]
PretestMode = Literal["off", "info", "warning"]
Indicator = Literal["info", "warning", "critical"]
STRENGTHS = ("Strong", "Moderate", "Optional", "No recommendation")
NO_RESULT = "No Result"
INDETERMINATE = "Indeterminate"
ANY = "any"
SUMMARY_MAX = 140
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_RXNORM_RE = re.compile(r"^[0-9]+$")


def _rxnorm(code: str) -> str:
    if not _RXNORM_RE.match(code):
        raise ValueError(f"RxNorm code must be digits, got {code!r}")
    return code


def drug_name(v: str) -> str:
    """A drug name as the knowledge files spell it: lower case, no surrounding spaces."""
    if not v.strip() or v != v.strip().lower():
        raise ValueError("drug name must be lower case without surrounding spaces")
    return v

#: action -> default card indicator when a rule does not set one
DEFAULT_INDICATOR: dict[Action, Indicator] = {
    Action.avoid: "critical",
    Action.consider_alternative: "warning",
    Action.alternative_or_reduced_dose: "warning",
    Action.reduce_dose: "warning",
    Action.increase_dose: "warning",
    Action.adjust_dose_tdm: "warning",
    Action.standard_dosing: "info",
    Action.standard_dosing_with_caution: "info",
    Action.no_recommendation: "info",
    Action.test_before_prescribing: "info",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DrugDef(_Strict):
    """One drug a guideline covers."""

    name: str
    rxnorm: str
    brands: list[str] = Field(default_factory=list)
    products: list[str] = Field(default_factory=list)  # RxNorm SCD/SBD codes containing the drug
    pretest: PretestMode = "off"
    genes: list[str] = Field(default_factory=list)  # subset of the guideline's genes; empty = all of them

    @field_validator("pretest", mode="before")
    @classmethod
    def _pretest(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false

    @field_validator("name")
    @classmethod
    def _lower(cls, v: str) -> str:
        return drug_name(v)

    @field_validator("rxnorm")
    @classmethod
    def _rx(cls, v: str) -> str:
        return _rxnorm(v)

    @field_validator("products")
    @classmethod
    def _rx_list(cls, v: list[str]) -> list[str]:
        return [_rxnorm(code) for code in v]


class AgeRange(_Strict):
    min: float | None = None  # years, inclusive
    max: float | None = None  # years, inclusive

    @model_validator(mode="after")
    def _some(self) -> "AgeRange":
        if self.min is None and self.max is None:
            raise ValueError("age needs min and/or max")
        return self


class PopulationMatch(_Strict):
    """Evidence that selects a population. All given selectors must hold."""

    conditions: list[str] = Field(default_factory=list)  # "system|code" (code prefix for non-SNOMED systems)
    value_sets: list[str] = Field(default_factory=list)  # ids of cards/valuesets/*.yaml (any code in any of them)
    age: AgeRange | None = None
    medications: list[str] = Field(default_factory=list)  # RxNorm codes: current use of any of them
    drug_in_use: bool | None = None  # the ordered drug itself is already an active medication
    drug_in_use_days: int | None = Field(default=None, ge=1)  # ... for at least this many days

    @field_validator("conditions")
    @classmethod
    def _cond(cls, v: list[str]) -> list[str]:
        for c in v:
            if "|" not in c or not c.split("|", 1)[1]:
                raise ValueError(f"condition must be 'system|code', got {c!r}")
        return v

    @model_validator(mode="after")
    def _some(self) -> "PopulationMatch":
        if not (self.conditions or self.value_sets or self.age or self.medications or self.drug_in_use is not None):
            raise ValueError("match needs at least one selector")
        if self.drug_in_use_days is not None and self.drug_in_use is not True:
            raise ValueError("drug_in_use_days needs drug_in_use: true")
        return self


class Population(_Strict):
    id: str
    label: str
    primary: bool = False
    match: PopulationMatch | None = None
    # a situation the record cannot show (e.g. "no alternative agent available"): never chosen; its rules are
    # shown as an "if ..." note on the cards of the population it refines
    situational: bool = False
    refines: str | None = None

    @model_validator(mode="after")
    def _situational(self) -> "Population":
        if self.situational and (not self.refines or self.match is not None or self.primary):
            raise ValueError("a situational population needs refines: <population id>, and no match or primary")
        return self

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"id must be lower-case letters, digits, '.', '_' or '-', got {v!r}")
        return v


class AlternativeDef(_Strict):
    name: str
    rxnorm: str | None = None  # None only for drug classes / non-drug options (then not one-click)
    recommended: bool = False
    one_click: bool = True  # false: named on the card but never offered as a one-click order
    why: str | None = None  # required with one_click: false; printed on the card

    @field_validator("rxnorm")
    @classmethod
    def _rx(cls, v: str | None) -> str | None:
        return None if v is None else _rxnorm(v)

    @model_validator(mode="after")
    def _why(self) -> "AlternativeDef":
        if not self.one_click and not (self.why or "").strip():
            raise ValueError(f"alternative {self.name}: one_click: false needs `why` (shown on the card)")
        return self


class WeightRange(_Strict):
    min: float | None = None  # kg, inclusive
    max: float | None = None


class DoseBound(_Strict):
    """One condition under which CPIC's dose numbers apply (a dose's `applies_if` holds when any bound holds)."""

    age: AgeRange | None = None
    weight_kg: WeightRange | None = None

    @model_validator(mode="after")
    def _some(self) -> "DoseBound":
        if self.age is None and self.weight_kg is None:
            raise ValueError("applies_if entries need age and/or weight_kg")
        return self


DoseApplies = Literal["start", "continuing", "any"]


class DoseDef(_Strict):
    factor: float | None = Field(default=None, gt=0)
    max_daily_mg: float | None = Field(default=None, gt=0)
    text: str | None = None
    # when CPIC's number applies (cards/README.md "Dose applicability"):
    applies: DoseApplies = "start"  # start: only when the drug is being started (not already an active medication)
    in_use_days: int | None = Field(default=None, ge=1)  # continuing: taken at least this many days (PPI >12 weeks)
    applies_if: list[DoseBound] = Field(default_factory=list)  # any of these must hold (e.g. adults or >40 kg)
    max_mg_per_kg_day: float | None = Field(default=None, gt=0)  # upper limit of the new daily dose
    one_click: bool = True  # false: the change cannot be made by scaling the ordered dose
    why: str | None = None  # required with one_click: false (printed on the card)

    @model_validator(mode="after")
    def _consistent(self) -> "DoseDef":
        if not self.one_click and not (self.why or "").strip():
            raise ValueError("dose: one_click: false needs `why` (shown on the card)")
        if self.in_use_days is not None and self.applies != "continuing":
            raise ValueError("dose: in_use_days needs applies: continuing")
        return self


class NoteDef(_Strict):
    """A note on every card of a rule or guideline; `warn: false` shows it as information (no warning sign)."""

    text: str
    warn: bool = True
    drugs: list[str] = Field(default_factory=list)  # only on the cards of these drugs (empty: every drug)


class Rule(_Strict):
    id: str
    population: str | None = None
    drugs: list[str] = Field(default_factory=list)
    when: dict[str, list[str]]
    action: Action
    strength: str
    indicator: Indicator | None = None
    summary: str
    detail: str
    alternatives: list[AlternativeDef] = Field(default_factory=list)
    dose: DoseDef | None = None
    notes: list[str | NoteDef] = Field(default_factory=list)  # extra notes always added to the card

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"id must be lower-case letters, digits, '.', '_' or '-', got {v!r}")
        return v

    @field_validator("strength")
    @classmethod
    def _strength(cls, v: str) -> str:
        if v not in STRENGTHS:
            raise ValueError(f"strength must be one of {', '.join(STRENGTHS)}")
        return v

    @field_validator("when", mode="before")
    @classmethod
    def _when(cls, v: Any) -> Any:
        if isinstance(v, dict):
            out = {}
            for gene, vals in v.items():
                if isinstance(vals, (str, int, float)):
                    vals = [vals]
                if isinstance(vals, list):
                    vals = [_value_str(x) for x in vals]
                out[gene] = vals
            return out
        return v

    @property
    def effective_indicator(self) -> Indicator:
        return self.indicator or DEFAULT_INDICATOR[self.action]


class Guideline(_Strict):
    id: str
    name: str
    source: str = "CPIC"
    url: str
    publication: str
    version: str
    genes: list[str]
    lookup: dict[str, LookupMethod]
    drugs: list[DrugDef]
    populations: list[Population] = Field(default_factory=list)
    algorithm: str | None = None  # a built-in dosing algorithm the engine runs (e.g. "warfarin")
    notes: list[str | NoteDef] = Field(default_factory=list)  # shown on every card of this guideline
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith("https://"):
            raise ValueError("url must be an https:// link to the guideline")
        return v

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) else v

    @field_validator("publication")
    @classmethod
    def _pub(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("publication (citation) must not be empty")
        return v

    @model_validator(mode="after")
    def _consistency(self) -> "Guideline":
        if not _ID_RE.match(self.id):
            raise ValueError(f"id must be lower-case letters, digits, '.', '_' or '-', got {self.id!r}")
        if not self.genes:
            raise ValueError("genes must list at least one gene")
        if set(self.lookup) != set(self.genes):
            raise ValueError("lookup must give a method for every gene in genes (and only those)")
        if not self.drugs:
            raise ValueError("drugs must list at least one drug")
        return self

    def drug_genes(self, name: str) -> list[str]:
        """The genes that matter for one drug (the drug's `genes`, else the guideline's)."""
        d = self.drug(name)
        return list(d.genes) if d and d.genes else list(self.genes)

    def drug(self, name: str) -> DrugDef | None:
        for d in self.drugs:
            if d.name == name:
                return d
        return None

    @property
    def primary_population(self) -> Population | None:
        for p in self.populations:
            if p.primary:
                return p
        return self.populations[0] if self.populations else None


def _value_str(x: Any) -> str:
    """YAML may read `1.0` as a float; lookup values are always strings as CPIC writes them."""
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, (int, float)):
        return f"{float(x):.2f}".rstrip("0").rstrip(".") if float(x) % 1 else f"{float(x):.1f}"
    return str(x)


# --------------------------------------------------------------------------------------------
# Lookup value matching (activity-score ranges etc.)


@dataclass(frozen=True)
class ValueMatcher:
    """A compiled `when` list for one gene."""

    exact: frozenset[str]
    ranges: tuple[tuple[float, float], ...]  # inclusive numeric ranges (activity scores)
    any: bool = False

    def matches(self, value: str) -> bool:
        if self.any and value != NO_RESULT:
            return True
        if value in self.exact:
            return True
        if self.ranges:
            num = as_number(value)
            if num is not None:
                return any(lo <= num <= hi for lo, hi in self.ranges)
        return False


_NUM = r"([0-9]+(?:\.[0-9]+)?)"
_RANGE_RES = (
    (re.compile(rf"^(?:>=|≥)\s*{_NUM}$"), lambda a: (float(a), float("inf"))),
    (re.compile(rf"^(?:<=|≤)\s*{_NUM}$"), lambda a: (float("-inf"), float(a))),
)
_BETWEEN = re.compile(rf"^{_NUM}\s*-\s*{_NUM}$")


def as_number(value: str) -> float | None:
    """Numeric value of an activity score string: "1.25" -> 1.25, "≥3.0" -> 3.0, else None."""
    v = value.strip().lstrip("≥").lstrip(">=").strip()
    try:
        return float(v)
    except ValueError:
        return None


def compile_values(values: list[str], method: str) -> ValueMatcher:
    """Compile one gene's `when` list. Raises ValueError on a malformed range."""
    exact: set[str] = set()
    ranges: list[tuple[float, float]] = []
    any_ = False
    for raw in values:
        v = raw.strip()
        if v == ANY:
            any_ = True
            continue
        if v == "n/a":  # CPIC's activity score for an uninterpretable CYP2D6 result
            exact.add(INDETERMINATE)
            continue
        if method == "activity_score" and v not in (NO_RESULT, INDETERMINATE):
            if v.startswith("≥"):
                # CPIC's own key ("≥3.0" = three or more gene copies): exact, plus numeric range
                exact.add(v)
                continue
            m = _BETWEEN.match(v)
            if m:
                lo, hi = float(m.group(1)), float(m.group(2))
                if lo > hi:
                    raise ValueError(f"range {v!r} is empty")
                ranges.append((lo, hi))
                continue
            for rx, fn in _RANGE_RES:
                m = rx.match(v)
                if m:
                    ranges.append(fn(m.group(1)))
                    break
            else:
                if as_number(v) is None:
                    raise ValueError(f"{v!r} is not an activity score, range, 'Indeterminate' or 'No Result'")
                num = as_number(v)
                assert num is not None
                ranges.append((num, num))
            continue
        exact.add(v)
    return ValueMatcher(frozenset(exact), tuple(ranges), any_)


# --------------------------------------------------------------------------------------------
# YAML with line numbers


class GuidelineFileError(Exception):
    """A guideline file could not be read; `problems` are (line, message) pairs."""

    def __init__(self, path: Path, problems: list[tuple[int | None, str]]):
        self.path = path
        self.problems = problems
        super().__init__("; ".join(f"{path.name}:{ln or '?'}: {msg}" for ln, msg in problems))


class _LineLoader(yamlfile.SafeLoader):  # libyaml's parser keeps the line marks this reads
    pass


def _to_python(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for k_node, v_node in node.value:
            key = _LineLoader.construct_scalar(_LOADER_STUB, k_node) if isinstance(k_node, yaml.ScalarNode) else None
            if key is None:
                raise yaml.YAMLError(f"line {k_node.start_mark.line + 1}: mapping keys must be plain strings")
            if key in out:
                raise yaml.YAMLError(f"line {k_node.start_mark.line + 1}: duplicate key {key!r}")
            out[key] = _to_python(v_node, path + (key,), lines)
            lines[path + (key,)] = k_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(v, path + (i,), lines) for i, v in enumerate(node.value)]
    value = _LOADER_STUB.construct_object(node, deep=True)
    _LOADER_STUB.constructed_objects.clear()
    return value


_LOADER_STUB = _LineLoader("")


def read_yaml_with_lines(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse a YAML file into plain Python plus a map from key path to 1-based line number."""
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise GuidelineFileError(path, [(mark.line + 1 if mark else None, f"YAML syntax: {exc}")]) from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is None:
        return None, lines
    try:
        data = _to_python(node, (), lines)
    except yaml.YAMLError as exc:
        raise GuidelineFileError(path, [(None, str(exc))]) from None
    return data, lines


def line_of(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    """Line of the deepest known prefix of `loc`."""
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


@dataclass
class LoadedGuideline:
    guideline: Guideline
    path: Path
    lines: dict[tuple[Any, ...], int]

    def line(self, *loc: Any) -> int | None:
        return line_of(self.lines, loc)


def load_guideline(path: Path) -> LoadedGuideline:
    """Read and validate one guideline file. Raises GuidelineFileError with line numbers."""
    data, lines = read_yaml_with_lines(path)
    if not isinstance(data, dict):
        raise GuidelineFileError(path, [(1, "file must hold a mapping (see cards/README.md)")])
    try:
        g = Guideline.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
            where = ".".join(str(x) for x in loc) or "(file)"
            problems.append((line_of(lines, loc), f"{where}: {err['msg']}"))
        raise GuidelineFileError(path, problems) from None
    problems = _file_checks(g, lines)
    if problems:
        raise GuidelineFileError(path, problems)
    return LoadedGuideline(g, path, lines)


def _file_checks(g: Guideline, lines: dict[tuple[Any, ...], int]) -> list[tuple[int | None, str]]:
    """Checks inside one file: ids, references to the file's own drugs/populations/genes, syntax."""
    out: list[tuple[int | None, str]] = []
    drug_names = [d.name for d in g.drugs]
    if len(set(drug_names)) != len(drug_names):
        out.append((line_of(lines, ("drugs",)), "duplicate drug name"))
    for i, d in enumerate(g.drugs):
        for gene in d.genes:
            if gene not in g.genes:
                out.append((line_of(lines, ("drugs", i, "genes")), f"drug {d.name}: gene {gene} is not in the guideline's genes"))
    pop_ids = [p.id for p in g.populations]
    if len(set(pop_ids)) != len(pop_ids):
        out.append((line_of(lines, ("populations",)), "duplicate population id"))
    if g.populations and sum(p.primary for p in g.populations) != 1:
        out.append((line_of(lines, ("populations",)), "exactly one population must be primary: true"))
    seen: set[str] = set()
    for i, r in enumerate(g.rules):
        ln = line_of(lines, ("rules", i))
        if r.id in seen:
            out.append((ln, f"duplicate rule id {r.id!r}"))
        seen.add(r.id)
        if g.populations and r.population is None:
            out.append((ln, f"rule {r.id}: population is required (the file declares populations)"))
        if r.population is not None and r.population not in pop_ids:
            out.append((line_of(lines, ("rules", i, "population")), f"rule {r.id}: population {r.population!r} is not declared"))
        for d in r.drugs:
            if d not in drug_names:
                out.append((line_of(lines, ("rules", i, "drugs")), f"rule {r.id}: drug {d!r} is not declared in drugs"))
        for gene, vals in r.when.items():
            wl = line_of(lines, ("rules", i, "when", gene))
            if gene not in g.genes:
                out.append((wl, f"rule {r.id}: gene {gene} is not in genes"))
                continue
            if not vals:
                out.append((wl, f"rule {r.id}: empty value list for {gene}"))
            try:
                compile_values(vals, g.lookup[gene])
            except ValueError as exc:
                out.append((wl, f"rule {r.id}: {exc}"))
        needed: set[str] = set()
        for d in g.drugs:
            if not r.drugs or d.name in r.drugs:
                needed.update(g.drug_genes(d.name) if d.name in drug_names else [])
        missing = [gname for gname in g.genes if gname in needed and gname not in r.when]
        if missing:
            out.append((line_of(lines, ("rules", i, "when")), f"rule {r.id}: when must give every gene of its drugs ({', '.join(missing)} missing; use [any])"))
        if len(r.summary) >= SUMMARY_MAX:
            out.append((line_of(lines, ("rules", i, "summary")), f"rule {r.id}: summary is {len(r.summary)} characters (must be < {SUMMARY_MAX})"))
        try:
            r.summary.format(drug="x", gene="x", phenotype="x", activity_score="x", diplotype="x", result="x")
        except (KeyError, IndexError, ValueError) as exc:
            out.append((line_of(lines, ("rules", i, "summary")), f"rule {r.id}: unknown placeholder in summary: {exc}"))
    if not g.rules and not g.algorithm:
        out.append((line_of(lines, ("rules",)), "a guideline needs rules or an algorithm"))
    return out
