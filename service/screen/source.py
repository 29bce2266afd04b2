"""Reading a FHIR Bulk Data export (NDJSON, gzip too) and grouping its resources by patient on disk.

The export is never held in memory: each resource line is appended, unchanged, to one of B bucket files
chosen by a hash of its patient (an on-disk hash partition); a bucket then holds every resource of its
patients and is small enough (the input size / B) to group in memory. Plain files are split into byte
ranges so that one large file is still read by every worker.
"""

from __future__ import annotations

import bisect
import gzip
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from service.fhir.prefetch import PATIENT_TYPES

SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
CHUNK_BYTES = 32 << 20  # byte range of a plain file read by one task
BUCKET_TARGET_BYTES = 24 << 20  # input bytes per bucket (a bucket is grouped in memory by one worker)
_WRITE_BUFFER = 64 << 10


def input_files(path: Path) -> list[Path]:
    """NDJSON files of an export directory (sorted; hidden files and other suffixes ignored)."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


def describe(path: Path, files: list[Path]) -> dict[str, Any]:
    """What was read (no identifiers): the directory, file names and sizes."""
    return {"kind": "directory", "path": str(path), "files": len(files),
            "bytes": sum(f.stat().st_size for f in files),
            "names": [str(f.relative_to(path)) if path.is_dir() else f.name for f in files][:200]}


def tasks(files: list[Path], chunk: int | None = None) -> list[tuple[str, int, int]]:
    """(file, start, end) byte ranges: gzip files whole (end -1), plain files in chunks."""
    chunk = chunk or CHUNK_BYTES
    out = []
    for f in files:
        size = f.stat().st_size
        if f.name.endswith(".gz") or size <= chunk:
            out.append((str(f), 0, -1))
        else:
            out.extend((str(f), s, min(s + chunk, size)) for s in range(0, size, chunk))
    return out


def task_weight(task: tuple[str, int, int]) -> int:
    path, start, end = task
    size = os.path.getsize(path) if end < 0 else end - start
    return size * (4 if path.endswith(".gz") else 1)  # compressed bytes expand


def split_tasks(all_tasks: list[tuple[str, int, int]], n: int) -> list[list[tuple[str, int, int]]]:
    """Greedy balance of tasks over n workers by (estimated) bytes."""
    groups: list[list[tuple[str, int, int]]] = [[] for _ in range(n)]
    load = [0] * n
    for t in sorted(all_tasks, key=task_weight, reverse=True):
        i = load.index(min(load))
        groups[i].append(t)
        load[i] += task_weight(t)
    return [g for g in groups if g]


def bucket_count(total_bytes: int, workers: int) -> int:
    return max(workers * 4, min(4096, -(-total_bytes // BUCKET_TARGET_BYTES)))


def read_lines(path: str, start: int, end: int) -> Iterator[bytes]:
    """The lines that start within [start, end) of a file (the whole file when end < 0)."""
    if end < 0:
        opener: Any = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            yield from f
        return
    with open(path, "rb", buffering=1 << 20) as f:
        pos = start
        if start > 0:
            f.seek(start - 1)
            pos = start - 1 + len(f.readline())  # the line running into `start` belongs to the previous range
        while pos < end:
            line = f.readline()
            if not line:
                break
            pos += len(line)
            yield line


def reference_id(ref: Any, rtype: str = "Patient") -> str | None:
    """The id in a ``Patient/ID`` reference (relative or absolute, history suffix dropped)."""
    if not isinstance(ref, str):
        return None
    segs = ref.split("?", 1)[0].rstrip("/").split("/")
    if "_history" in segs:
        segs = segs[: segs.index("_history")]
    if len(segs) >= 2 and segs[-2] == rtype and segs[-1]:
        return segs[-1]
    return None


def patient_of(res: dict[str, Any]) -> str | None:
    if res.get("resourceType") == "Patient":
        rid = res.get("id")
        return rid if isinstance(rid, str) and rid else None
    for key in ("subject", "patient"):
        ref = res.get(key)
        if isinstance(ref, dict):
            pid = reference_id(ref.get("reference"))
            if pid:
                return pid
    return None


def bucket_of(pid: str, buckets: int, splits: list[bytes] | None = None) -> int:
    """A patient's bucket: its id's range among ``splits`` (sorted UTF-8 ids; bucket k holds the ids from
    splits[k-1] up to, not including, splits[k]), or a hash of it without splits."""
    if splits is not None:
        return bisect.bisect_right(splits, pid.encode())
    return zlib.crc32(pid.encode()) % buckets


def plan_buckets(task_list: list[tuple[str, int, int]], workers: int, ranges: bool = True
                 ) -> tuple[int, list[bytes] | None]:
    """(bucket count, patient-id splits or None for hash buckets) for these tasks: id ranges where the input
    allows (see range_splits) unless ``ranges`` is off."""
    buckets = bucket_count(sum(os.path.getsize(path) for path in {t[0] for t in task_list}), workers)
    splits = range_splits(task_list, buckets) if ranges else None
    return (len(splits) + 1 if splits is not None else buckets), splits


def range_splits(task_list: list[tuple[str, int, int]], buckets: int, per_bucket: int = 128) -> list[bytes] | None:
    """Patient-id boundaries that cut the export into about ``buckets`` ranges of similar size, from a sample
    of its lines taken at evenly spaced byte offsets (so each patient counts by the bytes of its resources, what
    a bucket holds in memory). Ranges are in patient-id order, so the buckets' sorted outputs need no merge:
    written one after another they are the sorted worklist. None when a task is a gzip file (it cannot be read
    from an offset; the engine hashes patients to buckets then and merges the sorted parts)."""
    if any(end < 0 and path.endswith(".gz") for path, _start, end in task_list):
        return None
    sized = [(path, start, os.path.getsize(path) if end < 0 else end) for path, start, end in task_list]
    total = sum(end - start for _path, start, end in sized)
    want = buckets * per_bucket
    ids: list[bytes] = []
    for path, start, end in sized:
        n = max(1, round(want * (end - start) / total)) if total else 0
        if end <= start or not n:
            continue
        with open(path, "rb") as f:
            for j in range(n):
                pos = start + (end - start) * j // n
                f.seek(pos)
                if pos > 0:
                    f.readline()  # the rest of the line this offset fell into
                line = f.readline()
                try:
                    res = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                pid = patient_of(res) if isinstance(res, dict) else None
                if pid is not None:
                    ids.append(pid.encode())
    if not ids:
        return []
    ids.sort()
    return sorted({ids[len(ids) * k // buckets] for k in range(1, buckets)})


class BucketWriter:
    """One worker's bucket files: ``<dir>/b<k>.ndjson`` lines of ``json(patient id) TAB resource``.
    ``splits``: patient-id ranges (see range_splits); None: hash buckets."""

    def __init__(self, directory: Path, buckets: int, splits: list[bytes] | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.buckets = buckets
        self.splits = splits
        self.files: dict[int, BinaryIO] = {}

    def write(self, pid: str, line: bytes) -> None:
        b = bucket_of(pid, self.buckets, self.splits)
        f = self.files.get(b)
        if f is None:
            f = self.files[b] = open(self.dir / f"b{b:04d}.ndjson", "ab", buffering=_WRITE_BUFFER)
        f.write(orjson.dumps(pid) + b"\t" + line.rstrip(b"\r\n") + b"\n")

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


def partition(task_list: list[tuple[str, int, int]], out_dir: Path, buckets: int,
              on_progress: Any = None, splits: list[bytes] | None = None) -> Counter[str]:
    """Append every patient resource of the tasks' lines to its bucket; count what was read and skipped."""
    counts: Counter[str] = Counter()
    w = BucketWriter(out_dir, buckets, splits)
    done = 0
    try:
        for task in task_list:
            for line in read_lines(*task):
                done += len(line)
                if not line.strip():
                    continue
                try:
                    res = orjson.loads(line)
                except orjson.JSONDecodeError:
                    counts["skipped: not JSON"] += 1
                    continue
                rtype = res.get("resourceType") if isinstance(res, dict) else None
                if rtype not in PATIENT_TYPES:
                    counts[f"skipped: {rtype if isinstance(rtype, str) else 'no resourceType'}"[:60]] += 1
                    continue
                pid = patient_of(res)
                if pid is None:
                    counts[f"skipped: {rtype} without a patient"] += 1
                    continue
                counts[rtype] += 1
                w.write(pid, line)
                if on_progress is not None and done >= 1 << 20:
                    on_progress(done)
                    done = 0
    finally:
        w.close()
    if on_progress is not None:
        on_progress(done)
    return counts


def read_bucket(dirs: list[Path], bucket: int, remove: bool = False) -> dict[str, list[bytes]]:
    """Every resource line of one bucket, grouped by patient id. ``remove``: delete the bucket's files once
    read (nothing reads them again; pages not yet written back are then dropped instead of written)."""
    groups: dict[str, list[bytes]] = {}
    name = f"b{bucket:04d}.ndjson"
    for d in dirs:
        p = d / name
        if not p.exists():
            continue
        with open(p, "rb") as f:
            for line in f:
                tab = line.index(b"\t")
                pid = orjson.loads(line[:tab])
                groups.setdefault(pid, []).append(line[tab + 1:])
        if remove:
            p.unlink()
    return groups
