"""Current medications: which records count (status lists as data), the drugs they contain, drug use.

Which statuses take a MedicationRequest/Statement out of the current medications is data, per purpose:
``cards/medication_status.yaml`` (populations, phenoconversion, safety), so a pharmacist can review it.
Every reader of current medications goes through :func:`current` and :func:`drug_use` here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from service.pgx import yamlfile
from service.pgx.context import DraftOrder, Medication, PatientContext
from service.pgx.drugs import DrugIndex, recognise_codes
from service.pgx.models import DrugRef

FILE_NAME = "medication_status.yaml"
#: the file shipped with the service: used when a knowledge directory has none (a partial test tree)
SHIPPED = Path(__file__).resolve().parents[2] / "cards" / FILE_NAME
Purpose = Literal["populations", "phenoconversion", "safety"]
#: FHIR R4 MedicationRequest and MedicationStatement status codes, and the generic request status `revoked`
KNOWN_STATUSES = frozenset({"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft",
                            "unknown", "intended", "not-taken", "revoked"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PurposeDef(_Strict):
    use: str
    not_current: list[str]

    @field_validator("not_current")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in KNOWN_STATUSES]
        if bad:
            raise ValueError(f"unknown status(es) {bad}; FHIR R4 statuses are {sorted(KNOWN_STATUSES)}")
        if "active" in v:
            raise ValueError("'active' cannot be listed as not current")
        return v


class _File(_Strict):
    purposes: dict[Purpose, _PurposeDef]

    @field_validator("purposes")
    @classmethod
    def _all(cls, v: dict[str, _PurposeDef]) -> dict[str, _PurposeDef]:
        missing = sorted({"populations", "phenoconversion", "safety"} - set(v))
        if missing:
            raise ValueError(f"purposes missing: {missing}")
        return v


@dataclass(frozen=True, slots=True)
class MedicationStatuses:
    """Per purpose, the statuses that do not count as a current medication."""

    populations: frozenset[str]
    phenoconversion: frozenset[str]
    safety: frozenset[str]


def load(path: Path) -> tuple[MedicationStatuses | None, list[str]]:
    """The status lists of one file; problems as messages."""
    try:
        f = _File.model_validate(yamlfile.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as exc:
        return None, ["invalid medication status file: " + "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())]
    except (OSError, yaml.YAMLError) as exc:
        return None, [f"medication status file cannot be read: {exc}".splitlines()[0]]
    p = f.purposes
    return MedicationStatuses(frozenset(p["populations"].not_current), frozenset(p["phenoconversion"].not_current),
                              frozenset(p["safety"].not_current)), []


@lru_cache(maxsize=1)
def shipped() -> MedicationStatuses:
    statuses, problems = load(SHIPPED)
    if statuses is None:  # pragma: no cover - the shipped file is checked by the tests
        raise RuntimeError(f"{SHIPPED}: {problems}")
    return statuses


# --------------------------------------------------------------------------------------------
# Current medications


def current(meds: Sequence[Medication], order: DraftOrder | None, not_current: frozenset[str]) -> list[Medication]:
    """The medications whose status counts as current, without the draft order's own record (order-sign
    re-sends it as an active MedicationRequest with the draft's id)."""
    own = order.id if order is not None else None
    if own:
        return [m for m in meds if m.status not in not_current and m.id != own]
    return [m for m in meds if m.status not in not_current]


def medication_drugs(index: DrugIndex, med: Medication) -> list[DrugRef]:
    """The CPIC drugs in a current medication (codes, then names; a contained Medication's codes too)."""
    return recognise_codes(index, med.codes(), med.texts())


def drug_use(index: DrugIndex, drug: DrugRef, meds: Iterable[Medication], today: date) -> tuple[bool, int | None]:
    """Is the drug among these (current) medications, and since how many days (the earliest start; None when
    no record of it has a readable start)?"""
    found = False
    best: int | None = None
    for m in meds:
        if drug.name not in {r.name for r in medication_drugs(index, m)}:
            continue
        found = True
        if m.started is not None:
            days = (today - m.started).days
            best = days if best is None else max(best, days)
    return found, best


def unavailable(patient: PatientContext, key: str) -> bool:
    """Was this prefetch key needed but not obtained? (Then "none on record" cannot be concluded.)"""
    return key in patient.unavailable
