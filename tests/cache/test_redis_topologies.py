"""Redis Sentinel and Redis Cluster URLs (issue 5), each against real redis-server processes: the store,
the feedback export and a hook call through the app all work, and the data lands where it should."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from service.cache.connect import _sentinel_parts, sync_client
from service.cache.store import RedisKV
from service.config import Settings
from service.feedback.store import STREAM, export_records
from tests.helpers import RedisProcess, free_port
from tests.hooks import requests as rq
from tests.hooks.conftest import make_client


@pytest.fixture
def sentinel(tmp_path):
    master = RedisProcess(port=free_port())
    master.start()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"sentinel monitor pgxmaster 127.0.0.1 {master.port} 1\n")
    watcher = RedisProcess(port=free_port(), args=[str(conf), "--sentinel"])
    watcher.start()
    yield master, f"redis+sentinel://127.0.0.1:{watcher.port}/pgxmaster/0"
    watcher.stop()
    master.stop()


@pytest.fixture
def cluster(tmp_path):
    # the cluster bus needs a port of its own (by default port + 10000, past 65535 for a high free port)
    node = RedisProcess(port=free_port(), args=["--cluster-enabled", "yes", "--cluster-config-file",
                                                str(tmp_path / "nodes.conf"), "--cluster-port", str(free_port())])
    node.start()
    admin = redis.Redis(port=node.port)
    admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)  # a one-node cluster holding every slot
    deadline = time.monotonic() + 10
    while b"cluster_state:ok" not in admin.execute_command("CLUSTER", "INFO") and time.monotonic() < deadline:
        time.sleep(0.05)
    yield node, f"redis+cluster://127.0.0.1:{node.port}"
    node.stop()


async def _store_roundtrip(url: str) -> None:
    kv = RedisKV(url, timeout_ms=1000)
    assert await kv.start()
    await kv.set_many([("topo:a", b"1", 60), ("topo:b", b"2", 60)])
    assert await kv.get("topo:b") == b"2"
    assert await kv.set_nx("topo:a", b"x", 60) is False
    await kv.hset_many("topo:h", {"card-1": b"rule-1"}, 60)
    assert await kv.hget_first(["topo:none", "topo:h"], "card-1") == b"rule-1"
    assert await kv.delete_prefix("topo:") == 3
    assert await kv.ping() and not kv.degraded
    await kv.close()


def _service_and_export(url: str, direct: redis.Redis, tmp_path) -> None:
    with make_client(redis_url=url, feedback_file=tmp_path / "unused.ndjson") as c:
        # (a snapshot is cached only for a fhirServer validated for the caller: service/auth/tenancy.py)
        r = c.post("/cds-services/pgx-order-select", json=rq.order_select(fhirServer="https://fhir.topo.example/r4"))
        assert r.status_code == 200 and r.json()["cards"]
        fb = {"feedback": [{"card": r.json()["cards"][0]["uuid"], "outcome": "overridden",
                            "outcomeTimestamp": "2026-11-22T10:00:00Z"}]}
        assert c.post("/cds-services/pgx-order-select/feedback", json=fb).json() == {"stored": 1}
    assert direct.keys("pgx-cds:snap:*")  # the snapshot is in that Redis
    assert direct.xlen(STREAM) == 1
    records = list(export_records(url, tmp_path / "none.ndjson"))
    assert [x["outcome"] for x in records] == ["overridden"] and records[0]["rule"]


async def test_sentinel_url_reaches_the_master(sentinel):
    master, url = sentinel
    await _store_roundtrip(url)
    sync_client(url, timeout_s=1).set("pgx-cds:sync", b"1")
    assert redis.Redis(port=master.port).get("pgx-cds:sync") == b"1"  # written on the master


def test_service_runs_on_sentinel(sentinel, tmp_path):
    master, url = sentinel
    _service_and_export(url, redis.Redis(port=master.port), tmp_path)


async def test_cluster_url_uses_the_cluster(cluster):
    node, url = cluster
    await _store_roundtrip(url)
    assert type(sync_client(url, timeout_s=1)).__name__ == "RedisCluster"


def test_service_runs_on_a_cluster(cluster, tmp_path):
    node, url = cluster
    _service_and_export(url, redis.Redis(port=node.port), tmp_path)


def test_the_cluster_client_is_initialised_at_start_up(cluster, tmp_path):
    """Regression (issue 12): the cluster client learnt its slot map lazily, inside the first request's
    100 ms Redis call; on a loaded machine that timed out, opened the circuit breaker and lost the card ->
    rule records (test_service_runs_on_a_cluster failed now and then). Now the slot map is read when the
    application starts, before any request."""
    node, url = cluster
    with make_client(redis_url=url, feedback_file=tmp_path / "f.ndjson") as c:
        kv = c.app.state.kv
        assert kv.client._initialize is False  # redis-py: slot map known, no lazy initialisation left
        assert not kv.degraded


async def test_a_call_never_initialises_the_cluster_inside_its_time_budget(cluster):
    node, url = cluster
    kv = RedisKV(url, timeout_ms=100)
    assert await kv.get("k") is None and kv.degraded  # not started: a miss, and no initialisation began
    assert kv.client._initialize is True
    assert await kv.start() and await kv.set("k", b"v", 60) and await kv.get("k") == b"v"
    await kv.close()


async def test_a_cluster_down_at_start_up_is_joined_when_it_comes_up(tmp_path):
    from service.cache.clock import ManualClock

    clock = ManualClock()
    port = free_port()
    kv = RedisKV(f"redis+cluster://127.0.0.1:{port}", timeout_ms=100, clock=clock)
    assert await kv.start() is False and kv.degraded  # nothing listens yet; the service still starts
    node = RedisProcess(port=port, args=["--cluster-enabled", "yes", "--cluster-config-file",
                                         str(tmp_path / "nodes.conf"), "--cluster-port", str(free_port())])
    node.start()
    try:
        admin = redis.Redis(port=port)
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        for _ in range(200):
            if b"cluster_state:ok" in admin.execute_command("CLUSTER", "INFO"):
                break
            await asyncio.sleep(0.05)
        for _ in range(50):  # the background task retries on the (manual) clock
            await clock.advance(10)
            if not kv.degraded:
                break
            await asyncio.sleep(0.05)
        assert not kv.degraded and await kv.set("k", b"v", 60) and await kv.get("k") == b"v"
    finally:
        await kv.close()
        node.stop()


@pytest.mark.parametrize("url, why", [
    ("redis+sentinel://127.0.0.1/pgxmaster", "host:port"),
    ("redis+sentinel://127.0.0.1:26379", "master name"),
    ("redis+sentinel://127.0.0.1:26379/m/x", "master name"),
])
def test_bad_sentinel_urls_say_what_is_wrong(url, why):
    with pytest.raises(ValueError, match=why):
        _sentinel_parts(url)


def test_sentinel_url_parts():
    sentinels, name, db, master, extra = _sentinel_parts(
        "rediss+sentinel://app:s%40cret@s1:26379,[::1]:26380/pgx/2?sentinel_password=sp")
    assert sentinels == [("s1", 26379), ("::1", 26380)] and name == "pgx" and db == 2
    assert master == {"username": "app", "password": "s@cret", "ssl": True} and extra == {"password": "sp"}


def test_settings_accept_the_topology_urls():
    for url in ("redis+sentinel://h:26379/m", "redis+cluster://h:7000", "rediss://h:6380/0"):
        assert Settings(redis_url=url).redis_url == url
