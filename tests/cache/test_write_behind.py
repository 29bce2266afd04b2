"""Writes no request waits for (card uuid -> rule records): batched, bounded, flushed on demand."""

from __future__ import annotations

import asyncio

from service.cache.store import InProcessKV, RedisKV, WriteBehind


class CountingKV(InProcessKV):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def set_many(self, items):
        self.batches.append(len(items))
        await super().set_many(items)


async def test_many_writes_become_one_batch_after_the_interval():
    kv = CountingKV()
    wb = WriteBehind(kv, interval_s=0.02)
    for i in range(100):
        wb.add(f"k{i}", b"v", 60)
    assert kv.batches == [] and await kv.get("k0") is None  # nothing written while requests are served
    await asyncio.sleep(0.1)
    assert kv.batches == [100] and await kv.get("k99") == b"v" and len(wb) == 0
    wb.add("later", b"v", 60)  # a new interval starts
    await asyncio.sleep(0.1)
    assert kv.batches == [100, 1]


async def test_flush_writes_now_and_the_queue_is_bounded():
    kv = CountingKV()
    wb = WriteBehind(kv, interval_s=10, max_pending=3)
    for i in range(5):
        wb.add(f"k{i}", b"v", 60)
    await wb.flush()
    assert kv.batches == [3] and await kv.get("k2") == b"v" and await kv.get("k3") is None


async def test_batches_reach_redis(redis_url):
    kv = RedisKV(redis_url, timeout_ms=500)
    wb = WriteBehind(kv, interval_s=0.01)
    wb.add("wb-test", b"rule-1", 60)
    await asyncio.sleep(0.1)
    assert await kv.get("wb-test") == b"rule-1"
    await kv.delete("wb-test")
    await kv.close()
