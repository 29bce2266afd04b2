"""Issue 12: Redis blips lose nothing. A real redis-server is paused (CLIENT PAUSE WRITE: writes hang,
SIGSTOP: everything hangs) or stopped while the service shows cards and receives feedback. Afterwards
every card -> rule record is in Redis and every feedback item is stored exactly once, with its rule.

Time is a ManualClock (write-behind interval, back-off, circuit breaker, spool retries): the tests move it
forward instead of sleeping against timers; they only wait (briefly, bounded) for real socket I/O."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import redis

from service.cache.clock import ManualClock
from service.feedback.store import export_records
from tests.hooks import requests as rq
from tests.hooks.conftest import make_client

SELECT = "/cds-services/pgx-order-select"
FB = "/cds-services/pgx-order-select/feedback"
RULE_HASH = f"pgx-cds:cardrules:{datetime.now(timezone.utc).date().isoformat()}"


def _manual_clock(c) -> ManualClock:
    clock = ManualClock()
    c.app.state.kv.clock = clock
    c.app.state.deps.card_rules.clock = clock
    c.app.state.feedback.clock = clock
    return clock


def _until(c, clock: ManualClock, check, steps: int = 200) -> bool:
    """Move the clock on until `check()` holds (each step waits a moment for real Redis I/O)."""
    for _ in range(steps):
        if check():
            return True
        c.portal.call(clock.advance, 2.0)
        time.sleep(0.02)
    return check()


def _show_cards(c, n: int) -> dict[str, str]:
    """n order-select calls (each its own hook instance, so its own card uuid): card uuid -> rule id."""
    out = {}
    for _ in range(n):
        r = c.post(SELECT, json=rq.order_select())
        assert r.status_code == 200, r.text
        card = r.json()["cards"][0]
        out[card["uuid"]] = card["extension"]["pgx-cds"]["recommendation"]["ruleId"]
    return out


def _fb(card: str, i: int = 0) -> dict:
    return {"card": card, "outcome": "overridden", "outcomeTimestamp": f"2026-11-21T10:05:{i % 60:02d}Z"}


def _stream(redis_url: str) -> list[dict]:
    return [json.loads(f[b"json"]) for _, f in redis.Redis.from_url(redis_url).xrange("pgx-cds:feedback")]


def test_no_card_rule_record_is_lost_while_redis_writes_are_paused(redis_url, tmp_path):
    admin = redis.Redis.from_url(redis_url)
    with make_client(redis_url=redis_url, redis_timeout_ms=100, feedback_file=tmp_path / "f.ndjson") as c:
        clock = _manual_clock(c)
        admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
        try:
            shown = _show_cards(c, 20)
            wb = c.app.state.deps.card_rules
            assert _until(c, clock, lambda: wb._failures >= 2, steps=50)  # flushed, and Redis did not take it
            assert len(wb) == 20
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        assert _until(c, clock, lambda: len(wb) == 0)
    stored = {k.decode(): v.decode() for k, v in admin.hgetall(RULE_HASH).items()}
    assert {card: stored.get(card) for card in shown} == shown  # zero lost


def test_no_card_rule_record_is_lost_while_redis_is_stopped(redis_server, redis_url, tmp_path):
    with make_client(redis_url=redis_url, redis_timeout_ms=100, feedback_file=tmp_path / "f.ndjson") as c:
        clock = _manual_clock(c)
        redis_server.stop()
        try:
            shown = _show_cards(c, 20)
            c.portal.call(clock.advance, 5.0)
            assert len(c.app.state.deps.card_rules) == 20
        finally:
            redis_server.start()
        assert _until(c, clock, lambda: len(c.app.state.deps.card_rules) == 0)
    stored = {k.decode(): v.decode() for k, v in redis.Redis.from_url(redis_url).hgetall(RULE_HASH).items()}
    assert {card: stored.get(card) for card in shown} == shown


def test_feedback_retried_across_a_hung_redis_is_stored_exactly_once(redis_server, redis_url, tmp_path):
    """Regression (issue 12): when a Redis call timed out mid-batch, an item was stored although its
    de-duplication key was not written, and the EHR's retry stored it again."""
    file = tmp_path / "f.ndjson"
    with make_client(redis_url=redis_url, redis_timeout_ms=100, feedback_file=file) as c:
        clock = _manual_clock(c)
        shown = _show_cards(c, 1)
        card, rule = next(iter(shown.items()))
        batch = {"feedback": [_fb(card)] + [_fb(f"other-{i}", i) for i in range(49)]}
        assert c.post(FB, json={"feedback": batch["feedback"][25:]}).json() == {"stored": 25}  # half went in
        redis_server.pause()  # SIGSTOP: every call hangs until its timeout
        try:
            assert c.post(FB, json=batch).status_code == 200  # kept locally: the spool
            assert c.post(FB, json=batch).json() == {"stored": 0}  # the EHR retries: already kept
        finally:
            redis_server.resume()
        assert _until(c, clock, lambda: c.app.state.feedback._spool_size() == 0)
        assert c.post(FB, json=batch).json() == {"stored": 0}  # and again once Redis is back
    records = _stream(redis_url)
    keys = [(r["card"], r["outcomeTimestamp"]) for r in records]
    assert len(keys) == len(set(keys)) == 50  # zero duplicates, nothing lost
    assert {r["card"]: r["rule"] for r in records}[card] == rule
    exported = list(export_records(redis_url, file))
    assert len(exported) == 50


def test_feedback_while_redis_is_away_finds_its_rule_once_redis_is_back(redis_server, redis_url, tmp_path):
    """Regression (issue 12): feedback arriving while the breaker was open was stored with rule null.
    Card A is shown while Redis hangs (its rule only in this process); card B was shown while Redis was
    up (its rule only in Redis). Feedback on both arrives while Redis hangs, and the process even restarts
    before Redis is back. Both are stored once, each with its rule."""
    file = tmp_path / "f.ndjson"
    with make_client(redis_url=redis_url, redis_timeout_ms=100, feedback_file=file) as c:
        clock = _manual_clock(c)
        card_b, rule_b = next(iter(_show_cards(c, 1).items()))
        assert c.portal.call(c.app.state.deps.card_rules.flush)
        redis_server.pause()
        try:
            card_a, rule_a = next(iter(_show_cards(c, 1).items()))
            c.portal.call(clock.advance, 5.0)  # the write-behind flush fails; the breaker opens
            body = {"feedback": [_fb(card_a), _fb(card_b)]}
            assert c.post(FB, json=body).json() == {"stored": 2}
            pending = [json.loads(x) for x in file.with_name(file.name + ".pending").read_text().splitlines()]
            assert {e["record"]["card"]: e["record"]["rule"] for e in pending}[card_a] == rule_a
        except BaseException:
            redis_server.resume()
            raise
    # this process stopped while Redis still hung; the spool is on disk and the next process writes it
    redis_server.resume()
    with make_client(redis_url=redis_url, redis_timeout_ms=100, feedback_file=file) as c:
        assert c.app.state.feedback._spool_size() == 0  # written at start-up
    records = _stream(redis_url)
    assert {r["card"]: r["rule"] for r in records} == {card_a: rule_a, card_b: rule_b}
    assert len(records) == 2


def test_jti_replay_protection_while_redis_is_down_is_per_replica(redis_server, redis_url, tmp_path):
    """What README "Redis outages" documents: without Redis each replica still refuses a token it has
    seen; another replica cannot know it."""
    from service.config import Issuer
    from tests.hooks.test_auth import BASE, ISS, JWKS, H, token

    s = dict(issuers=[Issuer(iss=ISS, jwks=JWKS)], public_base_url=BASE, redis_url=redis_url,
             redis_timeout_ms=100, feedback_file=tmp_path / "fb.ndjson")
    with make_client(**s) as a, make_client(**s) as b:
        redis_server.stop()
        try:
            tok = token(BASE + "/cds-services")
            assert a.get("/cds-services", headers=H(tok)).status_code == 200
            assert a.get("/cds-services", headers=H(tok)).status_code == 401  # same replica: a replay
            assert b.get("/cds-services", headers=H(tok)).status_code == 200  # the documented gap
        finally:
            redis_server.start()


def test_the_spool_is_bounded(redis_server, redis_url, tmp_path):
    """A long outage does not fill the disk: past its bound the spool refuses with a 503 (the EHR retries
    later) and what it holds is still written once Redis is back."""
    file = tmp_path / "f.ndjson"
    with make_client(redis_url=redis_url, redis_timeout_ms=100, feedback_file=file) as c:
        clock = _manual_clock(c)
        c.app.state.feedback.max_spool_bytes = 1
        redis_server.stop()
        try:
            assert c.post(FB, json={"feedback": [_fb("a")]}).json() == {"stored": 1}
            r = c.post(FB, json={"feedback": [_fb("b")]})
            assert r.status_code == 503 and "retry later" in r.text
        finally:
            redis_server.start()
        assert _until(c, clock, lambda: c.app.state.feedback._spool_size() == 0)
        assert c.post(FB, json={"feedback": [_fb("b")]}).json() == {"stored": 1}
    assert sorted(r["card"] for r in _stream(redis_url)) == ["a", "b"]
