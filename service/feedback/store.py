"""Card feedback: accepted/overridden outcomes, stored durably for the PGx committee.

With Redis: appended to the stream `pgx-cds:feedback`, so every replica writes to one place. Storage and
de-duplication are one atomic step (a Lua script: `SET seen-key NX` and `XADD` together or not at all),
run for a whole batch in one pipelined round trip, so a batch retried after a timeout never stores an item
twice. While Redis cannot be reached, a batch goes to a local spool file (`<feedback_file>.pending`) and is
written to Redis by the same script once Redis answers again (items whose card -> rule record could not
be read then get their rule at that point).

Without Redis: appended to an NDJSON file (settings.feedback_file), de-duplicated in process.

The same feedback item (service, card, outcome, timestamp, suggestions) reported twice is stored once.
A request carries at most `MAX_FEEDBACK_ITEMS` items (413 above).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import structlog

from service.cache.clock import SYSTEM_CLOCK, Clock
from service.cache.connect import sync_client
from service.cache.store import KV, RedisKV, WriteBehind
from service.cdshooks.models import FeedbackRequest
from service.observability import metrics

log = structlog.get_logger("pgx_cds.feedback")

STREAM = "pgx-cds:feedback"
#: de-duplication keys share the stream's Cluster hash slot (a Lua script may only touch one slot)
SEEN_PREFIX = "{" + STREAM + "}:seen:"
_DEDUPE_TTL = 7 * 24 * 3600
#: most items one feedback request may carry (README "CDS Hooks behaviour")
MAX_FEEDBACK_ITEMS = 1000
#: a batch's Redis round trips (rule lookup, storage) may take this long: no clinician waits on feedback
REDIS_BATCH_TIMEOUT_S = 2.0
#: the spool stops growing here (a long outage): further feedback is answered 503, the EHR retries later
MAX_SPOOL_BYTES = 64 * 1024 * 1024
_UNRESOLVED = "__unresolved__"  # rule of a spooled record whose card -> rule record could not be read yet

CARD_RULE_DAYS = 8  # feedback on a card is counted for its rule up to this many days after it was shown

# KEYS[1] seen key, KEYS[2] stream; ARGV[1] record JSON, ARGV[2] seen-key ttl. 1 stored, 0 seen before.
_STORE_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[2])) then
  redis.call('XADD', KEYS[2], '*', 'json', ARGV[1])
  return 1
end
return 0
"""


class FeedbackUnavailable(Exception):
    """Feedback could not be stored now (Redis away and the spool full); the caller answers 503."""


def card_rule_bucket(day: date | None = None) -> str:
    """The hash holding card uuid -> rule id for the cards shown on one (UTC) day."""
    return f"cardrules:{(day or datetime.now(timezone.utc).date()).isoformat()}"


def card_rule_field(owner: str | None, card_uuid: str) -> str:
    """The field of a card uuid -> rule record: the card uuid, prefixed by its owner (the caller it was shown
    to, service/auth/tenancy.card_owner; none in dev mode). Feedback looks a card up only under its own
    caller's prefix, so no caller can attribute feedback to another tenant's card."""
    return card_uuid if owner is None else f"{owner}.{card_uuid}"


def card_rule_buckets() -> list[str]:
    today = datetime.now(timezone.utc).date()
    return [card_rule_bucket(today - timedelta(days=d)) for d in range(CARD_RULE_DAYS)]


def batch_too_large(raw: Any) -> str | None:
    """Why a parsed feedback body is refused before validation (too many items), or None."""
    items = raw.get("feedback") if isinstance(raw, dict) else None
    if isinstance(items, list) and len(items) > MAX_FEEDBACK_ITEMS:
        return (f"At most {MAX_FEEDBACK_ITEMS} feedback items per request ({len(items)} sent); "
                "send them in several requests")
    return None


def _ident(service_id: str, item: Any, accepted: list[str] | None) -> str:
    return hashlib.sha256(
        json.dumps([service_id, item.card, item.outcome, item.outcomeTimestamp, accepted]).encode()
    ).hexdigest()[:32]


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


class FeedbackStore:
    def __init__(self, kv: KV, file: Path, card_rules: WriteBehind | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self._kv = kv
        self._file = file
        self._spool = file.with_name(file.name + ".pending")
        self._card_rules = card_rules  # card uuid -> rule records this process has not written yet
        self.clock = clock
        self._spooled: set[str] = set()  # idents this process spooled (answers a retry during the outage)
        self._drainer: asyncio.Task | None = None
        self.max_spool_bytes = MAX_SPOOL_BYTES

    # ------------------------------------------------------------------------------------------ store

    async def store(self, service_id: str, fb: FeedbackRequest, *, issuer: str | None,
                    owner: str | None = None) -> int:
        """Store a batch; returns how many items were new (a repeated item is not stored again). `owner`
        is the caller (service/auth/tenancy.card_owner): a card's rule is found only among the records of
        cards shown to that caller."""
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        batch: dict[str, dict[str, Any]] = {}  # ident -> record (an item repeated inside the batch: once)
        for item in fb.feedback:
            record: dict[str, Any] = {
                "service": service_id,
                "card": item.card,
                "outcome": item.outcome,
                "outcomeTimestamp": item.outcomeTimestamp,
                "receivedAt": now,
            }
            accepted = [s.id for s in item.acceptedSuggestions] if item.acceptedSuggestions else None
            if accepted:
                record["acceptedSuggestions"] = accepted
            if item.overrideReason:
                record["overrideReason"] = item.overrideReason.model_dump(exclude_none=True)
            if issuer:
                record["issuer"] = issuer
            batch.setdefault(_ident(service_id, item, accepted), record)
        if not isinstance(self._kv, RedisKV):
            return await self._store_local(batch, owner)
        if self._spool_size():
            await self.drain()  # older spooled items first (and Redis may be back)
        return await self._store_redis(batch, owner)

    async def _store_local(self, batch: dict[str, dict[str, Any]], owner: str | None) -> int:
        stored = 0
        for ident, record in batch.items():
            card = record["card"]
            field = card_rule_field(owner, card) if card else None
            raw = await self._kv.hget_first(card_rule_buckets(), field) if field else None
            record["rule"] = self._local_rule(field) or (raw.decode() if raw else None)
            if await self._kv.set_nx(f"fbseen:{ident}", b"1", _DEDUPE_TTL) is False:
                continue
            self._append(self._file, [_dumps(record)])
            self._count(record)
            stored += 1
        return stored

    async def _store_redis(self, batch: dict[str, dict[str, Any]], owner: str | None) -> int:
        rules, complete = await self._rules([card_rule_field(owner, r["card"]) for r in batch.values() if r["card"]])
        for record in batch.values():
            card = record["card"]
            record["rule"] = rules.get(card_rule_field(owner, card)) if card else None
            if card and not complete and record["rule"] is None:
                record["rule"] = _UNRESOLVED
        if complete:
            results = await self._write(batch)
            if results is not None:
                stored = 0
                for record, new in zip(batch.values(), results):
                    if new:
                        self._count(record)
                        stored += 1
                return stored
        # Redis could not be asked: keep the batch locally, write it when Redis is back
        if self._spool_size() >= self.max_spool_bytes:
            log.error("feedback_spool_full", bytes=self._spool_size())
            raise FeedbackUnavailable("Feedback cannot be stored now (storage unavailable); retry later")
        fresh = {i: r for i, r in batch.items() if i not in self._spooled}
        self._append(self._spool, [_dumps({"id": i, "record": r, "owner": owner}) for i, r in fresh.items()])
        self._spooled.update(fresh)
        log.warning("feedback_spooled_redis_unavailable", items=len(fresh))
        self._drain_later()
        return len(fresh)

    def _local_rule(self, field: str | None) -> str | None:
        raw = self._card_rules.get(field) if field and self._card_rules is not None else None
        return raw.decode() if raw else None

    async def _rules(self, cards: list[str | None]) -> tuple[dict[str, str], bool]:
        """(rule id per record field (card_rule_field), whether every one could be looked up): records
        this process has not written yet, then Redis (one HMGET per daily hash, one round trip)."""
        found = {c: r for c in cards if c and (r := self._local_rule(c))}
        wanted = sorted({c for c in cards if c and c not in found})
        if wanted:
            assert isinstance(self._kv, RedisKV)
            rows = await self._kv.hmget_first(card_rule_buckets(), wanted, timeout_s=REDIS_BATCH_TIMEOUT_S)
            if rows is None:
                return found, False
            found.update({c: v.decode() for c, v in rows.items()})
        return found, True

    async def _write(self, batch: dict[str, dict[str, Any]]) -> list[int] | None:
        """The atomic store-once script for every record, pipelined. None when Redis could not be asked."""
        assert isinstance(self._kv, RedisKV)
        if not batch:
            return []
        calls = [([SEEN_PREFIX + ident, STREAM], [_dumps(record), _DEDUPE_TTL]) for ident, record in batch.items()]
        return await self._kv.eval_many(_STORE_ONCE, calls, timeout_s=REDIS_BATCH_TIMEOUT_S)

    @staticmethod
    def _count(record: dict[str, Any]) -> None:
        metrics.FEEDBACK.labels(outcome=record["outcome"], rule=record.get("rule") or "unknown").inc()

    # ------------------------------------------------------------------------------------------ spool

    def _spool_size(self) -> int:
        try:
            return self._spool.stat().st_size
        except OSError:
            return 0

    @staticmethod
    def _append(path: Path, lines: list[str]) -> None:
        if not lines:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # several workers may share the file
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())

    def _drain_later(self) -> None:
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._keep_draining())

    async def _keep_draining(self) -> None:
        delay = 0.5
        try:
            while True:
                await self.clock.sleep(delay)
                if await self.drain():
                    return
                delay = min(delay * 2, 30.0)
        finally:
            self._drainer = None

    async def drain(self) -> bool:
        """Write spooled feedback to Redis (rules resolved now where they could not be before). True when
        the spool is empty afterwards. One process drains at a time; a record written twice (a crash
        between writing and truncating) is still stored once: the script de-duplicates."""
        if not isinstance(self._kv, RedisKV) or not self._spool_size():
            return True
        lock = self._spool.with_name(self._spool.name + ".lock").open("a")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # another worker is draining
            with self._spool.open("rb") as fh:
                fcntl.flock(fh, fcntl.LOCK_SH)
                taken = fh.read()
            entries = []
            owners: dict[str, str | None] = {}  # ident -> the caller that sent the item
            for line in taken.splitlines():
                try:
                    entry = json.loads(line)
                    entries.append((entry["id"], entry["record"]))
                    owners[entry["id"]] = entry.get("owner")
                except (ValueError, KeyError, TypeError):
                    log.error("feedback_spool_line_unreadable")  # a torn write: nothing to store
            batch = dict(entries)
            unresolved = {i: card_rule_field(owners.get(i), r["card"]) for i, r in batch.items()
                          if r.get("rule") == _UNRESOLVED}
            rules, complete = await self._rules(list(unresolved.values())) if unresolved else ({}, True)
            if not complete:
                return False
            for ident, field in unresolved.items():
                batch[ident]["rule"] = rules.get(field)
            results = await self._write(batch)
            if results is None:
                return False
            for record, new in zip(batch.values(), results):
                if new:
                    self._count(record)
            with self._spool.open("r+b") as fh:  # keep what was appended while we wrote to Redis
                fcntl.flock(fh, fcntl.LOCK_EX)
                rest = fh.read()[len(taken):]
                fh.seek(0)
                fh.write(rest)
                fh.truncate()
                fh.flush()
                os.fsync(fh.fileno())
            self._spooled.difference_update(batch)
            log.info("feedback_spool_written", items=len(batch), new=sum(1 for r in results if r))
            return not rest
        finally:
            lock.close()

    async def close(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None
        await self.drain()  # anything left stays in the spool for the next start


def export_records(redis_url: str | None, file: Path) -> Iterator[dict[str, Any]]:
    """Everything stored: the Redis stream (when configured), then the local file (feedback stored without
    Redis), then feedback still waiting in the spool for Redis."""
    if redis_url:
        client = sync_client(redis_url, timeout_s=5)
        last = "-"
        while True:
            batch = client.xrange(STREAM, min=last, max="+", count=1000)
            if last != "-" and batch:
                batch = batch[1:]
            if not batch:
                break
            for entry_id, fields in batch:
                yield json.loads(fields[b"json"])
            last = batch[-1][0].decode()
    if file.exists():
        with file.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)
    spool = file.with_name(file.name + ".pending")
    if spool.exists():
        with spool.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    record = json.loads(line)["record"]
                    if record.get("rule") == _UNRESOLVED:
                        record["rule"] = None
                    yield record
