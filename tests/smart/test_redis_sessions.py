"""SMART sessions in a real Redis (redis-server process from tests/conftest.py): server-side, short TTL."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from service.cache.store import RedisKV
from tests.smart.conftest import ISS, JWKS, TOKEN, id_token, make_app, smart_config

pytestmark = pytest.mark.e2e


def test_launch_and_callback_keep_tokens_in_redis_only(redis_url, rsa_key):
    import redis

    app = make_app()
    app.state.kv = RedisKV(redis_url, timeout_ms=500)
    r = redis.Redis.from_url(redis_url)
    key, jwks = rsa_key
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c, \
            respx.mock(assert_all_called=False) as mock:
        mock.route(host="testserver").pass_through()
        mock.get(f"{ISS}/.well-known/smart-configuration").respond(200, json=smart_config())
        launch = c.get("/app/launch", params={"iss": ISS, "launch": "l-1"})
        assert launch.status_code == 302
        q = {k: v[0] for k, v in parse_qs(urlsplit(launch.headers["location"]).query).items()}
        (name,) = [n for n in launch.cookies.keys() if n.startswith("pgx_smart_sid_")]
        pending_key = "pgx-cds:smart:sess:" + hashlib.sha256(launch.cookies[name].encode()).hexdigest()
        assert r.exists(pending_key) and 0 < r.ttl(pending_key) <= 600

        mock.get(JWKS).respond(200, json=jwks)
        mock.post(TOKEN).mock(return_value=httpx.Response(200, json={
            "access_token": "at-redis-1", "token_type": "Bearer", "expires_in": 300, "patient": "p-1",
            "scope": "launch openid patient/Observation.rs", "id_token": id_token(key, nonce=q["nonce"]),
        }))
        done = c.get("/app/callback", params={"code": "c", "state": q["state"]})
        assert done.status_code == 303
    sid = done.cookies[name]
    active_key = "pgx-cds:smart:sess:" + hashlib.sha256(sid.encode()).hexdigest()
    assert not r.exists(pending_key)
    assert 0 < r.ttl(active_key) <= 900
    stored = json.loads(r.get(active_key))
    assert stored["access_token"] == "at-redis-1" and stored["phase"] == "active"
    # the browser got only the random id
    assert all(sid not in k.decode() for k in r.keys("*")) and "at-redis-1" not in done.headers["set-cookie"]
