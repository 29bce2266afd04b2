"""The command line: serve refusals, evaluate, phenotype batch, knowledge check, config errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "fhir_profiles" / "examples" / "order-select-clopidogrel.json"


def cli(*args, input=None, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PGX_CDS_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, input=input,
                          env=e, cwd=ROOT, timeout=120)


def test_serve_refuses_public_bind_without_issuers():
    r = cli("serve", "--host", "0.0.0.0", "--port", "18099")
    assert r.returncode == 2
    assert "PGX_CDS_ISSUERS" in r.stderr


def test_invalid_configuration_names_the_setting():
    r = cli("serve", env={"PGX_CDS_FHIR__TIMEOUT_S": "-1"})
    assert r.returncode == 2
    assert "timeout_s" in r.stderr
    r = cli("serve", env={"PGX_CDS_TRUST_SANDBOX": "true"})
    assert r.returncode == 2 and "dev" in r.stderr


def test_config_file_is_read(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("port: 99999\n")
    r = cli("serve", env={"PGX_CDS_CONFIG_FILE": str(cfg)})
    assert r.returncode == 2 and "port" in r.stderr


def test_evaluate_prints_the_response():
    r = cli("evaluate", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    cards = json.loads(r.stdout)["cards"]
    assert cards[0]["extension"]["pgx-cds"]["recommendation"]["action"] == "avoid"


def test_evaluate_bad_input_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    r = cli("evaluate", str(bad))
    assert r.returncode == 2 and "Bad request file" in r.stderr
    bad.write_text(json.dumps({"hook": "order-select"}))
    assert cli("evaluate", str(bad)).returncode == 2


def test_phenotype_batch_from_stdin_with_errors_per_line():
    lines = "CYP2C19\t*1/*17\nNOTAGENE\t*1/*1\nCYP2D6\t*1/\nCYP2D6\t*1/*41\n" * 250  # 1,000 lines
    r = cli("phenotype", input=lines)
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 1000
    assert out[0]["phenotype"] == "Rapid Metabolizer"
    assert "error" in out[1] and "error" in out[2]
    assert out[3]["phenotype"] == "Normal Metabolizer" and out[3]["activityScore"] == "1.25"


def test_phenotype_args():
    r = cli("phenotype", "CYP2C9", "*2/*3")
    row = json.loads(r.stdout)
    assert row["phenotype"] == "Poor Metabolizer" and row["activityScore"] == "0.5"
    assert [a["activityValue"] for a in row["alleles"]] == ["0.5", "0.0"]


def test_phenotype_with_co_medication_prints_both_values():
    r = cli("phenotype", "--with", "paroxetine", "CYP2D6", "*1/*1")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert (row["phenotype"], row["activityScore"]) == ("Normal Metabolizer", "2.0")
    assert (row["effectivePhenotype"], row["effectiveActivityScore"]) == ("Poor Metabolizer", "0.0")
    assert row["phenoconversion"]["perpetrators"][0]["strength"] == "strong_inhibitor"


def test_phenotype_tsv_third_column_and_switch_off():
    lines = "CYP2C19\t*1/*1\tfluconazole\nCYP2C9\t*1/*1\tamiodarone, nosuchdrug\nCYP2D6\t*1/*1\n"
    out = [json.loads(x) for x in cli("phenotype", input=lines).stdout.splitlines()]
    assert out[0]["effectivePhenotype"] == "Poor Metabolizer"
    assert out[1]["effectiveActivityScore"] == "1.0" and out[1]["unknownMedicines"] == ["nosuchdrug"]
    assert "effectivePhenotype" not in out[2]
    off = cli("phenotype", "--with", "4450", "CYP2C19", "*1/*1", env={"PGX_CDS_PHENOCONVERSION__ENABLED": "false"})
    row = json.loads(off.stdout)
    assert row["effectivePhenotype"] == "Normal Metabolizer" and "switched off" in row["note"]


def test_knowledge_check_passes_and_list_names_drugs():
    r = cli("knowledge", "check")
    assert r.returncode == 0, r.stdout + r.stderr
    listed = cli("knowledge", "list").stdout
    assert "clopidogrel" in listed and "CYP2C19" in listed


def test_knowledge_check_reports_file_and_line(tmp_path):
    import shutil

    kdir = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", kdir)
    g = kdir / "guidelines" / "clopidogrel-cyp2c19.yaml"
    g.write_text(g.read_text().replace("action: avoid", "action: maybe", 1))
    r = cli("knowledge", "check", "--dir", str(kdir))
    assert r.returncode == 1
    assert "clopidogrel-cyp2c19.yaml" in r.stdout and ":" in r.stdout
