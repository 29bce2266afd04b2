"""The safety files: `cards/safety/contraindications.yaml` and `cards/safety/products.yaml` (formats in
cards/README.md "Safety of one-click suggestions"), loaded with file:line problems, and what the rules of a
guideline need from the record to be screened."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.pgx.guidelines import AgeRange, AlternativeDef, GuidelineFileError, line_of, read_yaml_with_lines

SAFETY_DIR = "safety"
CONTRAINDICATIONS_FILE = "contraindications.yaml"
PRODUCTS_FILE = "products.yaml"

# --------------------------------------------------------------------------------------------
# File formats


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MedicationSelector(_Strict):
    name: str  # ingredient name, matched as a whole word in displays/text
    rxnorm: str | None = None  # RxNorm ingredient code
    brands: list[str] = Field(default_factory=list)


class Check(_Strict):
    """One reason an alternative may not be offered (all selectors given must hold)."""

    id: str
    effect: Literal["exclude", "not_recommended"]
    conditions: list[str] = Field(default_factory=list)  # "system|code"
    age: AgeRange | None = None
    sex: list[Literal["male", "female"]] = Field(default_factory=list)
    medications: list[MedicationSelector] = Field(default_factory=list)
    unless_conditions: list[str] = Field(default_factory=list)  # any of these on record: the check does not fire
    reason: str
    citation: str

    @field_validator("conditions", "unless_conditions")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        for c in v:
            if "|" not in c or not c.split("|", 1)[1]:
                raise ValueError(f"condition must be 'system|code', got {c!r}")
        return v

    @model_validator(mode="after")
    def _some(self) -> "Check":
        if not (self.conditions or self.age or self.sex or self.medications):
            raise ValueError(f"check {self.id}: needs conditions, age, sex and/or medications")
        if not self.reason.strip() or not self.citation.strip():
            raise ValueError(f"check {self.id}: reason and citation must not be empty")
        return self


class DrugChecks(_Strict):
    drug: str
    rxnorm: str | None = None
    checks: list[Check]


class ContraindicationsFile(_Strict):
    version: str
    drugs: list[DrugChecks]


class Product(_Strict):
    rxnorm: str
    name: str
    ingredients: list[str]
    source: str

    @field_validator("ingredients")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("ingredients must not be empty")
        return [x.strip().lower() for x in v]


class CombinationPolicy(_Strict):
    swap: Literal["no_swap"] = "no_swap"
    reason: str
    citation: str


class ProductsFile(_Strict):
    version: str
    combination_policy: CombinationPolicy
    products: list[Product] = Field(default_factory=list)
    combination_partners: dict[str, list[str]] = Field(default_factory=dict)  # ingredient -> other names for it


@dataclass
class SafetyData:
    """The loaded safety files, indexed for the hot path."""

    checks: dict[str, tuple[Check, ...]] = field(default_factory=dict)  # drug name -> checks
    products: dict[str, Product] = field(default_factory=dict)  # RxNorm product code -> product
    policy: CombinationPolicy | None = None
    partners_re: re.Pattern[str] | None = None
    partner_names: dict[str, str] = field(default_factory=dict)  # lower-case name or synonym -> ingredient
    files: list[Path] = field(default_factory=list)
    _matchers: dict[int, Any] = field(default_factory=dict)
    _needs: dict[str, frozenset[str]] = field(default_factory=dict)

    def med_matcher(self, sels: list[MedicationSelector]) -> tuple[dict[str, str], re.Pattern[str], dict[str, str]]:
        """(RxNorm code -> name, one regex of every name and brand, lower-case word -> name), built once per list."""
        key = id(sels)
        hit = self._matchers.get(key)
        if hit is None or hit[0] is not sels:
            by_code = {sel.rxnorm: sel.name for sel in sels if sel.rxnorm}
            by_word = {w.lower(): sel.name for sel in sels for w in [sel.name, *sel.brands]}
            rx = _word_re(by_word)
            assert rx is not None
            hit = self._matchers[key] = (sels, (by_code, rx, by_word))
        return hit[1]


def _word_re(words: Iterable[str]) -> re.Pattern[str] | None:
    words = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(rf"(?<![A-Za-z0-9])({'|'.join(re.escape(w) for w in words)})(?![A-Za-z0-9])", re.IGNORECASE)


def safety_files(cards_dir: Path) -> list[Path]:
    d = Path(cards_dir) / SAFETY_DIR
    return [p for p in (d / CONTRAINDICATIONS_FILE, d / PRODUCTS_FILE) if p.is_file()]


def load_safety(cards_dir: Path) -> tuple[SafetyData, list[tuple[Path, int | None, str]]]:
    """Load `cards/safety/*.yaml`; (data, problems as (file, line, message)). Missing files: empty data."""
    data = SafetyData()
    problems: list[tuple[Path, int | None, str]] = []
    d = Path(cards_dir) / SAFETY_DIR
    for name, model in ((CONTRAINDICATIONS_FILE, ContraindicationsFile), (PRODUCTS_FILE, ProductsFile)):
        path = d / name
        if not path.is_file():
            continue
        data.files.append(path)
        try:
            raw, lines = read_yaml_with_lines(path)
        except GuidelineFileError as exc:
            problems += [(path, ln, msg) for ln, msg in exc.problems]
            continue
        try:
            parsed = model.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
                problems.append((path, line_of(lines, loc), f"{'.'.join(map(str, loc)) or '(file)'}: {err['msg']}"))
            continue
        if isinstance(parsed, ContraindicationsFile):
            for i, dc in enumerate(parsed.drugs):
                if dc.drug in data.checks:
                    problems.append((path, line_of(lines, ("drugs", i)), f"drug {dc.drug} is listed twice"))
                data.checks[dc.drug.lower()] = tuple(dc.checks)
        else:
            assert isinstance(parsed, ProductsFile)
            data.policy = parsed.combination_policy
            for i, p in enumerate(parsed.products):
                if p.rxnorm in data.products:
                    problems.append((path, line_of(lines, ("products", i)), f"product {p.rxnorm} is listed twice"))
                data.products[p.rxnorm] = p
            for ingredient, synonyms in parsed.combination_partners.items():
                for n in [ingredient, *synonyms]:
                    data.partner_names[n.strip().lower()] = ingredient.strip().lower()
            data.partners_re = _word_re(data.partner_names)
    return data, problems


#: words in an alternative's name that make it a specific product, not an ingredient order
FORMULATION_WORDS = re.compile(
    r"\b(liposom\w*|lipid|pegylated|extended|delayed|release|XR|ER|SR|CR|depot|patch|topical|inhal\w*|"
    r"ophthalmic|injection|oral|tablet|capsule|solution|suspension|conventional)\b", re.IGNORECASE)


def alternative_problems(alt: AlternativeDef) -> list[str]:
    """Knowledge check: a one-click alternative must be a plain ingredient (its code an ingredient code)."""
    if alt.one_click and alt.rxnorm and FORMULATION_WORDS.search(alt.name):
        return [f"alternative {alt.name!r} names a specific product but would be ordered under ingredient code "
                f"{alt.rxnorm}; give one_click: false with `why` (or use the plain ingredient)"]
    return []


# --------------------------------------------------------------------------------------------
# What the guideline rules of these drugs need from the record


def data_needs(data: SafetyData, guidelines: Iterable[Any]) -> set[str]:
    """Prefetch keys the safety checks of these guidelines' rules read (memoised per guideline)."""
    needs: set[str] = set()
    for g in guidelines:
        cached = data._needs.get(g.id)
        if cached is None:
            cached = data._needs[g.id] = frozenset(_guideline_needs(data, g))
        needs |= cached
    return needs


def _guideline_needs(data: SafetyData, g: Any) -> set[str]:
    needs: set[str] = set()
    for r in g.rules:
        for a in r.alternatives:
            for c in data.checks.get(a.name.lower(), ()):
                if c.conditions or c.unless_conditions:
                    needs.add("conditions")
                if c.medications:
                    needs.add("medications")
                if c.age is not None or c.sex:
                    needs.add("patient")
        if r.dose is not None:
            needs.add("medications")  # started or continuing?
            if r.dose.max_mg_per_kg_day or any(b.weight_kg for b in r.dose.applies_if):
                needs |= {"vitals", "patient"}
            if any(b.age for b in r.dose.applies_if):
                needs.add("patient")
    return needs
