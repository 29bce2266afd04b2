"""One hook request through the named stages: request -> patient data -> genomic profile -> recommendations -> cards.

:func:`run_hook` composes them and nothing else:

1. request: the FHIR server the caller may have us contact, the required context, and the draft-order
   plan (service/hooks/order_plan.py): no ordered drug with a guideline means no cards, known before
   the prefetch is touched;
2. patient data -> genomic profile: the patient's snapshot (service/hooks/snapshots.py: prefetch, else
   local copy -> Redis -> one shared FHIR fetch), under a key scoped to the caller and FHIR server
   (service/auth/tenancy.py);
3. phenotypes -> recommendations: service.evaluate.run_clinical (the composition the SMART app and
   population screening use too), phenotyping only the genes the ordered drugs' guidelines read;
4. cards: card templates (service/cards), bound to the hookInstance; order-sign drops the cards
   order-select showed with the same content.

Work done for an earlier request with the same content (order-sign after order-select) is reused through
service/hooks/reuse.py (`PGX_CDS_REUSE__ENABLED=false` turns that off, with the same answers).
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
import structlog

from service.auth.jwt import Principal
from service.auth.tenancy import RefusedServerLog, card_owner, patient_scope
from service.cache.store import KV, WriteBehind
from service.cards.builder import CardTemplate, card_rank
from service.cards.patient_view import patient_view_templates
from service.cdshooks.models import CdsResponse, HookRequest
from service.config import Settings
from service.evaluate import needed_genes, run_clinical
from service.feedback.store import CARD_RULE_DAYS, card_rule_bucket, card_rule_field
from service.fhir.client import FhirClient, validate_fhir_server
from service.fhir.models import DraftOrder
from service.fhir.orders import extract_orders
from service.fhir.patient_data import resolve_medications
from service.hooks.discovery import ServiceDef
from service.hooks.errors import HookError
from service.hooks.order_plan import ORDER_HOOKS, DraftPlan, plan_draft_orders
from service.hooks.reuse import Reuse
from service.hooks.snapshots import OBS_KEY, Loaded, Snapshots
from service.observability import metrics
from service.pgx.drugs import recognise
from service.pgx.knowledge import Knowledge
from service.pgx.policy import EnginePolicy
from service.pgx.phenoconversion import co_order_key, data_needs, perpetrators_in_order
from service.pgx.safety import data_needs as safety_data_needs

log = structlog.get_logger("pgx_cds.hooks")


@dataclass
class Deps:
    settings: Settings
    knowledge: Knowledge
    fhir: FhirClient
    kv: KV
    reuse: Reuse = field(init=False)  # work done for earlier requests with the same content
    snapshots: Snapshots = field(init=False)  # patient data -> genomic profile, read through the caches
    refused_servers: RefusedServerLog = field(default_factory=RefusedServerLog)
    card_rules: WriteBehind = field(init=False)  # card uuid -> rule id records, batched off the request path
    shown: WriteBehind = field(init=False)  # order-select's de-duplication records, batched off the request path
    policy: EnginePolicy = field(init=False)  # the site settings the engine reads, made once from `settings`
    knowledge_tag: str = field(init=False)  # names the knowledge version in cache keys
    _reads: dict[frozenset[str], tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r = self.settings.reuse
        self.reuse = Reuse(enabled=r.enabled, size=r.entries)
        self.policy = EnginePolicy.of(self.settings)
        self.snapshots = Snapshots(self.settings, self.knowledge, self.fhir, self.kv, self.reuse)
        self.card_rules = WriteBehind(self.kv, key=card_rule_bucket, ttl_s=(CARD_RULE_DAYS + 1) * 24 * 3600)
        self.shown = WriteBehind(self.kv, key=None, ttl_s=self.settings.cache.dedupe_ttl_s, kind="dedupe")
        self.knowledge_tag = hashlib.sha256(self.knowledge.version.encode()).hexdigest()[:12]

    def reads(self, drug_names: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
        """(prefetch keys, genes) the guidelines of these drugs read: a function of the knowledge only, kept
        per drug set (~10 us per CPIC request saved, measured per stage on the distinct-patient mix)."""
        found = self._reads.get(drug_names)
        if found is None:
            if len(self._reads) >= 4096:
                self._reads.clear()
            found = self._reads[drug_names] = (_data_needs(self.knowledge, drug_names),
                                               needed_genes(self.knowledge, drug_names))
        return found

    async def flush(self) -> None:
        """Send every write queued behind requests now (tests, and the first step of `close`)."""
        await self.snapshots.writes.flush()
        await self.shown.flush()
        await self.card_rules.flush()

    async def close(self) -> None:
        """At shutdown: the queued writes' last attempt (what Redis does not take is counted and logged)."""
        await self.snapshots.writes.close()
        await self.shown.close()
        await self.card_rules.close()


@dataclass
class Outcome:
    body: bytes = b'{"cards":[]}'  # the response JSON, serialised once from the card templates
    indicators: tuple[str, ...] = ()  # of the cards in the body, in order
    patient_key: str | None = None  # the patient's salted hash, for logs
    source: str = "none"
    fhir_calls: int = 0

    @property
    def response(self) -> CdsResponse:
        """The response as a validated model (for the CLI and tests; the hot path only sends `body`)."""
        return CdsResponse.model_validate_json(self.body)


# ------------------------------------------------------------------------------------------ the composition


async def run_hook(service: ServiceDef, req: HookRequest, deps: Deps, principal: Principal | None) -> Outcome:
    """request -> patient data -> genomic profile -> recommendations -> cards."""
    hook = service.hook
    fhir_server, refused = _checked_request(service, req, deps, principal)
    plan = None
    if hook in ORDER_HOOKS:  # most orders: no drug with a guideline, known before the prefetch is touched
        plan = plan_draft_orders(deps.knowledge, req.context.draftOrders,
                                 req.context.selections if hook == "order-select" else None, req.prefetch)
        if plan.no_cards:
            return Outcome()
    scope = patient_scope(deps.settings.log_salt, principal, fhir_server, req.fhirServer, req.context.patientId)
    drug_orders, needs, genes, fetched_orders = await _plan_orders(hook, req, deps, fhir_server, plan)
    if hook != "patient-view" and not drug_orders:
        return Outcome()
    loaded = await deps.snapshots.load(req, hook=hook, key=f"snap:{deps.knowledge_tag}:{scope.key}",
                                       fhir_server=fhir_server, needs=needs, genes=genes, shareable=scope.shareable)
    if not loaded.entry.snapshot.patient.observations_available:
        if hook != "patient-view" and all(d.name not in deps.knowledge.by_drug for _, ds in drug_orders for d in ds):
            return Outcome()  # only phenoconverting co-medication ordered: nothing to say without results
        raise _unavailable(service, req, deps, refused)
    groups = _card_templates(hook, req, deps, loaded, drug_orders, genes, plan, reusable=not fetched_orders)
    templates = sorted((t for g in groups for t in g.templates), key=card_rank)  # most severe first (stable)
    bound = [(t, t.bind(req.hookInstance)) for t in templates]
    cards = await _dedupe_and_remember(bound, hook, deps, scope.key, groups,
                                       card_owner(principal)) if bound else bound
    for t, _ in cards:
        metrics.child(metrics.CARDS, t.indicator, t.rule_id).inc()
    return Outcome(body=orjson.dumps({"cards": [data for _, data in cards]}),
                   indicators=tuple(t.indicator for t, _ in cards), patient_key=scope.patient,
                   source=loaded.source, fhir_calls=loaded.fhir_calls)


# ------------------------------------------------------------------------------------------ request


def _checked_request(service: ServiceDef, req: HookRequest, deps: Deps,
                     principal: Principal | None) -> tuple[str | None, str | None]:
    """(the FHIR server we may contact, why the one sent may not be contacted); HookError(400) for a
    request that lacks what its hook requires."""
    hook = service.hook
    fhir_server, refused = _checked_fhir_server(req, deps, principal)
    if refused:
        deps.refused_servers.refused(principal, req.fhirServer, refused)
    if req.fhirAuthorization is not None and req.fhirServer is None:
        raise HookError(400, "fhirAuthorization requires fhirServer")
    ctx = req.context
    if hook in ORDER_HOOKS:
        if ctx.draftOrders is None:
            raise HookError(400, "context.draftOrders is required for " + hook)
        if hook == "order-select" and not ctx.selections:
            raise HookError(400, "context.selections is required for order-select")
    return fhir_server, refused


def _checked_fhir_server(req: HookRequest, deps: Deps, principal: Principal | None) -> tuple[str | None, str | None]:
    """(the FHIR server we may contact, why the one sent may not be contacted).

    A fhirServer that is not https (outside the dev profile) or not configured for the calling issuer is
    never contacted (no server-side request forgery). The request is still answered from prefetch;
    only when data would have to be fetched does the 412 say why it could not be."""
    if req.fhirServer is None:
        return None, None
    if len(req.fhirServer) > _MAX_FHIR_SERVER_CHARS:  # never kept in the validation memo below
        return None, f"fhirServer is longer than {_MAX_FHIR_SERVER_CHARS} characters"
    s = deps.settings
    allowed = None
    if principal is not None and not s.dev_mode:
        allowed = principal.issuer.fhir_servers
        if not allowed:
            return None, "no FHIR servers are configured for this issuer"
    return _validated_fhir_server(req.fhirServer, tuple(allowed) if allowed is not None else None, s.fhir.allow_http)


_MAX_FHIR_SERVER_CHARS = 2048


@functools.lru_cache(maxsize=256)
def _validated_fhir_server(url: str, allowed: tuple[str, ...] | None, allow_http: bool) -> tuple[str | None, str | None]:
    try:
        return validate_fhir_server(url, allowed=list(allowed) if allowed is not None else None,
                                    allow_http=allow_http), None
    except ValueError as exc:
        return None, str(exc)


def _unavailable(service: ServiceDef, req: HookRequest, deps: Deps, refused: str | None) -> HookError:
    metrics.PREFETCH_412.labels(service=service.id).inc()
    if refused:
        deps.refused_servers.needed(refused)
    why = f"fhirServer was not contacted: {refused}" if refused else (
        "the patient's genomic Observations could not be read from fhirServer" if req.fhirServer
        else "no fhirServer was given")
    return HookError(412, f"Required data unavailable: prefetch '{OBS_KEY}' was not provided and {why}",
                     code="processing")


async def _plan_orders(
    hook: str, req: HookRequest, deps: Deps, fhir_server: str | None, plan: DraftPlan | None
) -> tuple[list[tuple[DraftOrder, list]], frozenset[str] | None, frozenset[str] | None, bool]:
    """The draft orders with recognised drugs, the prefetch keys and genes their guidelines read (None
    for patient-view: everything), and whether the FHIR server was needed to name the drugs."""
    if hook not in ORDER_HOOKS or plan is None:
        return [], None, None, False
    drug_orders = plan.drug_orders
    if plan.needs_fetch:
        token = req.fhirAuthorization.access_token if req.fhirAuthorization else None
        orders = await resolve_medications(
            plan.orders, prefetch=req.prefetch, draft_orders=req.context.draftOrders, fhir_server=fhir_server,
            access_token=token, client=deps.fhir, settings=deps.settings,
        )
        k = deps.knowledge
        drug_orders = [(o, d) for o, d in ((o, recognise(k, o) or perpetrators_in_order(k, o)) for o in orders) if d]
    needs, genes = deps.reads(frozenset(d.name for _, ds in drug_orders for d in ds))
    return drug_orders, needs, genes, plan.needs_fetch


def _data_needs(k: Knowledge, drug_names: set[str] | frozenset[str]) -> frozenset[str]:
    """The prefetch keys the guidelines of these drugs can use: genomic results and the patient always;
    conditions, current medications and vitals only where a population or algorithm reads them."""
    needs = {"patient", OBS_KEY}
    for name in drug_names:
        for g in k.guidelines_for_drug(name):
            if g.algorithm == "warfarin":
                needs |= {"medications", "vitals"}
            for pop in g.populations:
                m = pop.match
                if m is None:
                    continue
                if m.conditions or m.value_sets:
                    needs.add("conditions")
                if m.medications or m.drug_in_use is not None:
                    needs.add("medications")
        # one-click safety: contraindications of alternatives, dose applicability (service/pgx/safety.py)
        needs |= safety_data_needs(k.safety, k.guidelines_for_drug(name))
    needs |= data_needs(k, drug_names)  # co-medication can phenoconvert these drugs' genes
    return frozenset(needs)


# ------------------------------------------------------------------------------------------ recommendations -> cards


@dataclass(slots=True, eq=False)
class _OrderCards:
    """One order's card templates (the reuse value), and when order-select last recorded them for the
    order-sign de-duplication from this process (a repeated order-select does not write them again)."""

    templates: list[CardTemplate]
    recorded_at: float = float("-inf")


def _card_templates(
    hook: str, req: HookRequest, deps: Deps, loaded: Loaded, drug_orders: list[tuple[DraftOrder, list]],
    genes: frozenset[str] | None, plan: DraftPlan | None, *, reusable: bool,
) -> list[_OrderCards]:
    """phenotypes -> recommendations -> card templates, reusing those derived from the same snapshot
    content for the same order (order-sign after order-select)."""
    s, k = deps.settings, deps.knowledge
    entry = loaded.entry
    patient_id = req.context.patientId
    app_url = _app_url(s)
    today = date.today()
    profile = entry.phenotyped(k, genes)
    patient = entry.snapshot.patient
    if hook == "patient-view":
        recs = run_clinical(k, deps.policy, patient, profile=profile, summary=True, today=today).summary
        return [_OrderCards(patient_view_templates(recs, patient_id=patient_id, app_url=app_url))]
    # every draft order of the request: perpetrators among them phenoconvert the others
    co_orders = plan.every if plan is not None and not plan.needs_fetch and plan.every \
        else extract_orders(req.context.draftOrders, None)
    groups = []
    for order, _drugs in drug_orders:
        key = ("order", entry.token, order.reference)
        content = (order.resource, order.shared_id, co_order_key(k, co_orders, order), today, patient_id, app_url)
        found = deps.reuse.get(key, content) if reusable else None
        if found is None:
            found = _OrderCards([])
            for rec in run_clinical(k, deps.policy, patient, profile=profile, genes=genes, orders=[order], co_orders=co_orders,
                                    today=today).orders[0][1]:
                if rec.order_ref is None:
                    rec.order_ref = order.reference
                if rec.interruptive:
                    found.templates.append(CardTemplate.for_recommendation(rec, patient_id=patient_id, order=order,
                                                                           app_url=app_url))
            if reusable:
                deps.reuse.put(key, content, found)
        groups.append(found)
    return groups


def _app_url(s: Settings) -> str | None:
    base = s.public_base_url
    if not base:
        return None
    return base.rstrip("/") + s.smart_app_path + "/launch"


# ------------------------------------------------------------------------------------------ cards


async def _dedupe_and_remember(
    cards: list[tuple[CardTemplate, dict]], hook: str, deps: Deps, pkey: str, groups: list[_OrderCards],
    owner: str | None = None,
) -> list[tuple[CardTemplate, dict]]:
    """Order-select remembers what it showed; order-sign drops cards shown already with the same content.
    Also records card uuid -> rule id, so feedback (which names only the card) is counted per rule. Both
    kinds of record are written in batches off the request path (`deps.shown`, `deps.card_rules`); a
    record still queued is read from the queue (an order-sign moments after its order-select)."""
    s = deps.settings
    out = cards
    ttl = s.cache.dedupe_ttl_s
    if s.dedupe_order_sign and ttl > 0 and hook == "order-select":
        now = time.monotonic()
        due = [g for g in groups if g.templates and now - g.recorded_at >= ttl / 2]  # not recorded moments ago
        for g in due:
            for t in g.templates:
                deps.shown.add(f"dedupe:{pkey}:{t.order_ref}:{t.rule_id}", t.content_hash)
            g.recorded_at = now  # a write Redis does not take is retried by the queue
    elif s.dedupe_order_sign and ttl > 0 and hook == "order-sign":
        out = []
        for t, data in cards:
            ident = f"dedupe:{pkey}:{t.order_ref}:{t.rule_id}"
            if await deps.shown.read(ident) != t.content_hash:
                out.append((t, data))
    for t, data in out:
        if t.rule_id:
            deps.card_rules.add(card_rule_field(owner, data["uuid"]), t.rule_id.encode())  # feedback: its caller's only
    return out
