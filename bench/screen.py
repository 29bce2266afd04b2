"""Screening benchmark: patients/s and peak memory of `pgx-cds screen` on a synthetic export.

    python -m bench.screen --patients 100000 1000000 [--engine local|spark|both] [--workers 2] [--keep DIR]

For each size: generates the export once per size and seed (tests/screen/synth.py, kept in DIR, default
$TMPDIR/pgx-cds-bench-screen), then in the same run

1. the baseline: the raw read + group pass alone (the local engine's own partition of the NDJSON into
   on-disk buckets and the grouping of every bucket by patient with each resource parsed, as the evaluation
   phase does it, no evaluation), with the same number of worker processes;
2. the real command (`python -m service.cli screen`) per engine, in a subprocess whose whole process tree
   (parent, pool workers; for Spark the JVM and its Python workers) is sampled every 100 ms from /proc for
   resident memory (summed).

Prints one JSON line per run: wall time, patients/s, CPU, peak RSS of the tree, and ``x_baseline`` (wall
time as a multiple of the baseline pass). With ``--engine both`` the Spark worklist is compared byte for byte
with the local one. The machine's load average is printed with each line (the bench does not control it),
and so is the interpreter: run the bench with the Python whose figures you want (``.venv-opt/bin/python -m
bench.screen``, a venv made by ``make install PY=/usr/bin/python3.11 VENV=.venv-opt``, runs everything on
Debian's PGO/LTO build; see the README).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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


class TreeSampler:
    """Peak resident memory of a process and all its descendants (summed), sampled every 100 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_sum, self.peak_one = pid, 0, 0
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = [_rss(p) for p in _tree(self.pid)]
            self.peak_sum = max(self.peak_sum, sum(sizes))
            self.peak_one = max(self.peak_one, max(sizes, default=0))
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._th.join()


# ---------------------------------------------------------------------------------- baseline pass


def _group_job(dirs: list[str], bucket: int) -> tuple[int, int]:
    import orjson

    from service.screen import source

    groups = source.read_bucket([Path(d) for d in dirs], bucket)
    n = 0
    for pid in sorted(groups):
        n += len([orjson.loads(line) for line in groups.pop(pid)])
    return bucket, n


def _partition_job(tasks: list, out_dir: str, buckets: int, splits: list | None = None) -> dict:
    from service.screen import source

    return dict(source.partition(tasks, Path(out_dir), buckets, splits=splits))


def baseline_pass(export: Path, work: Path, workers: int) -> dict:
    """The read + group pass alone (what the local engine does before and around the evaluation)."""
    from service.screen import local, source

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.sync()  # as run_once: nothing from before waiting to be written
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    files = source.input_files(export)
    all_tasks = source.tasks(files)
    buckets, splits = source.plan_buckets(all_tasks, workers)  # the engine's buckets: id ranges (hash for gzip)
    with ProcessPoolExecutor(workers, mp_context=local._context()) as pool:  # workers start as the engine's do
        groups = source.split_tasks(all_tasks, workers)
        dirs = [str(work / f"p{i}") for i in range(len(groups))]
        list(pool.map(_partition_job, groups, dirs, [buckets] * len(groups), [splits] * len(groups)))
        resources = sum(n for _, n in pool.map(_group_job, [dirs] * buckets, range(buckets)))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(work, ignore_errors=True)
    return {"wall_s": round(wall, 2), "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
            "resources": resources}


# ---------------------------------------------------------------------------------- the command


def run_once(export: Path, out: Path, engine: str, workers: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "service.cli", "screen", "--input", str(export), "--output", str(out),
           "--engine", engine, "--format", "ndjson", "--quiet", *extra]
    if engine == "local":
        cmd += ["--workers", str(workers)]
    else:
        cmd += ["--spark-master", f"local[{workers}]"]
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # start with nothing waiting to be written (the export just generated, an earlier run's output)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"screen failed ({proc.returncode}): {stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    n = summary["patients"]["read"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"engine": engine, "workers": workers, "patients": n, "wall_s": round(wall, 2),
            "patients_per_s": round(n / wall), "cpu_s": round(cpu, 1),
            "cpu_ms_per_patient": round(1000 * cpu / max(n, 1), 3),
            "peak_rss_tree_mb": round(sampler.peak_sum / 2**20), "peak_rss_one_process_mb": round(sampler.peak_one / 2**20),
            "timings": summary["timings"], "input_mb": round(summary["input"]["bytes"] / 2**20),
            "worklist_lines": summary["patients"]["with_findings"],
            "load_avg_1m": {"start": round(load, 1), "end": round(os.getloadavg()[0], 1)},
            "python": interpreter()}


def interpreter() -> str:
    """The CPython that ran the command (this one). How it was built matters: one built without profile-guided
    and link-time optimisation (pyenv's default build) runs pure-Python code markedly slower than the PGO/LTO
    builds of the python:3.11-slim image and of Debian's packages; sysconfig does not always say which."""
    import platform

    return f"{platform.python_version()} {sys.executable}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, nargs="+", default=[100_000])
    ap.add_argument("--engine", choices=("local", "spark", "both"), default="local")
    ap.add_argument("--spark-max", type=int, default=100_000, help="largest size run on Spark (default 100k)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tested", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "pgx-cds-bench-screen")
    a = ap.parse_args()
    from tests.screen.synth import write_export  # the test suite's generator (needs the test extras)

    engines = ("local", "spark") if a.engine == "both" else (a.engine,)
    for n in a.patients:
        export = a.keep / f"export-{n}-{a.seed}-{a.tested}"
        if not (export / ".complete").exists():
            t = time.perf_counter()
            write_export(export, n, seed=a.seed, tested=a.tested, shards=max(1, n // 250_000))
            (export / ".complete").write_text(str(time.perf_counter() - t))
        base = None if a.no_baseline else baseline_pass(export, a.keep / f"baseline-work-{n}", a.workers)
        outs = {}
        for engine in engines:
            if engine == "spark" and n > a.spark_max:
                continue
            outs[engine] = a.keep / f"out-{n}-{engine}"
            res = run_once(export, outs[engine], engine, a.workers, [])
            line = {"tested_share": a.tested, **res}
            if base:
                line["baseline_read_group"] = base
                line["x_baseline"] = round(res["wall_s"] / base["wall_s"], 2)
            if engine == "spark" and "local" in outs:
                line["worklist_identical_to_local"] = (
                    (outs["spark"] / "worklist.ndjson").read_bytes() == (outs["local"] / "worklist.ndjson").read_bytes())
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
