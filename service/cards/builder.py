"""Recommendations -> CDS Hooks cards.

One card per drug–guideline hit. The card carries: a summary (< 140 chars), markdown detail with the
evidence trail, the CPIC source with a `topic` naming the rule, one-click suggestions (replace the draft
order with each CPIC alternative; adjust the dose where CPIC gives a number; order the test for pre-test
cards), override reasons, a SMART link to the profile app, and the machine-readable evidence under
`extension["pgx-cds"]` (README: "Card evidence extension").

Cards are assembled with `model_construct` (no re-validation on the hot path: the values come from
validated knowledge and typed recommendations); the tests parse every kind of response with the strict
CDS Hooks models and check the spec's invariants.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid

import orjson

from service.cdshooks.markdown import md_text
from service.cdshooks.models import ActionModel, Card, Coding, Link, Source, Suggestion
from service.fhir.models import DraftOrder
from service.pgx.models import Action, Recommendation
from service.pgx.wording import capitalise, result_label

_NS = uuid.UUID("6f1c3a52-8d0e-4c55-9a39-1f4b2a7d9e10")
RULE_SYSTEM = "urn:pgx-cds:rule"
OVERRIDE_SYSTEM = "urn:pgx-cds:override-reason"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
EXTENSION_KEY = "pgx-cds"

OVERRIDE_REASONS: tuple[Coding, ...] = (
    Coding.model_construct(system=OVERRIDE_SYSTEM, code="benefit-outweighs-risk", display="Benefit outweighs risk for this patient"),
    Coding.model_construct(system=OVERRIDE_SYSTEM, code="tolerated-previously", display="Patient has tolerated this drug before"),
    Coding.model_construct(system=OVERRIDE_SYSTEM, code="alternative-unsuitable", display="Alternatives contraindicated or unavailable"),
    Coding.model_construct(system=OVERRIDE_SYSTEM, code="will-monitor", display="Will monitor (levels, response or toxicity)"),
    Coding.model_construct(system=OVERRIDE_SYSTEM, code="result-questioned", display="Genetic result questioned or outdated"),
)


_NS_BYTES = _NS.bytes


def _uuid(*parts: object) -> str:
    """A name-based (version 5) UUID: the same hook instance and card give the same uuid."""
    digest = bytearray(hashlib.sha1(_NS_BYTES + "\x1f".join(map(str, parts)).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _truncate(text: str, limit: int = 139) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _lead(rec: Recommendation) -> str:
    """The first paragraph: readable on its own (clients that render markdown poorly show only this):
    this patient's result, the CPIC recommendation with its strength, and the advice."""
    results = []
    for g in rec.genes:
        label = result_label(g)
        shown = g.diplotype if g.diplotype and g.diplotype not in label else None
        results.append(md_text(label) + (f" ({md_text(shown)})" if shown else ""))
    result = "; ".join(results) if results else "no result on file"
    strength = f" (CPIC strength: {rec.strength})" if rec.strength and rec.strength != "n/a" else ""
    detail = " ".join(_paragraphs(rec.detail)[0].split())
    return f"**Result:** {capitalise(result)}. **Recommendation for {md_text(rec.drug.name)}{strength}:** {detail}"


def _paragraphs(text: str) -> list[str]:
    """The recommendation text's paragraphs: the first joins the lead, the others follow it."""
    return [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()] or [""]


def _detail(rec: Recommendation) -> str:
    lines = [_lead(rec), ""]
    for more in _paragraphs(rec.detail)[1:]:
        lines += [more, ""]
    if rec.dose and rec.dose.text:
        lines += [f"**Dose guidance:** {md_text(rec.dose.text)}", ""]
    lines += ["**Evidence**", "", "| Gene | Result | Phenotype | Activity score | Source |", "|---|---|---|---|---|"]
    for g in rec.genes:
        result = g.diplotype or g.alleleStatus or "—"
        when = f" ({g.effective[:10]})" if g.effective else ""
        lines.append(
            f"| {md_text(g.gene, cell=True)} | {md_text(result, cell=True)} | {md_text(g.phenotype, cell=True)} "
            f"| {md_text(g.activityScore or '—', cell=True)} | {md_text(g.observation or '—', cell=True)}{when} |"
        )
    lines.append("")
    derivations = [f"- {md_text(g.gene)}: {md_text(g.derivation)}" for g in rec.genes if g.derivation]
    if derivations:
        lines += ["**How the phenotype was derived**", "", *derivations, ""]
    if rec.population_note:  # names the population it assumed or chose
        lines += [f"**Population:** ⚠ {md_text(rec.population_note)}", ""]
    else:
        lines += [f"**Population:** {md_text(rec.population or 'all patients')}.", ""]
    notes = [f"- ⚠ {md_text(n)}" for n in rec.notes if n != rec.population_note]
    notes += [f"- {md_text(n)}" for n in rec.info_notes]
    if notes:
        lines += ["**Notes**", "", *notes, ""]
    lines.append(
        f"Source: [{md_text(rec.guideline_name)}]({rec.guideline_url})"
        + (f" — {md_text(rec.publication)}" if rec.publication else "")
        + f". Rule `{rec.rule_id}`, knowledge {md_text(rec.knowledge_version)}."
    )
    return "\n".join(lines)


def _new_med_request(alt_name: str, alt_rxnorm: str, patient_id: str, order: DraftOrder | None) -> dict:
    resource: dict = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": alt_rxnorm, "display": alt_name}],
            "text": alt_name,
        },
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if order is not None:
        if order.encounter:
            resource["encounter"] = {"reference": order.encounter}
        if order.requester:
            resource["requester"] = {"reference": order.requester}
    return resource


def _suggestions(rec: Recommendation, patient_id: str, order: DraftOrder | None) -> list[Suggestion]:
    out: list[Suggestion] = []
    order_ref = rec.order_ref or (order.reference if order else None)
    for alt in rec.alternatives:
        # `create` first, then `delete` (README "Suggestion action order"): a client that applies only the
        # first action, or stops after a failure, is left with the new order, never with an empty one.
        actions: list[ActionModel] = [
            ActionModel.model_construct(
                type="create",
                description=f"Create a draft order for {alt.name}",
                resource=_new_med_request(alt.name, alt.rxnorm, patient_id, order),
            )
        ]
        if order_ref:
            actions.append(
                ActionModel.model_construct(type="delete", description=f"Remove the draft order for {rec.drug.name}", resourceId=order_ref)
            )
        out.append(
            Suggestion.model_construct(
                label=_truncate(f"Use {alt.name} instead of {rec.drug.name}", 80),
                uuid=_uuid(rec.rule_id, order_ref, "alt", alt.rxnorm),
                isRecommended=True if alt.recommended else None,
                actions=actions,
            )
        )
    if (rec.dose and rec.dose.factor and rec.dose.one_click and order is not None and order.dose_quantity
            and order.resource and order_ref):
        new_dose = round(order.dose_quantity * rec.dose.factor, 3)
        updated = copy.deepcopy(order.resource)
        try:
            updated["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = new_dose
        except (KeyError, IndexError, TypeError):
            updated = None
        if updated is not None:
            unit = f" {order.dose_unit}" if order.dose_unit else ""
            out.append(
                Suggestion.model_construct(
                    label=_truncate(f"Adjust {rec.drug.name} dose to {new_dose:g}{unit}", 80),
                    uuid=_uuid(rec.rule_id, order_ref, "dose", new_dose),
                    actions=[
                        ActionModel.model_construct(
                            type="update",
                            description=f"Change the dose from {order.dose_quantity:g}{unit} to {new_dose:g}{unit}",
                            resource=updated,
                        )
                    ],
                )
            )
    if rec.action == Action.test_before_prescribing:
        follow_up = {t.gene: t for t in rec.follow_up}  # cards/unreadable.yaml: e.g. enzyme activity for G6PD
        for gene in [g.gene for g in rec.genes] or []:
            t = follow_up.get(gene)
            out.append(_test_suggestion(rec, gene, t.text if t else None, t.loinc if t else None, patient_id,
                                        order_ref))
    return out


def _test_suggestion(rec: Recommendation, gene: str, test: str | None, loinc: str | None, patient_id: str,
                     order_ref: str | None) -> Suggestion:
    """A one-click draft ServiceRequest: genotyping, or the follow-up test named in cards/unreadable.yaml."""
    code: dict = {"text": test or f"{gene} genotyping (pharmacogenomics)"}
    if loinc:
        code["coding"] = [{"system": "http://loinc.org", "code": loinc}]
    return Suggestion.model_construct(
        label=_truncate(f"Order {test}" if test else f"Order {gene} genotyping", 80),
        uuid=_uuid(rec.rule_id, order_ref, "test", gene, *([test] if test else [])),
        actions=[
            ActionModel.model_construct(
                type="create",
                description=f"Create a draft order for {test}" if test
                else f"Create a draft order for {gene} pharmacogenomic testing",
                resource={
                    "resourceType": "ServiceRequest",
                    "status": "draft",
                    "intent": "order",
                    "category": [{"text": "Laboratory test" if loinc else "Pharmacogenomic test"}],
                    "code": code,
                    "subject": {"reference": f"Patient/{patient_id}"},
                    "reasonCode": [{"text": f"Planned {rec.drug.name} therapy (CPIC)"}],
                },
            )
        ],
    )


def evidence(rec: Recommendation) -> dict:
    """The machine-readable evidence object carried under card.extension["pgx-cds"]."""
    out = {
        "drug": {"name": rec.drug.name, "rxnorm": rec.drug.rxnorm},
        "genes": [
            {
                "gene": g.gene,
                "diplotype": g.diplotype,
                "phenotype": g.phenotype,
                "activityScore": g.activityScore,
                "alleleStatus": g.alleleStatus,
                "observation": g.observation,
                **({"phenoconversion": g.phenoconversion} if g.phenoconversion else {}),
            }
            for g in rec.genes
        ],
        "recommendation": {
            "action": rec.action.value,
            "strength": rec.strength,
            "population": rec.population,
            "guideline": rec.guideline_url,
            "ruleId": rec.rule_id,
        },
        "knowledgeVersion": rec.knowledge_version,
    }
    if rec.notes:
        out["notes"] = list(rec.notes)
    if rec.info_notes:
        out["infoNotes"] = list(rec.info_notes)
    if rec.withheld:
        out["alternativesWithheld"] = [w.model_dump(exclude_none=True) for w in rec.withheld]
    if rec.dose is not None and rec.dose.factor and not rec.dose.one_click:
        out["doseChangeWithheld"] = True
    if rec.unreadable:  # results on file that could not be interpreted, with the raw value (issue 11)
        out["unreadable"] = [u.model_dump(exclude_none=True) for u in rec.unreadable]
    if rec.order_ref:
        out["order"] = rec.order_ref
    return out


def build_card_template(
    rec: Recommendation,
    *,
    patient_id: str,
    order: DraftOrder | None = None,
    app_url: str | None = None,
) -> Card:
    """The card for one recommendation, with uuids that do not yet depend on the hook instance.
    Everything here is a function of its arguments, so callers may reuse a template across requests;
    `CardTemplate.bind` gives each request its own stable uuids."""
    suggestions = _suggestions(rec, patient_id, order)
    detail = _detail(rec)
    if order is not None and order.shared_id:
        # the EHR sent several draft orders with this id: a delete/update by id could hit the wrong order
        kept = [s for s in suggestions if not any(a.type in ("delete", "update") for a in s.actions)]
        if len(kept) < len(suggestions):
            detail += (f"\n\nNo one-click change is offered: several draft orders in this request share the id "
                       f"`{order.reference}`, so a change by id could alter the wrong order. Change the "
                       f"{rec.drug.name} order by hand.")
        suggestions = kept
    links = [Link.model_construct(label="CPIC guideline", url=rec.guideline_url, type="absolute")]
    if app_url:
        links.append(
            Link.model_construct(
                label="Open PGx profile",
                url=app_url,
                type="smart",
                appContext=json.dumps({"drug": rec.drug.name, "rule": rec.rule_id}, separators=(",", ":")),
            )
        )
    return Card.model_construct(
        uuid=_uuid(rec.rule_id, rec.order_ref, rec.drug.rxnorm),
        summary=_truncate(rec.summary),
        detail=detail,
        indicator=rec.indicator,  # type: ignore[arg-type]
        source=Source.model_construct(
            label=f"CPIC via pgx-cds ({rec.guideline_name})"[:120],
            url=rec.guideline_url,
            topic=Coding.model_construct(system=RULE_SYSTEM, code=rec.rule_id, display=_truncate(rec.guideline_name, 120)),
        ),
        suggestions=suggestions or None,
        selectionBehavior="at-most-one" if suggestions else None,
        overrideReasons=list(OVERRIDE_REASONS) if rec.interruptive else None,
        links=links,
        extension={EXTENSION_KEY: evidence(rec)},
    )


class CardTemplate:
    """A built card, its JSON form and what the pipeline needs to know of it (rule id, indicator, order:
    given by the Recommendation it was built from), computed once and reused across requests; `bind` gives
    one request its card (new uuids only, everything else shared)."""

    __slots__ = ("data", "rule_id", "indicator", "order_ref", "content_hash")

    def __init__(self, card: Card, *, rule_id: str, indicator: str, order_ref: str | None = None) -> None:
        self.data = card.model_dump(mode="json", exclude_none=True)
        self.rule_id = rule_id
        self.indicator = indicator
        self.order_ref = order_ref or ""
        ext = self.data.get("extension", {}).get(EXTENSION_KEY, {})
        # what makes two cards "the same" for order-select -> order-sign de-duplication
        self.content_hash: bytes = hashlib.sha256(
            orjson.dumps([self.data["summary"], indicator, ext.get("genes"), ext.get("recommendation")])
        ).hexdigest()[:16].encode()

    @classmethod
    def for_recommendation(cls, rec: Recommendation, *, patient_id: str, order: DraftOrder | None = None,
                           app_url: str | None = None) -> "CardTemplate":
        card = build_card_template(rec, patient_id=patient_id, order=order, app_url=app_url)
        return cls(card, rule_id=rec.rule_id, indicator=rec.indicator, order_ref=rec.order_ref)

    def bind(self, hook_instance: str) -> dict:
        """The card's JSON-ready dict with this hook instance's uuids: the same hookInstance and card always
        give the same uuids (retries are idempotent); another hookInstance gives new ones."""
        data = {**self.data, "uuid": _uuid(hook_instance, self.data["uuid"])}
        if "suggestions" in data:
            data["suggestions"] = [{**sd, "uuid": _uuid(hook_instance, sd["uuid"])} for sd in data["suggestions"]]
        return data


_INDICATOR_RANK = {"critical": 0, "warning": 1, "info": 2}


def card_rank(template: CardTemplate) -> int:
    """Sort key for a hook response: critical, then warning, then info."""
    return _INDICATOR_RANK.get(template.indicator, 3)


def card_evidence(card: dict) -> dict:
    """The machine-readable evidence of a card (its JSON form)."""
    return (card.get("extension") or {}).get(EXTENSION_KEY, {})
