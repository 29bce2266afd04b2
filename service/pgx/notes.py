"""Which notes a card carries, and which of them are warnings.

A card's notes come from the result (conflicts, preliminary status, lab-reported implications), from the
engine (population assumed, ambiguous activity score) and from the knowledge files (guideline- and
rule-level notes). This module decides, per card:

- a lab-reported therapeutic implication for *another* drug is left out (it belongs on that drug's card);
- a lab-reported implication that agrees with the phenotype we computed is shown as plain information,
  and flagged as a warning only when it disagrees;
- knowledge-file notes are warnings unless the file marks them `warn: false`, and appear only on the
  cards of the drugs they name (`drugs: [...]`, default every drug of the rule or guideline).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from service.pgx.guidelines import NoteDef
from service.pgx.models import GeneEvidence

# written by service.fhir.genomics._impl_note, prefixed with the gene by the engine
_LAB_IMPLICATION = re.compile(
    r"^(?P<gene>[A-Za-z0-9-]+): lab-reported implication(?: for (?P<drug>[^:]+))?: (?P<pheno>.+?)"
    r"(?: \((?P<ref>[^()]*)\))?$"
)


def _norm(text: str) -> str:
    text = text.lower().replace("metaboliser", "metabolizer").replace("_", " ")
    # a leading gene name ("cyp2c19 poor metabolizer"), never the "likely"/"possible" of the phenotype itself
    text = re.sub(r"^(?!likely |possible )[a-z0-9-]+ (?=(likely |possible )?(poor|intermediate|normal|rapid|ultrarapid) )",
                  "", text)
    return " ".join(text.split())


def split_notes(
    notes: Iterable[str | NoteDef], drug: str, evidence: Iterable[GeneEvidence]
) -> tuple[list[str], list[str]]:
    """(warnings, information) for one card, each without duplicates, in the order given."""
    phenos = {e.gene: e.phenotype for e in evidence}
    warn: list[str] = []
    info: list[str] = []
    for note in notes:
        if isinstance(note, NoteDef):
            if not note.drugs or drug in note.drugs:
                (warn if note.warn else info).append(note.text)
            continue
        if not note:
            continue
        m = _LAB_IMPLICATION.match(note)
        if m is None:
            warn.append(note)
            continue
        gene, for_drug, pheno = m["gene"], m["drug"], m["pheno"]
        if for_drug and for_drug.strip().lower() != drug.lower():
            continue  # belongs on the card for that drug
        ours = phenos.get(gene)
        where = f" ({m['ref']})" if m["ref"] else ""
        label = f"Lab-reported implication{' for ' + for_drug.strip() if for_drug else ''}: {pheno}{where}"
        if ours and _norm(ours) == _norm(pheno):
            info.append(f"{label}; agrees with the phenotype computed from the genotype.")
        else:
            computed = f" ({ours})" if ours else ""
            warn.append(f"{label}; differs from the phenotype computed from the genotype{computed}. "
                        "Review the report before acting on either.")
    return list(dict.fromkeys(warn)), list(dict.fromkeys(info))
