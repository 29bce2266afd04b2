"""Writes no request waits for (card uuid -> rule records): batched into one hash write, bounded, flushed
on demand, and never lost to a Redis blip (kept and retried until Redis takes them). Time is a
ManualClock: no test sleeps against the write-behind interval or the back-off."""

from __future__ import annotations

import asyncio

import structlog

from service.cache.clock import ManualClock
from service.cache.store import InProcessKV, RedisKV, WriteBehind
from service.observability import metrics


class CountingKV(InProcessKV):
    """An in-process store whose hash writes can be made to fail (as RedisKV answers when Redis is away)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.down = False

    async def hset_many(self, key, mapping, ttl_s):
        if self.down:
            return False
        self.batches.append(len(mapping))
        return await super().hset_many(key, mapping, ttl_s)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _dropped() -> float:
    return metrics.REDIS_WRITES_DROPPED.labels(kind="card_rule")._value.get()


async def test_many_writes_become_one_hash_write_after_the_interval():
    kv, clock = CountingKV(), ManualClock()
    wb = WriteBehind(kv, key=lambda: "bucket", ttl_s=60, interval_s=0.02, clock=clock)
    for i in range(100):
        wb.add(f"card-{i}", b"rule")
    await clock.advance(0.01)
    assert kv.batches == [] and await kv.hget_first(["bucket"], "card-0") is None  # not while requests run
    await clock.advance(0.01)
    assert kv.batches == [100] and await kv.hget_first(["bucket"], "card-99") == b"rule" and len(wb) == 0
    wb.add("later", b"rule-2")  # a new interval starts; the hash keeps what it had
    await clock.advance(0.02)
    assert kv.batches == [100, 1] and await kv.hget_first(["other", "bucket"], "card-5") == b"rule"
    assert await kv.hget_first(["other", "bucket"], "later") == b"rule-2"


async def test_flush_writes_now_and_the_queue_is_bounded():
    kv = CountingKV()
    wb = WriteBehind(kv, key=lambda: "bucket", ttl_s=60, interval_s=10, max_pending=3, clock=ManualClock())
    before = _dropped()
    for i in range(5):
        wb.add(f"card-{i}", b"rule")
    assert _dropped() == before + 2  # beyond the bound: counted
    await wb.flush()
    assert kv.batches == [3]
    assert await kv.hget_first(["bucket"], "card-2") == b"rule" and await kv.hget_first(["bucket"], "card-3") is None


async def test_a_batch_redis_did_not_take_is_kept_and_retried_until_it_is_taken():
    """Regression (issue 12): a flush while Redis failed dropped its whole batch for good; feedback on
    those cards was later stored with rule null."""
    kv, clock = CountingKV(), ManualClock()
    wb = WriteBehind(kv, key=lambda: "bucket", ttl_s=60, interval_s=0.05, clock=clock, max_backoff_s=1.0)
    kv.down = True
    for i in range(10):
        wb.add(f"card-{i}", b"rule-a")
    for _ in range(6):  # several failed attempts, with back-off
        await clock.advance(1.0)
    assert kv.batches == [] and len(wb) == 10
    assert wb.get("card-3") == b"rule-a"  # readable meanwhile (feedback looks here first)
    wb.add("card-3", b"rule-b")  # a newer value for a field wins over the retried one
    kv.down = False
    await clock.advance(1.0)
    await _settle()
    assert kv.batches == [10] and len(wb) == 0
    assert await kv.hget_first(["bucket"], "card-0") == b"rule-a"
    assert await kv.hget_first(["bucket"], "card-3") == b"rule-b"


async def test_what_is_finally_dropped_is_counted_and_logged():
    kv, clock = CountingKV(), ManualClock()
    wb = WriteBehind(kv, key=lambda: "bucket", ttl_s=60, interval_s=0.05, clock=clock, max_pending=5)
    kv.down = True
    before = _dropped()
    with structlog.testing.capture_logs() as logs:
        for i in range(8):
            wb.add(f"card-{i}", b"rule")
        await clock.advance(0.05)
        await wb.close()  # shutdown while Redis is still away
    assert _dropped() == before + 8  # 3 over the bound, 5 at shutdown
    lines = [x for x in logs if x["event"] == "redis_writes_dropped"]
    assert lines and sum(x["count"] for x in lines) == 8 and lines[-1]["reason"].startswith("shutdown")


async def test_batches_reach_redis_with_an_expiry(redis_url):
    kv = RedisKV(redis_url, timeout_ms=500)
    wb = WriteBehind(kv, key=lambda: "wb-bucket", ttl_s=60, interval_s=0.01)
    wb.add("card-1", b"rule-1")
    wb.add("card-2", b"rule-2")
    assert await wb.flush()
    assert await kv.hget_first(["wb-none", "wb-bucket"], "card-2") == b"rule-2"
    assert 0 < await kv.client.ttl(kv.key("wb-bucket")) <= 60
    await kv.delete("wb-bucket")
    await kv.close()


class SetCountingKV(InProcessKV):
    """An in-process store counting its batched key writes (SET pipelines), which can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[str, int]]] = []
        self.down = False

    async def set_many(self, items):
        if self.down:
            return False
        self.batches.append([(k, ttl) for k, _, ttl in items])
        return await super().set_many(items)


async def test_keyed_writes_become_one_pipeline_of_sets_with_the_expiry_and_survive_a_blip():
    """key=None (snapshots, de-duplication records): each field its own key, one SET pipeline per interval;
    the newest value of a key wins; readable from the queue until sent; retried while the store fails."""
    kv, clock = SetCountingKV(), ManualClock()
    wb = WriteBehind(kv, key=None, ttl_s=90, interval_s=0.05, clock=clock, kind="snapshot")
    wb.add("snap:a", b"old")
    wb.add("snap:a", b"new")
    wb.add("snap:b", b"b")
    assert wb.get("snap:a") == b"new" and await kv.get("snap:a") is None  # from the queue, not yet sent
    kv.down = True
    await clock.advance(0.05)
    assert kv.batches == [] and wb.get("snap:b") == b"b"  # kept for the retry
    kv.down = False
    await clock.advance(0.1)  # the back-off doubled the interval
    assert kv.batches == [[("snap:a", 90), ("snap:b", 90)]]
    assert await kv.get("snap:a") == b"new" and wb.get("snap:a") is None and len(wb) == 0


async def test_snapshot_writes_waiting_for_an_absent_redis_are_bounded():
    """While Redis is away the snapshot writes queue for a retry, but at most SNAPSHOT_WRITES_PENDING of them
    (a few KB each): an outage must not grow the process by every patient seen."""
    from service.config import Settings
    from service.hooks.reuse import Reuse
    from service.hooks.snapshots import SNAPSHOT_WRITES_PENDING, Snapshot, SnapshotEntry, Snapshots
    from service.fhir.models import PatientData
    from service.pgx.models import GenomicProfile

    kv = SetCountingKV()
    kv.down = True
    snaps = Snapshots(Settings(log_level="warning"), None, None, kv, Reuse())  # type: ignore[arg-type]
    for i in range(SNAPSHOT_WRITES_PENDING + 200):
        entry = SnapshotEntry(Snapshot(profile=GenomicProfile(patient_id=f"p{i}"), patient=PatientData(patient_id=f"p{i}")))
        snaps._store(f"snap:k:{i}", entry)
        if i % 100 == 0:
            await snaps.writes.flush()  # Redis still away: back into the queue
    await snaps.writes.flush()
    assert len(snaps.writes) == SNAPSHOT_WRITES_PENDING
    kv.down = False
    assert await snaps.writes.flush() and len(kv.batches[-1]) == SNAPSHOT_WRITES_PENDING
    await snaps.writes.close()
