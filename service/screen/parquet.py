"""worklist.parquet (``--format parquet``): the worklist's nested schema as is (needs ``pgx-cds[parquet]``)."""

from __future__ import annotations

from pathlib import Path


def write_parquet(worklist: Path, dest: Path) -> None:
    try:
        import pyarrow.json as pj
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("--format parquet needs pyarrow: pip install 'pgx-cds[parquet]'") from None
    if worklist.stat().st_size == 0:
        dest.write_bytes(b"")
        return
    pq.write_table(pj.read_json(str(worklist)), str(dest), compression="zstd")
