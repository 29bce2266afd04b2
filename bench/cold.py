"""Cold-path benchmark: ``python -m bench.cold [--rounds 50] [--base URL --token T]`` (from the repository root).

Starts a seeded sekmet-fhir server (tests/fhir/sekmet.py; needs the test extras) unless ``--base`` is
given, then times each prefetch key fetched alone and the whole cold ``load_patient_data`` (all keys in
parallel). Concurrency shows as a cold latency close to the slowest single call, not their sum; sekmet
is one CPU-bound process on the same cores, so the clearer demonstration is the first figure: a local
server that answers each request after 50 ms. Also times ``build_profile`` on 30 Observations.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from service.config import FhirSettings
from service.fhir.client import Budget, FhirClient
from service.fhir.genomics import build_profile
from service.fhir.models import PatientData
from service.fhir.patient_data import _fetch_key, load_patient_data
from service.fhir.prefetch import templates_for

PATIENT = "pgx-jonas-panel"


def _ms(samples: list[float]) -> str:
    s = sorted(samples)
    p95 = s[min(len(s) - 1, int(len(s) * 0.95))]
    return f"p50 {statistics.median(s) * 1000:7.2f} ms   p95 {p95 * 1000:7.2f} ms"


async def _run(base: str, token: str, rounds: int) -> None:
    settings = FhirSettings(timeout_s=5, allow_http=True)
    client = FhirClient(settings)
    templates = templates_for("order-sign")
    for _ in range(3):  # warm the pool
        await load_patient_data(hook="order-sign", patient_id=PATIENT, fhir_server=base, access_token=token,
                                prefetch=None, client=client, settings=settings)
    singles: dict[str, list[float]] = {k: [] for k in templates}
    cold: list[float] = []
    calls = 0
    for _ in range(rounds):
        for key, template in templates.items():
            t0 = time.perf_counter()
            await _fetch_key(client, base, token, template, PATIENT, Budget(5))
            singles[key].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        data = await load_patient_data(hook="order-sign", patient_id=PATIENT, fhir_server=base, access_token=token,
                                       prefetch=None, client=client, settings=settings)
        cold.append(time.perf_counter() - t0)
        calls = data.fhir_calls
    await client.aclose()
    print(f"sekmet at {base}, patient {PATIENT}, {rounds} rounds")
    for key, samples in singles.items():
        print(f"  single {key:<16} {_ms(samples)}")
    medians = [statistics.median(s) for s in singles.values()]
    print(f"  sum of single medians   {sum(medians) * 1000:7.2f} ms")
    print(f"  slowest single median   {max(medians) * 1000:7.2f} ms")
    print(f"  cold load_patient_data  {_ms(cold)}   ({calls} calls, in parallel)")
    obs = data.observations
    many = [dict(o, id=f"{o.get('id')}-{i}") for i in range(3) for o in obs][:30]
    patient = PatientData(patient_id=PATIENT, observations=many)
    build_profile(patient)
    t0 = time.perf_counter()
    n = 500
    for _ in range(n):
        build_profile(patient)
    print(f"  build_profile, {len(many)} Observations: {(time.perf_counter() - t0) / n * 1000:.3f} ms")


async def _latency_demo(delay: float, rounds: int) -> None:
    """Against a local server that answers every request after ``delay`` seconds: 4 sequential fetches
    would take ~4x delay; the cold path should take ~1x."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        await asyncio.sleep(delay)
        path = request_line.split(b" ")[1] if b" " in request_line else b""
        body = (b'{"resourceType":"Patient","id":"%s"}' % PATIENT.encode() if b"/Patient/" in path
                else b'{"resourceType":"Bundle","type":"searchset","entry":[]}')
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nConnection: close\r\n"
                     + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/fhir"
    settings = FhirSettings(timeout_s=5, allow_http=True)
    client = FhirClient(settings)
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await load_patient_data(hook="order-sign", patient_id=PATIENT, fhir_server=base, access_token="t",
                                prefetch=None, client=client, settings=settings)
        samples.append(time.perf_counter() - t0)
    await client.aclose()
    server.close()
    print(f"latency server ({delay * 1000:.0f} ms per response, 4 keys): cold load_patient_data {_ms(samples)}"
          f"  (sequential would be >= {4 * delay * 1000:.0f} ms)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--base", help="FHIR base URL of an already running, seeded server")
    ap.add_argument("--token", help="bearer token for --base")
    args = ap.parse_args(argv)
    asyncio.run(_latency_demo(0.05, min(args.rounds, 20)))
    if args.base:
        asyncio.run(_run(args.base, args.token or "", args.rounds))
        return
    from tests.fhir import sekmet as sek  # the test harness's FHIR server (needs the test extras)

    server = sek.start_sekmet()
    try:
        asyncio.run(_run(server.base_url, server.token(), args.rounds))
    finally:
        sek.stop_sekmet(server)


if __name__ == "__main__":
    main()
