"""The Spark engine (PySpark, `local[2]` started here with the JDK) gives the local engine's worklist, byte for
byte, and the same counts, on the same export."""

from __future__ import annotations

from datetime import date

import pytest

from service.screen.progress import NoProgress
from service.screen.run import ScreenRequest, screen
from tests.screen.synth import write_export

# pyspark comes with the test extras and java from tests/setup.sh: a missing one is a failure, not a skip
needs_spark = pytest.mark.e2e

TODAY = date.today()


@pytest.mark.e2e
@needs_spark
def test_spark_and_local_engines_give_identical_worklists(tmp_path):
    write_export(tmp_path / "in", 300, seed=3, tested=0.6, shards=2, template_share=0.2,
                 gzip_types=("Condition", "MedicationStatement"))
    local = screen(ScreenRequest(input=str(tmp_path / "in"), output=tmp_path / "local", workers=2,
                                 formats=("ndjson",), today=TODAY), NoProgress())
    spark = screen(ScreenRequest(input=str(tmp_path / "in"), output=tmp_path / "spark", engine="spark",
                                 spark_master="local[2]", formats=("ndjson",), today=TODAY), NoProgress())
    a = (tmp_path / "local" / "worklist.ndjson").read_bytes()
    b = (tmp_path / "spark" / "worklist.ndjson").read_bytes()
    assert a and a == b
    drop = {"generatedAt", "timings", "engine"}
    assert {k: v for k, v in spark.items() if k not in drop} == {k: v for k, v in local.items() if k not in drop}
    assert spark["engine"]["name"] == "spark" and spark["evaluationErrors"] == 0


def test_spark_operator_manifest_shape():
    """k8s/spark is outside the kustomizations (its CRD cannot be validated offline): its shape is checked here."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((root / "k8s" / "spark" / "screen-sparkapplication.yaml").read_text())
    assert doc["apiVersion"] == "sparkoperator.k8s.io/v1beta2" and doc["kind"] == "SparkApplication"
    spec = doc["spec"]
    main = spec["mainApplicationFile"].removeprefix("local:///opt/pgx-cds/")
    assert (root / main).is_file() and spec["type"] == "Python"
    assert spec["arguments"][spec["arguments"].index("--input") + 1].startswith("s3a://")
    for role in ("driver", "executor"):
        assert {"name": "PGX_CDS_KNOWLEDGE_DIR", "value": "/opt/pgx-cds/cards"} in spec[role]["env"]
        assert spec[role]["securityContext"]["runAsNonRoot"] is True
    for kdir in ("base", "overlays/production", "overlays/dev"):  # not rendered by validate-deploy
        assert "spark" not in (root / "k8s" / kdir / "kustomization.yaml").read_text()
