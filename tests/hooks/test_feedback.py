"""Checklist 29-30: feedback endpoint, durable storage, export."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.hooks import requests as rq
from tests.hooks.conftest import make_client

FB = "/cds-services/pgx-order-select/feedback"


def item(**kw):
    base = {"card": "card-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:05:31Z"}
    base.update(kw)
    return base


@pytest.mark.parametrize("bad", [
    {},
    {"feedback": []},
    {"feedback": [item(outcome="ignored")]},
    {"feedback": [item(outcome="accepted")]},  # accepted needs acceptedSuggestions (cds-fb-2)
    {"feedback": [item(overrideReason={})]},  # reason or userComment (cds-fb-3)
    {"feedback": [item(outcomeTimestamp="yesterday")]},
    {"feedback": [{"card": "c", "outcome": "overridden"}]},
])
def test_malformed_feedback_is_400(client, bad):
    r = client.post(FB, json=bad)
    assert r.status_code == 400, r.text


def test_batch_with_sandbox_shapes_is_stored_once_and_exported(tmp_path):
    file = tmp_path / "fb.ndjson"
    with make_client(feedback_file=file) as c:
        card = c.post("/cds-services/pgx-order-select", json=rq.order_select()).json()["cards"][0]
        sug = card["suggestions"][0]["uuid"]
        batch = {"feedback": [
            item(card=card["uuid"], outcome="accepted", acceptedSuggestions=[{"id": sug}]),
            item(card="unknown-card", overrideReason={"reason": {"code": "will-monitor", "system": "urn:pgx-cds:override-reason"}}),
            {"outcome": "overridden", "outcomeTimestamp": "2026-11-21T10:06:00Z"},  # sandbox: no card uuid
        ]}
        r = c.post(FB, json=batch)
        assert r.status_code == 200 and r.json() == {"stored": 3}
        assert c.post(FB, json=batch).json() == {"stored": 0}  # idempotent
    lines = [json.loads(x) for x in file.read_text().splitlines()]
    assert len(lines) == 3
    assert lines[0]["rule"] == card["extension"]["pgx-cds"]["recommendation"]["ruleId"]
    assert lines[0]["acceptedSuggestions"] == [sug]
    out = subprocess.run([sys.executable, "-m", "service.cli", "feedback", "export"], capture_output=True, text=True,
                         env={"PGX_CDS_FEEDBACK_FILE": str(file), "PATH": "/usr/bin:/bin"}, check=True)
    assert [json.loads(x)["outcome"] for x in out.stdout.splitlines()] == ["accepted", "overridden", "overridden"]


def test_feedback_goes_to_redis_stream_and_exports(redis_url, tmp_path):
    with make_client(redis_url=redis_url, feedback_file=tmp_path / "unused.ndjson") as c:
        assert c.post(FB, json={"feedback": [item(), item(card="card-2")]}).json() == {"stored": 2}
    import redis

    assert redis.Redis.from_url(redis_url).xlen("pgx-cds:feedback") == 2
    assert not (tmp_path / "unused.ndjson").exists()
    out = subprocess.run([sys.executable, "-m", "service.cli", "feedback", "export"], capture_output=True, text=True,
                         env={"PGX_CDS_REDIS_URL": redis_url, "PGX_CDS_FEEDBACK_FILE": str(tmp_path / "none"),
                              "PATH": "/usr/bin:/bin"}, check=True)
    assert [json.loads(x)["card"] for x in out.stdout.splitlines()] == ["card-1", "card-2"]


def test_feedback_right_after_the_card_is_counted_for_its_rule(redis_url, tmp_path):
    """Card -> rule records are written in batches off the request path; feedback arriving before the batch
    went out still finds the rule (the store flushes first)."""
    import redis

    with make_client(redis_url=redis_url, feedback_file=tmp_path / "f.ndjson") as c:
        c.app.state.deps.card_rules._interval = 3600  # the batch would not go out by itself in this test
        card = c.post("/cds-services/pgx-order-select", json={**rq.order_select(), "hookInstance": "wb-1"}).json()["cards"][0]
        assert len(c.app.state.deps.card_rules) == 1  # still queued
        r = c.post(FB, json={"feedback": [item(card=card["uuid"])]})
        assert r.status_code == 200 and r.json() == {"stored": 1}
    records = [json.loads(f[b"json"]) for _, f in redis.Redis.from_url(redis_url).xrange("pgx-cds:feedback")]
    assert [x["rule"] for x in records] == [card["extension"]["pgx-cds"]["recommendation"]["ruleId"]]


def test_feedback_days_after_the_card_still_finds_its_rule(redis_url, tmp_path):
    from datetime import datetime, timedelta, timezone

    from service.feedback.store import CARD_RULE_DAYS, card_rule_bucket

    today = datetime.now(timezone.utc).date()
    file = tmp_path / "f.ndjson"
    with make_client(redis_url=redis_url, feedback_file=file) as c:
        kv = c.app.state.kv
        for age, card in [(CARD_RULE_DAYS - 1, "card-old"), (CARD_RULE_DAYS, "card-too-old")]:
            c.portal.call(kv.hset_many, card_rule_bucket(today - timedelta(days=age)), {card: b"rule-x"}, 60)
        assert c.post(FB, json={"feedback": [item(card="card-old"), item(card="card-too-old")]}).json() == {"stored": 2}
        import redis
        records = [json.loads(f[b"json"]) for _, f in redis.Redis.from_url(redis_url).xrange("pgx-cds:feedback")]
    rules = {r["card"]: r["rule"] for r in records}
    assert rules["card-old"] == "rule-x" and rules["card-too-old"] is None


# ------------------------------------------------------------------ issue 12: batch limit, pipelining


def _items(n: int, prefix: str = "card") -> list[dict]:
    return [item(card=f"{prefix}-{i}", outcomeTimestamp=f"2026-11-21T10:{i // 60 % 60:02d}:{i % 60:02d}Z")
            for i in range(n)]


def test_a_batch_above_the_limit_is_413_with_a_clear_message(client):
    from service.feedback.store import MAX_FEEDBACK_ITEMS

    r = client.post(FB, json={"feedback": _items(MAX_FEEDBACK_ITEMS + 1)})
    assert r.status_code == 413, r.text
    assert f"At most {MAX_FEEDBACK_ITEMS} feedback items" in r.json()["issue"][0]["diagnostics"]
    assert client.post(FB, json={"feedback": _items(MAX_FEEDBACK_ITEMS)}).json() == {"stored": MAX_FEEDBACK_ITEMS}


def test_a_full_batch_takes_two_redis_round_trips(redis_url, tmp_path):
    """Regression (issue 12): several sequential Redis round trips per item (10,000 items took 23-34 s).
    Now: one for the card -> rule lookups, one for storing; whatever the batch size."""
    import redis

    from service.cache.store import RedisKV
    from service.feedback.store import MAX_FEEDBACK_ITEMS

    with make_client(redis_url=redis_url, feedback_file=tmp_path / "f.ndjson") as c:
        kv = c.app.state.kv
        calls: list[str] = []

        async def counted(self, op, coro, default, timeout_s=None):  # every Redis round trip goes here
            calls.append(op)
            return await RedisKV._call(self, op, coro, default, timeout_s)

        kv._call = counted.__get__(kv)
        r = c.post(FB, json={"feedback": _items(MAX_FEEDBACK_ITEMS)})
        assert r.json() == {"stored": MAX_FEEDBACK_ITEMS}
        assert calls == ["hmget_first", "eval_many"]
    assert redis.Redis.from_url(redis_url).xlen("pgx-cds:feedback") == MAX_FEEDBACK_ITEMS


def test_an_item_repeated_inside_a_batch_is_stored_once(redis_url, tmp_path):
    with make_client(redis_url=redis_url, feedback_file=tmp_path / "f.ndjson") as c:
        assert c.post(FB, json={"feedback": [item(), item(), item(card="b")]}).json() == {"stored": 2}
        assert c.post(FB, json={"feedback": [item(), item(card="b"), item(card="c")]}).json() == {"stored": 1}
    import redis

    assert redis.Redis.from_url(redis_url).xlen("pgx-cds:feedback") == 3
