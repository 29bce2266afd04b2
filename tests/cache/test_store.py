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


async def test_circuit_breaker_on_an_injected_clock(redis_server, redis_url):
    """The breaker opens on a connection failure, answers at once while open and closes when the
    (manual) clock passes BREAKER_S: no test sleeps against it."""
    from service.cache.clock import ManualClock

    clock = ManualClock()
    kv = RedisKV(redis_url, timeout_ms=200, clock=clock)
    assert await kv.set("k", b"v", 60)
    redis_server.stop()
    try:
        assert await kv.get("k") is None and kv.degraded  # connection refused: the breaker opens
    finally:
        redis_server.start()
    import redis

    redis.Redis.from_url(redis_url).set("pgx-cds:k", b"back")  # Redis is back, but the breaker is open:
    assert await kv.get("k") is None and await kv.set("k2", b"v", 60) is False  # not asked
    await clock.advance(kv.BREAKER_S / 2)
    assert await kv.get("k") is None and kv.degraded  # still open
    await clock.advance(kv.BREAKER_S)
    assert await kv.get("k") == b"back" and not kv.degraded
    await kv.close()


async def test_one_timeout_does_not_open_the_breaker(redis_server, redis_url):
    """One slow answer (or an event-loop stall measured as one) is a miss for that call only; the breaker
    opens after BREAKER_AFTER timeouts in a row."""
    from service.cache.clock import ManualClock

    kv = RedisKV(redis_url, timeout_ms=100, clock=ManualClock())
    assert await kv.set("k", b"v", 60)
    redis_server.pause()
    try:
        assert await kv.get("k") is None
        assert kv._retry_at == 0.0  # not open
        for _ in range(kv.BREAKER_AFTER - 1):
            await kv.get("k")
        assert kv._retry_at > 0.0  # open now
    finally:
        redis_server.resume()
    await kv.close()
