"""The headline scenario: a distinct-patient mix, as an EHR sends it.

Thousands of distinct synthetic patients (bench/population.py), order-select then order-sign for each,
every request its own hookInstance, ~20% of them ordering a drug with a CPIC guideline. All bodies are
generated before the run and wrk sends pre-formatted requests from a Lua table (no work per request).
pgx-cds, the bare FastAPI endpoint that parses the same bodies, and (when installed) a peer Python
CDS Hooks framework serving one fixed card are measured in the same run, alternating, three rounds;
server CPU per request is read from /proc. Ratios are to the bare endpoint of the same round.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.run import _ms

ROOT = Path(__file__).resolve().parent.parent
_TICK = os.sysconf("SC_CLK_TCK")

# Each wrk thread sends the bodies of its own file (`<path>-<thread>.txt`, whole blocks of patients, so
# an order-sign follows its order-select) in order, starting where the same thread stopped in the
# previous run of the same target (`offsets`, one number per thread); it wraps around only when its file
# is used up. At the end, the count each thread reached is printed (`SENT <thread> <count>`), so the next
# run continues there and the bench can tell bodies sent from distinct bodies sent. Bodies appended to
# the files between runs keep every offset valid.
_LUA = """
local path = "%(path)s"
local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
  thread:set("tid", #threads)
end
function init(args)
  local offsets = {}
  for v in string.gmatch(args[1] or "", "[^,]+") do offsets[#offsets + 1] = tonumber(v) end
  local headers = {["Content-Type"] = "application/json"}
  reqs = {}
  for line in io.lines(path .. "-" .. tid .. ".txt") do
    local sid, body = line:match("^(%%S+) (.*)$")
    reqs[#reqs + 1] = wrk.format("POST", wrk.path .. sid, headers, body)
  end
  collectgarbage()
  sent = offsets[tid] or 0
end
function request()
  local r = reqs[sent %% #reqs + 1]
  sent = sent + 1
  return r
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do io.write(string.format("SENT %%d %%d\\n", t:get("tid"), t:get("sent"))) end
end
"""


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float  # server process CPU per request
    redis_cpu_us: float = 0.0


@dataclass
class Target:
    name: str
    url: str  # .../cds-services/ (the service id is appended per body's hook)
    pid: int
    note: str
    runs: list[Run] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # per wrk thread: bodies of the measured file sent so far

    def sent(self) -> int:
        return sum(self.offsets)

    def distinct(self, lines: list[int]) -> int:
        """Distinct bodies among those sent: a thread's file (`lines[thread]` bodies) repeats only once it
        is used up."""
        return sum(min(o, n) for o, n in zip(self.offsets, lines))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _wrk(url: str, script: Path, *, connections: int, threads: int, duration: int, offsets: list[int],
         pid: int, redis_pid: int | None) -> tuple[Run, list[int]]:
    """One wrk run; the run and where each thread stopped (to continue from in the next run)."""
    cpu0 = cpu_seconds(pid)
    r0 = cpu_seconds(redis_pid) if redis_pid else 0.0
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
                          url, "--", ",".join(map(str, offsets or [0] * threads))],
                         capture_output=True, text=True, timeout=duration + 300).stdout
    cpu = cpu_seconds(pid) - cpu0
    rcpu = (cpu_seconds(redis_pid) - r0) if redis_pid else 0.0
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    reached = {int(t): int(n) for t, n in re.findall(r"^SENT (\d+) (\d+)$", out, re.M)}
    run = Run(rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
              p50_ms=_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
              p99_ms=_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
              requests=total, errors=errors, cpu_us=cpu / max(total, 1) * 1e6,
              redis_cpu_us=rcpu / max(total, 1) * 1e6)
    return run, [reached.get(t + 1, 0) for t in range(threads)]


def _start(cmd: list[str], port: int, env: dict[str, str], procs: list) -> subprocess.Popen:
    p = subprocess.Popen(cmd + ["--port", str(port), "--log-level", "warning"], cwd=ROOT, env={**os.environ, **env},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    for _ in range(300):
        if p.poll() is not None:
            raise RuntimeError(f"{cmd} exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return p
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{cmd} did not start")


def _peer_python(explicit: str | None) -> tuple[str | None, str]:
    """An interpreter with healthchain installed, or None and why not."""
    candidates = [explicit] if explicit else [os.environ.get("PGX_BENCH_PEER_PYTHON"), sys.executable]
    for py in [c for c in candidates if c]:
        ok = subprocess.run([py, "-c", "import healthchain, uvicorn"], capture_output=True).returncode == 0
        if ok:
            return py, ""
    return None, ("healthchain is not installed here; `python -m venv /tmp/hc && /tmp/hc/bin/pip install healthchain`"
                  " then pass --peer-python /tmp/hc/bin/python (it pins its own FastAPI/pydantic, so it gets its own venv)")


def _post_all(base: str, bodies: list[tuple[str, bytes]]) -> list[bytes]:
    out = []
    with httpx.Client(timeout=30) as c:
        for hook, body in bodies:
            r = c.post(base + "pgx-" + hook, content=body, headers={"content-type": "application/json"})
            r.raise_for_status()
            out.append(r.content)
    return out


#: at most this many patients are generated for the measured rounds (~25 KiB of bodies each): beyond it the
#: bodies repeat, and the table says how many were sent vs distinct
MAX_PATIENTS = 40_000


class _BodyFile:
    """The bodies, one file per wrk thread (`<stem>-<thread>.txt`), one line per request: the service id, a
    space, the body (the Lua script builds the path from both). Patients are generated and appended in
    blocks, block i to thread i's file in turn (tens of thousands of patients do not fit in memory as
    dicts); only the first bodies are kept, for the card-share sample."""

    def __init__(self, stem: Path, knowledge, *, block: int, fhir_server: str, seed: int, threads: int = 2,
                 keep: int = 1000) -> None:
        from bench.population import Generator

        self.stem, self.knowledge, self.block, self.fhir_server = stem, knowledge, block, fhir_server
        self.gen = Generator(knowledge, seed=seed)
        self.patients = self.bytes = self.cpic = self.blocks = 0
        self.lines = [0] * threads
        self.head: list[tuple[str, dict]] = []
        self.keep = keep
        for t in range(threads):
            self.file(t).write_text("")

    def file(self, thread: int) -> Path:
        return self.stem.with_name(f"{self.stem.name}-{thread + 1}.txt")

    @property
    def total(self) -> int:
        return sum(self.lines)

    @property
    def mean_size(self) -> float:
        return self.bytes / max(self.total, 1)

    def add(self, patients: int) -> None:
        from bench.population import generate

        end = self.patients + patients
        for first in range(self.patients, end, self.block):
            seq = generate(self.knowledge, min(self.block, end - first), block=self.block,
                           fhir_server=self.fhir_server, first=first, gen=self.gen)
            thread = self.blocks % len(self.lines)
            with self.file(thread).open("a") as fh:
                for h, b in seq:
                    body = json.dumps(b, separators=(",", ":"))
                    self.bytes += len(body)
                    fh.write(f"pgx-{h} {body}\n")
                    if h == "order-select" and _has_cpic(self.knowledge, b):
                        self.cpic += 1
            if len(self.head) < self.keep:
                self.head += seq[: self.keep - len(self.head)]
            self.lines[thread] += len(seq)
            self.blocks += 1
        self.patients = end

    def top_up(self, offsets: list[int], wanted: int) -> int:
        """Add patients until every thread's file has `wanted` bodies beyond its offset (at most
        MAX_PATIENTS in all); how many patients were added."""
        before = self.patients
        while self.patients < MAX_PATIENTS and any(
                n - o < wanted for n, o in zip(self.lines, offsets or [0] * len(self.lines))):
            self.add(min(self.block * len(self.lines), MAX_PATIENTS - self.patients))
        return self.patients - before


def run_mix(*, duration: int = 10, connections: int = 32, patients: int = 3000, rounds: int = 3,
            peer_python: str | None = None, seed: int = 14) -> int:
    """`patients` is the least number generated: more are generated after the warm-up when pgx-cds would
    otherwise get a body twice in the measured rounds (a repeated body measures a cache hit)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from service.config import REPO_ROOT
    from service.pgx.knowledge import load_knowledge
    from tests.helpers import RedisProcess, ServiceProcess, free_port

    threads = 2
    patients = min(patients, MAX_PATIENTS)
    fhir_base = "https://fhir.bench.example/r4"
    knowledge = load_knowledge(REPO_ROOT / "cards")
    t0 = time.monotonic()
    # blocks of 8x connections: an order-sign is sent once its order-select has been answered
    block = 8 * connections
    tmp = Path(tempfile.mkdtemp(prefix="pgx-mix-"))
    bodies = _BodyFile(tmp / "bodies", knowledge, block=block, fhir_server=fhir_base, seed=seed, threads=threads)
    bodies.add(patients)
    # the warm-up bodies are other patients (the measured files are not touched before the rounds)
    warm = _BodyFile(tmp / "warm", knowledge, block=block, fhir_server=fhir_base, seed=seed + 1, threads=threads,
                     keep=300)
    warm.add(1500)
    print(f"generated {patients} patients, {bodies.total} bodies (mean {bodies.mean_size / 1024:.1f} KiB) "
          f"in {time.monotonic() - t0:.1f} s", flush=True)
    script = tmp / "mix.lua"
    script.write_text(_LUA % {"path": bodies.stem})
    warm_script = tmp / "warm.lua"
    warm_script.write_text(_LUA % {"path": warm.stem})

    procs: list = []
    redis = RedisProcess(port=free_port())
    redis.start()
    svc = None
    try:
        common = {"PGX_CDS_REDIS_URL": redis.url, "PGX_CDS_LOG_LEVEL": "info", "PGX_CDS_PROFILE": "dev"}
        svc = ServiceProcess(env=common).start("bench-mix")
        targets = [Target("pgx-cds", svc.url + "/cds-services/", svc.proc.pid,
                          "this service, 1 worker, request log at info")]
        port = free_port()
        bare = _start([sys.executable, "-m", "uvicorn", "bench.baseline:create_app", "--factory"], port,
                      {"PGX_BENCH_RESPONSE_BYTES": "0"}, procs)
        targets.append(Target("bare", f"http://127.0.0.1:{port}/cds-services/", bare.pid,
                              "bare FastAPI POST: orjson-parses the body, answers {\"cards\":[]}"))
        py, why_not = _peer_python(peer_python)
        if py:
            port = free_port()
            peer = _start([py, "-m", "uvicorn", "bench.peer_healthchain:create_app", "--factory"], port, {}, procs)
            version = subprocess.run([py, "-c", "import importlib.metadata as m; print(m.version('healthchain'))"],
                                     capture_output=True, text=True).stdout.strip()
            targets.append(Target("healthchain", f"http://127.0.0.1:{port}/cds-services/", peer.pid,
                                  f"HealthChain {version} CDSHooksService, one fixed card"))
        rate = 0.0  # pgx-cds's highest rate so far (warm-up, then each round)
        for t in targets:
            _post_all(t.url, [(h, json.dumps(b).encode()) for h, b in warm.head])
            # and a short run under load (not counted)
            run, _ = _wrk(t.url, warm_script, connections=connections, threads=threads, duration=3, offsets=[],
                          pid=t.pid, redis_pid=None)
            if t.name == "pgx-cds":
                rate = run.rps
        for rnd in range(rounds):
            for t in (targets if rnd % 2 == 0 else list(reversed(targets))):
                if t.name == "pgx-cds":
                    # enough bodies that pgx-cds gets each at most once (its best rate so far, with a margin;
                    # the other targets go round the files: a repeated body costs them the same)
                    t1 = time.monotonic()
                    added = bodies.top_up(t.offsets, int(rate * duration * 2 / threads) + 1)
                    if added:
                        print(f"  + {added} patients for pgx-cds's rate ({rate:.0f} req/s): {bodies.patients} "
                              f"patients, {bodies.total} bodies in {time.monotonic() - t1:.1f} s", flush=True)
                run, t.offsets = _wrk(t.url, script, connections=connections, threads=threads, duration=duration,
                                      offsets=t.offsets, pid=t.pid,
                                      redis_pid=redis.proc.pid if t.name == "pgx-cds" else None)
                t.runs.append(run)
                if t.name == "pgx-cds":
                    rate = max(rate, run.rps)
                print(f"  round {rnd + 1} {t.name:<12} {run.rps:8.0f} req/s  p99 {run.p99_ms:7.2f} ms  "
                      f"CPU {run.cpu_us:6.0f} us/req  errors {run.errors}", flush=True)
        # what the traffic looked like: cards in pgx-cds's answers to the first 1,000 bodies, in send order
        sample = [(h, json.dumps(b).encode()) for h, b in bodies.head]
        answers = _post_all(targets[0].url, sample)
        with_cards = sum(1 for a in answers if json.loads(a)["cards"])
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        if svc is not None:
            svc.stop()
            if svc.log_path is not None:
                svc.log_path.unlink(missing_ok=True)
        redis.stop()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    print_mix(targets, connections=connections, duration=duration, patients=bodies.patients,
              mean_size=bodies.mean_size, card_share=with_cards / len(answers),
              cpic_share=bodies.cpic / bodies.patients, why_no_peer=why_not, lines=bodies.lines)
    return 0


def _has_cpic(knowledge, body: dict) -> bool:
    from service.fhir.orders import extract_orders
    from service.pgx.drugs import recognise

    ctx = body["context"]
    return any(recognise(knowledge, o) for o in extract_orders(ctx["draftOrders"], ctx.get("selections")))


def print_mix(targets: list[Target], *, connections: int, duration: int, patients: int, mean_size: float,
              card_share: float, cpic_share: float, why_no_peer: str, lines: list[int] | None = None) -> None:
    bare = next(t for t in targets if t.name == "bare")
    rounds = len(bare.runs)
    print(f"\ndistinct-patient mix: {patients} patients, order-select then order-sign each, mean body "
          f"{mean_size / 1024:.1f} KiB, {cpic_share:.0%} order a CPIC drug, {card_share:.1%} of answers carry a card;")
    print(f"wrk -c{connections}, {rounds} alternating rounds of {duration} s, {os.cpu_count()} cores shared with wrk "
          f"(and with other work on this machine: compare only within the run)\n")
    print(f"{'target':<12} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} {'errors':>6} "
          f"{'req/s vs bare':>14} {'p99 vs bare':>12} {'CPU vs bare':>12}  note")
    for t in targets:
        mean = lambda f: statistics.fmean(getattr(r, f) for r in t.runs)  # noqa: E731
        ratio = lambda f: [getattr(r, f) / getattr(b, f) for r, b in zip(t.runs, bare.runs)]  # noqa: E731
        rr, pr, cr = ratio("rps"), ratio("p99_ms"), ratio("cpu_us")
        fmt = lambda xs: f"{statistics.fmean(xs):.2f}x" + (f" ({min(xs):.2f}-{max(xs):.2f})" if len(xs) > 1 else "")  # noqa: E731
        redis = f"; Redis +{mean('redis_cpu_us'):.0f} us/req" if t.name == "pgx-cds" else ""
        print(f"{t.name:<12} {mean('rps'):>8.0f} {mean('p50_ms'):>7.2f} {mean('p99_ms'):>7.2f} {mean('cpu_us'):>10.0f} "
              f"{sum(r.errors for r in t.runs):>6} {fmt(rr):>14} {fmt(pr):>12} {fmt(cr):>12}  {t.note}{redis}")
    print("\nbodies sent in the measured rounds vs distinct among them (a repeat is a cache hit for pgx-cds; "
          "the other targets answer every body alike):")
    for t in targets:
        if t.offsets:
            sent, distinct = t.sent(), t.distinct(lines or [])
            note = "" if sent == distinct else f"  ({sent - distinct} repeats)"
            print(f"  {t.name:<12} {sent:>8} sent, {distinct:>8} distinct{note}")
    if why_no_peer:
        print(f"\n  peer not measured: {why_no_peer}")
    ours = next(t for t in targets if t.name == "pgx-cds")
    rr = statistics.fmean(r.rps / b.rps for r, b in zip(ours.runs, bare.runs))
    pr = statistics.fmean(r.p99_ms / b.p99_ms for r, b in zip(ours.runs, bare.runs))
    cr = statistics.fmean(r.cpu_us / b.cpu_us for r, b in zip(ours.runs, bare.runs))
    checks = [(f"throughput >= 0.7x bare ({rr:.2f}x)", rr >= 0.7), (f"p99 <= 1.5x bare ({pr:.2f}x)", pr <= 1.5),
              (f"CPU per request <= 1.5x bare ({cr:.2f}x)", cr <= 1.5)]
    peer = next((t for t in targets if t.name == "healthchain"), None)
    if peer is not None:
        vs = statistics.fmean(r.rps / p.rps for r, p in zip(ours.runs, peer.runs))
        checks.append((f">= 2x the peer's throughput ({vs:.2f}x)", vs >= 2))
    print()
    for label, ok in checks:
        print(f"  [{'PASS' if ok else 'MISS'}] {label}")
