"""The embedded engine: partition the export by patient on disk, evaluate buckets in a process pool.

Phase 1 (partition): W jobs read byte ranges of the NDJSON files and append each patient resource to its
bucket file (service.screen.source). Phase 2 (evaluate): each bucket is grouped in memory, its patients are
evaluated in patient-id order with service.evaluate.evaluate_patient, and the findings are written to a
sorted worklist part; partial tallies come back to the parent. The parts are merged in patient-id order.
Memory per worker is bounded by one bucket (the input size / bucket count), not by the export.
"""

from __future__ import annotations

import gc
import heapq
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from service.screen import source

_STATE: dict[str, Any] = {}


@dataclass
class Options:
    input: Path
    output: Path
    workers: int = 0  # 0: every core
    since: datetime | None = None
    drugs: tuple[str, ...] = ()
    today: date = field(default_factory=lambda: datetime.now(timezone.utc).date())
    keep_work: bool = False
    memo: bool = True  # service.screen.memo (same output; off: every patient through the plain stages)
    ranges: bool = True  # patient-id range buckets (no merge) where the input allows; off: hash buckets + merge
    knowledge: Any = None  # the knowledge, or a function that loads it (called while the workers partition);
    # workers inherit it (forked) or unpickle it (spawned). None: the service's loader with the settings' directory
    start_method: str | None = None  # how workers start: None chooses (see _context), or "fork" / "spawn"


@dataclass
class Result:
    tally: Any
    worklist: Path
    patients: int
    timings: dict[str, float]
    workers: int
    buckets: int
    errors: int


def _init(bytes_done: Any, patients_done: Any, today: date, since: datetime | None, drugs: tuple[str, ...],
          memo: bool = True, knowledge: Any = None) -> None:
    """Worker start: the settings, and the knowledge the parent loaded (inherited by a forked worker, unpickled
    by a spawned one) or, without one, loaded here with the service's own loader."""
    from service.config import Settings
    from service.observability.logging import configure_logging
    from service.pgx.knowledge import load_knowledge
    from service.pgx.policy import EnginePolicy

    settings = Settings()
    configure_logging(settings.log_level)  # the service's JSON lines at its level, not structlog's defaults
    if knowledge is None:
        knowledge = load_knowledge(settings.knowledge_dir)
    _STATE.update(policy=EnginePolicy.of(settings), knowledge=knowledge, bytes=bytes_done,
                  patients=patients_done, today=today, since=since, drugs=drugs, memo=None)
    if memo:
        from service.screen.memo import PhenotypeMemo

        _STATE["memo"] = PhenotypeMemo()
    gc.freeze()  # the knowledge base lives as long as the worker: the cyclic GC need not scan it again


def _init_partition(bytes_done: Any) -> None:
    """Partition worker start: reading and bucketing lines needs no knowledge, nor the engine's modules."""
    _STATE.update(bytes=bytes_done)


def _knowledge(given: Any) -> Any:
    if callable(given):
        return given()
    if given is not None:
        return given
    from service.config import Settings
    from service.pgx.knowledge import load_knowledge

    return load_knowledge(Settings().knowledge_dir)


def _add(counter: Any, n: int) -> None:
    if counter is not None and n:
        with counter.get_lock():
            counter.value += n


def _partition_job(task_list: list[tuple[str, int, int]], out_dir: str, buckets: int,
                   splits: list[bytes] | None = None) -> Counter[str]:
    return source.partition(task_list, Path(out_dir), buckets, on_progress=lambda n: _add(_STATE.get("bytes"), n),
                            splits=splits)


def _changed_since(resources: list[dict[str, Any]], since: datetime) -> bool:
    from service.fhir.patient_data import parse_fhir_datetime

    for r in resources:
        meta = r.get("meta")
        when = parse_fhir_datetime(meta["lastUpdated"]) if isinstance(meta, dict) and isinstance(
            meta.get("lastUpdated"), str) else None
        if when is None or when >= since:  # no lastUpdated: cannot tell, so screen it
            return True
    return False


def _order_key(raw: bytes, res: Any) -> tuple[str, str, bytes]:
    rtype = res.get("resourceType") if isinstance(res, dict) else None
    rid = res.get("id") if isinstance(res, dict) else None
    return (rtype if isinstance(rtype, str) else "", rid if isinstance(rid, str) else "", raw.rstrip(b"\r\n"))


def canonical_order(lines: list[bytes]) -> list[dict[str, Any]]:
    """The patient's resources parsed, ordered by (resource type, id, text): an export has no order across its
    files and Spark groups lines in any order, while the engine's answer can depend on the order of the
    record (e.g. the medicines listed as phenoconversion perpetrators). Both engines evaluate this order."""
    parsed = [(raw, orjson.loads(raw)) for raw in lines]
    parsed.sort(key=lambda p: _order_key(*p))
    return [res for _, res in parsed]


def _may_matter(res: dict[str, Any]) -> bool:
    """A resource the evaluation can say something about: a result (any Observation or DiagnosticReport) or a
    current medication. A patient with none of these gets no finding and counts as read only."""
    from service.evaluate import is_active

    rtype = res.get("resourceType")
    return rtype in ("Observation", "DiagnosticReport") or (
        rtype in ("MedicationRequest", "MedicationStatement") and is_active(res))


def evaluate_group(pid: str, lines: list[bytes], tally: Any) -> dict[str, Any] | None:
    """One patient's resource lines -> its worklist line (None without findings); counts into ``tally``."""
    from service.evaluate import evaluate_patient
    from service.screen.findings import findings, worklist_line

    resources = canonical_order(lines)
    since = _STATE.get("since")
    if since is not None and not _changed_since(resources, since):
        tally.patients["skipped_since"] += 1
        return None
    memo = _STATE.get("memo")
    if memo is None:
        ev = evaluate_patient(_STATE["knowledge"], _STATE["policy"], pid, resources, today=_STATE["today"])
        items = findings(ev, _STATE.get("drugs"))
    elif not any(_may_matter(r) for r in resources):
        tally.add_empty()  # no result and no current medication: evaluate_patient says nothing
        return None
    else:
        ev = evaluate_patient(_STATE["knowledge"], _STATE["policy"], pid, resources, today=_STATE["today"],
                              annotate=memo)
        items = findings(ev, _STATE.get("drugs"))
    tally.add(ev, items)
    return worklist_line(pid, items) if items else None


def _evaluate_job(dirs: list[str], bucket: int, out_dir: str | None, remove: bool = True
                  ) -> tuple[dict, int, int, bytes | None, bytes | None]:
    """One bucket's patients, in patient-id order. With ``out_dir``: its worklist and error lines go to sorted
    part files there, for the merge (hash buckets). Without: they come back as bytes, and the parent writes the
    buckets' bytes one after another (range buckets: that is the sorted worklist, no parts, no merge)."""
    from service.screen.summary import Tally

    tally = Tally()
    groups = source.read_bucket([Path(d) for d in dirs], bucket, remove=remove)
    line_of = part_line if out_dir is not None else _plain_line
    out: list[bytes] = []
    err: list[bytes] = []
    n = errors = 0
    for pid in sorted(groups):
        try:
            line = evaluate_group(pid, groups.pop(pid), tally)
        except Exception as exc:  # noqa: BLE001 - one patient never stops the run; recorded, not dropped
            errors += 1
            err.append(line_of(pid, {"patient": f"Patient/{pid}", "error": type(exc).__name__}))
            line = None
        if line is not None:
            out.append(line_of(pid, line))
        n += 1
        if n % 256 == 0:
            _add(_STATE.get("patients"), 256)
    _add(_STATE.get("patients"), n % 256)
    if out_dir is None:
        return tally.state(), n, errors, b"".join(out), b"".join(err)
    (Path(out_dir) / f"w{bucket:04d}.ndjson").write_bytes(b"".join(out))
    if err:
        (Path(out_dir) / f"e{bucket:04d}.ndjson").write_bytes(b"".join(err))
    return tally.state(), n, errors, None, None


def _plain_line(pid: str, obj: Any) -> bytes:
    return orjson.dumps(obj) + b"\n"


def part_line(pid: str, obj: Any) -> bytes:
    """A line of a sorted part: the patient id as hex of its UTF-8 bytes, a tab, the JSON. Hex keeps the byte
    order of UTF-8, which is the code-point order ``sorted()`` gives the ids, and a tab sorts before any hex
    digit, so the parts merge by comparing whole lines as bytes, without parsing the JSON of any."""
    return pid.encode().hex().encode() + b"\t" + orjson.dumps(obj) + b"\n"


def merge_sorted(parts: list[Path], dest: Path) -> int:
    """Merge sorted parts (lines of ``part_line``, each part sorted by patient) into one file of their JSON
    lines sorted by patient; returns lines."""
    files = [open(p, "rb") for p in parts]
    n = 0
    try:
        with open(dest, "wb", buffering=1 << 20) as out:
            for line in heapq.merge(*files):
                out.write(line[line.index(b"\t") + 1:])
                n += 1
    finally:
        for f in files:
            f.close()
    return n


def run(opts: Options, progress: Any) -> Result:
    """Screen a directory export. ``progress`` is a service.screen.progress reporter."""
    from service.screen.summary import Tally

    t0 = time.perf_counter()
    files = source.input_files(opts.input)
    if not files:
        raise FileNotFoundError(f"no NDJSON files (*.ndjson, *.ndjson.gz) in {opts.input}")
    workers = opts.workers or os.cpu_count() or 1
    all_tasks = source.tasks(files)
    # patient-id ranges from a sample of the export (plain files): the buckets' outputs are then the worklist in
    # order, written as they come; gzip input (or ranges off) hashes patients to buckets and merges sorted parts
    buckets, splits = source.plan_buckets(all_tasks, workers, opts.ranges)
    work = opts.output / ".screen-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (opts.output / "errors.ndjson").unlink(missing_ok=True)  # this run's own, if any (not an earlier run's)
    ctx = _context(opts.start_method)
    bytes_done = ctx.Value("q", 0)
    patients_done = ctx.Value("q", 0)
    timings: dict[str, float] = {}
    tally = Tally()
    errors = 0
    n_patients = 0
    try:
        # phase 1: workers that need no knowledge partition the export; meanwhile this process loads the
        # knowledge and the engine's modules (otherwise a serial second before any line is read)
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_partition,
                                 initargs=(bytes_done,)) as pool:
            groups = source.split_tasks(all_tasks, workers)
            dirs = [str(work / f"p{i}") for i in range(len(groups))]
            progress.phase("reading", total=sum(source.task_weight(t) for g in groups for t in g) or 1, unit="B")
            futs = [pool.submit(_partition_job, g, d, buckets, splits) for g, d in zip(groups, dirs)]
            knowledge = _knowledge(opts.knowledge)
            import service.screen.findings  # noqa: F401 - the evaluation's modules, inherited by forked workers
            _drive(futs, progress, lambda: bytes_done.value)
            for fu in futs:
                tally.resources.update(fu.result())
        timings["read_s"] = round(time.perf_counter() - t0, 3)

        # phase 2: evaluation workers, started now: forked ones inherit the knowledge just loaded
        with ProcessPoolExecutor(workers, mp_context=_context(opts.start_method), initializer=_init,
                                 initargs=(bytes_done, patients_done, opts.today, opts.since, opts.drugs,
                                           opts.memo, knowledge)) as pool:
            t1 = time.perf_counter()
            progress.phase("evaluating", total=tally.resources.get("Patient", 0) or None, unit="patients")
            opts.output.mkdir(parents=True, exist_ok=True)
            worklist = opts.output / "worklist.ndjson"
            if splits is not None:
                n_patients, errors = _evaluate_in_order(pool, workers, dirs, buckets, not opts.keep_work, tally,
                                                        opts.output, progress, patients_done)
            else:
                out_dir = work / "out"
                out_dir.mkdir()
                futs = [pool.submit(_evaluate_job, dirs, b, str(out_dir), not opts.keep_work)
                        for b in range(buckets)]
                _drive(futs, progress, lambda: patients_done.value)
                for fu in futs:
                    state, n, e, _, _ = fu.result()
                    tally.merge(Tally.from_state(state))
                    n_patients += n
                    errors += e
            timings["evaluate_s"] = round(time.perf_counter() - t1, 3)

        timings["merge_s"] = 0.0  # none for range buckets: written in order
        if splits is None:
            t2 = time.perf_counter()
            merge_sorted(sorted(out_dir.glob("w*.ndjson")), worklist)
            err_parts = sorted(out_dir.glob("e*.ndjson"))
            if err_parts:
                merge_sorted(err_parts, opts.output / "errors.ndjson")
            timings["merge_s"] = round(time.perf_counter() - t2, 3)
    finally:
        if not opts.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    timings["total_s"] = round(time.perf_counter() - t0, 3)
    progress.done()
    return Result(tally=tally, worklist=worklist, patients=n_patients, timings=timings, workers=workers,
                  buckets=buckets, errors=errors)


def _evaluate_in_order(pool: Any, workers: int, dirs: list[str], buckets: int, remove: bool, tally: Any,
                       output: Path, progress: Any, patients_done: Any) -> tuple[int, int]:
    """Evaluate range buckets and write their worklist (and error) lines in bucket order, as they complete: a
    few buckets in flight, the finished ones held until those before them are written. The files get their
    names once complete (a failed run leaves neither a partial worklist nor a partial file)."""
    from service.screen.summary import Tally

    n_patients = errors = 0
    pending: dict[int, tuple[bytes, bytes]] = {}
    inflight: dict[Any, int] = {}
    nxt_submit = nxt_write = 0
    part, err_part = output / "worklist.ndjson.partial", output / "errors.ndjson.partial"
    try:
        with open(part, "wb") as out, open(err_part, "wb") as err:
            while nxt_write < buckets:
                while nxt_submit < buckets and len(inflight) <= workers and len(pending) < 2 * workers + 2:
                    inflight[pool.submit(_evaluate_job, dirs, nxt_submit, None, remove)] = nxt_submit
                    nxt_submit += 1
                finished, _ = wait(list(inflight), timeout=0.25, return_when=FIRST_COMPLETED)
                for fu in finished:
                    b = inflight.pop(fu)
                    state, n, e, lines, err_lines = fu.result()  # a failed job stops the run with its error
                    tally.merge(Tally.from_state(state))
                    n_patients += n
                    errors += e
                    pending[b] = (lines or b"", err_lines or b"")
                while nxt_write in pending:
                    lines, err_lines = pending.pop(nxt_write)
                    out.write(lines)
                    err.write(err_lines)
                    nxt_write += 1
                progress.update(patients_done.value)
    except BaseException:
        part.unlink(missing_ok=True)  # a failed run leaves no partial files behind
        err_part.unlink(missing_ok=True)
        raise
    part.replace(output / "worklist.ndjson")
    if errors:
        err_part.replace(output / "errors.ndjson")
    else:
        err_part.unlink()
    return n_patients, errors


def _context(method: str | None = None) -> Any:
    """How pool workers start. On Linux, when this process runs no other thread, they are forked: they inherit
    the imported modules and the loaded knowledge instead of importing and loading them again (about a second
    of CPU each, before any patient is read). Otherwise (another thread, whose locks a fork could copy held;
    other platforms) they are spawned, and the knowledge reaches them pickled. ``method`` forces one."""
    if method is not None:
        return mp.get_context(method)
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return mp.get_context("fork")
    return mp.get_context("spawn")


def _drive(futs: list, progress: Any, value: Any) -> None:
    pending = set(futs)
    while pending:
        finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
        for fu in finished:
            fu.result()  # a failed job stops the run with its error
        progress.update(value())
    progress.update(value())
