"""Feedback names only a card uuid; the card uuid -> rule record it is attributed through belongs to the
caller the card was shown to. A caller of another issuer (or another tenant of the same issuer) naming
that uuid gets no rule: it cannot attribute feedback to another tenant's card."""

from __future__ import annotations

import json

import pytest

from service.config import Issuer
from tests.hooks import requests as rq
from tests.hooks.conftest import make_client
from tests.hooks.test_tenancy import BASE, ISS_A, ISS_B, SELECT, SHARED, _auth, _jwks

FB = SELECT + "/feedback"


def _fb(card: str, ts: str = "2026-11-21T10:05:31Z") -> dict:
    return {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": ts}]}


def _records(redis_url: str | None, file) -> list[dict]:
    if redis_url is None:
        return [json.loads(x) for x in file.read_text().splitlines()]
    import redis

    return [json.loads(f[b"json"]) for _, f in redis.Redis.from_url(redis_url).xrange("pgx-cds:feedback")]


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("other", ["other-issuer", "other-tenant"])
def test_feedback_on_another_callers_card_is_not_attributed_to_its_rule(request, tmp_path, store, other):
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    file = tmp_path / "fb.ndjson"
    issuers = [Issuer(iss=ISS_A, jwks=_jwks(ISS_A), fhir_servers=[SHARED]),
               Issuer(iss=ISS_B, jwks=_jwks(ISS_B), fhir_servers=[SHARED])]
    owner = {"iss": ISS_A, "tenant": "t-1"}
    intruder = {"iss": ISS_B, "tenant": "t-1"} if other == "other-issuer" else {"iss": ISS_A, "tenant": "t-2"}
    with make_client(issuers=issuers, public_base_url=BASE, redis_url=redis_url, feedback_file=file) as c:
        r = c.post(SELECT, json=rq.order_select(fhirServer=SHARED),
                   headers=_auth(owner["iss"], SELECT, tenant=owner["tenant"]))
        assert r.status_code == 200, r.text
        card = r.json()["cards"][0]
        rule = card["extension"]["pgx-cds"]["recommendation"]["ruleId"]
        c.portal.call(c.app.state.deps.card_rules.flush)  # the record is in the store, not only queued
        # the other caller names A's card uuid
        r = c.post(FB, json=_fb(card["uuid"]), headers=_auth(intruder["iss"], FB, tenant=intruder["tenant"]))
        assert r.status_code == 200 and r.json() == {"stored": 1}
        # the caller it was shown to
        r = c.post(FB, json=_fb(card["uuid"], "2026-11-21T10:06:00Z"),
                   headers=_auth(owner["iss"], FB, tenant=owner["tenant"]))
        assert r.status_code == 200 and r.json() == {"stored": 1}
    rules = [(r["issuer"], r["rule"]) for r in _records(redis_url, file)]
    assert rules == [(intruder["iss"], None), (owner["iss"], rule)]
