"""`python -m bench.inproc [--patients N] [--profile]`: CPU per request of the service's own code on the
distinct-patient mix, in process (no HTTP, no server, an in-process cache): the body parse, validation and
`run_hook`, timed with process_time over all bodies, twice (the second pass shows what memos give back
when the same bodies return). Quieter than wrk on a shared machine; a tool for measuring one change."""

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patients", type=int, default=1500)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    asyncio.run(_main(a.patients, a.profile))


if __name__ == "__main__":
    main()
