"""Screening CPU per patient in one warm worker, in process (steadier than a full run on a shared machine).

    python -m bench.screen_inproc [--patients 20000] [--measure 6000] [--rounds 3] [--stages] [--keep DIR]

Generates a synthetic export once (tests/screen/synth.py, the benchmark's generator, kept in DIR), partitions
it as the local engine does, initialises this process as a pool worker (service.screen.local._init, with the
phenotype memo), warms it on the first 2,000 patients, then times ``local.evaluate_group`` over the next
``--measure`` patients with ``time.process_time`` (every round; the minimum is the figure to compare).
``--stages`` also splits one round by stage (patient data, build_profile, phenotypes, re-ordered medications,
summary). ``--instructions`` instead counts the instructions per patient of one measured round under
``valgrind --tool=callgrind`` (instrumentation switched on only around that round): the same count whatever
else the machine is doing, so two versions compare exactly (about 20 s for the default 600 patients).
Partition and merge are not included: ``bench.screen`` measures the whole command.

To compare two versions in the same minutes, run it alternately from each checkout (e.g. one made with
``git worktree add``); the export in DIR is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

TODAY = date(2026, 12, 3)
WARM = 2000


def _groups(export: Path, work: Path) -> dict[str, list[bytes]]:
    from service.screen import source

    parts = work / "p"
    if not (work / ".complete").exists():
        source.partition(source.tasks(source.input_files(export)), parts, 8)
        (work / ".complete").write_text("")
    groups: dict[str, list[bytes]] = {}
    for b in range(8):
        groups.update(source.read_bucket([parts], b))
    return groups


def _stage_timers() -> dict[str, float]:
    """Wrap the stages evaluate_patient calls (service.evaluate's names) with process_time counters."""
    import service.evaluate as ev

    spent: dict[str, float] = {}

    def wrap(name: str) -> None:
        f = getattr(ev, name)

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.process_time()
            try:
                return f(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.process_time() - t0
        setattr(ev, name, timed)

    for name in ("_patient_data", "build_profile", "phenotype", "renewal_order", "evaluate_order", "summarize_profile"):
        wrap(name)
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=20_000, help="size of the synthetic export")
    ap.add_argument("--measure", type=int, default=6_000, help="patients timed per round (after the warm-up)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tested", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stages", action="store_true", help="split one more round by stage")
    ap.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "pgx-cds-bench-screen")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions per patient under callgrind (--measure defaults to 600)")
    ap.add_argument("--under-callgrind", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.instructions and not a.under_callgrind:
        return _instructions(a)
    from service.screen import local
    from service.screen.summary import Tally
    from tests.screen.synth import write_export  # the test suite's generator (needs the test extras)

    export = a.keep / f"export-{a.patients}-{a.seed}-{a.tested}"
    if not (export / ".complete").exists():
        write_export(export, a.patients, seed=a.seed, tested=a.tested, shards=max(1, a.patients // 250_000))
        (export / ".complete").write_text("")
    groups = _groups(export, a.keep / f"inproc-parts-{a.patients}-{a.seed}-{a.tested}")
    pids = sorted(groups)
    measured = pids[WARM:WARM + a.measure]
    local._init(None, None, TODAY, None, (), True)

    def run(ps: list[str]) -> None:
        tally = Tally()
        for p in ps:
            local.evaluate_group(p, groups[p], tally)

    run(pids[:WARM])
    if a.under_callgrind:  # one round, instrumented alone (valgrind runs the rest uninstrumented)
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
        run(measured)
        subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True, capture_output=True)
        return
    rounds = []
    for _ in range(a.rounds):
        t0 = time.process_time()
        run(measured)
        rounds.append(1000 * (time.process_time() - t0) / len(measured))
    line: dict[str, Any] = {"patients_timed": len(measured), "cpu_ms_per_patient": [round(r, 3) for r in rounds],
                            "min_cpu_ms_per_patient": round(min(rounds), 3)}
    if a.stages:
        spent = _stage_timers()
        t0 = time.process_time()
        run(measured)
        total = time.process_time() - t0
        line["stages_ms_per_patient"] = {k: round(1000 * v / len(measured), 3) for k, v in
                                         sorted(spent.items(), key=lambda kv: -kv[1])}
        line["stages_total_ms_per_patient"] = round(1000 * total / len(measured), 3)
    print(json.dumps(line), flush=True)


def _instructions(a: argparse.Namespace) -> None:
    measure = a.measure if a.measure != 6_000 else 600
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/cg.out",
               sys.executable, "-m", "bench.screen_inproc", "--under-callgrind", "--measure", str(measure),
               "--patients", str(a.patients), "--tested", str(a.tested), "--seed", str(a.seed), "--keep", str(a.keep)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"callgrind run failed ({done.returncode}): {done.stderr[-2000:]}")
    print(json.dumps({"patients_timed": measure, "instructions_per_patient": round(int(found.group(1)) / measure),
                      "python": sys.version.split()[0]}), flush=True)


if __name__ == "__main__":
    main()
