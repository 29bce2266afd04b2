"""Card feedback: accepted/overridden outcomes, stored durably for the PGx committee.

With Redis: appended to the stream `pgx-cds:feedback` (XADD), so every replica writes to one place.
Without Redis: appended to an NDJSON file (settings.feedback_file). Both are idempotent: the same
feedback item (card, outcome, timestamp, suggestions) reported twice is stored once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from service.cache.connect import sync_client
from service.cache.store import KV, RedisKV, WriteBehind
from service.cdshooks.models import FeedbackRequest
from service.observability import metrics

STREAM = "pgx-cds:feedback"
_DEDUPE_TTL = 7 * 24 * 3600


CARD_RULE_DAYS = 8  # feedback on a card is counted for its rule up to this many days after it was shown


def card_rule_bucket(day: date | None = None) -> str:
    """The hash holding card uuid -> rule id for the cards shown on one (UTC) day."""
    return f"cardrules:{(day or datetime.now(timezone.utc).date()).isoformat()}"


def card_rule_buckets() -> list[str]:
    today = datetime.now(timezone.utc).date()
    return [card_rule_bucket(today - timedelta(days=d)) for d in range(CARD_RULE_DAYS)]


class FeedbackStore:
    def __init__(self, kv: KV, file: Path, card_rules: WriteBehind | None = None) -> None:
        self._kv = kv
        self._file = file
        self._card_rules = card_rules  # card uuid -> rule records this process has not written yet

    async def store(self, service_id: str, fb: FeedbackRequest, *, issuer: str | None) -> int:
        stored = 0
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        for item in fb.feedback:
            record: dict[str, Any] = {
                "service": service_id,
                "card": item.card,
                "outcome": item.outcome,
                "outcomeTimestamp": item.outcomeTimestamp,
                "receivedAt": now,
            }
            if item.acceptedSuggestions:
                record["acceptedSuggestions"] = [s.id for s in item.acceptedSuggestions]
            if item.overrideReason:
                record["overrideReason"] = item.overrideReason.model_dump(exclude_none=True)
            if issuer:
                record["issuer"] = issuer
            rule = None
            if item.card:
                if self._card_rules is not None and len(self._card_rules):
                    await self._card_rules.flush()
                raw = await self._kv.hget_first(card_rule_buckets(), item.card)
                rule = raw.decode() if raw else None
            record["rule"] = rule
            ident = hashlib.sha256(
                json.dumps([service_id, item.card, item.outcome, item.outcomeTimestamp, record.get("acceptedSuggestions")]).encode()
            ).hexdigest()[:32]
            if await self._kv.set_nx(f"fbseen:{ident}", b"1", _DEDUPE_TTL) is False:
                continue
            await self._append(record)
            metrics.FEEDBACK.labels(outcome=item.outcome, rule=rule or "unknown").inc()
            stored += 1
        return stored

    async def _append(self, record: dict[str, Any]) -> None:
        if isinstance(self._kv, RedisKV):
            try:
                await self._kv.client.xadd(STREAM, {"json": json.dumps(record, separators=(",", ":"))})
                return
            except Exception:  # noqa: BLE001 - Redis down: fall back to the local file, never lose it
                pass
        self._file.parent.mkdir(parents=True, exist_ok=True)
        with self._file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def export_records(redis_url: str | None, file: Path) -> Iterator[dict[str, Any]]:
    """Everything stored: the Redis stream (when configured) then the local file (fallback writes)."""
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
