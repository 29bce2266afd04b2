"""`pgx-cds screen`: choose the source and engine, write worklist.ndjson, summary.json and report.html."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import orjson

FORMATS = ("ndjson", "parquet", "html")


@dataclass
class ScreenRequest:
    input: str
    output: Path
    engine: str = "local"
    spark_master: str | None = None
    since: datetime | None = None
    drugs: tuple[str, ...] = ()
    formats: tuple[str, ...] = ("ndjson", "html")
    workers: int = 0
    export_level: str = "system"  # system | patient | group (input is a FHIR server URL)
    group: str | None = None
    today: date = field(default_factory=lambda: datetime.now(timezone.utc).date())
    memo: bool = True  # service.screen.memo: same output, faster; False for the plain per-patient path


def parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    from service.fhir.patient_data import parse_fhir_datetime

    when = parse_fhir_datetime(text)
    if when is None:
        raise ValueError(f"--since: not a date or dateTime: {text!r}")
    return when


def screen(req: ScreenRequest, progress: Any) -> dict[str, Any]:
    """Run a screening; returns the summary (also written to summary.json)."""
    from service.config import Settings
    from service.pgx.knowledge import load_knowledge
    from service.screen import local, source

    unknown = [f for f in req.formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s): {', '.join(unknown)} (choose from {', '.join(FORMATS)})")
    settings = Settings()
    # loaded once, when first asked (the local engine asks while its workers read)
    knowledge = functools.cache(lambda: load_knowledge(settings.knowledge_dir))

    req.output.mkdir(parents=True, exist_ok=True)
    export_stats = None
    if req.input.startswith(("http://", "https://")):
        from service.screen.bulk import BulkExporter, ExportRequest

        progress.note("running a Bulk Data $export")
        exporter = BulkExporter(ExportRequest(base=req.input, level=req.export_level, group=req.group),
                                req.output / "export", progress=progress)
        input_path = exporter.run()
        export_stats = {"server": _origin(req.input), "level": req.export_level, **exporter.stats}
    else:
        input_path = Path(req.input)
    if not input_path.exists():
        raise FileNotFoundError(f"input not found: {req.input}")
    described = source.describe(input_path, source.input_files(input_path))
    if export_stats:
        described = {**described, "kind": "bulk-export", "export": export_stats}
    if req.engine == "local":
        result = local.run(local.Options(input=input_path, output=req.output, workers=req.workers,
                                         since=req.since, drugs=req.drugs, today=req.today, memo=req.memo,
                                         knowledge=knowledge),
                             progress)
    elif req.engine == "spark":
        from service.screen import spark

        result = spark.run(input_path, req.output, master=req.spark_master, since=req.since, drugs=req.drugs,
                           today=req.today, progress=progress, memo=req.memo)
    else:
        raise ValueError(f"unknown engine {req.engine!r} (local or spark)")
    summary: dict[str, Any] = {
        "generatedAt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "screeningDate": req.today.isoformat(),
        "knowledgeVersion": knowledge().version,
        "engine": {"name": req.engine, "workers": result.workers, "buckets": result.buckets},
        "input": described,
        "options": {"since": req.since.isoformat() if req.since else None, "drugs": list(req.drugs),
                    "formats": list(req.formats)},
        **result.tally.to_summary(),
        "evaluationErrors": result.errors,
        "timings": {**result.timings,
                    "patients_per_s": round(result.patients / result.timings["total_s"], 1)
                    if result.timings.get("total_s") else None},
    }
    (req.output / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    if "parquet" in req.formats:
        from service.screen.parquet import write_parquet

        write_parquet(result.worklist, req.output / "worklist.parquet")
    if "html" in req.formats:
        from service.screen.report import write_report

        write_report(summary, req.output / "report.html")
    return summary


def _origin(url: str) -> str:
    """scheme://host[:port] of the server: no path, query or credentials in the summary."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}{':' + str(u.port) if u.port else ''}"
