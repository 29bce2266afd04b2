"""Writes no request waits for (card uuid -> rule records): batched into one hash write, bounded, flushed
on demand."""

from __future__ import annotations

import asyncio

from service.cache.store import InProcessKV, RedisKV, WriteBehind


class CountingKV(InProcessKV):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def hset_many(self, key, mapping, ttl_s):
        self.batches.append(len(mapping))
        await super().hset_many(key, mapping, ttl_s)


async def test_many_writes_become_one_hash_write_after_the_interval():
    kv = CountingKV()
    wb = WriteBehind(kv, key=lambda: "bucket", ttl_s=60, interval_s=0.02)
    for i in range(100):
        wb.add(f"card-{i}", b"rule")
    assert kv.batches == [] and await kv.hget_first(["bucket"], "card-0") is None  # not while requests run
    await asyncio.sleep(0.1)
    assert kv.batches == [100] and await kv.hget_first(["bucket"], "card-99") == b"rule" and len(wb) == 0
    wb.add("later", b"rule-2")  # a new interval starts; the hash keeps what it had
    await asyncio.sleep(0.1)
    assert kv.batches == [100, 1] and await kv.hget_first(["other", "bucket"], "card-5") == b"rule"
    assert await kv.hget_first(["other", "bucket"], "later") == b"rule-2"


async def test_flush_writes_now_and_the_queue_is_bounded():
    kv = CountingKV()
    wb = WriteBehind(kv, key=lambda: "bucket", ttl_s=60, interval_s=10, max_pending=3)
    for i in range(5):
        wb.add(f"card-{i}", b"rule")
    await wb.flush()
    assert kv.batches == [3]
    assert await kv.hget_first(["bucket"], "card-2") == b"rule" and await kv.hget_first(["bucket"], "card-3") is None


async def test_batches_reach_redis_with_an_expiry(redis_url):
    kv = RedisKV(redis_url, timeout_ms=500)
    wb = WriteBehind(kv, key=lambda: "wb-bucket", ttl_s=60, interval_s=0.01)
    wb.add("card-1", b"rule-1")
    wb.add("card-2", b"rule-2")
    await asyncio.sleep(0.1)
    assert await kv.hget_first(["wb-none", "wb-bucket"], "card-2") == b"rule-2"
    assert 0 < await kv.client.ttl(kv.key("wb-bucket")) <= 60
    await kv.delete("wb-bucket")
    await kv.close()
