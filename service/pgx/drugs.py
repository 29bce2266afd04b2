"""Drug recognition: which CPIC drugs does a medication order (or an active medication) contain?

Matches, in this order and de-duplicated: RxNorm ingredient codes, RxNorm product (SCD/SBD) codes
listed in the guideline files, and the order's text / code displays by ingredient or brand name
(case-insensitive, whole words; a combination product yields one DrugRef per ingredient).
The indexes are built once when the knowledge base is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.pgx.context import DraftOrder
from service.pgx.models import DrugRef

if TYPE_CHECKING:
    from service.pgx.guidelines import Guideline
    from service.pgx.knowledge import Knowledge

RXNORM_SYSTEM = "http://www.nlm.nih.gov/research/umls/rxnorm"
_RXNORM_SYSTEMS = frozenset({RXNORM_SYSTEM, "urn:oid:2.16.840.1.113883.6.88", "http://www.nlm.nih.gov/research/umls/rxnorm/"})


@dataclass(frozen=True)
class DrugIndex:
    """Precomputed lookups from codes and names to the drugs the guidelines cover."""

    by_code: dict[str, tuple[DrugRef, ...]] = field(default_factory=dict)
    by_name: dict[str, DrugRef] = field(default_factory=dict)  # lower-case ingredient or brand -> drug
    name_re: re.Pattern[str] | None = None
    # text -> the drugs named in it: order texts repeat across patients ("lisinopril 10 MG Oral Tablet"),
    # and the name scan (one alternation over every name) is the costly part of recognising an order
    _named: dict[str, tuple[DrugRef, ...]] = field(default_factory=dict, compare=False, repr=False)

    def named_in(self, text: str) -> tuple[DrugRef, ...]:
        """The drugs whose ingredient or brand name occurs in ``text`` (whole words), in order."""
        found = self._named.get(text)
        if found is None:
            refs = (self.by_name.get(m.group(1).lower()) for m in self.name_re.finditer(text)) if self.name_re else ()
            found = tuple(r for r in refs if r is not None)
            if len(self._named) >= 4096:
                self._named.clear()
            self._named[text] = found
        return found

    @property
    def drugs(self) -> list[DrugRef]:
        seen: dict[str, DrugRef] = {}
        for ref in self.by_name.values():
            seen.setdefault(ref.name, ref)
        return sorted(seen.values(), key=lambda r: r.name)


def build_index(guidelines: Iterable["Guideline"], products: Mapping[str, Iterable[str]] | None = None) -> DrugIndex:
    """Build the code and name indexes from the guideline files' `drugs` sections, plus product codes
    (`cards/safety/products.yaml`: RxNorm SCD/SBD code -> ingredient names) for the drugs they contain."""
    by_code: dict[str, list[DrugRef]] = {}
    by_name: dict[str, DrugRef] = {}
    for g in guidelines:
        for d in g.drugs:
            ref = DrugRef(name=d.name, rxnorm=d.rxnorm)
            for code in [d.rxnorm, *d.products]:
                refs = by_code.setdefault(code, [])
                if ref not in refs:
                    refs.append(ref)
            for name in [d.name, *d.brands]:
                by_name.setdefault(name.lower(), ref)
    for code, ingredients in (products or {}).items():
        for ingredient in ingredients:
            ref = by_name.get(ingredient.lower())
            if ref is not None and ref.name == ingredient.lower():
                refs = by_code.setdefault(code, [])
                if ref not in refs:
                    refs.append(ref)
    names = sorted(by_name, key=len, reverse=True)  # longest first: "dexlansoprazole" before "lansoprazole"
    pattern = None
    if names:
        alt = "|".join(re.escape(n) for n in names)
        pattern = re.compile(rf"(?<![A-Za-z0-9])({alt})(?![A-Za-z0-9])", re.IGNORECASE)
    return DrugIndex({c: tuple(r) for c, r in by_code.items()}, by_name, pattern)


def recognise(k: "Knowledge", order: DraftOrder) -> list[DrugRef]:
    """The CPIC drugs in one draft order (empty when none is recognised)."""
    codes = [(c.system, c.code) for c in order.codes]
    texts = [order.text, *(c.display for c in order.codes)]
    return recognise_codes(k.drug_index, codes, texts)


def recognise_codes(
    index: DrugIndex, codes: Iterable[tuple[str | None, str | None]], texts: Iterable[str | None]
) -> list[DrugRef]:
    """Match RxNorm codes first, then names in the given texts. Order-preserving, no duplicates."""
    out: dict[str, DrugRef] = {}
    for system, code in codes:
        if not code or system not in _RXNORM_SYSTEMS:
            continue
        for ref in index.by_code.get(code.strip(), ()):
            out.setdefault(ref.name, ref)
    if index.name_re is not None:
        for text in texts:
            if not text:
                continue
            for ref in index.named_in(text):
                out.setdefault(ref.name, ref)
    return list(out.values())
