"""Issue 5: what is cached and how: snapshot in Redis (hashed key), prefetch wins, single flight, cache clear."""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys

import httpx
import redis
import respx

from service.config import Settings
from service.hooks.discovery import SERVICES
from service.hooks.pipeline import run_hook
from service.hooks.schemas import HookRequest
from service.main import create_app
from tests.hooks import requests as rq

FHIR = "https://fhir.cache.example/r4"
AUTH = {"access_token": "tok-cache", "token_type": "Bearer", "expires_in": 60, "scope": "patient/*.read", "subject": "c"}


def _app(redis_url=None, **kw):
    return create_app(Settings(redis_url=redis_url, log_level="warning", **kw))


def _req(**kw) -> HookRequest:
    return HookRequest.model_validate(rq.order_select(fhirServer=FHIR, fhirAuthorization=AUTH, **kw))


async def test_snapshot_cached_in_redis_under_a_hashed_key_and_reused_without_fhir_calls(redis_url):
    app = _app(redis_url)
    svc = SERVICES["pgx-order-select"]
    out = await run_hook(svc, _req(), app.state.deps, None)  # from prefetch
    assert out.source == "prefetch"
    await app.state.deps.flush()  # the write went behind the request (sent within 50 ms)
    keys = [k.decode() for k in redis.Redis.from_url(redis_url).keys("pgx-cds:snap:*")]
    assert len(keys) == 1 and "pgx-demo-1" not in keys[0]  # never the raw patient id
    raw = redis.Redis.from_url(redis_url).get(keys[0]).decode()
    assert "tok-cache" not in raw  # never the access token
    with respx.mock(assert_all_called=False) as m:
        route = m.route(url__startswith=FHIR).mock(return_value=httpx.Response(500))
        app2 = _app(redis_url)  # another replica: nothing in its memory
        out2 = await run_hook(svc, _req(prefetch=False), app2.state.deps, None)
        assert out2.source == "cache" and out2.fhir_calls == 0 and not route.called
        assert out2.response.cards[0].extension["pgx-cds"]["genes"][0]["phenotype"] == "Poor Metabolizer"
    await app.state.fhir.aclose()
    await app2.state.fhir.aclose()


async def test_newer_result_in_prefetch_wins_over_cache(redis_url):
    app = _app(redis_url)
    svc = SERVICES["pgx-order-select"]
    await run_hook(svc, _req(), app.state.deps, None)  # PM cached
    out = await run_hook(svc, _req(obs=[rq.CYP2C19_NM]), app.state.deps, None)
    assert out.response.cards == []  # the prefetch (normal metabolizer) was used, not the cached PM
    await app.state.deps.flush()
    out = await run_hook(svc, _req(prefetch=False), _app(redis_url).state.deps, None)
    assert out.response.cards == []  # and it replaced the cached snapshot
    await app.state.fhir.aclose()


def _slow_fhir(genotype, delay: float, calls: list[str] | None = None):
    """A FHIR server (respx side effect) that answers after `delay` s: the patient, `genotype()` as the
    genomic results, empty bundles for the rest; requested paths are appended to `calls`."""

    async def answer(request):
        if calls is not None:
            calls.append(request.url.path)
        await asyncio.sleep(delay)
        if "Observation" in request.url.path:
            return httpx.Response(200, json=rq.bundle(genotype()))
        if "Patient" in request.url.path:
            return httpx.Response(200, json=rq.PATIENT)
        return httpx.Response(200, json=rq.bundle())

    return answer


async def test_concurrent_misses_share_one_fetch():
    app = _app()
    svc = SERVICES["pgx-order-select"]
    calls: list[str] = []
    with respx.mock(assert_all_called=False) as m:
        m.route(url__startswith=FHIR).mock(side_effect=_slow_fhir(lambda: rq.CYP2C19_PM, 0.2, calls))
        outs = await asyncio.gather(*(run_hook(svc, _req(prefetch=False), app.state.deps, None) for _ in range(10)))
    assert all(len(o.response.cards) == 1 for o in outs)
    assert len(calls) <= 5  # one patient load (its five parallel keys), not ten
    assert sorted(o.source for o in outs).count("fhir") == 1
    await app.state.fhir.aclose()


async def test_requests_sharing_a_fetch_get_the_fetched_data_not_an_earlier_answer():
    """Regression: a request that waited for another's fetch was evaluated under a content id naming only
    the patient, so after the patient's result changed, a later shared fetch reused the old answer."""
    app = _app(cache={"profile_ttl_s": 0})  # nothing cached: every round fetches
    svc = SERVICES["pgx-order-select"]
    result = {"obs": rq.CYP2C19_PM}
    with respx.mock(assert_all_called=False) as m:
        m.route(url__startswith=FHIR).mock(side_effect=_slow_fhir(lambda: result["obs"], 0.1))
        first = await asyncio.gather(*(run_hook(svc, _req(prefetch=False), app.state.deps, None) for _ in range(3)))
        result["obs"] = rq.CYP2C19_NM  # the lab corrected the result
        second = await asyncio.gather(*(run_hook(svc, _req(prefetch=False), app.state.deps, None) for _ in range(3)))
    assert "fhir-shared" in {o.source for o in first} and "fhir-shared" in {o.source for o in second}
    assert all(len(o.response.cards) == 1 for o in first)
    assert all(o.response.cards == [] for o in second)
    await app.state.fhir.aclose()


def test_cache_clear_cli(redis_url):
    async def fill():
        app = _app(redis_url)
        await run_hook(SERVICES["pgx-order-select"], _req(), app.state.deps, None)
        await app.state.deps.flush()
        await app.state.fhir.aclose()

    asyncio.run(fill())
    r = redis.Redis.from_url(redis_url)
    assert len(r.keys("pgx-cds:snap:*")) == 1
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PGX_CDS_")}, "PGX_CDS_REDIS_URL": redis_url}
    out = subprocess.run([sys.executable, "-m", "service.cli", "cache", "clear", "--patient", "someone-else",
                          "--fhir-server", FHIR], capture_output=True, text=True, env=env, check=True)
    assert "removed 0" in out.stdout and len(r.keys("pgx-cds:snap:*")) == 1
    out = subprocess.run([sys.executable, "-m", "service.cli", "cache", "clear", "--patient", "pgx-demo-1",
                          "--fhir-server", FHIR], capture_output=True, text=True, env=env, check=True)
    assert "removed 1" in out.stdout and r.keys("pgx-cds:snap:*") == []


async def test_profile_ttl_zero_disables_the_snapshot_cache(redis_url):
    """Regression: a TTL of 0 used to store snapshots without expiry, so 'cold' was never cold."""
    app = _app(redis_url, cache={"profile_ttl_s": 0})
    svc = SERVICES["pgx-order-select"]
    with respx.mock(assert_all_called=False) as m:
        route = m.route(url__startswith=FHIR).mock(side_effect=lambda req: httpx.Response(
            200, json=rq.bundle(rq.CYP2C19_PM) if "Observation" in req.url.path else
            (rq.PATIENT if "Patient" in req.url.path else rq.bundle())))
        for _ in range(3):
            out = await run_hook(svc, _req(prefetch=False), app.state.deps, None)
            assert out.source == "fhir" and len(out.response.cards) == 1
        assert route.call_count >= 3 * 1
    assert redis.Redis.from_url(redis_url).keys("pgx-cds:snap:*") == []
    await app.state.fhir.aclose()


async def test_cold_path_fetches_only_what_the_ordered_drugs_need_and_tops_up_the_cache():
    """Clopidogrel's guideline reads conditions (ACS/PCI vs neurovascular) and, to screen its alternatives
    (prasugrel/ticagrelor: prior stroke, oral anticoagulants), current medications, but not vitals, so vitals
    are not fetched; a later warfarin order for the same patient (its algorithm needs vitals) does not trust
    the cached copy and loads them."""
    app = _app()
    svc = SERVICES["pgx-order-select"]
    seen: list[str] = []

    def answer(request):
        url = str(request.url)
        seen.append("vitals" if "29463-7" in url else request.url.path.rsplit("/", 2)[-1 if "?" in url else -2])
        if "Observation" in request.url.path and "29463-7" not in url:
            return httpx.Response(200, json=rq.bundle(rq.CYP2C19_PM, rq.genotype("o-2c9", "CYP2C9", "HGNC:2623", "*1/*3")))
        if "/Patient/" in request.url.path:
            return httpx.Response(200, json=rq.PATIENT)
        return httpx.Response(200, json=rq.bundle())

    with respx.mock(assert_all_called=False) as m:
        m.route(url__startswith=FHIR).mock(side_effect=answer)
        out = await run_hook(svc, _req(prefetch=False), app.state.deps, None)
        assert len(out.response.cards) == 1 and out.fhir_calls == 4
        assert sorted(seen) == ["Condition", "MedicationRequest", "Observation", "Patient"]
        seen.clear()
        again = await run_hook(svc, _req(prefetch=False), app.state.deps, None)
        assert again.source == "cache" and seen == []
        warfarin = rq.order_select(fhirServer=FHIR, fhirAuthorization=AUTH, prefetch=False,
                                   orders=[rq.med_request("d-w", "11289", "warfarin", dose=5)])
        out = await run_hook(svc, HookRequest.model_validate(warfarin), app.state.deps, None)
        assert out.source == "fhir" and "vitals" in seen and "MedicationRequest" in seen
    await app.state.fhir.aclose()


async def test_same_request_content_reuses_the_evaluation_and_any_change_re_evaluates(monkeypatch):
    """A request answered from its prefetch alone is derived once per content: another hookInstance (or
    token) reuses the snapshot and the order's cards; a change to anything the answer depends on is
    derived afresh."""
    import service.hooks.pipeline as pipeline
    import service.hooks.snapshots as snapshots

    app = _app()
    svc = SERVICES["pgx-order-select"]
    derived: list[str] = []
    real_fetch, real_clinical = snapshots.fetch_snapshot, pipeline.run_clinical

    async def counting_fetch(*a, **kw):
        derived.append("snapshot")
        return await real_fetch(*a, **kw)

    def counting_clinical(*a, **kw):
        derived.append("cards")
        return real_clinical(*a, **kw)

    monkeypatch.setattr(snapshots, "fetch_snapshot", counting_fetch)
    monkeypatch.setattr(pipeline, "run_clinical", counting_clinical)

    def summary(out) -> list[str]:
        return [c.summary for c in out.response.cards]

    base = rq.order_select(fhirServer=FHIR, fhirAuthorization=AUTH)
    first = await run_hook(svc, HookRequest.model_validate(base), app.state.deps, None)
    again = await run_hook(svc, HookRequest.model_validate(
        {**base, "hookInstance": "another", "fhirAuthorization": {**AUTH, "access_token": "other"}}), app.state.deps, None)
    assert derived == ["snapshot", "cards"] and summary(first) == summary(again) and first.response.cards
    assert first.response.cards[0].uuid != again.response.cards[0].uuid

    derived.clear()
    moved = copy.deepcopy(base)
    moved["context"]["draftOrders"]["entry"][0]["resource"]["dosageInstruction"] = [{"text": "75 mg daily"}]
    await run_hook(svc, HookRequest.model_validate(moved), app.state.deps, None)
    assert derived == ["cards"]  # the order changed, the patient did not

    derived.clear()
    nm = rq.order_select(fhirServer=FHIR, obs=[rq.CYP2C19_NM])
    assert summary(await run_hook(svc, HookRequest.model_validate(nm), app.state.deps, None)) == []  # prefetch
    assert derived == ["snapshot", "cards"]
    derived.clear()
    apap = rq.order_select(fhirServer=FHIR, orders=[rq.CLOPIDOGREL, rq.ACETAMINOPHEN],
                           selections=["MedicationRequest/draft-apap"])
    assert summary(await run_hook(svc, HookRequest.model_validate(apap), app.state.deps, None)) == []  # selections
    assert derived == []  # no CPIC drug selected: answered from the draft orders alone
    other_patient = {**base, "context": {**base["context"], "patientId": "someone-else"}}
    out = await run_hook(svc, HookRequest.model_validate(other_patient), app.state.deps, None)
    assert out.patient_key != first.patient_key  # patient id
    assert derived == ["snapshot", "cards"]

    derived.clear()
    await run_hook(svc, HookRequest.model_validate(base), app.state.deps, None)
    assert derived == ["snapshot", "cards"]  # the patient's newest prefetch (nm) replaced the one kept
    derived.clear()
    monkeypatch.setattr(pipeline, "date", type("D", (), {"today": staticmethod(lambda: __import__("datetime").date(2099, 1, 1))}))
    await run_hook(svc, HookRequest.model_validate(base), app.state.deps, None)
    assert derived == ["cards"]  # another day (ages and so populations can change)
    await app.state.fhir.aclose()


async def test_an_answer_that_needed_the_fhir_server_is_not_reused():
    app = _app()
    svc = SERVICES["pgx-order-select"]
    body = rq.order_select(fhirServer=FHIR, fhirAuthorization=AUTH)
    del body["prefetch"]["patient"]  # prefetch lacks the patient: it is read from the FHIR server
    with respx.mock(assert_all_called=False) as m:
        route = m.route(url__startswith=FHIR + "/Patient").mock(return_value=httpx.Response(200, json=rq.PATIENT))
        for i in range(2):
            out = await run_hook(svc, HookRequest.model_validate({**body, "hookInstance": f"h{i}"}), app.state.deps, None)
            assert out.response.cards and out.fhir_calls == 1
        assert route.call_count == 2
    await app.state.fhir.aclose()


async def test_a_snapshot_write_still_queued_is_read_from_the_queue(redis_url):
    """The snapshot's Redis write goes behind the request: until it is sent, a request for the same patient
    reads it from the queue (no FHIR call), and once sent it is in Redis for the other replicas."""
    app = _app(redis_url, cache={"local_ttl_s": 0})  # no local copy: only the queue or Redis can answer
    svc = SERVICES["pgx-order-select"]
    await run_hook(svc, _req(), app.state.deps, None)  # from prefetch
    assert redis.Redis.from_url(redis_url).keys("pgx-cds:snap:*") == []  # not sent yet
    with respx.mock(assert_all_called=False) as m:
        route = m.route(url__startswith=FHIR).mock(return_value=httpx.Response(500))
        out = await run_hook(svc, _req(prefetch=False), app.state.deps, None)
    assert out.source == "cache" and out.fhir_calls == 0 and not route.called
    assert out.response.cards[0].extension["pgx-cds"]["genes"][0]["phenotype"] == "Poor Metabolizer"
    await app.state.deps.flush()
    assert len(redis.Redis.from_url(redis_url).keys("pgx-cds:snap:*")) == 1
    await app.state.fhir.aclose()
