"""The one cleaner for lab diplotype text, shared by the FHIR reader and ``pgx-cds phenotype``.

Both paths hand a lab's text to :func:`clean_result_text` and then to
``service.pgx.phenotype.parse_diplotype``; nothing else strips or splits allele names. The rule that
matters: punctuation that belongs to an allele name is never trimmed. ``G6PD A-`` is the A- allele
(class III, deficient), not ``A`` (normal); ``c.1905+1G>A (*2A)`` keeps its ``+``, ``>`` and brackets.
Only separators standing on their own (``"CYP2C19 - *1/*2"``, ``"Genotype: *1/*2;"``) are removed.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["clean_result_text", "strip_gene"]

_LABEL_WORDS = re.compile(r"\b(?:genotype|diplotype|result)\b\s*[:=]?", re.I)
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
# a separator at either end that is not part of an allele name: ';' ',' ':' always; a dash only when it
# stands alone (space after it at the start, space before it at the end, or the whole text)
_LEAD = re.compile(r"^(?:[\s;,:]+|[-–—]+(?=\s))+")
_TRAIL = re.compile(r"(?:[\s;,:]+|(?<=\s)[-–—]+)+$")
_SPACES = re.compile(r"\s+")


def strip_gene(text: str, gene: str) -> str:
    """Remove the gene symbol where it prefixes an allele (at the start, or after ``/ + | ; , (``):
    ``CYP2D6*4`` -> ``*4``, ``G6PD A-`` -> ``A-``, ``HLA-B*57:01+HLA-B*08:01`` -> ``*57:01+*08:01``.
    A gene symbol inside an allele name stays: ``ivacaftor non-responsive CFTR sequence``."""
    return _gene_prefix(gene).sub(r"\1", text)


@lru_cache(maxsize=128)
def _gene_prefix(gene: str) -> re.Pattern[str]:
    return re.compile(r"(^|[/+|;,(\[])\s*" + re.escape(gene) + r"(?![A-Za-z0-9])\s*:?\s*", re.I)


def trim_separators(text: str) -> str:
    """Trim separators at the ends, never punctuation that is part of an allele name."""
    t = _TRAIL.sub("", _LEAD.sub("", text.strip()))
    return "" if re.fullmatch(r"[-–—\s]*", t) else t


@lru_cache(maxsize=4096)  # a pure function of its arguments; lab strings repeat across patients
def clean_result_text(gene: str, text: str) -> str:
    """A lab's diplotype text without labels, gene symbols, empty brackets and stray separators.

    ``"Genotype: G6PD A-"`` -> ``"A-"``; ``"CYP2C19 - *1/*2;"`` -> ``"*1/*2"``; ``"(*1/*2)"`` -> ``"*1/*2"``;
    ``"c.1905+1G>A (*2A)/c.2846A>T"`` is unchanged.
    """
    rest = trim_separators(_SPACES.sub(" ", _LABEL_WORDS.sub("", text)))
    rest = trim_separators(_EMPTY_BRACKETS.sub("", strip_gene(rest, gene)))
    if rest[:1] in "([" and rest[-1:] in ")]" and rest.count("(") + rest.count("[") == 1:
        rest = trim_separators(rest[1:-1])
    return rest
