"""Gene definitions: the CPIC allele tables and phenotype rules in ``cards/genes/*.yaml``.

Each YAML file describes one gene: its alleles (CPIC function, activity value, aliases), and
the rule that turns two alleles into a CPIC phenotype (a table of unordered function pairs,
activity-score thresholds, a single-allele table for hemizygous/mitochondrial calls, or the
alleles of interest for HLA allele-status genes), plus named diplotype exceptions.

:func:`load_genes` validates the schema and reports errors with file and line;
:func:`check_genes` reports semantic problems (unknown function names in the pair table,
uncovered function combinations, gaps in activity-score thresholds, ...). Lookup tables used
by the phenotype engine are built once, when a definition is created.

Run ``python -m service.pgx.genes [DIR]`` to check a directory of gene files.
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal, InvalidOperation
from itertools import combinations_with_replacement
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from service.pgx import yamlfile

__all__ = [
    "AlleleDef",
    "ActivityScoreRule",
    "AlleleOfInterest",
    "DiplotypeException",
    "FunctionPair",
    "GeneDefinition",
    "GeneDefinitionError",
    "SingleAlleleRule",
    "SnpDef",
    "Threshold",
    "allele_key",
    "check_genes",
    "format_activity",
    "phenotype_key",
    "load_genes",
]

Method = Literal["function", "activity_score", "allele_status", "x_linked", "mitochondrial"]

_WS = re.compile(r"\s+")


def allele_key(name: str) -> str:
    """Normalise an allele name for lookup: case- and whitespace-insensitive.

    ``"*36 + *10"`` and ``"*36+*10"`` give the same key; ``>=`` and ``≥`` are the same, and
    so are ``x`` and ``×`` in duplications.
    """
    k = _WS.sub("", name).lower().replace(">=", "≥").replace("×", "x")
    return k


class GeneDefinitionError(ValueError):
    """A gene file is missing, unreadable or does not match the schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlleleDef(_Strict):
    """One allele as CPIC classifies it."""

    name: str = Field(min_length=1)
    function: str | None = None  # CPIC function, e.g. "No function"
    activity_value: str | None = None  # activity-score genes: "1.0", "0.25", "≥3.0", "n/a"
    who_class: str | None = None  # G6PD WHO class (I-IV)
    aliases: list[str] = Field(default_factory=list)
    note: str | None = None

    @field_validator("activity_value")
    @classmethod
    def _activity(cls, v: str | None) -> str | None:
        if v is None or v == "n/a":
            return v
        try:
            Decimal(v.removeprefix("≥"))
        except InvalidOperation as exc:
            raise ValueError(f"activity value {v!r} is not a number, '≥N' or 'n/a'") from exc
        return v


class FunctionPair(_Strict):
    """Two allele functions (order does not matter) and the phenotype CPIC gives them."""

    functions: tuple[str, str]
    phenotype: str


class SingleAlleleRule(_Strict):
    """One allele's function and the phenotype (hemizygous G6PD males, MT-RNR1)."""

    function: str
    phenotype: str


class Threshold(_Strict):
    """An activity-score range: ``min``/``max`` inclusive, ``above`` strictly greater."""

    phenotype: str
    min: Decimal | None = None
    max: Decimal | None = None
    above: Decimal | None = None

    @model_validator(mode="after")
    def _shape(self) -> "Threshold":
        if self.above is None and (self.min is None or self.max is None):
            raise ValueError("a threshold needs min and max, or above")
        if self.above is not None and (self.min is not None or self.max is not None):
            raise ValueError("a threshold has either min/max or above, not both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("threshold min is greater than max")
        return self

    def contains(self, value: Decimal) -> bool:
        if self.above is not None:
            return value > self.above
        assert self.min is not None and self.max is not None
        return self.min <= value <= self.max

    def describe(self) -> str:
        """The range as CPIC writes it: "0", "0.25-1.0", ">2.25"."""
        if self.above is not None:
            return f">{self.above}"
        return f"{self.min}" if self.min == self.max else f"{self.min}-{self.max}"


class ActivityScoreRule(_Strict):
    """How activity values combine (``sum`` of two, or DPYD's ``two_lowest``) and the thresholds."""

    combine: Literal["sum", "two_lowest"] = "sum"
    thresholds: list[Threshold] = Field(min_length=1)


class DiplotypeException(_Strict):
    """A named CPIC override for one diplotype (wins over the general rule)."""

    diplotype: str
    phenotype: str
    activity_score: str | None = None
    reason: str


class AlleleOfInterest(_Strict):
    """An HLA allele CPIC guidelines look up as positive/negative."""

    allele: str = Field(pattern=r"^\*\d{2,3}:\d{2,3}[A-Z]?$")
    note: str | None = None


class SnpDef(_Strict):
    """Single-SNP genes: how genotype text such as ``rs9923231 C/T`` or ``GA`` maps to alleles."""

    rsid: str
    prefixes: list[str] = Field(default_factory=list)
    letters: dict[str, str]


class GeneDefinition(_Strict):
    """One gene's CPIC allele table and phenotype rule (one ``cards/genes/<GENE>.yaml``)."""

    gene: str = Field(min_length=1)
    hgnc: str = Field(pattern=r"^HGNC:\d+$")
    name: str | None = None
    method: Method
    source: str = Field(min_length=1)
    version: str = Field(min_length=1)
    reference_allele: str | None = None
    star_suballele_fallback: bool = False
    copy_number_synonyms: bool = False
    phenotypes: list[str] = Field(default_factory=list)
    alleles: list[AlleleDef] = Field(default_factory=list)
    function_pairs: list[FunctionPair] = Field(default_factory=list)
    single_allele_rules: list[SingleAlleleRule] = Field(default_factory=list)
    activity_score: ActivityScoreRule | None = None
    exceptions: list[DiplotypeException] = Field(default_factory=list)
    alleles_of_interest: list[AlleleOfInterest] = Field(default_factory=list)
    snp: SnpDef | None = None
    notes: list[str] = Field(default_factory=list)

    _by_key: dict[str, AlleleDef] = PrivateAttr(default_factory=dict)
    _index: dict[str, int] = PrivateAttr(default_factory=dict)
    _pairs: dict[tuple[str, str], str] = PrivateAttr(default_factory=dict)
    _single: dict[str, str] = PrivateAttr(default_factory=dict)
    _exceptions: dict[tuple[str, ...], DiplotypeException] = PrivateAttr(default_factory=dict)
    _numbered_with_letters: frozenset[str] = PrivateAttr(default_factory=frozenset)
    _phenotype_keys: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_and_index(self) -> "GeneDefinition":
        by_key: dict[str, AlleleDef] = {}
        for i, a in enumerate(self.alleles):
            for label in [a.name, *a.aliases]:
                k = allele_key(label)
                other = by_key.get(k)
                if other is not None and other.name != a.name:
                    raise ValueError(f"allele name/alias {label!r} is used by both {other.name!r} and {a.name!r}")
                by_key[k] = a
            self._index[a.name] = i
        self._by_key = by_key
        if self.method == "activity_score":
            if self.activity_score is None:
                raise ValueError("method activity_score needs an 'activity_score' rule")
            missing = [a.name for a in self.alleles if a.activity_value is None]
            if missing:
                raise ValueError(f"alleles without activity_value: {', '.join(missing[:5])}")
        if self.method in ("function", "x_linked") and not self.function_pairs:
            raise ValueError(f"method {self.method} needs 'function_pairs'")
        if self.method in ("x_linked", "mitochondrial") and not self.single_allele_rules:
            raise ValueError(f"method {self.method} needs 'single_allele_rules'")
        if self.method == "allele_status" and not self.alleles_of_interest:
            raise ValueError("method allele_status needs 'alleles_of_interest'")
        if self.reference_allele is not None and allele_key(self.reference_allele) not in by_key:
            raise ValueError(f"reference_allele {self.reference_allele!r} is not in the allele list")
        if self.snp is not None:
            for letter, target in self.snp.letters.items():
                if allele_key(target) not in by_key:
                    raise ValueError(f"snp letter {letter!r} points to unknown allele {target!r}")
        pairs: dict[tuple[str, str], str] = {}
        for p in self.function_pairs:
            k2 = _pair_key(*p.functions)
            if k2 in pairs and pairs[k2] != p.phenotype:
                raise ValueError(f"function pair {list(p.functions)} is listed twice with different phenotypes")
            pairs[k2] = p.phenotype
        self._pairs = pairs
        self._single = {r.function: r.phenotype for r in self.single_allele_rules}
        exc: dict[tuple[str, ...], DiplotypeException] = {}
        for e in self.exceptions:
            names = []
            for part in e.diplotype.split("/"):
                a = by_key.get(allele_key(part))
                if a is None:
                    raise ValueError(f"exception diplotype {e.diplotype!r}: allele {part.strip()!r} is not in the allele list")
                names.append(a.name)
            exc[tuple(sorted(names))] = e
        self._exceptions = exc
        self._numbered_with_letters = frozenset(
            m.group(1).lower() for a in self.alleles if (m := re.fullmatch(r"(\*\d+)[A-Za-z]+", a.name))
        )
        self._phenotype_keys = {phenotype_key(p): p for p in self.phenotypes}
        return self

    # -- lookups used by the phenotype engine -------------------------------------------------
    def lookup(self, label: str) -> AlleleDef | None:
        """The allele whose name or alias matches ``label`` (case/space-insensitive), or None."""
        return self._by_key.get(allele_key(label))

    def allele_order(self, name: str) -> int:
        """Position of an allele in the table (used to write diplotypes in CPIC order)."""
        return self._index.get(name, len(self._index))

    def has_lettered_suballeles(self, star: str) -> bool:
        """True if the table itself names lettered alleles for ``star`` (e.g. TPMT *3A/*3B)."""
        return star.lower() in self._numbered_with_letters

    def pair_phenotype(self, f1: str, f2: str) -> str | None:
        return self._pairs.get(_pair_key(f1, f2))

    def single_phenotype(self, function: str) -> str | None:
        return self._single.get(function)

    def exception_for(self, names: list[str]) -> DiplotypeException | None:
        return self._exceptions.get(tuple(sorted(names)))

    def phenotype_for_key(self, key: str) -> str | None:
        """The CPIC term whose normalised form is ``key`` (see :func:`phenotype_key`)."""
        return self._phenotype_keys.get(key)

    def functions(self) -> set[str]:
        return {a.function for a in self.alleles if a.function is not None}

    def lookup_values(self, method: str) -> set[str]:
        """Every value a guideline may look up for this gene with ``method``.

        ``phenotype``: the CPIC phenotype terms; ``activity_score``: every activity score two
        alleles can give (as CPIC writes it, plus ``n/a``); ``allele_status``: ``*57:01 positive``
        / ``negative`` for each allele of interest.
        """
        if method == "phenotype":
            return set(self.phenotypes)
        if method == "activity_score":
            vals = [a.activity_value for a in self.alleles if a.activity_value is not None]
            out = {"n/a"} if "n/a" in vals else set()
            nums = sorted({v for v in vals if v != "n/a"})
            for a, b in combinations_with_replacement(nums, 2):
                ge = a.startswith("≥") or b.startswith("≥")
                out.add(format_activity(Decimal(a.removeprefix("≥")) + Decimal(b.removeprefix("≥")), ge))
            return out
        if method == "allele_status":
            return {f"{a.allele} {s}" for a in self.alleles_of_interest for s in ("positive", "negative")}
        return set()


def format_activity(value: Decimal, at_least: bool = False) -> str:
    """An activity score as CPIC writes it: ``1.25``, ``1.5``, ``2.0``, ``0.0``, ``≥4.0``."""
    s = format(value.normalize(), "f")
    if "." not in s:
        s += ".0"
    return ("≥" if at_least else "") + s


def _pair_key(f1: str, f2: str) -> tuple[str, str]:
    a, b = sorted((f1, f2))
    return a, b


def phenotype_key(text: str) -> str:
    """Lower-case, single-spaced, 'metaboliser' spelled the US way: for phenotype matching."""
    t = _WS.sub(" ", text.strip().lower()).replace("metaboliser", "metabolizer")
    return t


# ---------------------------------------------------------------------------------------------
# Loading


_CACHE: dict[Path, tuple[tuple[tuple[str, int, int], ...], dict[str, GeneDefinition]]] = {}


def load_genes(dir: Path | str) -> dict[str, GeneDefinition]:
    """Load and validate every ``*.yaml`` gene file in ``dir``; keyed by gene symbol.

    The result is cached per directory and reused while no file changed (same names, sizes
    and modification times), so calling it on every request is cheap. Raises
    :class:`GeneDefinitionError` naming the file and, where possible, the line.
    """
    d = Path(dir)
    if not d.is_dir():
        raise GeneDefinitionError(f"gene directory {d} does not exist")
    files = sorted(d.glob("*.yaml"))
    stamp = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    cached = _CACHE.get(d.resolve())
    if cached is not None and cached[0] == stamp:
        return cached[1]
    genes: dict[str, GeneDefinition] = {}
    for f in files:
        g = _load_file(f)
        if g.gene in genes:
            raise GeneDefinitionError(f"{f}: gene {g.gene} is defined twice")
        genes[g.gene] = g
    _CACHE[d.resolve()] = (stamp, genes)
    return genes


def _load_file(path: Path) -> GeneDefinition:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GeneDefinitionError(f"{path}: cannot read: {exc}") from exc
    try:
        data = yaml.load(text, Loader=yamlfile.SafeLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise GeneDefinitionError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise GeneDefinitionError(f"{path}:1: a gene file must be a mapping (gene:, hgnc:, method:, ...)")
    try:
        return GeneDefinition.model_validate(data)
    except ValidationError as exc:
        raise GeneDefinitionError(_describe(path, text, exc)) from None


def _describe(path: Path, text: str, exc: ValidationError) -> str:
    """Turn a pydantic error into 'file:line: field: message' lines using YAML node marks."""
    try:
        root = yaml.compose(text, Loader=yamlfile.SafeLoader)
    except yaml.YAMLError:  # pragma: no cover - already parsed once
        root = None
    lines = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p in ("function-after", "function-before"))]
        line = _line_of(root, loc)
        where = f"{path}:{line}" if line else f"{path}"
        field = ".".join(str(p) for p in loc) or "(file)"
        lines.append(f"{where}: {field}: {err['msg']}")
    return "\n".join(lines)


def _line_of(node: Any, loc: list[Any]) -> int | None:
    best = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        best = node.start_mark.line + 1
    return best


# ---------------------------------------------------------------------------------------------
# Semantic checks


def check_genes(dir: Path | str) -> list[str]:
    """Problems a pharmacist should fix; an empty list means the directory is consistent.

    Covers schema errors (as :func:`load_genes` reports them, one file at a time), missing
    source/version, function names in the pair table that no allele has, function
    combinations the pair table does not cover, phenotypes not in the gene's ``phenotypes``
    list, and gaps in activity-score thresholds.
    """
    problems: list[str] = []
    d = Path(dir)
    if not d.is_dir():
        return [f"gene directory {d} does not exist"]
    for f in sorted(d.glob("*.yaml")):
        try:
            g = _load_file(f)
        except GeneDefinitionError as exc:
            problems.extend(str(exc).splitlines())
            continue
        problems.extend(f"{f.name}: {p}" for p in _check_gene(g, f))
    return problems


def _check_gene(g: GeneDefinition, path: Path) -> list[str]:
    out: list[str] = []
    if path.stem != g.gene:
        out.append(f"file name {path.name} does not match gene {g.gene}")
    if not g.source.strip() or not g.version.strip():
        out.append("source and version must both be given")
    known_ph = set(g.phenotypes)
    funcs = g.functions()
    if g.method in ("function", "x_linked", "mitochondrial"):
        nofunc = [a.name for a in g.alleles if a.function is None]
        if nofunc:
            out.append(f"alleles without a function: {', '.join(nofunc[:5])}")
    if g.function_pairs:
        used: set[str] = set()
        for p in g.function_pairs:
            used.update(p.functions)
            if known_ph and p.phenotype not in known_ph:
                out.append(f"function pair {list(p.functions)}: phenotype {p.phenotype!r} is not in 'phenotypes'")
        unknown = sorted(used - funcs)
        if unknown:
            out.append(f"function pair table uses function names no allele has: {', '.join(unknown)}")
        for a, b in combinations_with_replacement(sorted(funcs), 2):
            if g.pair_phenotype(a, b) is None:
                out.append(f"function pair table does not cover [{a}, {b}]")
    if g.single_allele_rules:
        for r in g.single_allele_rules:
            if r.function not in funcs:
                out.append(f"single-allele rule uses unknown function {r.function!r}")
            if known_ph and r.phenotype not in known_ph:
                out.append(f"single-allele rule: phenotype {r.phenotype!r} is not in 'phenotypes'")
        for f in sorted(funcs - {r.function for r in g.single_allele_rules}):
            out.append(f"single-allele rules do not cover function {f!r}")
    if g.activity_score is not None:
        for t in g.activity_score.thresholds:
            if known_ph and t.phenotype not in known_ph:
                out.append(f"threshold {t.describe()}: phenotype {t.phenotype!r} is not in 'phenotypes'")
        out.extend(_threshold_gaps(g))
    for e in g.exceptions:
        if known_ph and e.phenotype not in known_ph:
            out.append(f"exception {e.diplotype}: phenotype {e.phenotype!r} is not in 'phenotypes'")
    return out


def _threshold_gaps(g: GeneDefinition) -> list[str]:
    """Every achievable activity score (two alleles, 0.25 steps) must fall in exactly one range."""
    assert g.activity_score is not None
    vals = sorted(
        {Decimal(a.activity_value.removeprefix("≥")) for a in g.alleles if a.activity_value not in (None, "n/a")}
    )
    if not vals:
        return []
    out = []
    for a, b in combinations_with_replacement(vals, 2):
        score = a + b
        hits = [t for t in g.activity_score.thresholds if t.contains(score)]
        if len(hits) != 1:
            what = "no" if not hits else "more than one"
            out.append(f"activity score {score} falls in {what} threshold range")
    return sorted(set(out))


def _main(argv: list[str]) -> int:
    d = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[2] / "cards" / "genes"
    problems = check_genes(d)
    for p in problems:
        print(p)
    n = len(list(d.glob("*.yaml"))) if d.is_dir() else 0
    print(f"{n} gene files checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv))
