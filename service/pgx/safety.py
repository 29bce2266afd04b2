"""Is a one-click suggestion safe for THIS patient? Screening of alternatives and dose changes.

Clinical judgement lives in `cards/` (cards/README.md "Safety of one-click suggestions"):

* `cards/safety/contraindications.yaml`: per alternative drug, checks (conditions, age, sex,
  co-medications) that exclude it from one-click ordering or stop it from being the recommended one,
  each with a citation;
* `cards/safety/products.yaml`: RxNorm product codes (SCD/SBD) with their ingredients, and the policy for
  switching a combination product (never silently drop its other ingredients);
* per rule in the guideline files: `alternatives[].one_click`/`why` and the dose applicability fields
  (`dose.applies`, `in_use_days`, `applies_if`, `max_mg_per_kg_day`, `one_click`/`why`).

This module loads the two safety files (with file:line problems for `pgx-cds knowledge check`) and
evaluates them: :func:`screen_alternatives` and :func:`plan_dose` turn a rule's alternatives and dose into
what may be offered one-click, plus the notes the card prints and the evidence of what was withheld.
Nothing here changes what CPIC recommends; it only decides what may be ordered with one click.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.fhir.models import DraftOrder, PatientData
from service.pgx.guidelines import AgeRange, AlternativeDef, DoseDef, GuidelineFileError, line_of, read_yaml_with_lines
from service.pgx.models import Alternative, DoseAdjustment, DrugRef, WithheldAlternative
from service.pgx.warfarin import age_years

SNOMED = "http://snomed.info/sct"
RXNORM_SYSTEMS = frozenset({"http://www.nlm.nih.gov/research/umls/rxnorm", "urn:oid:2.16.840.1.113883.6.88",
                            "http://www.nlm.nih.gov/research/umls/rxnorm/"})
_INACTIVE_MED = {"draft", "entered-in-error", "cancelled", "stopped", "completed", "revoked", "on-hold"}
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
    _med_res: dict[str, re.Pattern[str]] = field(default_factory=dict)
    _needs: dict[str, frozenset[str]] = field(default_factory=dict)

    def med_re(self, sel: MedicationSelector) -> re.Pattern[str]:
        key = "|".join([sel.name, *sel.brands])
        rx = self._med_res.get(key)
        if rx is None:
            alt = "|".join(re.escape(n) for n in sorted([sel.name, *sel.brands], key=len, reverse=True))
            rx = re.compile(rf"(?<![A-Za-z0-9])({alt})(?![A-Za-z0-9])", re.IGNORECASE)
            self._med_res[key] = rx
        return rx


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
# Patient facts (tri-state: True / False / None = the record cannot tell)


def _unavailable(patient: PatientData, key: str) -> bool:
    return key in (getattr(patient, "unavailable", None) or [])


def _condition_counts(c: dict[str, Any]) -> bool:
    """A Condition counts for screening unless refuted or entered in error. A resolved or inactive one still
    counts: contraindications are about history too (a prior stroke stays a prior stroke)."""
    cc = c.get("verificationStatus") or {}
    for coding in (cc.get("coding") or []) if isinstance(cc, dict) else []:
        if isinstance(coding, dict) and coding.get("code") in ("refuted", "entered-in-error"):
            return False
    return True


def _patient_codes(patient: PatientData, order: DraftOrder | None) -> set[tuple[str, str]]:
    codes: set[tuple[str, str]] = set()
    for c in patient.conditions:
        if not isinstance(c, dict) or not _condition_counts(c):
            continue
        code = c.get("code")
        for coding in (code.get("coding") or []) if isinstance(code, dict) else []:
            if isinstance(coding, dict) and isinstance(coding.get("system"), str) and isinstance(coding.get("code"), str):
                codes.add((coding["system"], coding["code"]))
    if order is not None:
        for rc in order.reason_codes:
            if rc.system and rc.code:
                codes.add((rc.system, rc.code))
    return codes


def _code_hit(patterns: Sequence[str], codes: set[tuple[str, str]]) -> bool:
    for pat in patterns:
        system, _, code = pat.partition("|")
        for s, c in codes:
            if s == system and (c == code or (system != SNOMED and c.startswith(code))):
                return True
    return False


def _conditions_state(patterns: Sequence[str], patient: PatientData, order: DraftOrder | None) -> bool | None:
    if _code_hit(patterns, _patient_codes(patient, order)):
        return True
    return None if _unavailable(patient, "conditions") else False


def active_medications(patient: PatientData, order: DraftOrder | None) -> list[dict[str, Any]]:
    out = []
    for m in patient.medications:
        if not isinstance(m, dict) or m.get("status") in _INACTIVE_MED:
            continue
        if order is not None and order.id and m.get("id") == order.id:
            continue  # the draft itself (order-sign re-sends it)
        out.append(m)
    return out


def _med_codes_texts(m: dict[str, Any]) -> tuple[set[str], list[str]]:
    codes: set[str] = set()
    texts: list[str] = []
    for key in ("medicationCodeableConcept", "code"):
        cc = m.get(key)
        if not isinstance(cc, dict):
            continue
        if isinstance(cc.get("text"), str):
            texts.append(cc["text"])
        for c in cc.get("coding") or []:
            if isinstance(c, dict):
                if isinstance(c.get("code"), str) and c.get("system") in RXNORM_SYSTEMS:
                    codes.add(c["code"].strip())
                if isinstance(c.get("display"), str):
                    texts.append(c["display"])
    ref = m.get("medicationReference")
    if isinstance(ref, dict) and isinstance(ref.get("display"), str):
        texts.append(ref["display"])
    return codes, texts


def _medications_state(data: SafetyData, sels: Sequence[MedicationSelector], patient: PatientData,
                       order: DraftOrder | None) -> tuple[bool | None, str | None]:
    for m in active_medications(patient, order):
        codes, texts = _med_codes_texts(m)
        for sel in sels:
            if (sel.rxnorm and sel.rxnorm in codes) or any(data.med_re(sel).search(t) for t in texts):
                return True, sel.name
    return (None if _unavailable(patient, "medications") else False), None


def _sex_state(sexes: Sequence[str], patient: PatientData) -> bool | None:
    sex = (patient.sex or "").lower()
    if sex not in ("male", "female"):
        return None
    return sex in sexes


def _age_state(rng: AgeRange, patient: PatientData, today: date) -> bool | None:
    age = age_years(patient.birth_date, today)
    if age is None:
        return None
    return (rng.min is None or age >= rng.min) and (rng.max is None or age <= rng.max)


@dataclass
class _CheckResult:
    fires: bool | None  # None: could not be ruled out
    missing: list[str]  # what the record lacked
    detail: str | None = None  # e.g. the co-medication found


def evaluate_check(data: SafetyData, check: Check, patient: PatientData, order: DraftOrder | None,
                   today: date) -> _CheckResult:
    states: list[bool | None] = []
    missing: list[str] = []
    detail = None
    if check.sex:
        s = _sex_state(check.sex, patient)
        states.append(s)
        if s is None:
            missing.append("sex")
    if check.age is not None:
        s = _age_state(check.age, patient, today)
        states.append(s)
        if s is None:
            missing.append("date of birth")
    if check.conditions:
        s = _conditions_state(check.conditions, patient, order)
        states.append(s)
        if s is None:
            missing.append("conditions")
    if check.medications:
        s, detail = _medications_state(data, check.medications, patient, order)
        states.append(s)
        if s is None:
            missing.append("current medications")
    if any(s is False for s in states):
        return _CheckResult(False, [])
    if check.unless_conditions:
        u = _conditions_state(check.unless_conditions, patient, order)
        if u is True:
            return _CheckResult(False, [])
        if u is None:
            missing.append("conditions")
            states.append(None)
    if all(s is True for s in states):
        return _CheckResult(True, [], detail)
    return _CheckResult(None, sorted(set(missing)))


# --------------------------------------------------------------------------------------------
# Alternatives


@dataclass
class Screened:
    alternatives: list[Alternative]  # what may be offered one-click
    withheld: list[WithheldAlternative]  # named by CPIC but not offered (or not as the recommended one)
    notes: list[str]  # what the card says about it


def combination_others(data: SafetyData, order: DraftOrder | None, drugs: Sequence[DrugRef]) -> list[str]:
    """The other ingredients of a combination product ordered (empty when the order is a single ingredient)."""
    if order is None:
        return []
    ordered = {d.name for d in drugs}
    others: list[str] = []
    for c in order.codes:
        if c.code and c.system in RXNORM_SYSTEMS:
            p = data.products.get(c.code.strip())
            if p is not None and len(p.ingredients) > 1:
                others += [i for i in p.ingredients if i not in ordered]
    if data.partners_re is not None:
        for text in [order.text, *(c.display for c in order.codes)]:
            if text:
                found = [data.partner_names.get(m.group(1).lower(), m.group(1).lower())
                         for m in data.partners_re.finditer(text)]
                others += [f for f in found if f not in ordered]
    if len(ordered) > 1:
        others += sorted(ordered)
    return list(dict.fromkeys(others))


def screen_alternatives(data: SafetyData, alts: Sequence[AlternativeDef], drug: DrugRef, patient: PatientData,
                        order: DraftOrder | None, today: date, *, order_drugs: Sequence[DrugRef] = ()) -> Screened:
    """Which of a rule's alternatives may be offered one-click for this patient, and why the others are not."""
    out = Screened([], [], [])
    if not alts:
        return out
    others = [o for o in combination_others(data, order, order_drugs or [drug]) if o != drug.name]
    if others and data.policy is not None:
        ingredients = " / ".join([drug.name, *others])
        reason = data.policy.reason.strip().format(ingredients=ingredients, others=" and ".join(others))
        for a in alts:
            out.withheld.append(WithheldAlternative(name=a.name, rxnorm=a.rxnorm, effect="not_offered",
                                                    reason=reason, citation=data.policy.citation))
        out.notes.append(f"No one-click switch: {reason}")
        return out
    for a in alts:
        if a.rxnorm is None:
            why = a.why or "no verified RxNorm code for the product to order"
            out.withheld.append(WithheldAlternative(name=a.name, effect="not_offered", reason=why))
            out.notes.append(f"{a.name.capitalize()} is not offered as a one-click order: {why}.")
            continue
        if not a.one_click:
            out.withheld.append(WithheldAlternative(name=a.name, rxnorm=a.rxnorm, effect="not_offered", reason=a.why or ""))
            out.notes.append(f"{a.name.capitalize()} is not offered as a one-click order: {a.why}")
            continue
        recommended = a.recommended
        excluded = False
        for check in data.checks.get(a.name.lower(), ()):
            res = evaluate_check(data, check, patient, order, today)
            if res.fires is False:
                continue
            reason = check.reason + (f" ({res.detail})" if res.detail else "")
            if res.fires is None:
                reason = (f"could not be ruled out ({', '.join(res.missing)} not available in the record): "
                          f"{check.reason}")
            if check.effect == "exclude":
                excluded = True
                out.withheld.append(WithheldAlternative(name=a.name, rxnorm=a.rxnorm, effect="excluded", check=check.id,
                                                        reason=reason, citation=check.citation))
                out.notes.append(f"{a.name.capitalize()} left out of the one-click choices: {reason}. "
                                 f"Source: {check.citation}.")
                break
            if recommended or res.fires is True:
                out.withheld.append(WithheldAlternative(name=a.name, rxnorm=a.rxnorm, effect="not_recommended",
                                                        check=check.id, reason=reason, citation=check.citation))
                out.notes.append(f"{a.name.capitalize()} is not the recommended choice for this patient: {reason}. "
                                 f"Source: {check.citation}.")
            recommended = False
        if not excluded:
            out.alternatives.append(Alternative(name=a.name, rxnorm=a.rxnorm, recommended=recommended))
    return out


# --------------------------------------------------------------------------------------------
# Dose changes

_LOADING_WORDS = re.compile(
    r"\b(loading|load|bolus|stat|single[- ]dose|one[- ]time|once[- ]only|x\s*1\s*dose|"
    r"once(?!\s*(a|per|every|each|daily|weekly|monthly|nightly|day|week|month)\b))\b", re.IGNORECASE)


def loading_dose_reason(resource: dict[str, Any]) -> str | None:
    """Why the order's first dosage instruction looks like a loading or once-only dose (None if it does not)."""
    dis = resource.get("dosageInstruction") if isinstance(resource, dict) else None
    if not isinstance(dis, list) or not dis:
        return None
    if len(dis) > 1 and len({(d.get("sequence") if isinstance(d, dict) else None) for d in dis}) > 1:
        return "several dosing phases (dosageInstruction.sequence)"
    first = dis[0] if isinstance(dis[0], dict) else {}
    timing = first.get("timing") if isinstance(first.get("timing"), dict) else {}
    rep = timing.get("repeat") if isinstance(timing.get("repeat"), dict) else {}
    if rep.get("count") == 1 and not isinstance(rep.get("count"), bool):
        return "timing count 1 (a single dose)"
    texts: list[str] = []
    for key in ("text", "patientInstruction"):
        if isinstance(first.get(key), str):
            texts.append(first[key])
    for ai in first.get("additionalInstruction") or []:
        if isinstance(ai, dict) and isinstance(ai.get("text"), str):
            texts.append(ai["text"])
    code = timing.get("code")
    if isinstance(code, dict):
        if isinstance(code.get("text"), str):
            texts.append(code["text"])
        for c in code.get("coding") or []:
            if isinstance(c, dict):
                texts += [v for v in (c.get("code"), c.get("display")) if isinstance(v, str)]
    for t in texts:
        m = _LOADING_WORDS.search(t)
        if m:
            return f"dosing text says {m.group(0)!r}"
    return None


_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0}


def doses_per_day(resource: dict[str, Any]) -> float | None:
    """Administrations per day from the first dosage instruction's timing (None when it cannot be read)."""
    try:
        rep = resource["dosageInstruction"][0]["timing"]["repeat"]
        freq = rep.get("frequency", 1)
        period = rep.get("period", 1)
        unit = rep.get("periodUnit", "d")
        if isinstance(freq, bool) or isinstance(period, bool) or unit not in _PERIOD_DAYS or not period or not freq:
            return None
        return float(freq) / (float(period) * _PERIOD_DAYS[unit])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None


def drug_in_use(drug: DrugRef, patient: PatientData, order: DraftOrder | None, today: date,
                index: Any) -> tuple[bool | None, int | None]:
    """(is the drug already an active medication — None if we cannot tell, days since the earliest start)."""
    from service.pgx.drugs import medication_request_drugs

    found = False
    days: int | None = None
    for m in active_medications(patient, order):
        if drug.name not in {r.name for r in medication_request_drugs(index, m)}:
            continue
        found = True
        authored = m.get("authoredOn") or ((m.get("dispenseRequest") or {}).get("validityPeriod") or {}).get("start")
        if isinstance(authored, str) and len(authored) >= 10:
            try:
                d = (today - date.fromisoformat(authored[:10])).days
            except ValueError:
                continue
            days = d if days is None else max(days, d)
    if not found and _unavailable(patient, "medications"):
        return None, None
    return found, days


def _bounds_state(d: DoseDef, patient: PatientData, today: date) -> bool | None:
    states: list[bool | None] = []
    for b in d.applies_if:
        parts: list[bool | None] = []
        if b.age is not None:
            parts.append(_age_state(b.age, patient, today))
        if b.weight_kg is not None:
            w = patient.weight_kg
            parts.append(None if w is None else ((b.weight_kg.min is None or w >= b.weight_kg.min)
                                                 and (b.weight_kg.max is None or w <= b.weight_kg.max)))
        states.append(False if any(p is False for p in parts) else (True if all(p is True for p in parts) else None))
    if any(s is True for s in states):
        return True
    return None if any(s is None for s in states) else False


def _describe_bounds(d: DoseDef) -> str:
    out = []
    for b in d.applies_if:
        parts = []
        if b.age is not None:
            parts.append("age " + (f"{b.age.min:g} or over" if b.age.max is None else
                                   f"up to {b.age.max:g}" if b.age.min is None else f"{b.age.min:g}-{b.age.max:g}"))
        if b.weight_kg is not None:
            w = b.weight_kg
            parts.append("weight " + (f"{w.min:g} kg or more" if w.max is None else
                                      f"up to {w.max:g} kg" if w.min is None else f"{w.min:g}-{w.max:g} kg"))
        out.append(" and ".join(parts))
    return " or ".join(out)


def plan_dose(d: DoseDef | None, drug: DrugRef, patient: PatientData, order: DraftOrder | None, today: date,
              index: Any) -> tuple[DoseAdjustment | None, list[str]]:
    """CPIC's dose advice for this patient and order: whether its number applies and may be applied with one click."""
    if d is None:
        return None, []
    notes: list[str] = []
    adj = DoseAdjustment(factor=d.factor, max_daily_mg=d.max_daily_mg, text=d.text)
    blocked: list[str] = []
    if d.applies_if:
        state = _bounds_state(d, patient, today)
        if state is False:
            notes.append(f"CPIC's dose numbers for {drug.name} apply to patients with {_describe_bounds(d)}; "
                         "this patient is outside that range, so they are not shown: dose by the label and, "
                         "where available, drug levels.")
            return None, notes
        if state is None:
            blocked.append("bounds")
            notes.append(f"CPIC's dose numbers for {drug.name} apply to patients with {_describe_bounds(d)}; "
                         "age or weight is not in the record: check before using them.")
    in_use, days = drug_in_use(drug, patient, order, today, index)
    if d.applies == "start":
        if in_use is True:
            blocked.append("in-use")
            notes.append(f"{drug.name.capitalize()} is already an active medication: CPIC's advice is for starting "
                         "therapy, so no dose change is suggested. Adjust by response, side effects and drug levels "
                         "(therapeutic drug monitoring) where available.")
        elif in_use is None:
            blocked.append("in-use-unknown")
            notes.append(f"Whether {drug.name} is already being taken could not be checked (current medications "
                         "not available): CPIC's starting-dose advice applies only to a new start.")
    elif d.applies == "continuing":
        need = d.in_use_days or 1
        if in_use is not True or days is None or days < need:
            blocked.append("not-continuing")
            since = ("not an active medication yet" if in_use is False else
                     "current medications not available" if in_use is None else
                     "start date unknown" if days is None else f"taken for {days} days")
            notes.append(f"CPIC's dose change for {drug.name} applies to continuing therapy after more than "
                         f"{need} days with efficacy achieved ({since}): no dose change is suggested on this order.")
    if not d.one_click:
        blocked.append("rule")
        if d.why:
            notes.append(f"No one-click dose change: {d.why}")
    if d.factor and order is not None and not blocked:
        loading = loading_dose_reason(order.resource)
        if loading:
            blocked.append("loading")
            notes.append(f"The draft order looks like a loading or once-only dose ({loading}); CPIC's change is for "
                         "the maintenance dose, so the loading dose is left as ordered.")
        elif d.max_daily_mg and order.dose_quantity is not None and not _within_daily_max(d, order, notes, drug):
            blocked.append("daily-max")
        elif d.max_mg_per_kg_day and order.dose_quantity is not None:
            per_day = doses_per_day(order.resource)
            unit = (order.dose_unit or "").strip().lower()
            if per_day is None or patient.weight_kg is None or unit not in ("mg", "milligram", "milligrams"):
                blocked.append("limit-unknown")
                notes.append(f"CPIC limits {drug.name} to {d.max_mg_per_kg_day:g} mg/kg/day; the new dose cannot be "
                             "checked against it (weight, dose unit or frequency missing), so no one-click change.")
            else:
                daily = order.dose_quantity * d.factor * per_day
                limit = d.max_mg_per_kg_day * patient.weight_kg
                if daily > limit + 1e-9:
                    blocked.append("limit")
                    notes.append(f"The adjusted {drug.name} dose ({daily:g} mg/day) would exceed CPIC's limit of "
                                 f"{d.max_mg_per_kg_day:g} mg/kg/day ({limit:g} mg/day at {patient.weight_kg:g} kg): "
                                 "no one-click change.")
    if blocked:
        adj = adj.model_copy(update={"one_click": False, "informational": "in-use" in blocked})
    return adj, notes


def _within_daily_max(d: DoseDef, order: DraftOrder, notes: list[str], drug: DrugRef) -> bool:
    """Does the adjusted dose stay within CPIC's maximum daily dose? (False, with a note, when not or unknown.)"""
    assert d.max_daily_mg is not None and d.factor is not None and order.dose_quantity is not None
    unit = (order.dose_unit or "").strip().lower()
    single = order.dose_quantity * d.factor
    per_day = doses_per_day(order.resource)
    if unit in ("mg", "milligram", "milligrams") and single <= d.max_daily_mg + 1e-9 and per_day is not None:
        if single * per_day <= d.max_daily_mg + 1e-9:
            return True
    if unit in ("mg", "milligram", "milligrams") and (single > d.max_daily_mg + 1e-9 or per_day is not None):
        daily = single * (per_day or 1)
        notes.append(f"The adjusted {drug.name} dose ({daily:g} mg/day) would exceed CPIC's maximum of "
                     f"{d.max_daily_mg:g} mg/day: no one-click change.")
    else:
        notes.append(f"CPIC's maximum for {drug.name} is {d.max_daily_mg:g} mg/day; the adjusted daily dose cannot "
                     "be checked against it (dose unit or frequency missing), so no one-click change.")
    return False


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
