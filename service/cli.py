"""`pgx-cds` command line: serve, evaluate, screen, phenotype, knowledge, feedback, cache, bench."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Pharmacogenomics CDS Hooks service (CPIC).")
knowledge_app = typer.Typer(no_args_is_help=True, help="Check and list the clinical knowledge in cards/.")
feedback_app = typer.Typer(no_args_is_help=True, help="Card feedback (accepted / overridden).")
cache_app = typer.Typer(no_args_is_help=True, help="Operator cache controls.")
app.add_typer(knowledge_app, name="knowledge")
app.add_typer(feedback_app, name="feedback")
app.add_typer(cache_app, name="cache")


def _settings():
    from service.config import Settings

    try:
        return Settings()
    except (ValidationError, ValueError) as exc:
        typer.echo(f"Invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None


def _knowledge_dir() -> Path:
    """The knowledge directory without loading the whole configuration (fast start for lookups)."""
    from service.config import REPO_ROOT, configured_knowledge_dir

    return configured_knowledge_dir() or REPO_ROOT / "cards"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="bind address (default from PGX_CDS_HOST, else 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, help="port (default from PGX_CDS_PORT, else 8080)"),
    workers: Optional[int] = typer.Option(None, help="worker processes (default PGX_CDS_WORKERS, else 1)"),
) -> None:
    """Run the service with uvicorn."""
    import uvicorn

    from service.config import set_env

    for name, value in (("HOST", host), ("PORT", port), ("WORKERS", workers)):
        if value is not None:
            set_env(f"PGX_CDS_{name}", str(value))  # the worker processes build their settings from it
    s = _settings()
    if s.dev_mode and not _is_loopback(s.host):
        typer.echo(
            f"Refusing to bind {s.host}: no trusted issuers are configured, so every caller would be "
            "trusted. Configure PGX_CDS_ISSUERS (JSON list of {iss, jwks_url, fhir_servers}) or a config "
            "file (PGX_CDS_CONFIG_FILE) first, or bind to 127.0.0.1 for local development.",
            err=True,
        )
        raise typer.Exit(2)
    if s.dev_mode:
        typer.echo(
            "WARNING: DEV MODE - no issuers configured, requests are NOT authenticated. Listening on "
            f"loopback only (http://{s.host}:{s.port}/cds-services).",
            err=True,
        )
    uvicorn.run(
        "service.runtime:served_app",  # the app, then this worker's GC tuned for serving (service/runtime.py)
        factory=True,
        host=s.host,
        port=s.port,
        workers=s.workers,
        log_level="warning",
        access_log=False,
        # X-Forwarded-For/-Proto only from the proxies named in the settings (off by default: a client
        # must not choose the scheme or address the service sees)
        proxy_headers=bool(s.forwarded_allow_ips),
        forwarded_allow_ips=list(s.forwarded_allow_ips) or None,
    )


@app.command()
def evaluate(request_file: Path = typer.Argument(..., help="a CDS Hooks request JSON file ('-' for stdin)")) -> None:
    """Run one hook request through the pipeline offline and print the response JSON."""
    from service.hooks.discovery import SERVICES
    from service.hooks.errors import HookError
    from service.hooks.pipeline import run_hook
    from service.cdshooks.models import HookRequest
    from service.main import create_app

    try:
        text = sys.stdin.read() if str(request_file) == "-" else request_file.read_text(encoding="utf-8")
        raw = json.loads(text)
        req = HookRequest.model_validate(raw)
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        typer.echo(f"Bad request file: {exc}", err=True)
        raise typer.Exit(2) from None
    service = next((s for s in SERVICES.values() if s.hook == req.hook), None)
    if service is None:
        typer.echo(f"Bad request file: no service for hook '{req.hook}'", err=True)
        raise typer.Exit(2)
    from service.config import set_env

    set_env("PGX_CDS_LOG_LEVEL", "error", only_if_unset=True)
    application = create_app(_settings())

    async def _run():
        try:
            return await run_hook(service, req, application.state.deps, None)
        finally:
            await application.state.fhir.aclose()

    try:
        outcome = asyncio.run(_run())
    except HookError as exc:
        typer.echo(f"Request rejected ({exc.status}): {exc.message}", err=True)
        raise typer.Exit(2 if exc.status < 500 else 1) from None
    typer.echo(outcome.response.model_dump_json(exclude_none=True, indent=2))


@app.command()
def screen(
    input: str = typer.Option(..., "--input", help="directory of FHIR Bulk Data NDJSON (.ndjson, .ndjson.gz), or a "
                              "FHIR server base URL to $export from (SMART Backend Services: PGX_CDS_SCREEN_*)"),
    output: Path = typer.Option(..., "--output", help="directory for worklist.ndjson, summary.json, report.html"),
    engine: str = typer.Option("local", help="local (embedded, process pool) or spark"),
    spark_master: Optional[str] = typer.Option(None, "--spark-master", help="Spark master URL (engine spark)"),
    since: Optional[str] = typer.Option(None, help="only patients with a resource updated on or after this date"),
    drugs: Optional[str] = typer.Option(None, help="comma list: only findings for these drugs"),
    format: str = typer.Option("ndjson,html", "--format", help="comma list of ndjson, parquet, html"),
    workers: int = typer.Option(0, help="worker processes for the local engine (0: every core)"),
    export_level: str = typer.Option("system", help="$export level when --input is a URL: system, patient, group"),
    group: Optional[str] = typer.Option(None, help="Group id for --export-level group"),
    quiet: bool = typer.Option(False, help="no progress output"),
) -> None:
    """Population screening: every patient of an export through the hooks' engine -> worklist and report."""
    from service.screen.bulk import ExportError
    from service.screen.progress import reporter
    from service.screen.run import ScreenRequest, parse_since
    from service.screen.run import screen as run_screen

    from service.config import set_env

    set_env("PGX_CDS_LOG_LEVEL", "warning", only_if_unset=True)
    _settings()  # invalid configuration: a clear message and exit 2
    try:
        req = ScreenRequest(
            input=input, output=output, engine=engine, spark_master=spark_master, since=parse_since(since),
            drugs=tuple(d.strip() for d in (drugs or "").split(",") if d.strip()),
            formats=tuple(f.strip() for f in format.split(",") if f.strip()), workers=workers,
            export_level=export_level, group=group)
        summary = run_screen(req, reporter(sys.stderr, quiet=quiet))
    except (ValueError, FileNotFoundError, ExportError) as exc:
        typer.echo(f"screen: {exc}", err=True)
        raise typer.Exit(2) from None
    p, f, t = summary["patients"], summary["findings"]["by_kind"], summary["timings"]
    typer.echo(
        f"screened {p['read']:,} patients ({p['with_results']:,} with PGx results) in {t['total_s']:.1f} s "
        f"({t['patients_per_s'] or 0:,.0f}/s): {p['with_findings']:,} on the worklist; findings: "
        f"{f['active_drug_conflict']:,} active drug conflicts, {f['test_candidate']:,} test candidates, "
        f"{f['actionable_result']:,} actionable results; output in {output}", err=True)
    if summary["evaluationErrors"]:
        typer.echo(f"screen: {summary['evaluationErrors']} patient(s) could not be evaluated: see errors.ndjson",
                   err=True)
        raise typer.Exit(1)


@app.command()
def phenotype(
    args: list[str] = typer.Argument(None, help="GENE DIPLOTYPE [GENE DIPLOTYPE ...]; none: read GENE<TAB>DIPLOTYPE[<TAB>MEDICINES] lines on stdin"),
    with_: list[str] = typer.Option(None, "--with", help="co-medication (name or RxNorm code; repeat or comma-separate): "
                                                         "also print the effective (phenoconverted) phenotype"),
) -> None:
    """Diplotype -> CPIC phenotype, one JSON object per input line; with co-medications also the effective one."""
    from service.pgx.genes import load_genes
    from service.pgx.phenotype import phenotype_json

    genes = load_genes(_knowledge_dir() / "genes")
    given = _split_meds(with_ or [])
    rows: list[tuple[str, str, list[str]]] = []
    if args:
        if len(args) % 2:
            typer.echo("Give GENE DIPLOTYPE pairs", err=True)
            raise typer.Exit(2)
        rows = [(args[i], args[i + 1], given) for i in range(0, len(args), 2)]
    else:
        for line in sys.stdin:
            if not line.strip():
                continue
            gene, _, rest = line.rstrip("\n").partition("\t")
            dip, _, meds = rest.partition("\t")
            rows.append((gene.strip(), dip.strip(), given + _split_meds([meds])))
    lite = _phenoconversion_context(genes) if any(meds for _, _, meds in rows) else None
    out = sys.stdout
    for gene, dip, meds in rows:
        try:
            result = phenotype_json(genes, gene, dip)
            if meds and lite is not None and "error" not in result:
                result.update(_with_medicines(lite, result, meds))
        except Exception as exc:  # noqa: BLE001 - one bad line never stops the batch
            result = {"gene": gene, "diplotype": dip, "error": str(exc)}
        out.write(json.dumps(result, ensure_ascii=False) + "\n")


def _split_meds(values: list[str]) -> list[str]:
    return [m.strip() for v in values for m in (v or "").split(",") if m.strip()]


def _phenoconversion_context(genes):
    """What `phenotype --with` needs: the gene files, cards/phenoconversion.yaml and the settings."""
    from dataclasses import dataclass
    from typing import Any

    from service.pgx import phenoconversion as pcv

    path = _knowledge_dir() / pcv.FILE_NAME
    pk, problems = pcv.load(path) if path.is_file() else (None, [])
    if problems:
        typer.echo(f"{path}: " + "; ".join(f"line {ln}: {msg}" for ln, msg in problems), err=True)
        raise typer.Exit(1)

    @dataclass
    class _Lite:
        genes: dict[str, Any]
        phenoconversion: Any
        settings: Any

    return _Lite(genes, pk, _settings())


def _with_medicines(lite, result: dict, meds: list[str]) -> dict:
    from service.pgx.models import PhenotypeCall
    from service.pgx.phenoconversion import describe_with

    call = PhenotypeCall(gene=result["gene"], diplotype=result.get("diplotype"), phenotype=result["phenotype"],
                         activity_score=result.get("activityScore"), method=result.get("method", ""))
    return {"withMedicines": meds, **describe_with(lite, result["gene"], call, meds, lite.settings)}


@knowledge_app.command("check")
def knowledge_check(directory: Optional[Path] = typer.Option(None, "--dir", help="knowledge directory")) -> None:
    """Validate every gene and guideline file; exit 1 if anything is wrong."""
    from service.pgx.knowledge import check_knowledge

    problems = check_knowledge(directory or _knowledge_dir())
    for p in problems:
        typer.echo(str(p))
    if problems:
        typer.echo(f"{len(problems)} problem(s)", err=True)
        raise typer.Exit(1)
    typer.echo("knowledge OK")


@knowledge_app.command("list")
def knowledge_list(directory: Optional[Path] = typer.Option(None, "--dir", help="knowledge directory")) -> None:
    """Print the genes and drugs covered."""
    from service.pgx.knowledge import list_knowledge, load_knowledge

    k = load_knowledge(directory or _knowledge_dir())
    for row in list_knowledge(k):
        typer.echo(json.dumps(row, ensure_ascii=False))


@knowledge_app.command("alleles")
def knowledge_alleles(
    source: Path = typer.Argument(..., help="PharmCAT phenotype JSON, CPIC update JSON, or CPIC allele functionality CSV/TSV"),
    gene: Optional[str] = typer.Option(None, "--gene", help="only this gene (the source may hold several)"),
    write: bool = typer.Option(False, "--write", help="write the update into cards/genes/<GENE>.yaml"),
    citation: Optional[str] = typer.Option(None, "--citation", help="citation recorded on added alleles"),
    allow_older: bool = typer.Option(False, "--allow-older", help="write even if the source is older than the file"),
    directory: Optional[Path] = typer.Option(None, "--dir", help="knowledge directory"),
) -> None:
    """Compare gene files with a CPIC/PharmCAT allele table; print the diff for review; --write applies it.
    Exit 0: no changes; 3: changes found (not written); 0 after --write."""
    from service.pgx.allele_update import apply_update, compare, read_source, render
    from service.pgx.genes import check_genes, load_genes

    kdir = directory or _knowledge_dir()
    genes = load_genes(kdir / "genes")
    try:
        tables = read_source(source, gene)
    except (OSError, ValueError) as exc:
        typer.echo(f"cannot read {source}: {exc}", err=True)
        raise typer.Exit(2) from None
    if not tables:
        typer.echo(f"no allele table{' for ' + gene if gene else ''} in {source}", err=True)
        raise typer.Exit(2)
    changed = False
    for t in tables:
        gd = genes.get(t.gene)
        if gd is None:
            typer.echo(f"{t.gene}: no gene file in {kdir / 'genes'} (skipped)")
            continue
        rep = compare(gd, t)
        typer.echo(render(rep))
        changed |= rep.has_changes
        if write and rep.has_changes and rep.source_is_older and not allow_older:
            typer.echo(f"  NOT written: the source is older than {gd.gene}.yaml (use --allow-older to force)", err=True)
            continue
        if write and rep.has_changes:
            path = kdir / "genes" / f"{gd.gene}.yaml"
            old = path.read_text(encoding="utf-8")
            path.write_text(apply_update(path, rep, citation), encoding="utf-8")
            problems = check_genes(kdir / "genes")
            if problems:
                path.write_text(old, encoding="utf-8")
                typer.echo("update NOT written, the gene file would not validate:\n" + "\n".join(map(str, problems)),
                           err=True)
                raise typer.Exit(1)
            typer.echo(f"  written: {path} (run `pgx-cds knowledge check` and review the diff)")
    if changed and not write:
        raise typer.Exit(3)


@feedback_app.command("export")
def feedback_export() -> None:
    """Print stored feedback as NDJSON."""
    from service.feedback.store import export_records

    s = _settings()
    for record in export_records(s.redis_url, s.feedback_file):
        typer.echo(json.dumps(record, separators=(",", ":")))


@cache_app.command("clear")
def cache_clear(
    patient: Optional[str] = typer.Option(None, help="only this patient id (with --fhir-server)"),
    fhir_server: Optional[str] = typer.Option(None, help="the patient's FHIR server base URL"),
) -> None:
    """Drop cached patient snapshots (all, or one patient's)."""
    from service.cache.store import make_kv
    from service.observability.logging import patient_hash

    s = _settings()
    kv = make_kv(s.redis_url, timeout_ms=max(s.redis_timeout_ms, 2000), max_entries=1)
    if kv.backend == "memory":
        typer.echo("No Redis configured: the in-process cache lives and dies with each server process.")
        return

    async def _clear() -> int:
        try:
            if patient:
                from service.fhir.client import validate_fhir_server

                server = validate_fhir_server(fhir_server, allowed=None, allow_http=True) if fhir_server else None
                h = patient_hash(s.log_salt, server, patient)
                n = 0
                # every caller's snapshot of this patient (keys are `<patient>.<caller>`: service/auth/tenancy.py)
                async for key in kv.client.scan_iter(match=kv.key("snap:*:" + h + ".*")):
                    n += await kv.client.delete(key)
                return n
            return await kv.delete_prefix("snap:")
        finally:
            await kv.close()

    typer.echo(f"removed {asyncio.run(_clear())} cached snapshot(s)")


@app.command()
def bench(
    duration: int = typer.Option(10, help="seconds per scenario (per round for the mix)"),
    connections: int = typer.Option(32, help="concurrent connections"),
    scenarios: str = typer.Option(
        "mix,baseline,prefetch,fresh,cached,cold,onecon,workers",
        help="comma list: mix (the headline: distinct patients), baseline,prefetch,fresh,cached,cold,onecon,workers",
    ),
    patients: int = typer.Option(3000, help="mix: distinct synthetic patients (two requests each)"),
    peer_python: str = typer.Option("", help="mix: a Python with healthchain installed, to measure it as the peer"),
    soak: float = typer.Option(0, help="instead: a sustained mixed-load run of this many minutes (errors, memory)"),
) -> None:
    """Benchmark against a bare FastAPI endpoint in the same run (needs wrk and a source checkout)."""
    run = _bench_module()
    if soak:
        raise typer.Exit(run.run_soak(minutes=soak, connections=min(connections, 8)))
    wanted = [s.strip() for s in scenarios.split(",") if s.strip()]
    rc = 0
    if "mix" in wanted:
        from bench.mix import run_mix

        rc = run_mix(duration=duration, connections=connections, patients=patients, peer_python=peer_python or None)
    rest = [s for s in wanted if s != "mix"]
    if rest and rc == 0:
        rc = run.run_bench(duration=duration, connections=connections, scenarios=",".join(rest))
    raise typer.Exit(rc)


def _bench_module():
    """The benchmarks live in the checkout's top-level `bench/` package, outside the service package: it
    is imported only here, only when asked for, from the repository the service runs from."""
    from service.config import REPO_ROOT

    if not (REPO_ROOT / "bench" / "run.py").is_file():
        typer.echo("the benchmark runs from a source checkout (bench/ next to service/); not found", err=True)
        raise typer.Exit(2)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import bench.run

    return bench.run


if __name__ == "__main__":  # pragma: no cover
    app()
