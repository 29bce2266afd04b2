"""How a patient's result is named in card text: "CYP2C19 poor metabolizer", not "PM/likely PM".

Pure functions over the phenotype strings the gene files produce. Used by the engine to fill the
`{result}` and `{phenotype}` placeholders of rule summaries and details, and by the card builder for
the first, self-contained paragraph of a card's detail.
"""

from __future__ import annotations

from collections.abc import Iterable

from service.pgx.models import GeneEvidence

NO_RESULT = "No Result"
INDETERMINATE = "Indeterminate"

# phenotype terms that carry an abbreviation: plain words first
_PLAIN = {
    "Deficient with CNSHA": "deficient with chronic non-spherocytic hemolytic anemia (CNSHA)",
    "ivacaftor responsive in CF patients": "ivacaftor-responsive variant",
    "ivacaftor non-responsive in CF patients": "no ivacaftor-responsive variant",
}
_KEEP_CASE = ("*", "-1639")  # allele statuses and VKORC1 genotypes are written as they are


def phenotype_words(phenotype: str) -> str:
    """A CPIC phenotype term as it reads inside a sentence: "Likely Poor Metabolizer" -> "likely poor metabolizer"."""
    if phenotype in _PLAIN:
        return _PLAIN[phenotype]
    if phenotype.startswith(_KEEP_CASE):
        return phenotype
    return phenotype.lower()


def result_label(label: GeneEvidence, *, with_score: bool = True) -> str:
    """One gene's result in plain words: "CYP2D6 intermediate metabolizer (activity score 1.0)",
    "HLA-B*57:01 positive", "no CYP2C19 result", "CYP2C19 result indeterminate"."""
    gene, pheno = label.gene, label.phenotype
    if pheno == NO_RESULT:
        return f"no {gene} result"
    if pheno == INDETERMINATE:
        return f"{gene} result indeterminate"
    if label.alleleStatus:
        return ", ".join(f"{gene}{s.strip()}" for s in label.alleleStatus.split(","))
    if pheno.startswith("*"):
        return f"{gene}{pheno}"
    text = f"{gene} {phenotype_words(pheno)}"
    score = label.activityScore
    if with_score and score and score not in ("n/a", ""):
        text += f" (activity score {score})"
    return text


def results_label(labels: Iterable[GeneEvidence]) -> str:
    """Several genes' results for one summary; activity scores only when there is a single gene."""
    items = list(labels)
    if not items:
        return ""
    if len(items) == 1:
        return result_label(items[0])
    # genes with the same result are named together: "CYP2D6 and CYP2C19 normal metabolizer"
    groups: dict[str, list[GeneEvidence]] = {}
    for x in items:
        key = x.phenotype if not x.alleleStatus and not x.phenotype.startswith("*") else f"{x.gene}:{x.phenotype}"
        groups.setdefault(key, []).append(x)
    parts = []
    for group in groups.values():
        first = group[0]
        if len(group) == 1:
            parts.append(result_label(first, with_score=False))
            continue
        genes = " and ".join(g.gene for g in group)
        if first.phenotype == NO_RESULT:
            parts.append(f"no {genes.replace(' and ', ' or ')} result")
        elif first.phenotype == INDETERMINATE:
            parts.append(f"{genes} results indeterminate")
        else:
            words = phenotype_words(first.phenotype)
            parts.append(f"{genes} {words}s" if words.endswith("metabolizer") else f"{genes} {words}")
    return ", ".join(parts)


def capitalise(text: str) -> str:
    """First letter upper case (drug names start summaries lower case in the rule files)."""
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.upper() + text[i + 1:] if ch.islower() else text
        if not ch.isspace() and ch not in "*_":
            return text
    return text
