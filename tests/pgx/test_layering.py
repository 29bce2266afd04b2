"""The pgx stage reads typed models only (issue 14): no module of service.pgx imports service.fhir (or the
whole service Settings: the engine gets a small policy), and none walks a FHIR resource dict (the fhir stage
extracts what pgx reads)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PGX = sorted((ROOT / "service" / "pgx").rglob("*.py"))
#: FHIR element names a resource walker reads
FHIR_KEYS = {"resourceType", "medicationCodeableConcept", "medicationReference", "dosageInstruction", "dispenseRequest",
             "authoredOn", "validityPeriod", "clinicalStatus", "verificationStatus", "coding", "contained", "timing",
             "doseAndRate", "reasonCode", "subject", "effectiveDateTime", "valueQuantity"}


def _imports(tree: ast.AST) -> set[str]:
    """Imported modules, and `module.name` for every name imported from one."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("path", PGX, ids=lambda p: str(p.relative_to(ROOT)))
def test_pgx_module_neither_imports_fhir_nor_reads_fhir_json(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = {m for m in _imports(tree) if m == "service.fhir" or m.startswith("service.fhir.")
           or m == "service.config.Settings"}
    assert not bad, f"{path.name} imports {bad}"
    reads = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
            key = node.args[0]
        elif isinstance(node, ast.Subscript):
            key = node.slice
        if isinstance(key, ast.Constant) and key.value in FHIR_KEYS:
            reads.append(f"line {node.lineno}: {key.value!r}")
    assert not reads, f"{path.name} walks FHIR JSON: {reads}"


def test_the_layers_contract_puts_fhir_above_pgx():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    assert layers.index("service.fhir") < layers.index("service.pgx")  # a layer may import only those below it
    assert not any("service.pgx" in layer and "service.fhir" in layer for layer in layers)
