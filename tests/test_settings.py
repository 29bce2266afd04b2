"""One settings object: the SMART app's settings are its `smart` section (same environment variable
names as before), and the runtime package reads the process environment only in service/config.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_smart_settings_from_their_environment_variables(monkeypatch):
    monkeypatch.setenv("PGX_CDS_SMART_CLIENT_ID", "ehr-assigned")
    monkeypatch.setenv("PGX_CDS_SMART_SCOPE_STYLE", "v1")
    monkeypatch.setenv("PGX_CDS_SMART_COOKIE_SECURE", "false")
    monkeypatch.setenv("PGX_CDS_SMART_SESSION_TTL_S", "300")
    monkeypatch.setenv("PGX_CDS_SMART_ALLOWED_FHIR_SERVERS", '["https://fhir.example/r4"]')
    monkeypatch.setenv("PGX_CDS_SMART_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("PGX_CDS_SMART_APP_PATH", "/pgx-app")  # a main setting (smart_app_path), not the section's
    s = Settings()
    assert s.smart.client_id == "ehr-assigned" and s.smart.scope_style == "v1"
    assert s.smart.cookie_secure is False and s.smart.session_ttl_s == 300
    assert s.smart.allowed_fhir_servers == ["https://fhir.example/r4"]
    assert s.smart.client_secret.get_secret_value() == "s3cret"
    assert s.smart_app_path == "/pgx-app"
    assert "patient/Observation.read" in s.smart.scope_for(ehr_launch=True)


def test_smart_defaults_nested_form_and_config_file(monkeypatch, tmp_path):
    assert Settings().smart.client_id == "pgx-cds"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("smart:\n  client_id: from-file\n  cookie_name: sid\n")
    monkeypatch.setenv("PGX_CDS_CONFIG_FILE", str(cfg))
    s = Settings()
    assert (s.smart.client_id, s.smart.cookie_name) == ("from-file", "sid")
    monkeypatch.setenv("PGX_CDS_SMART_CLIENT_ID", "from-env")  # the environment wins over the file
    assert Settings().smart.client_id == "from-env"
    monkeypatch.setenv("PGX_CDS_SMART__CLIENT_ID", "nested")
    assert Settings().smart.client_id == "nested"


@pytest.mark.parametrize("name, value", [("PGX_CDS_SMART_SESSION_TTL_S", "5"), ("PGX_CDS_SMART_SCOPE_STYLE", "v3"),
                                         ("PGX_CDS_SMART_ALLOWED_FHIR_SERVERS", "not json")])
def test_invalid_smart_settings_stop_start_up_naming_the_setting(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises((ValidationError, ValueError)) as err:
        Settings()
    field = name.removeprefix("PGX_CDS_SMART_").lower()
    assert field in str(err.value).lower()


def test_the_app_serves_the_smart_section(monkeypatch, tmp_path):
    from service.main import create_app

    s = Settings(feedback_file=tmp_path / "f", smart={"cookie_name": "my_sid"})
    app = create_app(s)
    from types import SimpleNamespace

    from service.smart.router import _smart

    assert _smart(SimpleNamespace(app=app)).cookie_name == "my_sid"


def _environ_reads(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb") and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "os" and \
                any(a.name in ("environ", "getenv") for a in node.names):
            lines.append(node.lineno)
    return lines


def test_the_runtime_package_reads_the_environment_only_in_config():
    found = {str(p.relative_to(ROOT)): lines for p in sorted((ROOT / "service").rglob("*.py"))
             if p.name != "config.py" or p.parent.name != "service"
             if (lines := _environ_reads(p))}
    assert found == {}
