"""One hook request through the stages: request -> patient data -> genomic profile -> recommendations -> cards.

The router validates and authenticates; this module orchestrates the stages and owns the per-patient
snapshot cache (profile + the patient context the engine needs), single-flight fetching, the
order-select -> order-sign card de-duplication, and the memos that let a request whose content was seen
moments ago (a retry, the next hook call for the same patient and orders) skip straight to binding its
card templates to the new hookInstance. Memo keys are content: what the answer is a function of.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import OrderedDict
from datetime import date
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson
import structlog
from pydantic import BaseModel

from service.auth.jwt import Principal
from service.auth.tenancy import PatientScope, RefusedServerLog, card_owner, patient_scope
from service.cache.store import KV, WriteBehind
from service.cards.builder import CardTemplate, build_card_template, card_rank
from service.cards.patient_view import patient_view_cards
from service.config import Settings
from service.feedback.store import CARD_RULE_DAYS, card_rule_bucket, card_rule_field
from service.fhir.client import FhirClient, validate_fhir_server
from service.fhir.genomics import build_profile
from service.fhir.models import DraftOrder, PatientData
from service.fhir.orders import extract_orders
from service.fhir.patient_data import load_patient_data, resolve_medications
from service.fhir.prefetch import REQUIRED_KEYS, templates_for
from service.hooks.discovery import ServiceDef
from service.hooks.errors import HookError
from service.hooks.order_plan import ORDER_HOOKS, DraftPlan, plan_draft_orders
from service.cdshooks.models import CdsResponse, HookRequest
from service.observability import metrics
from service.pgx.drugs import recognise
from service.pgx.engine import evaluate_order, summarize_profile
from service.pgx.knowledge import Knowledge
from service.pgx.safety import data_needs as safety_data_needs
from service.pgx.models import GenomicProfile, Recommendation
from service.pgx.phenoconversion import co_order_key, data_needs, perpetrators_in_order
from service.pgx.phenotype import annotate_profile

log = structlog.get_logger("pgx_cds.hooks")

_OBS_KEY = next(iter(REQUIRED_KEYS))


class _Memo:
    """A small in-process LRU for derived, immutable results (never the source of truth).

    Sized for what it is for (the same patient again within moments: order-select then order-sign,
    several selections): a few hundred entries. Larger memos made every full garbage collection walk
    hundreds of thousands of cached objects (measured: new-patient p99 205 ms with 2048 entries, 90 ms
    with 512, at 32 connections)."""

    def __init__(self, size: int = 512) -> None:
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._size = size

    def get(self, key: Any) -> Any:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = value
        if len(self._data) > self._size:
            self._data.popitem(last=False)


@dataclass
class Deps:
    settings: Settings
    knowledge: Knowledge
    fhir: FhirClient
    kv: KV
    inflight: dict[tuple, asyncio.Future] = field(default_factory=dict)
    # derived-result memos: snapshot by prefetch content / by cached bytes, recommendations by order
    snapshots: _Memo = field(default_factory=_Memo)
    recommendations: _Memo = field(default_factory=lambda: _Memo(512))
    card_templates: _Memo = field(default_factory=lambda: _Memo(512))
    written: _Memo = field(default_factory=lambda: _Memo(8192))  # (key, value) -> when we last wrote it
    evaluations: _Memo = field(default_factory=lambda: _Memo(512))  # request content -> _Evaluation
    refused_servers: RefusedServerLog = field(default_factory=RefusedServerLog)
    card_rules: WriteBehind = field(init=False)  # card uuid -> rule id records, batched off the request path
    knowledge_tag: str = field(init=False)  # names the knowledge version in cache keys

    def __post_init__(self) -> None:
        self.card_rules = WriteBehind(self.kv, key=card_rule_bucket, ttl_s=(CARD_RULE_DAYS + 1) * 24 * 3600)
        self.knowledge_tag = hashlib.sha256(self.knowledge.version.encode()).hexdigest()[:12]


class Snapshot(BaseModel):
    """What we cache per patient: the annotated profile and the context the engine reads."""

    profile: GenomicProfile
    patient: PatientData  # with observations emptied


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


def _has_usable_prefetch(prefetch: dict[str, Any] | None, key: str) -> bool:
    if not prefetch or key not in prefetch:
        return False
    value = prefetch[key]
    return not (isinstance(value, dict) and value.get("resourceType") == "OperationOutcome")


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


async def _load_snapshot(
    req: HookRequest, deps: Deps, fhir_server: str | None, key: str, hook: str, needs: frozenset[str] | None,
    prefetch_id: str | None = None, shareable: bool = True,
) -> tuple[Snapshot, str, int, str]:
    """Prefetch (always wins) > cache > FHIR fetch. Concurrent misses for one patient share one fetch.

    Returns the snapshot, where it came from, the FHIR calls made, and a content id (same id = same
    snapshot content, used to memoise recommendations). `key` is scoped to the caller and FHIR server
    (service/auth/tenancy.py); a snapshot is cached only when `shareable` (the FHIR server was validated
    for the caller).
    """
    s = deps.settings
    token = req.fhirAuthorization.access_token if req.fhirAuthorization else None
    caching = s.cache.profile_ttl_s > 0 and shareable
    if not _has_usable_prefetch(req.prefetch, _OBS_KEY):
        near = deps.snapshots.get(("l1", key)) if caching else None
        if near is not None and not _covers(near[1], needs):
            near = None
        now = time.monotonic()
        if near is not None and near[0] > now:  # a few seconds of in-process memory in front of Redis
            metrics.child(metrics.CACHE, "profile", "hit").inc()
            return near[1], "cache", 0, near[2]
        cached = await deps.kv.get(key) if caching else None
        if cached is None and near is not None and near[3] > now and getattr(deps.kv, "degraded", False):
            # Redis failed (not a miss): serve our last copy while it is within the profile TTL
            metrics.child(metrics.CACHE, "profile", "stale").inc()
            return near[1], "cache-stale", 0, near[2]
        if cached is not None:
            content_id = "c" + hashlib.sha1(cached).hexdigest()
            snap = deps.snapshots.get(content_id)
            if snap is None:
                snap = Snapshot.model_validate_json(cached)
                deps.snapshots.put(content_id, snap)
            if _covers(snap, needs):
                metrics.child(metrics.CACHE, "profile", "hit").inc()
                if s.cache.local_ttl_s:
                    deps.snapshots.put(
                        ("l1", key), (now + s.cache.local_ttl_s, snap, content_id, now + s.cache.profile_ttl_s)
                    )
                return snap, "cache", 0, content_id
            # cached for other drugs: it lacks data these drugs need; load both sets
            needs = (needs or frozenset()) | frozenset(snap.patient.obtained)
        metrics.child(metrics.CACHE, "profile", "miss").inc()
        flight = (key, needs)
        pending = deps.inflight.get(flight)
        if pending is not None:
            snap, calls, content_id, _raw = await asyncio.shield(pending)
            return snap, "fhir-shared", 0, content_id
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        deps.inflight[flight] = fut
        try:
            snap, calls = await _fetch_snapshot(req, deps, fhir_server, token, hook, needs)
            raw = snap.model_dump_json().encode()
            content_id = "c" + hashlib.sha1(raw).hexdigest()
            fut.set_result((snap, calls, content_id, raw))
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            deps.inflight.pop(flight, None)
        if snap.patient.observations_available and caching:
            await _store(deps, key, snap, content_id, raw)
        return snap, "fhir", calls, content_id
    # Prefetch: the same prefetch content always yields the same snapshot, so it is derived once. The key
    # names the prefetch templates, not the hook: order-sign reuses what order-select derived moments before.
    if prefetch_id is None:
        prefetch_id = _prefetch_id(req.prefetch)
    memo_key = "p" + hashlib.sha1(
        orjson.dumps([_template_set(hook), key, fhir_server, req.context.patientId, sorted(needs or ()), prefetch_id])
    ).hexdigest()
    snap = deps.snapshots.get(memo_key)
    calls = 0
    if snap is None:
        snap, calls = await _fetch_snapshot(req, deps, fhir_server, token, hook, needs)
        if calls == 0 and snap.patient.observations_available:  # built from prefetch alone: reusable
            deps.snapshots.put(memo_key, snap)
    if snap.patient.observations_available and caching:
        await _store(deps, key, snap, memo_key)  # the newest prefetch replaces what is cached
    return snap, "prefetch", calls, memo_key


def _prefetch_id(prefetch: dict[str, Any] | None) -> str:
    """A content id of the prefetch (the only serialisation of it a request makes)."""
    return hashlib.sha1(orjson.dumps(prefetch)).hexdigest()


@functools.lru_cache(maxsize=16)
def _template_set(hook: str) -> int:
    """An id of the hook's prefetch templates: hooks with the same templates derive the same snapshot."""
    return _TEMPLATE_SETS.setdefault(tuple(sorted(templates_for(hook).items())), len(_TEMPLATE_SETS))


_TEMPLATE_SETS: dict[tuple, int] = {}


async def _store(deps: Deps, key: str, snap: Snapshot, content_id: str, raw: bytes | None = None) -> None:
    """Cache a patient snapshot: Redis (shared by replicas) and this process's short-lived copy."""
    c = deps.settings.cache
    if c.profile_ttl_s <= 0:
        return
    now = time.monotonic()
    if c.local_ttl_s:
        deps.snapshots.put(("l1", key), (now + c.local_ttl_s, snap, content_id, now + c.profile_ttl_s))
    await _write_changed(deps, [(key, content_id, raw if raw is not None else snap.model_dump_json, c.profile_ttl_s)])


async def _write_changed(deps: Deps, items: list[tuple[str, Any, bytes | Callable[[], bytes], int]]) -> None:
    """Write (key, identity, payload, ttl) items to the store in one round trip, skipping those this process
    wrote recently with the same identity. A write the store could not take is not remembered."""
    now = time.monotonic()
    fresh = []
    for key, ident, payload, ttl in items:
        last = deps.written.get(key)
        if last is not None and last[0] == ident and now - last[1] < ttl / 2:
            continue
        fresh.append((key, ident, payload() if callable(payload) else payload, ttl))
    if not fresh:
        return
    await deps.kv.set_many([(key, _bytes(data), ttl) for key, _, data, ttl in fresh])
    if not getattr(deps.kv, "degraded", False):
        for key, ident, _, _ in fresh:
            deps.written.put(key, (ident, now))


def _bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _covers(snap: Snapshot, needs: frozenset[str] | None) -> bool:
    return needs is None or needs.issubset(snap.patient.obtained)


def _data_needs(k: Knowledge, drug_names: set[str]) -> frozenset[str]:
    """The prefetch keys the guidelines of these drugs can use: genomic results and the patient always;
    conditions, current medications and vitals only where a population or algorithm reads them."""
    needs = {"patient", _OBS_KEY}
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


async def _fetch_snapshot(
    req: HookRequest, deps: Deps, fhir_server: str | None, token: str | None, hook: str,
    needs: frozenset[str] | None = None,
) -> tuple[Snapshot, int]:
    patient = await load_patient_data(
        hook=hook,
        patient_id=req.context.patientId,
        fhir_server=fhir_server,
        access_token=token,
        prefetch=req.prefetch,
        client=deps.fhir,
        settings=deps.settings,
        only=needs,
    )
    if not patient.observations_available:
        return Snapshot(profile=GenomicProfile(patient_id=patient.patient_id), patient=patient), patient.fhir_calls
    profile = build_profile(patient)
    profile = annotate_profile(deps.knowledge.genes, profile, patient.sex)
    slim = patient.model_copy(update={"observations": []})
    return Snapshot(profile=profile, patient=slim), patient.fhir_calls


async def _dedupe_and_remember(
    cards: list[tuple[CardTemplate, dict]], hook: str, deps: Deps, pkey: str, owner: str | None = None
) -> list[tuple[CardTemplate, dict]]:
    """Order-select remembers what it showed; order-sign drops cards shown already with the same content.
    Also records card uuid -> rule id, so feedback (which names only the card) is counted per rule; those
    records are written in batches off the request path (`deps.card_rules`)."""
    s = deps.settings
    out = cards
    if s.dedupe_order_sign and s.cache.dedupe_ttl_s > 0 and hook in ("order-select", "order-sign"):
        writes: list[tuple[str, Any, bytes | Callable[[], bytes], int]] = []
        out = []
        for t, data in cards:
            ident = f"dedupe:{pkey}:{t.order_ref}:{t.rule_id}"
            if hook == "order-select":
                writes.append((ident, t.content_hash, t.content_hash, s.cache.dedupe_ttl_s))
                out.append((t, data))
            elif await deps.kv.get(ident) != t.content_hash:
                out.append((t, data))
        await _write_changed(deps, writes)
    for t, data in out:
        if t.rule_id:
            deps.card_rules.add(card_rule_field(owner, data["uuid"]), t.rule_id.encode())  # feedback: its caller's only
    return out


def _evaluate(
    deps: Deps, snap: Snapshot, content_id: str, order: DraftOrder, today: date, co_orders: list[DraftOrder] | None = None
) -> tuple[list[Recommendation], tuple]:
    """evaluate_order, memoised on (snapshot content, what the engine reads of the order, today)."""
    memo_key = (
        content_id,
        order.reference,
        tuple((c.system, c.code) for c in order.codes),
        order.text,
        tuple((c.system, c.code) for c in order.reason_codes),
        order.dose_quantity,
        today,
        co_order_key(deps.knowledge, co_orders or (), order),
    )
    cached = deps.recommendations.get(memo_key)
    if cached is not None:
        return cached, memo_key
    out = []
    for rec in evaluate_order(deps.knowledge, snap.profile, order, snap.patient, settings=deps.settings,
                              co_orders=co_orders or ()):
        if rec.order_ref is None:
            rec.order_ref = order.reference
        if rec.interruptive:
            out.append(rec)
    deps.recommendations.put(memo_key, out)
    return out, memo_key


def _order_cards(
    deps: Deps, recs: list[Recommendation], recs_key: tuple, order: DraftOrder, patient_id: str, app_url: str | None
) -> list[CardTemplate]:
    """Card templates for one order's recommendations, memoised on everything they are built from."""
    key = (recs_key, patient_id, app_url, order.encounter, order.requester, order.shared_id,
           hashlib.sha1(orjson.dumps(order.resource)).digest())
    templates = deps.card_templates.get(key)
    if templates is None:
        templates = [
            CardTemplate(build_card_template(r, patient_id=patient_id, order=order, app_url=app_url)) for r in recs
        ]
        deps.card_templates.put(key, templates)
    return templates


@dataclass
class _Evaluation:
    """What a request evaluated to, before the hook instance is bound: reusable for the same content."""

    templates: list[CardTemplate]
    patient_key: str | None = None
    source: str = "none"
    fhir_calls: int = 0
    reusable: bool = False  # answered from the request alone (no FHIR call, no cache read)
    snapshot: tuple[str, Snapshot, str] | None = None  # (cache key, snapshot, content id) to keep cached


async def run_hook(service: ServiceDef, req: HookRequest, deps: Deps, principal: Principal | None) -> Outcome:
    hook = service.hook
    fhir_server, refused = _checked_fhir_server(req, deps, principal)
    if refused:
        deps.refused_servers.refused(principal, req.fhirServer, refused)
    if req.fhirAuthorization is not None and req.fhirServer is None:
        raise HookError(400, "fhirAuthorization requires fhirServer")
    ctx = req.context
    if hook in ("order-select", "order-sign"):
        if ctx.draftOrders is None:
            raise HookError(400, "context.draftOrders is required for " + hook)
        if hook == "order-select" and not ctx.selections:
            raise HookError(400, "context.selections is required for order-select")

    draft_plan = None
    if hook in ORDER_HOOKS:  # most orders: no drug with a guideline, known before the prefetch is touched
        draft_plan = plan_draft_orders(deps.knowledge, ctx.draftOrders, ctx.selections if hook == "order-select" else None,
                                       req.prefetch)
        if draft_plan.no_cards:
            return Outcome()

    # Everything the answer depends on apart from the date and, without prefetch, the patient's cached data
    # (not the hookInstance or token): the same content again (a retry, the order-select that follows for
    # the same orders, the next hook call for the same patient) reuses what was derived from it. The
    # prefetch enters as its content id, serialised once per request (the snapshot memo reuses the id).
    # Whose patient (caller + validated FHIR server) is part of every key that holds patient data.
    scope = patient_scope(deps.settings.log_salt, principal, fhir_server, req.fhirServer, ctx.patientId)
    prefetch_id = _prefetch_id(req.prefetch)
    digest = hashlib.sha1(orjson.dumps(
        [hook, scope.key, fhir_server, req.fhirServer, refused, ctx.patientId, ctx.encounterId, ctx.userId,
         ctx.selections, ctx.draftOrders, prefetch_id])).digest()
    memo_key = None
    evaluation = None
    if _has_usable_prefetch(req.prefetch, _OBS_KEY):  # answered from the request alone
        memo_key = ("request", date.today(), digest)
        evaluation = deps.evaluations.get(memo_key)
        if evaluation is not None and evaluation.snapshot is not None:
            await _store(deps, *evaluation.snapshot)  # the newest prefetch replaces what is cached
    if evaluation is None:
        evaluation = await _evaluate_request(service, req, deps, fhir_server, refused, digest, scope, draft_plan,
                                             prefetch_id)
        if memo_key is not None and evaluation.reusable:
            deps.evaluations.put(memo_key, evaluation)

    bound = [(t, t.bind(req.hookInstance)) for t in evaluation.templates]
    cards = await _dedupe_and_remember(bound, hook, deps, evaluation.patient_key, card_owner(principal)) if bound else bound
    body = orjson.dumps({"cards": [data for _, data in cards]})
    for t, _ in cards:
        metrics.child(metrics.CARDS, t.indicator, t.rule_id).inc()
    return Outcome(body=body, indicators=tuple(t.indicator for t, _ in cards),
                   patient_key=scope.patient if evaluation.patient_key else None,
                   source=evaluation.source, fhir_calls=evaluation.fhir_calls)


async def _plan_orders(
    hook: str, req: HookRequest, deps: Deps, fhir_server: str | None, draft_plan: DraftPlan | None = None
) -> tuple[list[tuple[DraftOrder, list]], frozenset[str] | None, bytes | None, bool]:
    """The draft orders with recognised drugs, the prefetch keys their guidelines read (None for
    patient-view: everything), a key for the orders' content, and whether the FHIR server was needed."""
    if hook not in ORDER_HOOKS:
        return [], None, None, False
    s = deps.settings
    selections = req.context.selections if hook == "order-select" else None
    orders_key = hashlib.sha1(orjson.dumps([selections, req.context.draftOrders])).digest()
    memo = deps.snapshots.get(("orders", orders_key))
    if memo is not None:  # the same draft orders as a recent request: same drugs
        return memo[1], memo[2], orders_key, False
    if draft_plan is None:
        draft_plan = plan_draft_orders(deps.knowledge, req.context.draftOrders, selections)
    orders = draft_plan.orders
    fetched = draft_plan.needs_fetch
    if fetched:
        token = req.fhirAuthorization.access_token if req.fhirAuthorization else None
        orders = await resolve_medications(
            orders, prefetch=req.prefetch, draft_orders=req.context.draftOrders, fhir_server=fhir_server,
            access_token=token, client=deps.fhir, settings=s,
        )
        drug_orders = [(o, d) for o, d in ((o, recognise(deps.knowledge, o) or perpetrators_in_order(deps.knowledge, o))
                                           for o in orders) if d]
    else:
        drug_orders = draft_plan.drug_orders
    needs = _data_needs(deps.knowledge, {d.name for _, ds in drug_orders for d in ds})
    if not fetched:
        deps.snapshots.put(("orders", orders_key), (orders, drug_orders, needs))
    return drug_orders, needs, orders_key, fetched


async def _evaluate_request(
    service: ServiceDef, req: HookRequest, deps: Deps, fhir_server: str | None, refused: str | None, digest: bytes,
    scope: PatientScope, draft_plan: DraftPlan | None = None, prefetch_id: str | None = None,
) -> _Evaluation:
    """request -> patient data -> genomic profile -> recommendations -> card templates."""
    s = deps.settings
    hook = service.hook
    patient_id = req.context.patientId
    plan = deps.evaluations.get(("plan", digest))  # the same request content: the same drugs and keys
    if plan is not None:
        drug_orders, needs, orders_key, pkey, fetched_orders = plan
    else:
        drug_orders, needs, orders_key, fetched_orders = await _plan_orders(hook, req, deps, fhir_server, draft_plan)
        pkey = scope.key  # the caller and the FHIR server the patient id belongs to
        if not fetched_orders:
            deps.evaluations.put(("plan", digest), (drug_orders, needs, orders_key, pkey, fetched_orders))
    if hook != "patient-view" and not drug_orders:
        return _Evaluation(templates=[], reusable=not fetched_orders)

    cache_key = f"snap:{deps.knowledge_tag}:{pkey}"
    snap, source, calls, content_id = await _load_snapshot(
        req, deps, fhir_server, cache_key, hook, needs, prefetch_id, scope.shareable)
    if not snap.patient.observations_available:
        if hook != "patient-view" and all(d.name not in deps.knowledge.by_drug for _, ds in drug_orders for d in ds):
            return _Evaluation(templates=[])  # only phenoconverting co-medication ordered: nothing to say without results
        metrics.PREFETCH_412.labels(service=service.id).inc()
        if refused:
            deps.refused_servers.needed(refused)
        why = f"fhirServer was not contacted: {refused}" if refused else (
            "the patient's genomic Observations could not be read from fhirServer" if req.fhirServer
            else "no fhirServer was given")
        raise HookError(
            412, f"Required data unavailable: prefetch '{_OBS_KEY}' was not provided and {why}", code="processing"
        )

    app_url = _app_url(s, req)
    today = date.today()
    # the same snapshot and draft orders again (cached, shared or prefetched): the same templates
    cards_key = None if fetched_orders else (hook == "patient-view", content_id, orders_key, patient_id, today)
    templates = deps.card_templates.get(cards_key) if cards_key else None
    if templates is None:
        if hook == "patient-view":
            recs = summarize_profile(deps.knowledge, snap.profile, snap.patient, settings=s)
            templates = [CardTemplate(c) for c in patient_view_cards(recs, patient_id=patient_id, app_url=app_url)]
        else:
            templates = []
            co_orders = extract_orders(req.context.draftOrders, None)  # every draft: perpetrators for the others
            for order, _drugs in drug_orders:
                order_recs, recs_key = _evaluate(deps, snap, content_id, order, today, co_orders)
                templates.extend(_order_cards(deps, order_recs, recs_key, order, patient_id, app_url))
            templates.sort(key=card_rank)  # most severe first across all orders (stable within a rank)
        if cards_key:
            deps.card_templates.put(cards_key, templates)
    from_request = source == "prefetch" and calls == 0 and not fetched_orders
    return _Evaluation(
        templates=templates, patient_key=pkey, source=source, fhir_calls=calls, reusable=from_request,
        snapshot=(cache_key, snap, content_id) if from_request and scope.shareable else None,
    )


def _app_url(s: Settings, req: HookRequest) -> str | None:
    base = s.public_base_url
    if not base:
        return None
    return base.rstrip("/") + s.smart_app_path + "/launch"
