"""`pgx-cds screen` with the local engine on a synthetic Bulk Data export.

The central test compares the worklist with what the hooks themselves answer for each patient, through
`run_hook`, the function `pgx-cds evaluate` runs: order-sign with each current medication re-ordered and
every other CPIC drug newly ordered (draft orders), the patient's data as prefetch."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path

import pytest

from service.evaluate import as_medication_request, is_active
from service.screen import source
from service.screen.local import canonical_order
from service.screen.progress import NoProgress
from service.screen.run import ScreenRequest, parse_since, screen
from tests.screen.synth import UNREADABLE_DRUG, write_export

ROOT = Path(__file__).resolve().parents[2]
N = 240
KINDS = {"active_drug_conflict", "actionable_result", "test_candidate"}
TODAY = date.today()  # the hooks evaluate with date.today()


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("export")
    # every synthetic-bundle form appears (template share), several files per type, some gzipped
    write_export(d, N, seed=7, tested=0.6, shards=3, template_share=0.25,
                 gzip_types=("Condition", "MedicationStatement", "DiagnosticReport"))
    return d


@pytest.fixture(scope="module")
def screened(export, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("out")
    summary = screen(ScreenRequest(input=str(export), output=out, workers=2, formats=("ndjson",), today=TODAY),
                     NoProgress())
    return out, summary


def _read_export(d: Path) -> dict[str, list[dict]]:
    """Each patient's resources, in the order the screen evaluates them (an export has none of its own:
    service.screen.local.canonical_order), so that the hooks are given the same record."""
    by_patient: dict[str, list[bytes]] = defaultdict(list)
    for f in source.input_files(d):
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rb") as fh:
            for line in fh:
                by_patient[source.patient_of(json.loads(line))].append(line)
    return {pid: canonical_order(lines) for pid, lines in by_patient.items()}


def _worklist(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "worklist.ndjson").read_text().splitlines()]


# ------------------------------------------------------------------------------------ the hooks' answer


def _bundle(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def _hook_findings(app, pid: str, resources: list[dict]) -> list[dict]:
    """Findings derived from the hooks' own cards for this patient: one order-sign call whose draft orders are
    each current medication re-ordered and a new order for every other CPIC drug, the patient's data as
    prefetch. Cards on a re-order are active drug conflicts (or, pre-test, test candidates); cards on a new
    order other than pre-test ones are the actionable results."""
    from service.hooks.discovery import SERVICES
    from service.hooks.pipeline import run_hook
    from service.hooks.schemas import HookRequest
    from service.fhir.context import medication_drugs_of as medication_request_drugs
    from tests.screen.synth import RXNORM, cpic_drugs

    vitals = [r for r in resources if r["resourceType"] == "Observation"
              and any(c.get("code") in ("29463-7", "8302-2") for c in r["code"].get("coding", []))]
    genomic = [r for r in resources if r["resourceType"] in ("Observation", "DiagnosticReport") and r not in vitals]
    meds, refs = [], {}
    for r in resources:
        if r["resourceType"] in ("MedicationRequest", "MedicationStatement") and is_active(r):
            med = as_medication_request(r) if r["resourceType"] == "MedicationStatement" else r
            meds.append(med)
            refs[f"MedicationRequest/renew-{len(meds)}"] = f"{r['resourceType']}/{r['id']}"
    active_conditions = [r for r in resources if r["resourceType"] == "Condition"
                         and r["clinicalStatus"]["coding"][0]["code"] == "active"]
    patient = next((r for r in resources if r["resourceType"] == "Patient"), None)
    prefetch = {"patient": patient, "pgxObservations": _bundle(genomic), "conditions": _bundle(active_conditions),
                "medications": _bundle(meds), "vitals": _bundle(vitals)}
    deps = app.state.deps
    taken = {d.name for m in meds for d in medication_request_drugs(deps.knowledge.drug_index, m)}
    drafts = [{**{k: v for k, v in m.items() if k != "id"}, "id": f"renew-{i}", "status": "draft"}
              for i, m in enumerate(meds, 1)]
    drafts += [{"resourceType": "MedicationRequest", "id": f"new-{i}", "status": "draft", "intent": "order",
                "subject": {"reference": f"Patient/{pid}"},
                "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rx, "display": name}], "text": name}}
               for i, (name, rx) in enumerate(cpic_drugs()) if name not in taken]
    service = next(s for s in SERVICES.values() if s.hook == "order-sign")
    has_results = bool(genomic)
    cards = []
    # one order-sign per draft: co-medications are the patient's current ones only (phenoconversion reads
    # them), as in the screen, where each drug is judged with the patient's current medications
    for draft in drafts:
        if draft["id"].startswith("new-") and not has_results:
            continue  # without results a new order can only get a pre-test card (not a finding)
        req = HookRequest.model_validate({"hook": "order-sign", "hookInstance": f"screen-test-{pid}-{draft['id']}",
                                          "context": {"userId": "Practitioner/1", "patientId": pid,
                                                      "draftOrders": _bundle([draft])},
                                          "prefetch": json.loads(json.dumps(prefetch))})  # a copy each time
        cards += json.loads(asyncio.run(run_hook(service, req, deps, None)).body)["cards"]
    out = []
    priority = {"critical": "high", "warning": "medium", "info": "low"}
    for card in cards:
        ext = card["extension"]["pgx-cds"]
        if any(p.get("medicationRequest") == ext["order"] for g in ext["genes"]
               for p in (g.get("phenoconversion") or {}).get("perpetrators", [])):
            continue  # a reverse card (issue 13): about a current medicine, prompted by ordering its inhibitor
        pretest = ext["recommendation"]["action"] == "test_before_prescribing"
        if ext["order"].startswith("MedicationRequest/renew-"):
            kind, med = ("test_candidate" if pretest else "active_drug_conflict"), refs[ext["order"]]
        elif pretest:
            continue
        else:
            kind, med = "actionable_result", None
        out.append({"kind": kind, "priority": priority[card["indicator"]], "drug": ext["drug"],
                    "genes": ext["genes"], "recommendation": ext["recommendation"], "medication": med})
    return out


def _key(f: dict) -> str:
    return json.dumps(f, sort_keys=True)


def test_worklist_equals_what_the_hooks_say_for_each_patient(export, screened):
    from service.config import Settings
    from service.main import create_app

    out, summary = screened
    worklist = {line["patient"]: line["findings"] for line in _worklist(out)}
    app = create_app(Settings())
    by_patient = _read_export(export)
    assert len(by_patient) == N
    compared = unusable = 0
    kinds_seen: set[str] = set()
    for pid, resources in sorted(by_patient.items()):
        got = worklist.get(f"Patient/{pid}", [])
        # findings for a current medication whose result is on file but unreadable/uninterpretable: the hooks
        # show no card for those (non-interruptive), the worklist lists them as test candidates
        extra = [f for f in got if f["recommendation"]["ruleId"].endswith(("/unavailable", "/indeterminate"))]
        for f in extra:
            assert f["kind"] == "test_candidate" and f["medication"]
        expected = _hook_findings(app, pid, resources)
        plain = lambda fs: sorted(_key(f) for f in fs)  # noqa: E731
        assert plain(f for f in got if f not in extra) == plain(expected), pid
        kinds_seen |= {f["kind"] for f in got}
        compared += len(expected)
        # an unreadable result for the gene of a current medication never leaves that medication silent
        gene_of = lambda cc: cc.get("text") or cc["coding"][0]["display"]  # noqa: E731
        unread = {gene_of(r["component"][0]["valueCodeableConcept"]) for r in resources
                  if r["resourceType"] == "Observation" and r.get("valueString") == "see scanned report"}
        for r in resources:
            name = r.get("medicationCodeableConcept", {}).get("text")
            if r["resourceType"] == "MedicationRequest" and r["status"] == "active" and any(
                    UNREADABLE_DRUG.get(g) == name for g in unread):
                unusable += 1
                assert any(f["medication"] == f"MedicationRequest/{r['id']}" for f in got), (pid, name)
    assert kinds_seen == KINDS and compared > 500
    assert unusable > 0  # the export has unreadable results on patients taking an affected drug
    assert summary["patients"]["read"] == N


def test_worklist_schema_and_order(screened):
    out, summary = screened
    lines = _worklist(out)
    assert lines and len(lines) == summary["patients"]["with_findings"]
    patients = [line["patient"] for line in lines]
    assert patients == sorted(patients) and len(set(patients)) == len(patients)
    for line in lines:
        assert set(line) == {"patient", "findings"} and re.fullmatch(r"Patient/p\d{7}", line["patient"])
        assert line["findings"]
        for f in line["findings"]:
            assert set(f) == {"kind", "priority", "drug", "genes", "recommendation", "medication"}
            assert f["kind"] in KINDS and f["priority"] in ("high", "medium", "low")
            assert set(f["drug"]) == {"name", "rxnorm"}
            assert {"action", "strength", "guideline", "ruleId", "population"} <= set(f["recommendation"])
            assert f["genes"] and all({"gene", "phenotype", "diplotype", "observation"} <= set(g) for g in f["genes"])
            if f["kind"] == "actionable_result":
                assert f["medication"] is None
            else:
                assert re.fullmatch(r"Medication(Request|Statement)/p\d{7}-[\w.-]+", f["medication"])
    by_kind = summary["findings"]["by_kind"]
    assert sum(len(line["findings"]) for line in lines) == sum(by_kind.values())
    assert all(by_kind[k] > 0 for k in KINDS)


def test_stopped_medications_are_not_screened(export, screened):
    out, _ = screened
    stopped = {f"{r['resourceType']}/{r['id']}" for rs in _read_export(export).values() for r in rs
               if r["resourceType"] in ("MedicationRequest", "MedicationStatement") and r["status"] != "active"}
    assert stopped
    meds = {f["medication"] for line in _worklist(out) for f in line["findings"]}
    assert not meds & stopped


def test_summary_counts_and_no_identifiers(export, screened):
    out, summary = screened
    text = (out / "summary.json").read_text()
    assert not re.search(r"p\d{7}", text)  # no patient or resource id
    assert not re.search(r"\*\d+[A-Z]?\s*/\s*\*\d+", text)  # no diplotype
    assert summary["knowledgeVersion"].startswith("pgx-cds-knowledge")
    assert summary["resources"]["Patient"] == N
    assert summary["gene_phenotype"]["CYP2C19"]  # counts per gene x phenotype
    assert summary["unreadable_results"] and summary["input"]["files"] >= 10
    assert summary["drug_action"] and summary["test_candidates_by_drug"]
    assert {"read_s", "evaluate_s", "total_s", "patients_per_s"} <= set(summary["timings"])


def test_same_worklist_with_one_worker_and_small_byte_ranges(export, screened, tmp_path, monkeypatch):
    """One worker and 4 KB byte ranges (lines cut across range ends): byte-identical worklist."""
    out, _ = screened
    monkeypatch.setattr(source, "CHUNK_BYTES", 4096)
    assert len(source.tasks(source.input_files(export))) > 20
    # the byte-range split is decided in this process; the workers only read the ranges they are given
    screen(ScreenRequest(input=str(export), output=tmp_path, workers=1, formats=("ndjson",), today=TODAY), NoProgress())
    assert (tmp_path / "worklist.ndjson").read_bytes() == (out / "worklist.ndjson").read_bytes()


def test_byte_ranges_cover_every_line_once(tmp_path):
    lines = [json.dumps({"resourceType": "Patient", "id": f"x{i}", "pad": "y" * (i % 37)}).encode() + b"\n"
             for i in range(500)]
    f = tmp_path / "Patient.ndjson"
    f.write_bytes(b"".join(lines))
    for chunk in (1, 7, 64, 100, 1000, 10**6):
        got = [line for t in source.tasks([f], chunk) for line in source.read_lines(*t)]
        assert got == lines, chunk


def test_since_and_drugs(export, tmp_path):
    summary = screen(ScreenRequest(input=str(export), output=tmp_path / "a", workers=2, formats=("ndjson",),
                                   today=TODAY, drugs=("clopidogrel", "simvastatin"),
                                   since=parse_since("2026-06-01")), NoProgress())
    lines = _worklist(tmp_path / "a")
    assert lines and {f["drug"]["name"] for line in lines for f in line["findings"]} <= {"clopidogrel", "simvastatin"}
    assert summary["patients"]["skipped_since"] > 0
    assert summary["patients"]["read"] + summary["patients"]["skipped_since"] == N


def test_cli_progress_lines_and_no_identifiers_in_output(export, tmp_path):
    env = {**os.environ, "PGX_CDS_LOG_LEVEL": "info"}
    r = subprocess.run([sys.executable, "-m", "service.cli", "screen", "--input", str(export), "--output",
                        str(tmp_path), "--format", "ndjson", "--workers", "2"], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    text = r.stdout + r.stderr
    assert "screen: evaluating" in text and f"screened {N} patients" in text  # plain lines (not a TTY)
    assert not re.search(r"p\d{7}", text) and not re.search(r"\*\d+[A-Z]?\s*/\s*\*\d+", text)
    assert (tmp_path / "worklist.ndjson").stat().st_size > 0


def test_bad_input_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "service.cli", "screen", "--input", str(tmp_path / "nope"),
                        "--output", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "input not found" in r.stderr


def test_parquet_worklist_has_the_ndjson_rows(export, screened, tmp_path):
    import pyarrow.parquet as pq

    out, _ = screened
    screen(ScreenRequest(input=str(export), output=tmp_path, workers=2, formats=("ndjson", "parquet"), today=TODAY),
           NoProgress())
    def no_nulls(v):  # parquet has one schema for all rows: keys a row lacks read back as null
        if isinstance(v, dict):
            return {k: no_nulls(x) for k, x in v.items() if x is not None}
        return [no_nulls(x) for x in v] if isinstance(v, list) else v

    rows = pq.read_table(tmp_path / "worklist.parquet").to_pylist()
    assert no_nulls(rows) == no_nulls(_worklist(out))


def test_sorted_parts_merge_in_patient_order(tmp_path):
    """The worklist parts are merged by comparing their lines as bytes (hex key, tab): the result is the
    patients in sorted() order, for ids that are prefixes of others, use characters below the digits, or are
    not ASCII, and whatever JSON follows the key."""
    from service.screen.local import merge_sorted, part_line

    ids = ["a", "a-b", "a.b", "ab", "A", "0", "-x", "é", "Ä", "z9", "a\tb", "patient-10", "patient-9", "日本"]
    parts = [sorted(ids[i::3]) for i in range(3)]
    paths = []
    for i, part in enumerate(parts):
        paths.append(tmp_path / f"w{i}.ndjson")
        paths[-1].write_bytes(b"".join(part_line(pid, {"patient": f"Patient/{pid}", "n": ["\t", i]})
                                       for pid in part))
    assert merge_sorted(paths, tmp_path / "out.ndjson") == len(ids)
    got = [json.loads(line) for line in (tmp_path / "out.ndjson").read_text().splitlines()]
    assert [g["patient"] for g in got] == [f"Patient/{pid}" for pid in sorted(ids)]
    assert all(g["n"][0] == "\t" for g in got)


@pytest.mark.parametrize("method,given", [("fork", True), ("spawn", True), ("spawn", False)])
def test_workers_started_either_way_give_the_same_worklist(export, screened, tmp_path, method, given):
    """Pool workers forked (inheriting the parent's knowledge) or spawned (the knowledge pickled to them, or
    loaded by each) evaluate alike: byte-identical worklist and the same tallies."""
    from service.config import Settings
    from service.pgx.knowledge import load_knowledge
    from service.screen import local

    out, summary = screened
    knowledge = load_knowledge(Settings().knowledge_dir) if given else None
    res = local.run(local.Options(input=export, output=tmp_path, workers=2, today=TODAY, knowledge=knowledge,
                                  start_method=method), NoProgress())
    assert res.worklist.read_bytes() == (out / "worklist.ndjson").read_bytes()
    assert res.tally.to_summary()["patients"] == summary["patients"]


def test_a_bucket_read_for_evaluation_is_removed(tmp_path):
    """An evaluation job deletes its bucket files once read (nothing reads them again), unless asked to keep
    them; the groups are the same either way."""
    lines = [json.dumps({"resourceType": "Observation", "id": f"o{i}", "subject": {"reference": f"Patient/p{i % 7}"}}
                        ).encode() + b"\n" for i in range(60)]
    f = tmp_path / "Observation.ndjson"
    f.write_bytes(b"".join(lines))
    source.partition(source.tasks([f]), tmp_path / "p", 1)
    kept = source.read_bucket([tmp_path / "p"], 0)
    assert (tmp_path / "p" / "b0000.ndjson").exists()
    assert source.read_bucket([tmp_path / "p"], 0, remove=True) == kept
    assert sorted(kept) == [f"p{i}" for i in range(7)] and sum(map(len, kept.values())) == 60
    assert not (tmp_path / "p" / "b0000.ndjson").exists()


@pytest.fixture(scope="module")
def plain_export(export, tmp_path_factory) -> Path:
    """The same export with its gzip files written out plain (range buckets need files they can seek in)."""
    d = tmp_path_factory.mktemp("plain")
    for f in source.input_files(export):
        rel = f.relative_to(export)
        if f.name.endswith(".gz"):
            (d / rel.as_posix()[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
        else:
            (d / rel).write_bytes(f.read_bytes())
    return d


def test_range_buckets_write_the_same_worklist_without_a_merge(plain_export, screened, tmp_path):
    """Plain files are cut into patient-id ranges (sampled), whose outputs are written in order: the same
    worklist and tallies as hash buckets merged (the screened export has gzip files, so it was hashed)."""
    from service.screen import local

    out, summary = screened
    ranged = local.run(local.Options(input=plain_export, output=tmp_path / "r", workers=2, today=TODAY),
                       NoProgress())
    hashed = local.run(local.Options(input=plain_export, output=tmp_path / "h", workers=2, today=TODAY,
                                     ranges=False), NoProgress())
    assert ranged.timings["merge_s"] == 0.0 and hashed.timings["merge_s"] > 0.0
    assert ranged.worklist.read_bytes() == hashed.worklist.read_bytes() == (out / "worklist.ndjson").read_bytes()
    assert ranged.tally.to_summary()["patients"] == hashed.tally.to_summary()["patients"] == summary["patients"]
    assert not (tmp_path / "r" / "worklist.ndjson.partial").exists()


def test_range_splits_cut_the_export_evenly_and_skip_gzip(plain_export, export, tmp_path):
    tasks = source.tasks(source.input_files(plain_export))
    splits = source.range_splits(tasks, 8)
    assert splits == sorted(splits) and 4 <= len(splits) <= 7
    source.partition(tasks, tmp_path / "p", 8, splits=splits)
    sizes = [p.stat().st_size for p in sorted((tmp_path / "p").glob("b*.ndjson"))]
    assert len(sizes) == len(splits) + 1 and max(sizes) < 2.5 * sum(sizes) / len(sizes)
    ids = [sorted(source.read_bucket([tmp_path / "p"], b)) for b in range(len(sizes))]
    assert all(a[-1] < b[0] for a, b in zip(ids, ids[1:]) if a and b)  # ranges, in order
    assert source.range_splits(source.tasks(source.input_files(export)), 8) is None  # gzip files: hashed


@pytest.mark.parametrize("ranges", [True, False])
def test_a_patient_that_fails_is_recorded_in_errors_and_the_run_goes_on(plain_export, screened, tmp_path,
                                                                        monkeypatch, ranges):
    """A patient whose evaluation raises is left out of the worklist and listed (sorted) in errors.ndjson;
    the other patients' lines are as before. (Forked workers inherit the patched function.)"""
    from service.screen import local

    out, _ = screened
    real = local.evaluate_group

    def failing(pid, lines, tally):
        if pid.endswith("7"):
            raise RuntimeError("boom")
        return real(pid, lines, tally)

    monkeypatch.setattr(local, "evaluate_group", failing)
    res = local.run(local.Options(input=plain_export, output=tmp_path, workers=2, today=TODAY, ranges=ranges,
                                  start_method="fork"), NoProgress())
    errors = [json.loads(line) for line in (tmp_path / "errors.ndjson").read_text().splitlines()]
    failed = [e["patient"] for e in errors]
    assert res.errors == len(errors) > 0 and failed == sorted(failed)
    assert all(p.endswith("7") and e["error"] == "RuntimeError" for p, e in zip(failed, errors))
    want = [line for line in (out / "worklist.ndjson").read_text().splitlines()
            if not json.loads(line)["patient"].endswith("7")]
    assert res.worklist.read_text().splitlines() == want


def _crash(dirs, bucket, out_dir, remove=True):  # an evaluation job that fails (module level: pickled by name)
    raise OSError("disk gone")


@pytest.mark.parametrize("ranges", [True, False])
def test_a_rerun_without_failures_leaves_no_old_errors_file(plain_export, tmp_path, monkeypatch, ranges):
    """errors.ndjson belongs to the run that wrote it: a later run into the same directory with no failures
    removes it (its summary says 0 errors), and a run that fails leaves no partial files."""
    from service.screen import local

    real = local.evaluate_group
    monkeypatch.setattr(local, "evaluate_group", lambda pid, lines, tally: (_ for _ in ()).throw(
        RuntimeError("boom")) if pid.endswith("3") else real(pid, lines, tally))
    opts = dict(input=plain_export, output=tmp_path, workers=2, today=TODAY, ranges=ranges, start_method="fork")
    assert local.run(local.Options(**opts), NoProgress()).errors > 0
    assert (tmp_path / "errors.ndjson").exists()
    monkeypatch.setattr(local, "evaluate_group", real)
    assert local.run(local.Options(**opts), NoProgress()).errors == 0
    assert not (tmp_path / "errors.ndjson").exists()
    monkeypatch.setattr(local, "_evaluate_job", _crash)
    with pytest.raises(OSError):
        local.run(local.Options(**opts), NoProgress())
    assert not list(tmp_path.glob("*.partial"))
