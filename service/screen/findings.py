"""Worklist findings for one patient, from what the hooks would say (service.evaluate.evaluate_patient).

- ``active_drug_conflict``: a current medication for which order-sign would show a card (the
  recommendation is not standard dosing);
- ``test_candidate``: a current medication whose guideline gene has no usable result: the pre-test
  recommendation (where the knowledge base turns pre-test cards on for the drug, as the hooks do), or a
  result on file that could not be read or interpreted (an unreadable result never silences the finding);
- ``actionable_result``: a patient-view recommendation (non-normal phenotype) for a drug the patient does not
  currently take.

Priority is the card indicator: critical -> high, warning -> medium, info -> low.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from service.cards.builder import evidence
from service.evaluate import PatientEvaluation
from service.pgx.models import Action, Recommendation

ACTIVE_DRUG_CONFLICT = "active_drug_conflict"
ACTIONABLE_RESULT = "actionable_result"
TEST_CANDIDATE = "test_candidate"
KINDS = (ACTIVE_DRUG_CONFLICT, TEST_CANDIDATE, ACTIONABLE_RESULT)
PRIORITY = {"critical": "high", "warning": "medium", "info": "low"}
_PRIORITY_RANK = {"high": 0, "medium": 1, "low": 2}
_KIND_RANK = {k: i for i, k in enumerate(KINDS)}
#: rule-id suffixes of "a result is on file but cannot be used" recommendations (engine._unmatched/_no_result)
_RESULT_UNUSABLE = ("/unavailable", "/indeterminate")


def _finding(kind: str, rec: Recommendation, medication: str | None) -> dict[str, Any]:
    ev = evidence(rec)
    return {
        "kind": kind,
        "priority": PRIORITY.get(rec.indicator, "low"),
        "drug": ev["drug"],
        "genes": ev["genes"],
        "recommendation": ev["recommendation"],
        "medication": medication,
    }


def medication_kind(rec: Recommendation) -> str | None:
    """The finding a current medication's recommendation makes, or None (standard dosing, no CPIC rule)."""
    if rec.action == Action.test_before_prescribing or rec.rule_id.endswith(_RESULT_UNUSABLE):
        return TEST_CANDIDATE
    if rec.interruptive and rec.action not in (Action.standard_dosing, Action.no_recommendation):
        return ACTIVE_DRUG_CONFLICT
    return None


def findings(ev: PatientEvaluation, drugs: Collection[str] | None = None) -> list[dict[str, Any]]:
    """The patient's findings, most urgent first (deterministic order). ``drugs`` keeps only those drugs."""
    out: list[dict[str, Any]] = []
    taken: set[str] = set()
    for med in ev.medications:
        for rec in med.recommendations:
            taken.add(rec.drug.name)
            kind = medication_kind(rec)
            if kind is not None:
                out.append(_finding(kind, rec, med.reference))
    for rec in ev.summary:
        if rec.drug.name not in taken:
            out.append(_finding(ACTIONABLE_RESULT, rec, None))
    if drugs:
        wanted = {d.lower() for d in drugs}
        out = [f for f in out if f["drug"]["name"].lower() in wanted]
    out.sort(key=lambda f: (_KIND_RANK[f["kind"]], _PRIORITY_RANK[f["priority"]], f["drug"]["name"],
                            f["recommendation"]["ruleId"], f["medication"] or ""))
    return out


def worklist_line(patient_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"patient": f"Patient/{patient_id}", "findings": items}
