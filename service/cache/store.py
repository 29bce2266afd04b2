"""Key-value stores behind every cache, the JWT replay store, card de-duplication and SMART sessions.

`InProcessKV` is the embedded default (bounded, TTL). `RedisKV` is used when a Redis URL is configured;
it never lets a slow or dead Redis hold a request: every call has the configured timeout, and on any
failure it answers like a cache miss (and `set` is dropped), counts the failure, and reconnects by itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Callable, Protocol

import structlog

from service.cache.connect import async_client
from service.observability import metrics

log = structlog.get_logger("pgx_cds.cache")
_BREAKER_S = 1.0


class KV(Protocol):
    backend: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def set_nx(self, key: str, value: bytes, ttl_s: int) -> bool | None: ...
    async def set_many(self, items: list[tuple[str, bytes, int]]) -> None: ...
    async def hset_many(self, key: str, mapping: dict[str, bytes], ttl_s: int) -> None: ...
    async def hget_first(self, keys: list[str], field: str) -> bytes | None: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class InProcessKV:
    """A bounded LRU with per-entry expiry. Single event loop; no locking needed."""

    backend = "memory"

    def __init__(self, max_entries: int = 10_000) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires and expires < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self._data[key] = (time.monotonic() + ttl_s if ttl_s > 0 else 0.0, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    async def set_many(self, items: list[tuple[str, bytes, int]]) -> None:
        for key, value, ttl in items:
            await self.set(key, value, ttl)

    async def hset_many(self, key: str, mapping: dict[str, bytes], ttl_s: int) -> None:
        """Fields of a hash (at most `max_entries` per hash, oldest dropped first)."""
        item = self._data.get(key)
        fields = item[1] if item is not None and isinstance(item[1], dict) else {}
        fields.update(mapping)
        while len(fields) > self._max:
            del fields[next(iter(fields))]
        await self.set(key, fields, ttl_s)  # type: ignore[arg-type]

    async def hget_first(self, keys: list[str], field: str) -> bytes | None:
        for key in keys:
            fields = await self.get(key)
            if isinstance(fields, dict) and field in fields:
                return fields[field]
        return None

    async def set_nx(self, key: str, value: bytes, ttl_s: int) -> bool:
        if await self.get(key) is not None:
            return False
        await self.set(key, value, ttl_s)
        return True

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self._data if k.startswith(prefix)]
        for k in keys:
            del self._data[k]
        return len(keys)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class RedisKV:
    """Redis (standalone, Sentinel or Cluster: `service.cache.connect`) with a hard per-call timeout."""

    backend = "redis"

    def __init__(self, url: str, timeout_ms: int = 100, namespace: str = "pgx-cds:") -> None:
        self._timeout = timeout_ms / 1000
        self._ns = namespace
        self._url = url
        self._client = async_client(url, timeout_s=self._timeout)
        self._up: bool | None = None
        self._retry_at = 0.0  # circuit breaker: after a failure, skip Redis for a short while

    @property
    def degraded(self) -> bool:
        """True while the last Redis call failed (answers are misses because Redis could not be asked)."""
        return bool(self._retry_at) and time.monotonic() < self._retry_at

    @property
    def client(self):  # the raw client, for streams (feedback)
        return self._client

    def key(self, key: str) -> str:
        return self._ns + key

    def _mark(self, up: bool, op: str, exc: BaseException | None = None) -> None:
        metrics.REDIS_UP.set(1 if up else 0)
        if not up:
            metrics.REDIS_ERRORS.labels(op=op).inc()
        if up != self._up:
            if up:
                log.info("redis_available")
            else:
                log.warning("redis_unavailable_cache_bypassed", op=op, error=type(exc).__name__ if exc else None)
            self._up = up

    async def _call(self, op: str, coro, default):
        if self._retry_at and time.monotonic() < self._retry_at:
            coro.close()  # Redis failed moments ago: answer as a miss at once
            metrics.REDIS_ERRORS.labels(op=op).inc()
            return default
        try:
            result = await asyncio.wait_for(coro, self._timeout)
        except Exception as exc:  # noqa: BLE001 - any Redis failure is a miss, never a failed request
            self._retry_at = time.monotonic() + _BREAKER_S
            self._mark(False, op, exc)
            return default
        self._retry_at = 0.0
        self._mark(True, op)
        return result

    async def get(self, key: str) -> bytes | None:
        return await self._call("get", self._client.get(self.key(key)), None)

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        ex = ttl_s if ttl_s > 0 else None
        await self._call("set", self._client.set(self.key(key), value, ex=ex), None)

    async def set_many(self, items: list[tuple[str, bytes, int]]) -> None:
        """Several writes in one round trip (a non-transactional pipeline)."""
        if not items:
            return
        pipe = self._client.pipeline(transaction=False)
        for key, value, ttl in items:
            pipe.set(self.key(key), value, ex=ttl if ttl > 0 else None)
        await self._call("set_many", pipe.execute(), None)

    async def hset_many(self, key: str, mapping: dict[str, bytes], ttl_s: int) -> None:
        """Fields of one hash and its expiry, in one round trip (one command however many fields)."""
        if not mapping:
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(self.key(key), mapping=mapping)
        if ttl_s > 0:
            pipe.expire(self.key(key), ttl_s)
        await self._call("hset_many", pipe.execute(), None)

    async def hget_first(self, keys: list[str], field: str) -> bytes | None:
        """The field from the first of these hashes that has it (one round trip)."""
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(self.key(key), field)
        found = await self._call("hget_first", pipe.execute(), None)
        return next((v for v in found or () if v is not None), None)

    async def set_nx(self, key: str, value: bytes, ttl_s: int) -> bool | None:
        """True if set, False if it existed, None if Redis could not tell."""
        res = await self._call("set_nx", self._client.set(self.key(key), value, ex=max(ttl_s, 1), nx=True), "err")
        if res == "err":
            return None
        return bool(res)

    async def delete(self, key: str) -> None:
        await self._call("delete", self._client.delete(self.key(key)), None)

    async def delete_prefix(self, prefix: str) -> int:
        async def _scan_delete() -> int:
            n = 0
            async for k in self._client.scan_iter(match=self.key(prefix) + "*", count=500):
                n += await self._client.delete(k)
            return n

        try:
            return await asyncio.wait_for(_scan_delete(), max(self._timeout, 5.0))
        except Exception as exc:  # noqa: BLE001
            self._mark(False, "delete_prefix", exc)
            return 0

    async def ping(self) -> bool:
        return bool(await self._call("ping", self._client.ping(), False))

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception:  # noqa: BLE001
            pass


class WriteBehind:
    """Hash-field writes that no request waits for, sent in batches: every `interval_s`, one HSET per hash
    however many requests queued fields (used for card uuid -> rule records, one per card shown; a
    command per record made the event loop stall for milliseconds at each flush under load). `key()`
    names the hash at flush time (a daily bucket) and `ttl_s` is its expiry. At most `max_pending`
    fields wait; beyond that new ones are dropped and counted. `flush()` sends what is queued now
    (before a read that needs it, and at shutdown)."""

    def __init__(self, kv: KV, key: Callable[[], str], ttl_s: int, interval_s: float = 0.05,
                 max_pending: int = 10_000) -> None:
        self._kv = kv
        self._key = key
        self._ttl = ttl_s
        self._interval = interval_s
        self._max = max_pending
        self._pending: dict[str, bytes] = {}
        self._task: asyncio.Task | None = None

    def add(self, field: str, value: bytes) -> None:
        if len(self._pending) >= self._max:
            metrics.REDIS_ERRORS.labels(op="write_behind_dropped").inc()
            return
        self._pending[field] = value
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        try:
            await asyncio.sleep(self._interval)
        finally:
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, {}
        if batch:
            await self._kv.hset_many(self._key(), batch, self._ttl)

    def __len__(self) -> int:
        return len(self._pending)


def make_kv(redis_url: str | None, *, timeout_ms: int, max_entries: int) -> KV:
    if redis_url:
        return RedisKV(redis_url, timeout_ms=timeout_ms)
    return InProcessKV(max_entries=max_entries)
