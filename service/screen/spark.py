"""The Spark engine: the same per-patient evaluation as the local engine, grouped and run by Apache Spark.

Spark reads the NDJSON lines (gzip too; a local path, HDFS or an object store URL such as ``s3a://``),
keys each resource by its patient, groups by patient, and evaluates each group in the Python workers
with :func:`service.screen.local.evaluate_group` (so :func:`service.evaluate.evaluate_patient`, the hooks'
engine); partial tallies are merged in the driver. The worklist is sorted by patient and written by
Spark as text parts (``worklist-parts/``); for a local output directory the parts are concatenated, in
order, into ``worklist.ndjson`` (byte-identical to the local engine's).

Needs ``pip install 'pgx-cds[spark]'`` (PySpark) and Java 17+; on a cluster every executor needs the
``pgx-cds`` package and its ``cards/`` knowledge (a container image, or ``--py-files`` plus
``PGX_CDS_KNOWLEDGE_DIR``): see README "Population screening".
"""

from __future__ import annotations

import shutil
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson


def _key_lines(lines: Iterable[str]) -> Iterator[tuple[str, tuple[str, str]]]:
    """(patient id, (resource type, line)) for patient resources; ("", (skip reason, "")) otherwise."""
    from service.fhir.prefetch import PATIENT_TYPES
    from service.screen.source import patient_of

    for line in lines:
        if not line.strip():
            continue
        try:
            res = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield "", ("skipped: not JSON", "")
            continue
        rtype = res.get("resourceType") if isinstance(res, dict) else None
        if rtype not in PATIENT_TYPES:
            yield "", (f"skipped: {rtype if isinstance(rtype, str) else 'no resourceType'}"[:60], "")
            continue
        pid = patient_of(res)
        if pid is None:
            yield "", (f"skipped: {rtype} without a patient", "")
            continue
        yield pid, (rtype, line)


def _evaluate_partition(groups: Iterable[tuple[str, Iterable[tuple[str, str]]]], today: date,
                        since: datetime | None, drugs: tuple[str, ...], memo: bool = True) -> Iterator[tuple[str, str, str]]:
    """('w', patient id, worklist line) / ('e', patient id, error) per patient, then ('t', '', tally state)."""
    from service.screen import local
    from service.screen.summary import Tally

    if "knowledge" not in local._STATE:
        local._init(None, None, today, since, drugs, memo)
    tally = Tally()
    for pid, items in groups:
        lines = [line.encode() for _, line in items]
        try:
            out = local.evaluate_group(pid, lines, tally)
        except Exception as exc:  # noqa: BLE001 - recorded, never dropped (as the local engine)
            yield "e", pid, orjson.dumps({"patient": f"Patient/{pid}", "error": type(exc).__name__}).decode()
            continue
        if out is not None:
            yield "w", pid, orjson.dumps(out).decode()
    yield "t", "", orjson.dumps(tally.state()).decode()


def session(master: str | None, app_name: str = "pgx-cds-screen") -> Any:
    from pyspark.sql import SparkSession

    from service.config import set_env

    set_env("PYSPARK_PYTHON", sys.executable, only_if_unset=True)
    builder = SparkSession.builder.appName(app_name).config("spark.ui.enabled", "false")
    if master:
        builder = builder.master(master)
    return builder.getOrCreate()


def run(input_path: Path | str, output: Path, *, master: str | None, since: datetime | None,
        drugs: tuple[str, ...], today: date, progress: Any, partitions: int = 0, memo: bool = True) -> Any:
    from pyspark import StorageLevel

    from service.screen import local, source
    from service.screen.summary import Tally

    t0 = time.perf_counter()
    spark = session(master)
    sc = spark.sparkContext
    path = Path(str(input_path))
    files = [str(f) for f in source.input_files(path)] if path.exists() else [str(input_path)]
    if not files:
        raise FileNotFoundError(f"no NDJSON files (*.ndjson, *.ndjson.gz) in {input_path}")
    parts = partitions or max(2, sc.defaultParallelism * 2)
    progress.note(f"spark: {sc.master}, {parts} partitions")
    keyed = sc.textFile(",".join(files)).mapPartitions(_key_lines).persist(StorageLevel.MEMORY_AND_DISK)
    tally = Tally()
    tally.resources.update(keyed.map(lambda kv: kv[1][0]).countByValue())
    timings = {"read_s": round(time.perf_counter() - t0, 3)}

    t1 = time.perf_counter()
    results = (keyed.filter(lambda kv: kv[0] != "").groupByKey(numPartitions=parts)
               .mapPartitions(lambda it: _evaluate_partition(it, today, since, drugs, memo))
               .persist(StorageLevel.MEMORY_AND_DISK))
    for state in results.filter(lambda r: r[0] == "t").map(lambda r: r[2]).collect():
        tally.merge(Tally.from_state(orjson.loads(state)))
    errors = results.filter(lambda r: r[0] == "e").map(lambda r: (r[1], r[2])).sortByKey().values().collect()
    out_parts = output / "worklist-parts"
    shutil.rmtree(out_parts, ignore_errors=True)
    (results.filter(lambda r: r[0] == "w").map(lambda r: (r[1], r[2])).sortByKey(numPartitions=parts)
     .values().saveAsTextFile(str(out_parts)))
    timings["evaluate_s"] = round(time.perf_counter() - t1, 3)

    t2 = time.perf_counter()
    worklist = output / "worklist.ndjson"
    with open(worklist, "wb") as out:
        for part in sorted(out_parts.glob("part-*")):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    shutil.rmtree(out_parts, ignore_errors=True)
    if errors:
        (output / "errors.ndjson").write_text("".join(e + "\n" for e in errors))
    keyed.unpersist()
    results.unpersist()
    timings["merge_s"] = round(time.perf_counter() - t2, 3)
    timings["total_s"] = round(time.perf_counter() - t0, 3)
    progress.done()
    return local.Result(tally=tally, worklist=worklist, patients=tally.patients["read"] + tally.patients["skipped_since"],
                        timings=timings, workers=sc.defaultParallelism, buckets=parts, errors=len(errors))
