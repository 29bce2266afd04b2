"""Issue 12: the production deployment names its JWT audience explicitly (production refuses to start
without one), and trusts no proxy headers unless told which proxies to trust."""

from __future__ import annotations

import pytest
import yaml

from service.config import REPO_ROOT, Issuer, Settings
from tests.deploy.test_manifests import _api_container, _clean_env, _env, _one, _render

ISSUER = Issuer(iss="https://ehr.example.org/cds-client", jwks_url="https://ehr.example.org/jwks",
                fhir_servers=["https://fhir.ehr.example.org/r4"])


def test_production_overlay_settings_with_real_issuers_start(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    docs = _render("k8s/overlays/production")
    data = yaml.safe_load(_one(docs, "ConfigMap", "pgx-cds-config")["data"]["config.yaml"])
    env = _env(_api_container(docs))
    base = env["PGX_CDS_PUBLIC_BASE_URL"]["value"]
    assert base.startswith("https://")
    settings = Settings(**{**data, "public_base_url": base}, issuers=[ISSUER])
    assert settings.profile == "production" and settings.forwarded_allow_ips == []
    with pytest.raises(ValueError, match="public_base_url"):  # what the base config alone would do
        Settings(**data, issuers=[ISSUER])


def test_example_config_trusts_no_proxy_headers_by_default() -> None:
    data = yaml.safe_load((REPO_ROOT / "docker/config.example.yaml").read_text(encoding="utf-8"))
    assert data["forwarded_allow_ips"] == [] and data["public_base_url"].startswith("https://")
