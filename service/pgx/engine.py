"""The recommendation engine: (knowledge, genomic profile, order, patient) -> list[Recommendation].

For every CPIC drug recognised in the order and every guideline covering it, the engine builds the
lookup key (activity score, phenotype or allele status per gene; "No Result" for a gene without a
result), chooses the population from the record, matches the guideline's rules (indexed at load) and
fills a :class:`Recommendation` with the evidence trail. Without any result for the guideline's
genes it emits a pre-test recommendation instead (configurable per drug).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from service.pgx import safety as _safety
from service.pgx import phenoconversion as _phenoconv
from service.pgx import unreadable as _unreadable
from service.pgx import warfarin as _warfarin
from service.pgx.context import DraftOrder, HasContext, PatientContext, as_context
from service.pgx.drugs import recognise
from service.pgx.guidelines import DEFAULT_INDICATOR, INDETERMINATE, NO_RESULT, Guideline, Population
from service.pgx.knowledge import CompiledRule, Knowledge
from service.pgx.models import (
    Action,
    DoseAdjustment,
    DrugRef,
    GeneEvidence,
    GeneResult,
    GenomicProfile,
    Recommendation,
)
from service.pgx.notes import split_notes
from service.pgx.policy import EnginePolicy, as_policy
from service.pgx.populations import current_med_codes as _current_med_codes
from service.pgx.populations import select_population, situational_notes
from service.pgx.wording import capitalise, phenotype_words, results_label

SNOMED = "http://snomed.info/sct"
_INDICATOR_RANK = {"critical": 0, "warning": 1, "info": 2}
_ACTION_RANK = {a: i for i, a in enumerate([
    Action.avoid, Action.consider_alternative, Action.alternative_or_reduced_dose, Action.reduce_dose,
    Action.increase_dose, Action.adjust_dose_tdm, Action.test_before_prescribing,
    Action.standard_dosing_with_caution, Action.no_recommendation, Action.standard_dosing,
])}
_STRENGTH_RANK = {"Strong": 0, "Moderate": 1, "Optional": 2, "No recommendation": 3}
_NOT_ACTIONABLE = {Action.standard_dosing, Action.no_recommendation}
_MEMO_MAX = 20_000  # entries of Knowledge.engine_memo (distinct rule lookups; a real knowledge base has far fewer)

# Activity scores a phenotype-only result can stand for (CPIC ranges; used when the lab gave no AS)
_AS_BY_PHENOTYPE: dict[str, dict[str, list[str]]] = {
    "CYP2D6": {
        "Poor Metabolizer": ["0.0"],
        "Intermediate Metabolizer": ["0.25", "0.5", "0.75", "1.0"],
        "Normal Metabolizer": ["1.25", "1.5", "1.75", "2.0", "2.25"],
        "Ultrarapid Metabolizer": ["2.5", "2.75", "3.0", "≥3.0"],
    },
    "CYP2C9": {"Poor Metabolizer": ["0.0", "0.5"], "Intermediate Metabolizer": ["1.0", "1.5"], "Normal Metabolizer": ["2.0"]},
    "DPYD": {"Poor Metabolizer": ["0.0", "0.5"], "Intermediate Metabolizer": ["1.0", "1.5"], "Normal Metabolizer": ["2.0"]},
}


@dataclass
class _GeneKey:
    """The lookup value(s) of one gene for one guideline, and what we know about it."""

    gene: str
    values: list[str]  # candidate lookup values (several only for HLA statuses or AS-from-phenotype)
    result: GeneResult | None
    ambiguous: bool = False  # values are alternatives we could not choose between
    notes: list[str] = field(default_factory=list)
    indeterminate_reason: str | None = None
    sig: tuple | None = field(default=None, compare=False, repr=False)  # (gene, values, ambiguous), see _match
    evidence: GeneEvidence | None = field(default=None, compare=False, repr=False)  # made once, see _evidence

    def signature(self) -> tuple:
        """What rule matching reads of this key (keys are not changed once made)."""
        if self.sig is None:
            self.sig = (self.gene, tuple(self.values), self.ambiguous)
        return self.sig


# --------------------------------------------------------------------------------------------
# Public API


def evaluate_order(
    k: Knowledge,
    profile: GenomicProfile,
    order: DraftOrder,
    patient: HasContext,
    *,
    policy: EnginePolicy | None = None,
    settings: Any = None,
    today: date | None = None,
    co_orders: Sequence[DraftOrder] = (),
) -> list[Recommendation]:
    """Recommendations for one draft order (one per recognised drug and guideline; none if not CPIC).

    `patient`: the typed patient context (or the fhir stage's PatientData, which builds it once).
    `policy`: the site settings the engine reads (`settings=` a service Settings is converted instead).
    `co_orders`: the other draft orders of the hook call (their perpetrators phenoconvert, as do the
    patient's active medications; see service/pgx/phenoconversion.py)."""
    today = today or datetime.now(timezone.utc).date()
    patient = as_context(patient)
    policy = policy if policy is not None else as_policy(settings)
    out: list[Recommendation] = []
    drugs = recognise(k, order)
    pc = _phenoconv.convert(k, profile, _phenoconv.find_exposures(
        k, patient, order, co_orders, policy, today, exclude=[d.name for d in drugs]))
    for drug in drugs:
        for g in k.guidelines_for_drug(drug.name):
            rec = _evaluate(k, g, drug, profile, patient, order, policy, today)
            rec = _phenoconv.adjust(k, pc, g, drug, rec, lambda p, g=g, drug=drug: _evaluate(
                k, g, drug, p, patient, order, policy, today))
            if k.unreadable is not None:  # a result we cannot read never silences the alert (issue 11)
                rec = _unreadable.guard(k.unreadable, g, drug, profile, rec, policy)
            if rec is not None:
                out.append(rec)
    out += _phenoconv.reverse(k, profile, patient, order, co_orders, policy, today, lambda g, drug, p: _evaluate(
        k, g, drug, p, patient, None, policy, today, pretest=False))
    return out


def summarize_profile(
    k: Knowledge,
    profile: GenomicProfile,
    patient: HasContext,
    *,
    policy: EnginePolicy | None = None,
    settings: Any = None,
    today: date | None = None,
) -> list[Recommendation]:
    """Patient view: for each gene result, every drug with a non-standard recommendation, most severe first."""
    today = today or datetime.now(timezone.utc).date()
    patient = as_context(patient)
    policy = policy if policy is not None else as_policy(settings)
    seen: set[tuple[str, str]] = set()
    out: list[Recommendation] = []
    pc = _phenoconv.convert(k, profile, _phenoconv.find_exposures(k, patient, None, (), policy, today))
    key_cache: dict[tuple[str, str | None], _GeneKey] = {}  # this profile's lookup keys, shared by its guidelines
    for gene, result in profile.genes.items():
        # the pairs this result can make actionable (all of them when phenoconversion may convert the gene)
        pairs = (_gene_pairs(k, gene) if pc is not None and gene in pc.genes
                 else _summary_pairs(k, gene, result, policy))
        for g, d in pairs:
            if (g.id, d.name) in seen:
                continue
            seen.add((g.id, d.name))
            ref = _drug_ref(k, d.name, d.rxnorm)
            # a recommendation the summary drops (standard dosing, no recommendation) is not built, unless
            # phenoconversion may turn it into another one (adjust reads the genotype-only one then)
            drop = pc is None or not any(x in pc.genes for x in _drug_genes(k, g, d.name))
            rec = _evaluate(k, g, ref, profile, patient, None, policy, today, pretest=False,
                            drop_not_actionable=drop, key_cache=key_cache)
            if pc is not None:  # (adjust answers rec itself without a conversion)
                rec = _phenoconv.adjust(k, pc, g, ref, rec, lambda p, g=g, ref=ref: _evaluate(
                    k, g, ref, p, patient, None, policy, today, pretest=False))
            if rec is not None and rec.action not in _NOT_ACTIONABLE:
                out.append(rec)
    out.sort(key=severity_key)
    return out


def _gene_pairs(k: Knowledge, gene: str) -> tuple[tuple[Guideline, Any], ...]:
    """The (guideline, drug) pairs whose drug reads ``gene``, in knowledge order (made once). A drug of the
    same guideline that reads other genes only is evaluated under those genes (its answer reads the whole
    profile, not the gene it was reached from; without a result for any of them it has none)."""
    key = ("pairs", gene)
    hit = k.engine_memo.get(key)
    if hit is None:
        hit = k.engine_memo[key] = tuple((g, d) for g in k.by_gene.get(gene, []) for d in g.drugs
                                         if gene in _drug_genes(k, g, d.name))
    return hit


def _summary_pairs(k: Knowledge, gene: str, result: GeneResult, policy: EnginePolicy) -> tuple[tuple[Guideline, Any], ...]:
    """The pairs of ``_gene_pairs`` the patient view must evaluate for this result: all but the drugs that read
    this gene alone (no dosing algorithm) and whose rules drop its lookup values in every population (standard
    dosing, no recommendation, a rule the site switched off), which _evaluate(drop_not_actionable=True) answers
    None for whatever the rest of the record says. A function of the result's lookup values (what _gene_key
    reads) and the switched-off rules: answered once per knowledge for each and remembered in k.engine_memo,
    with the rules lists it was matched in (a list replaced in the knowledge is matched afresh, as in _match)."""
    call = result.call
    values = (None, result.reported_phenotype) if call is None else (
        call.phenotype, call.activity_score, tuple(call.allele_status or ()))
    mk = ("summary-pairs", gene, values, policy.disabled_rules)
    memo = k.engine_memo
    hit = memo.get(mk)
    if hit is not None and all(k.rules.get(rk) is rules for rk, rules in hit[1]):
        return hit[0]  # (the rules lists the skipped pairs were matched in are still the knowledge's own)
    keep, used = [], []
    for g, d in _gene_pairs(k, gene):
        if g.algorithm is None and _drug_genes(k, g, d.name) == (gene,):
            keys = [_gene_key(k, g, gene, result)]
            pops = [p.id for p in g.populations] if g.populations else [None]
            if all(_dropped(_match(k, g, p, d.name, keys)[0], policy) for p in pops):
                used += [((g.id, p, d.name), k.rules.get((g.id, p, d.name))) for p in pops]
                continue
        keep.append((g, d))
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[mk] = (tuple(keep), tuple(used))
    return memo[mk][0]


def _drug_ref(k: Knowledge, name: str, rxnorm: str) -> DrugRef:
    """The (frozen, shareable) DrugRef of a guideline drug, made once per knowledge."""
    key = ("drug", name, rxnorm)
    ref = k.engine_memo.get(key)
    if ref is None:
        ref = k.engine_memo[key] = DrugRef(name=name, rxnorm=rxnorm)
    return ref


def _drug_genes(k: Knowledge, g: Guideline, name: str) -> tuple[str, ...]:
    """g.drug_genes(name), made once per knowledge (the entry holds the guideline: its id stays valid)."""
    key = ("genes", id(g), name)
    hit = k.engine_memo.get(key)
    if hit is None or hit[0] is not g:
        hit = k.engine_memo[key] = (g, tuple(g.drug_genes(name)))
    return hit[1]


def severity_key(r: Recommendation) -> tuple[int, int, int, str, str]:
    """Sort key: critical first, then by action and CPIC strength, then drug name."""
    return (_INDICATOR_RANK.get(r.indicator, 3), _ACTION_RANK.get(r.action, 99),
            _STRENGTH_RANK.get(r.strength, 9), r.drug.name, r.guideline_id)


# --------------------------------------------------------------------------------------------
# One drug x guideline


def _evaluate(
    k: Knowledge,
    g: Guideline,
    drug: DrugRef,
    profile: GenomicProfile,
    patient: PatientContext,
    order: DraftOrder | None,
    policy: EnginePolicy,
    today: date,
    *,
    pretest: bool = True,
    drop_not_actionable: bool = False,
    key_cache: dict[tuple[str, str | None], _GeneKey] | None = None,
) -> Recommendation | None:
    """``drop_not_actionable``: None instead of a standard-dosing or no-recommendation answer (the patient
    view drops those; not building them is the same answer, sooner). ``key_cache``: lookup keys already
    made from this same ``profile`` for other guidelines, by (gene, lookup method)."""
    genes = _drug_genes(k, g, drug.name)
    on_file = profile.genes
    results = {gene: on_file.get(gene) for gene in genes}
    if all(r is None for r in results.values()):
        if not pretest:
            return None
        return _no_result(k, g, drug, profile, patient, order, policy)
    if g.algorithm == "warfarin":
        pop, pop_note = select_population(k, g, drug, patient, order, today)
        return _warfarin_rec(k, g, drug, results, patient, order, policy, today, pop, pop_note, drop_not_actionable)
    if key_cache is None:
        keys = [_gene_key(k, g, gene, results[gene]) for gene in genes]
    else:
        keys = []
        for gene in genes:
            result = results[gene]
            ck = (gene, g.lookup[gene] if result is not None else None)
            key = key_cache.get(ck)
            if key is None:
                key = key_cache[ck] = _gene_key(k, g, gene, result)
            keys.append(key)
    if drop_not_actionable and g.populations and all(
            _dropped(_match(k, g, p.id, drug.name, keys)[0], policy) for p in g.populations):
        return None  # dropped whichever population the record selects: no need to select one
    pop, pop_note = select_population(k, g, drug, patient, order, today)
    pop_id = pop.id if pop else None
    rule, ambiguity_note = _match(k, g, pop_id, drug.name, keys)
    if rule is not None and rule.full_id in policy.disabled_rules:
        if not any(INDETERMINATE in key.values for key in keys):
            return None
        rule = None  # a site may switch a rule off, but a result we cannot read still gets its card
    if drop_not_actionable and (rule is None or rule.rule.action in _NOT_ACTIONABLE):
        return None
    notes = _gene_notes(keys, profile)
    if ambiguity_note:
        notes.append(ambiguity_note)
    if pop_note:
        notes.append(pop_note)
    if rule is None:
        return _unmatched(k, g, drug, keys, notes, order, pop, pop_note)
    r = rule.rule
    evidence = [_evidence(key) for key in keys]
    primary = next((key for key in keys if key.result is not None), keys[0])
    result = results_label(evidence)
    summary = capitalise(_fill(r.summary, drug, primary, result))
    if len(summary) >= 140:
        summary = summary[:138].rstrip() + "…"
    detail = _fill(r.detail, drug, primary, result)
    # one-click safety for this patient and order (cards/safety, rule dose applicability): service/pgx/safety.py
    screened = _safety.screen_alternatives(k.safety, r.alternatives, drug, patient, order, today,
                                           order_drugs=recognise(k, order) if order is not None and r.alternatives else (),
                                           not_current=k.medication_status.safety)
    dose, dose_notes = _safety.plan_dose(r.dose, drug, patient, order, today, k.drug_index,
                                         k.medication_status.safety)
    if pop is not None:  # e.g. carbamazepine "no alternative agent available": an "if ..." note
        notes += situational_notes(k, g, pop, drug.name, rule, lambda p_: _match(k, g, p_, drug.name, keys)[0])
    notes, info_notes = split_notes([*notes, *r.notes, *g.notes, *screened.notes, *dose_notes], drug.name, evidence)
    indicator = policy.indicator_overrides.get(rule.full_id) or r.effective_indicator
    if dose is not None and dose.informational and not screened.alternatives and rule.full_id not in policy.indicator_overrides:
        indicator = "info"  # starting-dose advice, patient already on the drug: inform (monitor/TDM), do not alarm
    return Recommendation(
        drug=drug,
        order_ref=_order_ref(order),
        guideline_id=g.id,
        guideline_name=g.name,
        guideline_url=g.url,
        publication=g.publication,
        rule_id=rule.full_id,
        action=r.action,
        strength=r.strength,
        indicator=indicator,
        summary=summary,
        detail=detail,
        population=pop.label if pop else None,
        population_note=pop_note,
        genes=evidence,
        alternatives=screened.alternatives,
        withheld=screened.withheld,
        dose=dose,
        notes=notes,
        info_notes=info_notes,
        knowledge_version=k.version,
        interruptive=r.action not in (Action.standard_dosing, Action.no_recommendation),
    )


def _dropped(rule: CompiledRule | None, policy: EnginePolicy) -> bool:
    """Would _evaluate(drop_not_actionable=True) answer None with this matched rule? (No rule, a rule the
    site switched off, or standard dosing / no recommendation.)"""
    return rule is None or rule.full_id in policy.disabled_rules or rule.rule.action in _NOT_ACTIONABLE


def _order_ref(order: DraftOrder | None) -> str | None:
    if order is None:
        return None
    return order.reference or (f"{order.resource_type}/{order.id}" if order.id else None)


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(x for x in items if x))


def _split(notes: list[Any], drug: DrugRef, keys: list[_GeneKey]) -> dict[str, list[str]]:
    warn, info = split_notes(notes, drug.name, [_evidence(key) for key in keys])
    return {"notes": warn, "info_notes": info}


# --------------------------------------------------------------------------------------------
# Lookup keys


def _gene_key(k: Knowledge, g: Guideline, gene: str, result: GeneResult | None) -> _GeneKey:
    if result is None:
        return _GeneKey(gene, [NO_RESULT], None)
    call = result.call
    method = g.lookup[gene]
    if call is None:
        if result.reported_phenotype and method == "phenotype":
            return _GeneKey(gene, [result.reported_phenotype], result,
                            notes=[f"{gene}: phenotype as reported by the lab (not re-derived)"])
        return _GeneKey(gene, [INDETERMINATE], result,
                        indeterminate_reason=f"{gene} result could not be interpreted")
    if call.phenotype == INDETERMINATE:
        return _GeneKey(gene, [INDETERMINATE], result, indeterminate_reason=call.reason or f"{gene} result is indeterminate")
    if method == "activity_score":
        if call.activity_score and call.activity_score not in ("n/a", ""):
            return _GeneKey(gene, [call.activity_score], result)
        cands = _as_candidates(k, gene, call.phenotype)
        if not cands:
            return _GeneKey(gene, [INDETERMINATE], result,
                            indeterminate_reason=f"{gene}: no activity score and phenotype {call.phenotype!r} cannot be mapped to one")
        return _GeneKey(gene, cands, result, ambiguous=len(cands) > 1,
                        notes=[f"{gene}: no activity score reported; matched on phenotype {call.phenotype}"])
    if method == "allele_status":
        if not call.allele_status:
            return _GeneKey(gene, [INDETERMINATE], result, indeterminate_reason=f"{gene}: allele status not available")
        return _GeneKey(gene, list(call.allele_status), result)
    return _GeneKey(gene, [call.phenotype], result)


def _as_candidates(k: Knowledge, gene: str, phenotype: str) -> list[str]:
    gdef = k.genes.get(gene)
    fn = getattr(gdef, "activity_scores_for", None)
    if callable(fn):
        try:
            vals = list(fn(phenotype))
            if vals:
                return vals
        except Exception:  # noqa: BLE001 - fall back to the CPIC ranges below
            pass
    return list(_AS_BY_PHENOTYPE.get(gene, {}).get(phenotype, []))


def _match(k: Knowledge, g: Guideline, pop: str | None, drug: str, keys: list[_GeneKey]) -> tuple[CompiledRule | None, str | None]:
    """The rule for these lookup keys (the most cautious one when ambiguous, with a note saying so).

    A function of the rules and the keys' values only: answered once per knowledge for each distinct
    (rules, keys) and remembered in ``k.engine_memo`` (bounded)."""
    rules = k.rules_for(g.id, pop, drug)
    if not rules:
        return None, None
    mk = ("match", id(rules), *[key.signature() for key in keys])
    memo = k.engine_memo
    hit = memo.get(mk)
    if hit is not None and hit[0] is rules:  # the entry holds the list, so its id is not reused while it lives
        return hit[1], hit[2]
    rule, note = _match_rules(rules, keys)
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[mk] = (rules, rule, note)
    return rule, note


def _match_rules(rules: list[CompiledRule], keys: list[_GeneKey]) -> tuple[CompiledRule | None, str | None]:
    # non-ambiguous genes: any candidate may match (HLA statuses); ambiguous: try every alternative
    alt_axes = [key.values if key.ambiguous else [None] for key in keys]
    hits: list[CompiledRule] = []
    for combo in itertools.product(*alt_axes):
        values = {key.gene: ([c] if c is not None else key.values) for key, c in zip(keys, combo)}
        rule = next((cr for cr in rules if _rule_matches(cr, values)), None)
        if rule is not None and rule not in hits:
            hits.append(rule)
    if not hits:
        return None, None
    if len(hits) == 1:
        return hits[0], None
    hits.sort(key=lambda cr: (_INDICATOR_RANK[cr.rule.effective_indicator], _ACTION_RANK.get(cr.rule.action, 99),
                              _STRENGTH_RANK.get(cr.rule.strength, 9)))
    return hits[0], (
        "The recommendation differs between activity scores within this phenotype "
        f"({', '.join(h.rule.id for h in hits)}); the most cautious one is shown. An activity score would settle it."
    )


def _rule_matches(cr: CompiledRule, values: Mapping[str, list[str]]) -> bool:
    for gene, matcher in cr.matchers:
        if not any(matcher.matches(v) for v in values.get(gene, [NO_RESULT])):
            return False
    return True


def _gene_notes(keys: list[_GeneKey], profile: GenomicProfile) -> list[str]:
    notes: list[str] = []
    for key in keys:
        r = key.result
        if key.indeterminate_reason:
            notes.append(f"{key.gene} indeterminate: {key.indeterminate_reason}")
        notes += key.notes
        if r is None:
            unread = [u for u in profile.unreadable if u.gene == key.gene]
            if unread:
                notes.append(f"A {key.gene} result is on file but could not be read ({unread[0].reason}).")
            continue
        if r.status and r.status not in ("final", "amended", "corrected"):
            notes.append(f"{key.gene} result status is {r.status}")
        notes += [f"{key.gene}: {n}" for n in r.notes]
        if r.conflicts_with:
            notes.append(f"{key.gene}: conflicts with {', '.join(r.conflicts_with)}")
    return notes


def _evidence(key: _GeneKey) -> GeneEvidence:
    """The key's evidence (made once per key: a key is not changed once made, nor is its evidence)."""
    if key.evidence is None:
        key.evidence = _make_evidence(key)
    return key.evidence


def _make_evidence(key: _GeneKey) -> GeneEvidence:
    r = key.result
    if r is None:
        return GeneEvidence(gene=key.gene, phenotype=NO_RESULT)
    call = r.call
    return GeneEvidence(
        gene=key.gene,
        diplotype=(call.diplotype if call and call.diplotype else r.diplotype),
        phenotype=call.phenotype if call else (r.reported_phenotype or INDETERMINATE),
        activityScore=call.activity_score if call else None,
        alleleStatus=", ".join(call.allele_status) if call and call.allele_status else None,
        observation=r.observation,
        effective=r.effective.isoformat() if r.effective else None,
        derivation=call.method if call and call.method else None,
    )


class _SafeDict(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _fill(text: str, drug: DrugRef, key: _GeneKey, result: str) -> str:
    """A rule text with its placeholders filled; ``result``: results_label of the genes' evidence."""
    call = key.result.call if key.result else None
    phenotype = (call.phenotype if call else (key.result.reported_phenotype if key.result else None)) or NO_RESULT
    values = _SafeDict(
        drug=drug.name,
        gene=key.gene,
        phenotype=phenotype_words(phenotype),
        result=result,
        activity_score=(call.activity_score if call else None) or "n/a",
        diplotype=(call.diplotype if call else None) or (key.result.diplotype if key.result else None) or "unknown",
    )
    try:
        return text.format_map(values)
    except (ValueError, IndexError):
        return text


# --------------------------------------------------------------------------------------------
# No rule / no result


def _unmatched(k: Knowledge, g: Guideline, drug: DrugRef, keys: list[_GeneKey], notes: list[str],
               order: DraftOrder | None, pop: Population | None, pop_note: str | None) -> Recommendation:
    indet = [key for key in keys if INDETERMINATE in key.values]
    if indet:
        why = "; ".join(key.indeterminate_reason or f"{key.gene} indeterminate" for key in indet)
        summary = f"{'/'.join(key.gene for key in indet)} result could not be interpreted: no genotype-guided advice for {drug.name}"
        detail = (f"The {', '.join(key.gene for key in indet)} result on file could not be turned into a CPIC phenotype "
                  f"({why}), so the {g.name} cannot be applied. Review the report or consider re-testing.")
        rule_id = f"{g.id}/indeterminate"
    else:
        missing = [key.gene for key in keys if key.result is None]
        label = ", ".join(f"{key.gene} {key.values[0]}" for key in keys)
        summary = (f"No CPIC recommendation for {drug.name} with {label}"
                   if not missing else f"No {'/'.join(missing)} result: CPIC advice for {drug.name} incomplete")
        detail = (f"The {g.name} has no recommendation for this combination ({label}). "
                  + (f"A {' and '.join(missing)} result would allow a full assessment. " if missing else ""))
        rule_id = f"{g.id}/no-rule"
    return Recommendation(
        drug=drug, order_ref=_order_ref(order), guideline_id=g.id, guideline_name=g.name, guideline_url=g.url,
        publication=g.publication, rule_id=rule_id, action=Action.no_recommendation, strength="No recommendation",
        indicator="info", summary=summary[:139], detail=detail, population=pop.label if pop else None,
        population_note=pop_note, genes=[_evidence(key) for key in keys],
        **_split(notes, drug, keys), knowledge_version=k.version, interruptive=False,
    )


def _no_result(k: Knowledge, g: Guideline, drug: DrugRef, profile: GenomicProfile, patient: PatientContext,
               order: DraftOrder | None, policy: EnginePolicy) -> Recommendation | None:
    dgenes = g.drug_genes(drug.name)
    genes = " or ".join(dgenes) if len(dgenes) <= 2 else ", ".join(dgenes[:-1]) + " or " + dgenes[-1]
    unread = [u for u in profile.unreadable if u.gene in dgenes]
    if unread or not patient.observations_available:
        why = (f"a {unread[0].gene} result is on file but could not be read ({unread[0].reason})" if unread
               else "genomic results could not be retrieved for this request")
        return Recommendation(
            drug=drug, order_ref=_order_ref(order), guideline_id=g.id, guideline_name=g.name, guideline_url=g.url,
            publication=g.publication, rule_id=f"{g.id}/unavailable", action=Action.no_recommendation,
            strength="No recommendation", indicator="info",
            summary=f"{genes} status unknown: check results before {drug.name}"[:139],
            detail=f"CPIC guidance for {drug.name} could not be checked: {why}.",
            genes=[GeneEvidence(gene=gene, phenotype=NO_RESULT) for gene in dgenes],
            notes=[why], knowledge_version=k.version, interruptive=False,
        )
    d = g.drug(drug.name)
    mode = policy.pretest_cards.get(drug.name) or (d.pretest if d else "off")
    if mode == "off":
        return None
    rule_id = f"{g.id}/pretest"
    if rule_id in policy.disabled_rules:
        return None
    return Recommendation(
        drug=drug, order_ref=_order_ref(order), guideline_id=g.id, guideline_name=g.name, guideline_url=g.url,
        publication=g.publication, rule_id=rule_id, action=Action.test_before_prescribing,
        strength="n/a", indicator=policy.indicator_overrides.get(rule_id) or mode,
        summary=f"No {genes} result on file: consider testing before {drug.name}"[:139],
        detail=(f"{drug.name.capitalize()} is covered by the {g.name}, which adjusts therapy by "
                f"{' and '.join(dgenes)} genotype. No result for {genes} was found in the record. "
                "If treatment can wait for a result, consider ordering pharmacogenetic testing."),
        genes=[GeneEvidence(gene=gene, phenotype=NO_RESULT) for gene in dgenes],
        knowledge_version=k.version, interruptive=True,
    )


# --------------------------------------------------------------------------------------------
# Populations: service/pgx/populations.py (select_population, value sets, current medications)


# --------------------------------------------------------------------------------------------
# Warfarin


def _warfarin_rec(k: Knowledge, g: Guideline, drug: DrugRef, results: dict[str, GeneResult | None],
                  patient: PatientContext, order: DraftOrder | None, policy: EnginePolicy, today: date,
                  pop: Population | None, pop_note: str | None, drop_not_actionable: bool = False
                  ) -> Recommendation | None:
    def diplo(gene: str) -> str | None:
        r = results.get(gene)
        if r is None:
            return None
        if r.call is not None and r.call.phenotype == INDETERMINATE:
            return None
        return (r.call.diplotype if r.call and r.call.diplotype else None) or r.diplotype

    meds = _current_med_codes(k, patient, order)
    if order is not None:
        meds |= {c.code for c in order.codes if c.code}
    vk_r = results.get("VKORC1")
    vk_text = None
    if vk_r is not None:
        if vk_r.call is not None and vk_r.call.phenotype.startswith("-1639"):
            vk_text = vk_r.call.phenotype  # "-1639 AG" as the gene file names it
        else:
            vk_text = diplo("VKORC1") or vk_r.reported_phenotype
    inp = _warfarin.WarfarinInputs(
        age_years=_warfarin.age_years(patient.birth_date, today),
        height_cm=patient.height_cm,
        weight_kg=patient.weight_kg,
        vkorc1=_warfarin.vkorc1_genotype(vk_text),
        cyp2c9=diplo("CYP2C9"),
        cyp4f2=(results["CYP4F2"].call.phenotype if results.get("CYP4F2") is not None and results["CYP4F2"].call
                and results["CYP4F2"].call.phenotype != INDETERMINATE else diplo("CYP4F2")),
        amiodarone=bool(meds & _warfarin.AMIODARONE),
        enzyme_inducer=bool(meds & set(_warfarin.ENZYME_INDUCERS)),
    )
    res = _warfarin.recommend(inp)
    if drop_not_actionable and not res.lower_than_usual:
        return None  # standard dosing whatever the method (see the action below)
    keys = [_GeneKey(gene, [NO_RESULT if results[gene] is None else "-"], results[gene]) for gene in results]
    notes = _gene_notes(keys, GenomicProfile(patient_id=patient.patient_id)) + res.notes + list(g.notes)
    if inp.vkorc1 is None and results.get("VKORC1") is not None:
        notes.append("VKORC1 genotype could not be read as -1639 G>A (rs9923231); treated as unknown")
    if pop_note:
        notes.append(pop_note)
    action = Action.reduce_dose if res.lower_than_usual else Action.standard_dosing
    if res.method == "iwpc":
        rule = "iwpc-algorithm"
        summary = f"Warfarin: genotype-guided dose about {res.weekly_dose_mg:.1f} mg/week (IWPC algorithm)"
    elif res.method == "label-table":
        rule = "label-table"
        summary = f"Warfarin: expected dose {res.label_range_mg_day} mg/day for this genotype"
    else:
        rule = "genotype-guidance"
        summary = ("Warfarin: variant(s) predict a lower dose; use a pharmacogenetic algorithm"
                   if res.lower_than_usual else "Warfarin: use a pharmacogenetic dosing algorithm")
    rule_id = f"{g.id}/{rule}"
    if rule_id in policy.disabled_rules:
        return None
    if res.method == "iwpc" or res.method == "label-table":
        if not res.lower_than_usual:
            action = Action.standard_dosing
    dose = None
    if res.weekly_dose_mg is not None:
        dose = DoseAdjustment(text=f"about {res.weekly_dose_mg:.1f} mg/week ({res.daily_dose_mg:.1f} mg/day)")
    elif res.label_range_mg_day:
        dose = DoseAdjustment(text=f"{res.label_range_mg_day} mg/day")
    indicator = policy.indicator_overrides.get(rule_id) or DEFAULT_INDICATOR[action]
    return Recommendation(
        drug=drug, order_ref=_order_ref(order), guideline_id=g.id, guideline_name=g.name, guideline_url=g.url,
        publication=g.publication, rule_id=rule_id, action=action, strength="Strong", indicator=indicator,
        summary=summary, detail=res.text, population=pop.label if pop else None, population_note=pop_note,
        genes=[_evidence(key) for key in keys], dose=dose, **_split(notes, drug, keys), knowledge_version=k.version,
        interruptive=action != Action.standard_dosing,
    )
