"""Guideline populations: which CPIC population the record supports (conditions, the order's reason, age,
current medications), with condition value sets kept as reviewable data in `cards/valuesets/`.

A value set (`cards/valuesets/<id>.yaml`) lists, per code system, SNOMED CT concepts (the concept and the
descendants transcribed from a named source: we have no terminology server, so a hierarchy is written out)
and ICD-10 / ICD-10-CM codes or ranges (`C00-C96` is every code in categories C00 to C96; `I21` or `Z95.5`
matches the code and everything below it). Codes are compared without dots and case-insensitively, and
the usual OID spellings of the code systems are accepted.

`select_population` returns the population the record supports, else the guideline's primary one with a
note saying it was assumed (absence of a coded diagnosis proves nothing).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.pgx import medications as _meds
from service.pgx import warfarin as _warfarin
from service.pgx import yamlfile
from service.pgx.context import Condition, DraftOrder, PatientContext
from service.pgx.guidelines import Guideline, NoteDef, Population
from service.pgx.models import DrugRef

if TYPE_CHECKING:
    from service.pgx.knowledge import Knowledge

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
#: other spellings EHRs send for the same code systems
SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "http://snomed.info/sct/": SNOMED,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10-cm/": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.3": ICD10,
    "http://hl7.org/fhir/sid/icd-10/": ICD10,
}
_ICD = (ICD10, ICD10CM)
_RANGE = re.compile(r"^([A-Z][0-9][0-9A-Z])-([A-Z][0-9][0-9A-Z])$")
_INACTIVE = frozenset({"inactive", "resolved", "remission"})
_INACTIVE_IN_REMISSION = frozenset({"inactive", "resolved"})
_REFUTED = frozenset({"refuted", "entered-in-error"})


def system_uri(system: str) -> str:
    return SYSTEM_ALIASES.get(system.strip(), system.strip())


def _icd(code: str) -> str:
    return code.strip().upper().replace(".", "")


# --------------------------------------------------------------------------------------------
# Value sets


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ValueSetInclude(_Strict):
    """The codes of one code system in a value set."""

    system: str
    codes: list[str] = Field(default_factory=list)  # SNOMED: concept ids; ICD: a code and all below it
    ranges: list[str] = Field(default_factory=list)  # ICD only: "C00-C96" (3-character categories, inclusive)

    @field_validator("codes", mode="before")
    @classmethod
    def _codes(cls, v: Any) -> Any:
        if isinstance(v, list):  # SNOMED entries may be {code, display} for the reviewer
            return [str(x["code"]) if isinstance(x, dict) else str(x) for x in v]
        return v

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, v: list[str]) -> list[str]:
        for r in v:
            if not _RANGE.match(r.upper()):
                raise ValueError(f"range must look like C00-C96, got {r!r}")
        return v


class ValueSet(_Strict):
    """A named set of condition codes (`cards/valuesets/<id>.yaml`)."""

    id: str
    title: str
    source: str  # where the codes were transcribed from (citation)
    counts_in_remission: bool = False  # a Condition in remission still counts (e.g. leukaemia in maintenance)
    include: list[ValueSetInclude]

    def compiled(self) -> "CompiledValueSet":
        return CompiledValueSet(self)


class CompiledValueSet:
    """A value set ready for matching: exact SNOMED ids, ICD prefixes and category ranges."""

    def __init__(self, vs: ValueSet) -> None:
        self.id = vs.id
        self.counts_in_remission = vs.counts_in_remission
        self.exact: dict[str, set[str]] = {}
        self.prefixes: dict[str, tuple[str, ...]] = {}
        self.ranges: dict[str, list[tuple[str, str]]] = {}
        for inc in vs.include:
            system = system_uri(inc.system)
            if system in _ICD:
                self.prefixes[system] = self.prefixes.get(system, ()) + tuple(_icd(c) for c in inc.codes)
                self.ranges.setdefault(system, []).extend(
                    (m[1], m[2]) for r in inc.ranges if (m := _RANGE.match(r.upper())))
            else:
                self.exact.setdefault(system, set()).update(c.strip() for c in inc.codes)

    def contains(self, system: str, code: str) -> bool:
        system = system_uri(system)
        if system in _ICD:
            c = _icd(code)
            if c.startswith(self.prefixes.get(system, ())) and self.prefixes.get(system):
                return True
            return any(lo <= c[:3] <= hi for lo, hi in self.ranges.get(system, ()))
        return code.strip() in self.exact.get(system, ())


def load_valuesets(dir_: Path) -> tuple[dict[str, CompiledValueSet], list[tuple[str, str]]]:
    """Every `*.yaml` in dir_ (missing dir: none); problems as (file, message)."""
    out: dict[str, CompiledValueSet] = {}
    problems: list[tuple[str, str]] = []
    if not dir_.is_dir():
        return out, problems
    for path in sorted(dir_.glob("*.yaml")):
        try:
            vs = ValueSet.model_validate(yamlfile.safe_load(path.read_text(encoding="utf-8")))
        except (yaml.YAMLError, ValidationError) as exc:
            problems.append((path.name, f"invalid value set: {exc}".splitlines()[0]))
            continue
        if vs.id != path.stem:
            problems.append((path.name, f"id {vs.id!r} must equal the file name {path.stem!r}"))
        out[vs.id] = vs.compiled()
    return out, problems


# --------------------------------------------------------------------------------------------
# Choosing the population


def select_population(k: Knowledge, g: Guideline, drug: DrugRef, patient: PatientContext,
                      order: DraftOrder | None, today: date) -> tuple[Population | None, str | None]:
    """The population the record supports, else the primary one with a note saying so."""
    if not g.populations:
        return None, None
    states = [(p, _population_state(k, p, drug, patient, order, today)) for p in g.populations if not p.situational]
    chosen = [p for p, s in states if s is True]
    if chosen:
        note = None
        if len(chosen) > 1:
            note = f"Several populations fit the record ({', '.join(p.label for p in chosen)}); {chosen[0].label} used."
        return chosen[0], note
    open_ = [p for p, s in states if s is None]
    if len(open_) == 1 and open_[0].match is None:
        return open_[0], None  # the only population left (a default without selectors)
    primary = g.primary_population
    assert primary is not None
    return primary, f"Population could not be determined from the record; {primary.label} assumed."


def _population_state(k: Knowledge, p: Population, drug: DrugRef, patient: PatientContext,
                      order: DraftOrder | None, today: date) -> bool | None:
    m = p.match
    if m is None:
        return None
    states: list[bool | None] = []
    if m.conditions or m.value_sets:
        codes = patient_codes(patient, order) if m.conditions else set()
        hit = any(condition_matches(pat, codes) for pat in m.conditions)
        sets = [k.valuesets[v] for v in m.value_sets if v in k.valuesets]
        hit = hit or any(vs.contains(s, c) for vs in sets
                         for s, c in patient_codes(patient, order, remission=vs.counts_in_remission))
        states.append(True if hit else None)  # absence of a coded diagnosis proves nothing
    if m.age is not None:
        age = _warfarin.age_years(patient.birth_date, today)
        if age is None:
            states.append(None)
        else:
            ok = (m.age.min is None or age >= m.age.min) and (m.age.max is None or age <= m.age.max)
            states.append(ok)
    if m.medications:
        meds = current_med_codes(k, patient, order)
        states.append(True if any(c in meds for c in m.medications) else (False if patient.medications is not None else None))
    if m.drug_in_use is not None:
        in_use, days = drug_use(k, drug, patient, order, today)
        if m.drug_in_use:
            if not in_use:
                states.append(False)
            elif m.drug_in_use_days is None:
                states.append(True)
            else:
                states.append(None if days is None else days >= m.drug_in_use_days)
        else:
            states.append(not in_use)
    if any(s is False for s in states):
        return False
    if states and all(s is True for s in states):
        return True
    return None


def patient_codes(patient: PatientContext, order: DraftOrder | None, *, remission: bool = False) -> set[tuple[str, str]]:
    """(system, code) of the patient's active conditions and the order's reasons."""
    codes: set[tuple[str, str]] = set()
    for c in patient.conditions:
        if condition_active(c, remission=remission):
            codes.update((system_uri(s), code.strip()) for s, code in c.codes)
    if order is not None:
        for rc in order.reason_codes:
            if rc.system and rc.code:
                codes.add((system_uri(rc.system), rc.code.strip()))
    return codes


def condition_active(c: Condition, *, remission: bool = False) -> bool:
    inactive = _INACTIVE_IN_REMISSION if remission else _INACTIVE
    return not any(s in inactive for s in c.clinical_status) and not any(s in _REFUTED for s in c.verification_status)


def condition_matches(pattern: str, codes: set[tuple[str, str]]) -> bool:
    """A single `system|code` pattern: exact for SNOMED CT, code prefix (dots ignored) for ICD-10."""
    system, _, code = pattern.partition("|")
    system = system_uri(system)
    for s, c in codes:
        if s != system:
            continue
        if c == code or (system in _ICD and _icd(c).startswith(_icd(code))) or (
                system not in _ICD and system != SNOMED and c.startswith(code)):
            return True
    return False


def situational_notes(k: Knowledge, g: Guideline, pop: Population, drug: str, rule: Any,
                      match: Any) -> list[NoteDef]:
    """For each situational population refining `pop` (one the record cannot show, e.g. "no alternative
    agent available"), the advice CPIC gives in that situation when it differs from the card's own rule,
    as an information note. `match(population id)` returns that population's matching rule or None."""
    out: list[NoteDef] = []
    for p in g.populations:
        if not p.situational or p.refines != pop.id:
            continue
        other = match(p.id)
        if other is None or (other.rule.action, other.rule.strength) == (rule.rule.action, rule.rule.strength):
            continue
        advice = other.rule.summary.replace("{drug}", drug)
        out.append(NoteDef(text=f"{p.label}: {advice} (CPIC strength: {other.rule.strength}; rule {other.full_id}).",
                           warn=False))
    return out


# --------------------------------------------------------------------------------------------
# Current medications


def _active_meds(k: Knowledge, patient: PatientContext, order: DraftOrder | None) -> list:
    return _meds.current(patient.medications, order, k.medication_status.populations)


def current_med_codes(k: Knowledge, patient: PatientContext, order: DraftOrder | None) -> set[str]:
    """Codes of the current medications (as sent, any system) and the RxNorm codes of the CPIC drugs in them."""
    codes: set[str] = set()
    for m in _active_meds(k, patient, order):
        codes.update(c for _, c in m.codes() if c)
        codes.update(ref.rxnorm for ref in _meds.medication_drugs(k.drug_index, m))
    return codes


def drug_use(k: Knowledge, drug: DrugRef, patient: PatientContext, order: DraftOrder | None,
             today: date) -> tuple[bool, int | None]:
    """Is the drug already an active medication, and since how many days (None if unknown)?"""
    return _meds.drug_use(k.drug_index, drug, _active_meds(k, patient, order), today)
