"""Key-value stores behind every cache, the JWT replay store, card de-duplication and SMART sessions.

`InProcessKV` is the embedded default (bounded, TTL). `RedisKV` is used when a Redis URL is configured;
it never lets a slow or dead Redis hold a request: every call has the configured timeout, and on any
failure it answers like a cache miss (a write answers False), counts the failure, and reconnects by
itself. Writes that must not be lost are kept and retried by their owner (`WriteBehind` here, the feedback
spool in `service.feedback.store`).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Callable, Protocol

import structlog

from service.cache.clock import SYSTEM_CLOCK, Clock
from service.cache.connect import CLUSTER_SCHEMES, async_client
from service.observability import metrics

log = structlog.get_logger("pgx_cds.cache")


class KV(Protocol):
    backend: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: int) -> bool: ...  # False: not written (Redis down)
    async def set_nx(self, key: str, value: bytes, ttl_s: int) -> bool | None: ...
    async def set_many(self, items: list[tuple[str, bytes, int]]) -> bool: ...
    async def hset_many(self, key: str, mapping: dict[str, bytes], ttl_s: int) -> bool: ...
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

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        self._data[key] = (time.monotonic() + ttl_s if ttl_s > 0 else 0.0, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)
        return True

    async def set_many(self, items: list[tuple[str, bytes, int]]) -> bool:
        for key, value, ttl in items:
            await self.set(key, value, ttl)
        return True

    async def hset_many(self, key: str, mapping: dict[str, bytes], ttl_s: int) -> bool:
        """Fields of a hash (at most `max_entries` per hash, oldest dropped first)."""
        item = self._data.get(key)
        fields = item[1] if item is not None and isinstance(item[1], dict) else {}
        fields.update(mapping)
        while len(fields) > self._max:
            del fields[next(iter(fields))]
        return await self.set(key, fields, ttl_s)  # type: ignore[arg-type]

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


_FAILED = object()  # what `_call` answers when Redis could not be asked


class RedisKV:
    """Redis (standalone, Sentinel or Cluster: `service.cache.connect`) with a hard per-call timeout.

    Circuit breaker: after a connection failure, or `BREAKER_AFTER` timeouts in a row (one timeout can be
    an event-loop stall rather than Redis), calls are answered as misses at once for `BREAKER_S`.
    Writes return whether they reached Redis, so callers that must not lose them keep and retry them
    (`WriteBehind`, the feedback spool). A Cluster client learns the slot map in `start()`, at start-up
    with a generous timeout, never inside a request's 100 ms budget."""

    backend = "redis"
    BREAKER_S = 1.0
    BREAKER_AFTER = 3
    START_TIMEOUT_S = 5.0

    def __init__(self, url: str, timeout_ms: int = 100, namespace: str = "pgx-cds:",
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self._timeout = timeout_ms / 1000
        self._ns = namespace
        self._url = url
        self._client = async_client(url, timeout_s=self._timeout)
        self.clock = clock
        self._up: bool | None = None
        self._retry_at = 0.0  # circuit breaker: after failures, skip Redis until then
        self._timeouts = 0  # consecutive timeouts
        # a Cluster client must learn its slot map first; that happens in start() (or its retries)
        self._ready = url.split("://", 1)[0].lower() not in CLUSTER_SCHEMES
        self._starter: asyncio.Task | None = None

    async def start(self) -> bool:
        """Connect now (at application start-up): a Cluster client's slot map, or a first connection
        (Sentinel: the master's address). If a Cluster cannot be reached, a background task keeps trying
        (meanwhile every call is a miss); other clients simply connect on their next call. Returns
        whether Redis answered."""
        if await self._connect():
            return True
        if not self._ready and self._starter is None:
            self._starter = asyncio.get_running_loop().create_task(self._keep_starting())
        return False

    async def _connect(self) -> bool:
        try:
            if not self._ready:
                await asyncio.wait_for(self._client.initialize(), self.START_TIMEOUT_S)
            await asyncio.wait_for(self._client.ping(), self.START_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            self._mark(False, "start", exc)
            return False
        self._ready = True
        self._retry_at, self._timeouts = 0.0, 0
        self._mark(True, "start")
        return True

    async def _keep_starting(self) -> None:
        delay = 0.5
        try:
            while not await self._connect():
                await self.clock.sleep(delay)
                delay = min(delay * 2, 10.0)
        finally:
            self._starter = None

    @property
    def degraded(self) -> bool:
        """True while the last Redis call failed (answers are misses because Redis could not be asked)."""
        return not self._ready or self._timeouts > 0 or (bool(self._retry_at) and self.clock.now() < self._retry_at)

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

    async def _call(self, op: str, coro, default, timeout_s: float | None = None):
        if not self._ready or (self._retry_at and self.clock.now() < self._retry_at):
            coro.close()  # Redis failed moments ago (or is not connected yet): answer as a miss at once
            metrics.REDIS_ERRORS.labels(op=op).inc()
            return default
        try:
            # the timeout is a deadline on the request's own task (no task of its own per command, as
            # asyncio.wait_for makes: one event-loop turn less per Redis call, the call not queued behind
            # every other ready request)
            async with asyncio.timeout(timeout_s or self._timeout):
                result = await coro
        except Exception as exc:  # noqa: BLE001 - any Redis failure is a miss, never a failed request
            timed_out = isinstance(exc, (asyncio.TimeoutError, TimeoutError))
            self._timeouts = self._timeouts + 1 if timed_out else self.BREAKER_AFTER
            if self._timeouts >= self.BREAKER_AFTER:
                self._retry_at = self.clock.now() + self.BREAKER_S
            self._mark(False, op, exc)
            return default
        self._retry_at, self._timeouts = 0.0, 0
        self._mark(True, op)
        return result

    async def get(self, key: str) -> bytes | None:
        return await self._call("get", self._client.get(self.key(key)), None)

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        """True when written."""
        ex = ttl_s if ttl_s > 0 else None
        return await self._call("set", self._client.set(self.key(key), value, ex=ex), _FAILED) is not _FAILED

    async def set_many(self, items: list[tuple[str, bytes, int]]) -> bool:
        """Several writes in one round trip (a non-transactional pipeline); True when written."""
        if not items:
            return True
        pipe = self._client.pipeline(transaction=False)
        for key, value, ttl in items:
            pipe.set(self.key(key), value, ex=ttl if ttl > 0 else None)
        return await self._call("set_many", pipe.execute(), _FAILED) is not _FAILED

    async def hset_many(self, key: str, mapping: dict[str, bytes], ttl_s: int) -> bool:
        """Fields of one hash and its expiry, in one round trip (one command however many fields);
        True when written."""
        if not mapping:
            return True
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(self.key(key), mapping=mapping)
        if ttl_s > 0:
            pipe.expire(self.key(key), ttl_s)
        return await self._call("hset_many", pipe.execute(), _FAILED) is not _FAILED

    async def hget_first(self, keys: list[str], field: str) -> bytes | None:
        """The field from the first of these hashes that has it (one round trip)."""
        found = await self.hmget_first(keys, [field])
        return (found or {}).get(field)

    async def hmget_first(self, keys: list[str], fields: list[str],
                          timeout_s: float | None = None) -> dict[str, bytes] | None:
        """For each field, its value in the first of these hashes that has it (one HMGET per hash, one
        round trip); None when Redis could not be asked (unlike {}: asked, none found)."""
        if not fields:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(self.key(key), fields)
        rows = await self._call("hmget_first", pipe.execute(), _FAILED, timeout_s)
        if rows is _FAILED:
            return None
        found: dict[str, bytes] = {}
        for row in rows:
            for name, value in zip(fields, row):
                if value is not None and name not in found:
                    found[name] = value
        return found

    async def eval_many(self, script: str, calls: list[tuple[list[str], list]], timeout_s: float) -> list | None:
        """A Lua script once per (keys, args), pipelined: each run is atomic on its own. Keys are used as
        given (no namespace). None when Redis could not be asked (some runs may have happened)."""
        pipe = self._client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.eval(script, len(keys), *keys, *args)
        result = await self._call("eval_many", pipe.execute(), _FAILED, timeout_s)
        return None if result is _FAILED else result

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
        if self._starter is not None:
            self._starter.cancel()
        try:
            await self._client.aclose()
        except Exception:  # noqa: BLE001
            pass


class WriteBehind:
    """Writes that no request waits for, sent in batches: every `interval_s`, one round trip however many
    requests queued writes. With `key()`: fields of one hash, one HSET per batch (card uuid -> rule
    records, one per card shown; `key()` names the hash at flush time, a daily bucket). With `key=None`:
    each field is a key of its own, SET in one pipeline (patient snapshots, order-sign de-duplication
    records: a round trip per request cost the request its place in the event loop's queue and ~60 us of
    client CPU). `ttl_s` is the expiry of what is written.

    Nothing is lost to a Redis blip: a batch Redis did not take goes back into the queue and is retried
    (back-off from `interval_s` up to `max_backoff_s`) until Redis takes it; `get()` answers from the queue
    meanwhile. At most `max_pending` fields wait: beyond that, and at `close()` if Redis is still away,
    fields are dropped, counted (`pgx_cds_redis_writes_dropped_total`) and logged. `flush()` sends what is
    queued now."""

    def __init__(self, kv: KV, key: Callable[[], str] | None, ttl_s: int, interval_s: float = 0.05,
                 max_pending: int = 10_000, clock: Clock = SYSTEM_CLOCK, max_backoff_s: float = 5.0,
                 kind: str = "card_rule") -> None:
        self._kv = kv
        self._key = key
        self._ttl = ttl_s
        self._interval = interval_s
        self._max = max_pending
        self._max_backoff = max_backoff_s
        self._kind = kind
        self.clock = clock
        self._pending: dict[str, bytes] = {}
        self._sending: dict[str, bytes] = {}  # the batch being written now
        self._task: asyncio.Task | None = None
        self._failures = 0
        self._dropped_since_log = 0
        self._next_log_at = 0.0
        self._closed = False

    def add(self, field: str, value: bytes) -> None:
        if field not in self._pending and len(self._pending) >= self._max:
            self._drop(1, "queue full")
            return
        self._pending[field] = value
        self._schedule()

    def get(self, field: str) -> bytes | None:
        """The value queued (or being sent) for a field, if it has not reached Redis yet."""
        return self._pending.get(field) or self._sending.get(field)

    async def read(self, key: str) -> bytes | None:
        """(``key=None`` mode) A key's newest value: the one still queued, else what Redis has."""
        return self.get(key) or await self._kv.get(key)

    def _schedule(self) -> None:
        if self._task is None and not self._closed:
            due = self.clock.now() + self._delay()  # from now, not from when the task first runs
            self._task = asyncio.get_running_loop().create_task(self._later(due))

    def _delay(self) -> float:
        return min(self._interval * (2 ** self._failures), self._max_backoff) if self._failures else self._interval

    async def _later(self, due: float) -> None:
        try:
            await self.clock.sleep(max(0.0, due - self.clock.now()))
        finally:
            self._task = None
        await self.flush()

    async def flush(self) -> bool:
        """Send what is queued; True when nothing is left waiting."""
        batch, self._pending = self._pending, {}
        if not batch:
            return True
        self._sending = {**self._sending, **batch}
        try:
            ok = await self._send(batch)
        finally:
            for k in batch:
                self._sending.pop(k, None)
        if ok is False:
            self._failures += 1
            # back into the queue, older than anything queued meanwhile (those win for the same field)
            merged = {**batch, **self._pending}
            over = len(merged) - self._max
            if over > 0:
                for k in list(merged)[:over]:
                    del merged[k]
                self._drop(over, "queue full while Redis is unavailable")
            self._pending = merged
            self._schedule()
            return False
        self._failures = 0
        if self._pending:
            self._schedule()
        return not self._pending

    async def _send(self, batch: dict[str, bytes]) -> bool:
        if self._key is None:
            return await self._kv.set_many([(k, v, self._ttl) for k, v in batch.items()])
        return await self._kv.hset_many(self._key(), batch, self._ttl)

    async def close(self) -> None:
        """At shutdown: a last attempt; what Redis still does not take is dropped, counted and logged."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if not await self.flush():
            n, self._pending = len(self._pending), {}
            self._drop(n, "shutdown while Redis is unavailable")
        elif self._dropped_since_log:
            log.error("redis_writes_dropped", kind=self._kind, count=self._dropped_since_log, reason="queue full")
            self._dropped_since_log = 0

    def _drop(self, n: int, why: str) -> None:
        metrics.REDIS_WRITES_DROPPED.labels(kind=self._kind).inc(n)
        self._dropped_since_log += n
        # at most one line per 10 s (a full queue during an outage must not flood the log); what is
        # dropped after the last line is logged with the next one, at the latest at shutdown
        now = self.clock.now()
        if why.startswith("shutdown") or now >= self._next_log_at:
            log.error("redis_writes_dropped", kind=self._kind, count=self._dropped_since_log, reason=why)
            self._dropped_since_log, self._next_log_at = 0, now + 10.0

    def __len__(self) -> int:
        return len(self._pending)


def make_kv(redis_url: str | None, *, timeout_ms: int, max_entries: int, clock: Clock = SYSTEM_CLOCK) -> KV:
    if redis_url:
        return RedisKV(redis_url, timeout_ms=timeout_ms, clock=clock)
    return InProcessKV(max_entries=max_entries)
