"""patient-view cards: one card per result (gene, or gene combination for multi-gene guidelines) listing
the drugs whose CPIC advice it changes, most severe first.

patient-view is the chart opening, not an order: its cards inform and link to the SMART PGx profile app,
and carry no suggestions (an order for a drug the patient is not taking is not a one-click action).
The card's extension carries the most severe recommendation under `recommendation` (so feedback and
metrics count it like any card) and every drug's recommendation under `drugs`.
"""

from __future__ import annotations

import json

from service.cards.builder import EXTENSION_KEY, RULE_SYSTEM, CardTemplate, _uuid, evidence, md_text
from service.cdshooks.models import Card, Coding, Link, Source
from service.pgx.engine import severity_key
from service.pgx.models import GeneEvidence, Recommendation
from service.pgx.wording import NO_RESULT, capitalise, result_label, results_label

_SUMMARY_MAX = 139


def _result_genes(rec: Recommendation) -> list[GeneEvidence]:
    return [g for g in rec.genes if g.phenotype != NO_RESULT] or list(rec.genes)


def _group_key(rec: Recommendation) -> tuple[tuple[str, str, str], ...]:
    return tuple((g.gene, g.phenotype, g.diplotype or g.alleleStatus or "") for g in _result_genes(rec))


def _summary(label: str, recs: list[Recommendation]) -> str:
    head = f"{capitalise(label)}: changes advice for "
    names = list(dict.fromkeys(r.drug.name for r in recs))
    if len(names) == 1:
        return recs[0].summary  # the rule's own summary names the result and the drug
    shown: list[str] = []
    for i, name in enumerate(names):
        rest = len(names) - i - 1
        tail = f" and {rest} more" if rest else ""
        candidate = head + ", ".join([*shown, name]) + tail
        if len(candidate) > _SUMMARY_MAX:
            return head + ", ".join(shown) + f" and {len(names) - len(shown)} more"
        shown.append(name)
    return head + ", ".join(shown[:-1]) + f" and {shown[-1]}"


def _detail(label: str, genes: list[GeneEvidence], recs: list[Recommendation]) -> str:
    shown = [g.diplotype for g in genes if g.diplotype and g.diplotype not in label]
    result = md_text(capitalise(label)) + (f" ({md_text(', '.join(shown))})" if shown else "")
    drugs = list(dict.fromkeys(r.drug.name for r in recs))
    lines = [
        f"**Result:** {result}. It changes the CPIC advice for {len(drugs)} drug{'s' if len(drugs) > 1 else ''}: "
        f"{md_text(', '.join(drugs))}. Nothing is ordered from this card; the PGx profile app has the full picture.",
        "",
        "**Affected drugs** (most severe first)",
        "",
    ]
    for r in recs:
        pop = ""
        if r.population:
            pop = f" Population: {md_text(r.population)}" + (" (assumed)." if r.population_note else ".")
        advice = r.summary
        if advice.lower().startswith(label.lower() + ": "):  # the result is said once, in the first paragraph
            advice = capitalise(advice[len(label) + 2:])
        lines.append(f"- **{md_text(r.drug.name)}** ({md_text(r.action.value.replace('_', ' '))}, CPIC strength "
                     f"{md_text(r.strength)}): {md_text(advice)}.{pop}")
    lines.append("")
    lines += ["**Evidence**", "", "| Gene | Result | Phenotype | Activity score | Source |", "|---|---|---|---|---|"]
    for g in genes:
        when = f" ({g.effective[:10]})" if g.effective else ""
        lines.append(f"| {md_text(g.gene, cell=True)} | {md_text(g.diplotype or g.alleleStatus or '—', cell=True)} "
                     f"| {md_text(g.phenotype, cell=True)} | {md_text(g.activityScore or '—', cell=True)} "
                     f"| {md_text(g.observation or '—', cell=True)}{when} |")
    lines.append("")
    warn = list(dict.fromkeys(n for r in recs for n in r.notes if n != r.population_note))
    info = list(dict.fromkeys(n for r in recs for n in r.info_notes))
    if warn or info:
        lines += ["**Notes**", "", *[f"- ⚠ {md_text(n)}" for n in warn], *[f"- {md_text(n)}" for n in info], ""]
    sources = list(dict.fromkeys((r.guideline_name, r.guideline_url) for r in recs))
    lines.append("Sources: " + "; ".join(f"[{md_text(n)}]({u})" for n, u in sources)
                 + f". Knowledge {md_text(recs[0].knowledge_version)}.")
    return "\n".join(lines)


def patient_view_cards(recs: list[Recommendation], *, patient_id: str, app_url: str | None = None) -> list[Card]:
    """One informational card per result, most severe first; no suggestions."""
    return [card for _top, card in _cards(recs, patient_id=patient_id, app_url=app_url)]


def patient_view_templates(recs: list[Recommendation], *, patient_id: str,
                           app_url: str | None = None) -> list[CardTemplate]:
    """The cards as templates; each counts under the rule and indicator of its most severe recommendation."""
    return [CardTemplate(card, rule_id=top.rule_id, indicator=top.indicator, order_ref=top.order_ref)
            for top, card in _cards(recs, patient_id=patient_id, app_url=app_url)]


def _cards(recs: list[Recommendation], *, patient_id: str, app_url: str | None) -> list[tuple[Recommendation, Card]]:
    groups: dict[tuple, list[Recommendation]] = {}
    for rec in sorted(recs, key=severity_key):
        groups.setdefault(_group_key(rec), []).append(rec)
    cards: list[tuple[tuple, Recommendation, Card]] = []
    for key, group in groups.items():
        top = group[0]
        genes = _result_genes(top)
        label = results_label(genes) if len(genes) > 1 else result_label(genes[0])
        code = "patient-view/" + "+".join(g.gene for g in genes)
        links = [Link.model_construct(label=f"CPIC: {name}"[:80], url=url, type="absolute")
                 for name, url in list(dict.fromkeys((r.guideline_name, r.guideline_url) for r in group))[:3]]
        if app_url:
            links.insert(0, Link.model_construct(
                label="Open PGx profile", url=app_url, type="smart",
                appContext=json.dumps({"drug": top.drug.name, "rule": top.rule_id, "genes": [g.gene for g in genes]},
                                      separators=(",", ":"))))
        ext = evidence(top)
        ext["genes"] = [{k: v for k, v in e.items()} for e in ext["genes"] if e["phenotype"] != NO_RESULT] or ext["genes"]
        ext["drugs"] = [{"name": r.drug.name, "rxnorm": r.drug.rxnorm, "action": r.action.value, "strength": r.strength,
                         "population": r.population, "ruleId": r.rule_id} for r in group]
        card = Card.model_construct(
            uuid=_uuid(code, patient_id, *key),
            summary=_summary(label, group),
            detail=_detail(label, genes, group),
            indicator=top.indicator,  # type: ignore[arg-type]
            source=Source.model_construct(
                label="CPIC via pgx-cds", url=top.guideline_url,
                topic=Coding.model_construct(system=RULE_SYSTEM, code=code, display=f"PGx result: {label}"[:120]),
            ),
            links=links,
            extension={EXTENSION_KEY: ext},
        )
        cards.append((severity_key(top), top, card))
    return [(top, c) for _, top, c in sorted(cards, key=lambda x: x[0])]
