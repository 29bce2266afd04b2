"""Is a one-click suggestion safe for THIS patient? Screening of alternatives and dose changes.

Clinical judgement lives in `cards/` (cards/README.md "Safety of one-click suggestions"):

* `cards/safety/contraindications.yaml`: per alternative drug, checks (conditions, age, sex,
  co-medications) that exclude it from one-click ordering or stop it from being the recommended one,
  each with a citation;
* `cards/safety/products.yaml`: RxNorm product codes (SCD/SBD) with their ingredients, and the policy for
  switching a combination product (never silently drop its other ingredients);
* per rule in the guideline files: `alternatives[].one_click`/`why` and the dose applicability fields
  (`dose.applies`, `in_use_days`, `applies_if`, `max_mg_per_kg_day`, `one_click`/`why`).

This package loads the two safety files (with file:line problems for `pgx-cds knowledge check`) and
evaluates them: :func:`screen_alternatives` and :func:`plan_dose` turn a rule's alternatives and dose into
what may be offered one-click, plus the notes the card prints and the evidence of what was withheld.
Nothing here changes what CPIC recommends; it only decides what may be ordered with one click.
"""

from service.pgx.safety.alternatives import Screened, combination_others, screen_alternatives
from service.pgx.safety.data import (
    CONTRAINDICATIONS_FILE,
    PRODUCTS_FILE,
    SAFETY_DIR,
    SafetyData,
    alternative_problems,
    data_needs,
    load_safety,
    safety_files,
)
from service.pgx.safety.dosing import doses_per_day, drug_in_use, loading_dose_reason, plan_dose

__all__ = [
    "CONTRAINDICATIONS_FILE", "PRODUCTS_FILE", "SAFETY_DIR", "SafetyData", "Screened", "alternative_problems",
    "combination_others", "data_needs", "doses_per_day", "drug_in_use", "load_safety", "loading_dose_reason",
    "plan_dose", "safety_files", "screen_alternatives",
]
