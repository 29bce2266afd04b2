"""`python -m bench.inproc [--patients N] [--profile] [--asgi]`: CPU per request of the service's own code on
the distinct-patient mix, in process (no HTTP, no server, an in-process cache): the body parse, validation and
`run_hook`, timed with process_time over all bodies, twice (the second pass shows what memos give back
when the same bodies return). Quieter than wrk on a shared machine; a tool for measuring one change.

`--asgi`: the whole application instead (the HTTP edge included: middleware, fast path or full stack,
routing, the access log line written to /dev/null, metrics), each body once, called as ASGI apps in this
process without a server, next to the bare FastAPI endpoint (bench/baseline.py) on the same bodies."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def _main(patients: int, profile: bool) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import orjson

    from bench.population import generate
    from service.cache.store import InProcessKV
    from service.config import REPO_ROOT, Settings
    from service.fhir.client import FhirClient
    from service.hooks.discovery import SERVICES
    from service.hooks.pipeline import Deps, run_hook
    from service.hooks.schemas import HookRequest
    from service.pgx.knowledge import load_knowledge

    settings = Settings(profile="dev")
    knowledge = load_knowledge(REPO_ROOT / "cards")
    deps = Deps(settings=settings, knowledge=knowledge, fhir=FhirClient(settings.fhir), kv=InProcessKV(100_000))
    seq = generate(knowledge, patients, block=256, fhir_server="https://fhir.bench.example/r4")
    bodies = [("pgx-" + h, json.dumps(b).encode()) for h, b in seq]
    from bench.mix import _has_cpic

    cpic = [_has_cpic(knowledge, b) for _, b in seq]
    warm = generate(knowledge, 100, block=256, fhir_server="https://fhir.bench.example/r4", seed=99)
    for h, b in warm:
        await run_hook(SERVICES["pgx-" + h], HookRequest.model_validate(b), deps, None)
    from service.runtime import tune_gc  # as a served process does (pgx-cds serve)

    tune_gc()

    split: dict[bool, list[float]] = {True: [], False: []}

    async def one_pass() -> float:
        split[True].clear()
        split[False].clear()
        clock = time.process_time
        t0 = clock()
        for (sid, raw), has_cpic in zip(bodies, cpic):
            t = clock()
            req = HookRequest.model_validate(orjson.loads(raw))
            await run_hook(SERVICES[sid], req, deps, None)
            split[has_cpic].append(clock() - t)
        return (clock() - t0) / len(bodies) * 1e6

    def parts() -> str:
        return ", ".join(f"{'CPIC' if k else 'non-CPIC'} orders {sum(v) / max(len(v), 1) * 1e6:.0f} us ({len(v)})"
                         for k, v in split.items())

    def parse_only() -> float:
        t0 = time.process_time()
        for _, raw in bodies:
            orjson.loads(raw)
        return (time.process_time() - t0) / len(bodies) * 1e6

    if profile:
        import cProfile
        import pstats

        pr = cProfile.Profile()
        pr.enable()
        await one_pass()
        pr.disable()
        pstats.Stats(pr).sort_stats("cumulative").print_stats(40)
        return
    first = await one_pass()
    first_parts = parts()
    second = await one_pass()
    print(f"{len(bodies)} bodies: parse alone {parse_only():.0f} us; parse+validate+run_hook {first:.0f} us/req "
          f"(first pass: {first_parts}), {second:.0f} us/req (same bodies again)")


async def _asgi(patients: int) -> None:
    """Each app gets every body once (distinct traffic), timed per body with process_time."""
    import contextlib
    import os

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.mix import _has_cpic
    from bench.population import generate
    from service.config import REPO_ROOT, Settings
    from service.pgx.knowledge import load_knowledge

    knowledge = load_knowledge(REPO_ROOT / "cards")
    seq = generate(knowledge, patients, block=256, fhir_server="https://fhir.bench.example/r4")
    bodies = [("pgx-" + h, json.dumps(b).encode(), _has_cpic(knowledge, b)) for h, b in seq]

    def apps():
        os.environ["PGX_BENCH_RESPONSE_BYTES"] = "0"
        from bench.baseline import create_app as bare
        from service.main import create_app

        from service.runtime import tune_gc

        yield "bare", bare()
        for fast in (True, False):
            app = create_app(Settings(profile="dev", log_level="info", hook_fast_path=fast))
            tune_gc()  # as a served process does (pgx-cds serve)
            yield ("pgx-cds fast path" if fast else "pgx-cds full stack"), app

    async def call(app, sid: str, body: bytes) -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/cds-services/" + sid, "raw_path": b"/cds-services/" + sid.encode(),
                 "root_path": "", "query_string": b"", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8080),
                 "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status = []

        async def receive():
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        return status[0]

    print(f"{len(bodies)} bodies ({sum(c for *_, c in bodies)} with a CPIC order), each app once, in process:")
    with open(os.devnull, "w") as null:
        for name, app in apps():
            split: dict[bool, list[float]] = {True: [], False: []}
            async with app.router.lifespan_context(app):
                with contextlib.redirect_stdout(null):  # the access log line is written, to /dev/null
                    clock = time.process_time
                    for sid, body, cpic in bodies:
                        t = clock()
                        if await call(app, sid, body) != 200:
                            raise SystemExit(f"{name}: not 200")
                        split[cpic].append(clock() - t)
            allv = split[True] + split[False]
            print(f"  {name:<20} {sum(allv) / len(allv) * 1e6:6.0f} us/req  (CPIC orders "
                  f"{sum(split[True]) / max(len(split[True]), 1) * 1e6:.0f} us, non-CPIC orders "
                  f"{sum(split[False]) / max(len(split[False]), 1) * 1e6:.0f} us)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=1500)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--asgi", action="store_true", help="the whole app (HTTP edge included) vs the bare endpoint")
    a = ap.parse_args()
    asyncio.run(_asgi(a.patients) if a.asgi else _main(a.patients, a.profile))


if __name__ == "__main__":
    main()
