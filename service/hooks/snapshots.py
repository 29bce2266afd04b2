"""The patient-data and genomic-profile stages of a hook request, read through a cache.

A patient's snapshot is what later stages read: the genomic profile and the patient context the engine
reads (the PatientData without its Observations). For order hooks it holds only the genes the ordered
drugs read (`Snapshot.genes`; phenotype calls are added as later requests need them); a request needing
prefetch keys or genes a cached snapshot lacks loads both sets. It comes, in this order, from

1. the prefetch (always wins: it is the EHR's newest data), derived once per prefetch content: order-sign
   reuses what order-select derived from an equal prefetch moments before (service/hooks/reuse.py);
2. this process's local copy (`cache.local_ttl_s`, a few seconds in front of Redis; served past that,
   within the profile TTL, while Redis fails);
3. Redis (`snap:{knowledge}:{scope}`, shared by replicas, `cache.profile_ttl_s`);
4. the FHIR server: concurrent misses for one patient share one fetch (single flight).

Keys are scoped to the caller and the FHIR server (service/auth/tenancy.py): a snapshot is cached only
when the FHIR server was validated for the caller (`shareable`). The prefetch-derived snapshot is written
to Redis (the newest prefetch replaces what is cached) unless this process wrote the very same entry
under that key moments before (order-sign after order-select: ~20 us and a Redis write saved). Writes go
behind the request: queued and sent in batches (`Snapshots.writes`), read from the queue until sent.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel

from service.cache.store import KV, WriteBehind
from service.cdshooks.models import HookRequest
from service.config import Settings
from service.evaluate import phenotype, run_clinical
from service.fhir.client import FhirClient
from service.fhir.models import PatientData
from service.fhir.patient_data import load_patient_data
from service.fhir.prefetch import REQUIRED_KEYS, templates_for
from service.hooks.reuse import Reuse
from service.observability import metrics
from service.pgx.knowledge import Knowledge
from service.pgx.models import GenomicProfile

OBS_KEY = next(iter(REQUIRED_KEYS))
LOCAL_COPIES = 512  # patients whose snapshot this process keeps a local copy of (LRU)
SNAPSHOT_WRITES_PENDING = 1_000  # snapshot writes kept for a retry while Redis fails

_TOKENS = itertools.count(1)


class Snapshot(BaseModel):
    """What is cached per patient (the Redis payload): the profile and the context the engine reads."""

    profile: GenomicProfile
    patient: PatientData  # with observations emptied
    genes: list[str] | None = None  # the genes whose results were read (None: all)


@dataclass(slots=True, eq=False)
class SnapshotEntry:
    """One snapshot content. The token names it: the same token is the same content, so results derived
    from it can be reused by token (service/hooks/pipeline.py)."""

    snapshot: Snapshot
    token: int = field(default_factory=lambda: next(_TOKENS))

    def phenotyped(self, knowledge: Knowledge, genes: Collection[str] | None) -> GenomicProfile:
        """The profile with calls for `genes` (None: all). Calls made here are kept in the entry (a call is
        a function of the result, the sex and the knowledge, all fixed for the entry)."""
        snap = self.snapshot
        profile = phenotype(knowledge, snap.profile, snap.patient.sex, genes)
        if profile is not snap.profile:
            self.snapshot = Snapshot.model_construct(profile=profile, patient=snap.patient)
        return profile


@dataclass(slots=True)
class Loaded:
    """A snapshot as one request got it: the entry, where it came from, the FHIR calls made for it."""

    entry: SnapshotEntry
    source: str  # "prefetch" | "cache" | "cache-stale" | "fhir" | "fhir-shared"
    fhir_calls: int = 0


@dataclass(slots=True)
class _LocalCopy:
    entry: SnapshotEntry
    fresh_until: float  # served without asking Redis until then
    valid_until: float  # served while Redis fails until then (the profile TTL)
    written_at: float  # when this process wrote this entry to the store (-inf: not known to be there)


def _content(fhir_server: str | None, req: HookRequest) -> bytes | None:
    """What a prefetch-derived snapshot is a function of, as one flat bytes object: the FHIR server, the
    patient and the prefetch as JSON. Kept with the reused entry and compared byte for byte; a flat
    object, not the parsed prefetch (~1,500 objects per patient), so the entries the reuse holds add
    nothing for the cyclic GC to walk. None when the prefetch cannot be serialised (no reuse)."""
    try:
        return orjson.dumps([fhir_server, req.context.patientId, req.prefetch])
    except (orjson.JSONEncodeError, TypeError):
        return None


def has_usable_prefetch(prefetch: dict[str, Any] | None, key: str = OBS_KEY) -> bool:
    if not prefetch or key not in prefetch:
        return False
    value = prefetch[key]
    return not (isinstance(value, dict) and value.get("resourceType") == "OperationOutcome")


def _covers(snap: Snapshot, needs: frozenset[str] | None, genes: frozenset[str] | None) -> bool:
    """The snapshot holds what a request reading these prefetch keys and genes needs."""
    if needs is not None and not needs.issubset(snap.patient.obtained):
        return False
    return snap.genes is None or (genes is not None and genes.issubset(snap.genes))


_TEMPLATE_SETS: dict[tuple, int] = {}


def _template_set(hook: str) -> int:
    """An id of the hook's prefetch templates: hooks with the same templates derive the same snapshot
    (order-select and order-sign), so reuse is keyed on this, not on the hook."""
    return _TEMPLATE_SETS.setdefault(tuple(sorted(templates_for(hook).items())), len(_TEMPLATE_SETS))


async def fetch_snapshot(
    req: HookRequest, knowledge: Knowledge, settings: Settings, client: FhirClient, fhir_server: str | None,
    hook: str, needs: frozenset[str] | None, genes: Collection[str] | None,
) -> tuple[Snapshot, int]:
    """patient data (prefetch, the rest from the FHIR server) -> genomic profile -> phenotypes of `genes`."""
    token = req.fhirAuthorization.access_token if req.fhirAuthorization else None
    patient = await load_patient_data(
        hook=hook, patient_id=req.context.patientId, fhir_server=fhir_server, access_token=token,
        prefetch=req.prefetch, client=client, settings=settings, only=needs,
    )
    if not patient.observations_available:
        return Snapshot(profile=GenomicProfile(patient_id=patient.patient_id), patient=patient), patient.fhir_calls
    profile = run_clinical(knowledge, settings, patient, genes=genes).profile
    slim = patient.model_copy(update={"observations": []})
    return Snapshot(profile=profile, patient=slim, genes=sorted(genes) if genes is not None else None), \
        patient.fhir_calls


class Snapshots:
    """Read-through snapshot source for one process (see the module docstring)."""

    def __init__(self, settings: Settings, knowledge: Knowledge, fhir: FhirClient, kv: KV, reuse: Reuse) -> None:
        self.settings, self.knowledge, self.fhir, self.kv, self.reuse = settings, knowledge, fhir, kv, reuse
        self._local: OrderedDict[str, _LocalCopy] = OrderedDict()
        # snapshot writes no request waits for, sent to Redis in batches; while Redis is away at most
        # SNAPSHOT_WRITES_PENDING wait (a few KB each; a snapshot not written is only a later cache miss)
        self.writes = WriteBehind(kv, key=None, ttl_s=settings.cache.profile_ttl_s, kind="snapshot",
                                  max_pending=SNAPSHOT_WRITES_PENDING)
        self._inflight: dict[tuple, asyncio.Future] = {}

    async def load(
        self, req: HookRequest, *, hook: str, key: str, fhir_server: str | None, needs: frozenset[str] | None,
        genes: frozenset[str] | None, shareable: bool,
    ) -> Loaded:
        """The patient's snapshot for this request. `key` is the tenant-scoped cache key; `needs` the
        prefetch keys the ordered drugs read (None: all); `genes` those to phenotype (None: all)."""
        caching = self.settings.cache.profile_ttl_s > 0 and shareable
        if has_usable_prefetch(req.prefetch):
            loaded = await self._from_prefetch(req, hook, key, fhir_server, needs, genes)
            if caching and loaded.entry.snapshot.patient.observations_available:
                self._store(key, loaded.entry)  # the newest prefetch replaces what is cached
            return loaded
        if caching:
            loaded, needs, genes = await self._from_cache(key, needs, genes)
            if loaded is not None:
                return loaded
        metrics.child(metrics.CACHE, "profile", "miss").inc()
        return await self._fetch_shared(req, hook, key, fhir_server, needs, genes, caching)

    async def _from_prefetch(self, req: HookRequest, hook: str, key: str, fhir_server: str | None,
                             needs: frozenset[str] | None, genes: frozenset[str] | None) -> Loaded:
        # what the snapshot is a function of: the templates (not the hook), whose patient, the prefetch
        reuse_key = ("snapshot", _template_set(hook), key, needs, genes)
        content = _content(fhir_server, req) if self.reuse.enabled else None
        entry = self.reuse.get(reuse_key, content) if content is not None else None
        if entry is not None:
            return Loaded(entry, "prefetch")
        snap, calls = await fetch_snapshot(req, self.knowledge, self.settings, self.fhir, fhir_server, hook, needs,
                                           genes)
        entry = SnapshotEntry(snap)
        if content is not None and calls == 0 and snap.patient.observations_available:  # from the request alone
            self.reuse.put(reuse_key, content, entry)
        return Loaded(entry, "prefetch", calls)

    async def _from_cache(
        self, key: str, needs: frozenset[str] | None, genes: frozenset[str] | None
    ) -> tuple[Loaded | None, frozenset[str] | None, frozenset[str] | None]:
        """Local copy, then Redis. Returns (what was found, the keys and genes to fetch when nothing usable
        was)."""
        now = time.monotonic()
        near = self._local.get(key)
        if near is not None and not _covers(near.entry.snapshot, needs, genes):
            near = None
        if near is not None and near.fresh_until > now:
            metrics.child(metrics.CACHE, "profile", "hit").inc()
            return Loaded(near.entry, "cache"), needs, genes
        cached = await self.writes.read(key)  # a write still queued is the newest
        if cached is None and near is not None and near.valid_until > now and getattr(self.kv, "degraded", False):
            # Redis failed (not a miss): serve our last copy while it is within the profile TTL
            metrics.child(metrics.CACHE, "profile", "stale").inc()
            return Loaded(near.entry, "cache-stale"), needs, genes
        if cached is None:
            return None, needs, genes
        snap = Snapshot.model_validate_json(cached)
        if not _covers(snap, needs, genes):
            # cached for other drugs: it lacks data or genes these drugs need; load both sets
            both = None if genes is None or snap.genes is None else genes | frozenset(snap.genes)
            return None, (needs or frozenset()) | frozenset(snap.patient.obtained), both
        metrics.child(metrics.CACHE, "profile", "hit").inc()
        entry = SnapshotEntry(snap)
        self._keep_local(key, entry, now, written_at=now)
        return Loaded(entry, "cache"), needs, genes

    async def _fetch_shared(self, req: HookRequest, hook: str, key: str, fhir_server: str | None,
                            needs: frozenset[str] | None, genes: frozenset[str] | None, caching: bool) -> Loaded:
        """One fetch per patient (and needed keys and genes) at a time; concurrent misses wait for it."""
        flight = (key, needs, genes)
        pending = self._inflight.get(flight)
        if pending is not None:
            entry = await asyncio.shield(pending)
            return Loaded(entry, "fhir-shared")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[flight] = fut
        try:
            snap, calls = await fetch_snapshot(req, self.knowledge, self.settings, self.fhir, fhir_server, hook,
                                               needs, genes)
            entry = SnapshotEntry(snap)
            fut.set_result(entry)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._inflight.pop(flight, None)
        if caching and snap.patient.observations_available:
            self._store(key, entry)
        return Loaded(entry, "fhir", calls)

    def _store(self, key: str, entry: SnapshotEntry) -> None:
        """Queue the entry's write to Redis (shared by replicas; sent in a batch within `writes`' interval,
        retried while Redis fails) and keep the local copy; a write of the entry this process made under
        the same key within half the TTL is not repeated."""
        ttl = self.settings.cache.profile_ttl_s
        now = time.monotonic()
        near = self._local.get(key)
        if near is not None and near.entry is entry and now - near.written_at < ttl / 2:
            self._keep_local(key, entry, now, near.written_at)
            return
        self.writes.add(key, entry.snapshot.model_dump_json().encode())
        self._keep_local(key, entry, now, now)

    def _keep_local(self, key: str, entry: SnapshotEntry, now: float, written_at: float) -> None:
        """The local copy: served for `cache.local_ttl_s` (0: never), and it notes what was written."""
        c = self.settings.cache
        fresh = now + c.local_ttl_s if c.local_ttl_s else float("-inf")
        valid = now + c.profile_ttl_s if c.local_ttl_s else float("-inf")
        self._local[key] = _LocalCopy(entry, fresh, valid, written_at)
        self._local.move_to_end(key)
        if len(self._local) > LOCAL_COPIES:
            self._local.popitem(last=False)
