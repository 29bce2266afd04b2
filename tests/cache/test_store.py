"""The key-value stores: in-process LRU/TTL and Redis with a hard timeout that degrades to a miss."""

from __future__ import annotations

import asyncio
import time


from service.cache.store import InProcessKV, RedisKV
from tests.helpers import free_port


async def test_in_process_ttl_and_bound():
    kv = InProcessKV(max_entries=2)
    await kv.set("a", b"1", 60)
    await kv.set("b", b"2", 60)
    await kv.get("a")  # a is now most recent
    await kv.set("c", b"3", 60)
    assert await kv.get("b") is None and await kv.get("a") == b"1"
    await kv.set("short", b"x", 1)
    kv._data["short"] = (time.monotonic() - 1, b"x")  # expire it
    assert await kv.get("short") is None
    assert await kv.set_nx("a", b"z", 60) is False
    assert await kv.set_nx("new", b"z", 60) is True


async def test_redis_roundtrip(redis_url):
    kv = RedisKV(redis_url, timeout_ms=200)
    await kv.set("k", b"v", 60)
    assert await kv.get("k") == b"v"
    assert await kv.set_nx("k", b"w", 60) is False
    assert await kv.delete_prefix("k") == 1
    await kv.close()


async def test_redis_down_is_a_fast_miss():
    kv = RedisKV(f"redis://127.0.0.1:{free_port()}/0", timeout_ms=100)  # nothing listens there
    t = time.perf_counter()
    assert await kv.get("k") is None
    await kv.set("k", b"v", 10)
    assert await kv.set_nx("k", b"v", 10) is None
    assert await kv.ping() is False
    assert time.perf_counter() - t < 2.0
    await kv.close()


async def test_redis_paused_respects_timeout(redis_server, redis_url):
    kv = RedisKV(redis_url, timeout_ms=100)
    await kv.set("k", b"v", 60)
    redis_server.pause()
    try:
        t = time.perf_counter()
        assert await kv.get("k") is None
        assert time.perf_counter() - t < 0.5
    finally:
        redis_server.resume()
    # reconnects by itself once Redis answers again
    for _ in range(60):
        if await kv.get("k") == b"v":
            break
        await asyncio.sleep(0.05)
    assert await kv.get("k") == b"v"
    await kv.close()
