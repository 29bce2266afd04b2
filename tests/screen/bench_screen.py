"""Screening benchmark: patients/s and peak memory of `pgx-cds screen` on a synthetic export.

    python -m tests.screen.bench_screen --patients 100000 [--engine local] [--workers 2] [--keep DIR]

Generates the export once per size and seed (in DIR, default $TMPDIR/pgx-cds-bench-screen), then runs the
real command in a subprocess and samples the resident memory of its whole process tree (parent and
workers, summed) every 100 ms. Prints one JSON line per run. Timings are end to end (start of the
command to the last output file) and include worker start-up; generation is not included.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.screen.synth import write_export

ROOT = Path(__file__).resolve().parents[2]


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def run_once(export: Path, out: Path, engine: str, workers: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "service.cli", "screen", "--input", str(export), "--output", str(out),
           "--engine", engine, "--format", "ndjson", "--workers", str(workers), "--quiet", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"sum": 0, "max": 0}

    def sample() -> None:
        while proc.poll() is None:
            sizes = [_rss(p) for p in _tree(proc.pid)]
            peak["sum"] = max(peak["sum"], sum(sizes))
            peak["max"] = max(peak["max"], max(sizes, default=0))
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    th.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"screen failed ({proc.returncode}): {stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    n = summary["patients"]["read"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"engine": engine, "workers": workers, "patients": n, "wall_s": round(wall, 2),
            "patients_per_s": round(n / wall), "cpu_s": round(cpu, 1),
            "cpu_ms_per_patient": round(1000 * cpu / max(n, 1), 3),
            "peak_rss_tree_mb": round(peak["sum"] / 2**20), "peak_rss_one_process_mb": round(peak["max"] / 2**20),
            "timings": summary["timings"], "input_mb": round(summary["input"]["bytes"] / 2**20),
            "worklist_lines": summary["patients"]["with_findings"],
            "load_avg_1m": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, nargs="+", default=[100_000])
    ap.add_argument("--engine", default="local")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tested", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "pgx-cds-bench-screen")
    a = ap.parse_args()
    for n in a.patients:
        export = a.keep / f"export-{n}-{a.seed}-{a.tested}"
        if not (export / ".complete").exists():
            t = time.perf_counter()
            write_export(export, n, seed=a.seed, tested=a.tested, shards=max(1, n // 250_000))
            (export / ".complete").write_text(str(time.perf_counter() - t))
        res = run_once(export, a.keep / f"out-{n}-{a.engine}", a.engine, a.workers, [])
        print(json.dumps({"tested_share": a.tested, **res}), flush=True)


if __name__ == "__main__":
    main()
