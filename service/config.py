"""One settings model for the whole service.

Sources, later wins: defaults < a YAML/TOML file named by ``PGX_CDS_CONFIG_FILE`` < environment
variables with the ``PGX_CDS_`` prefix (nested fields with ``__``, e.g. ``PGX_CDS_FHIR__TIMEOUT_S``).
Invalid configuration stops start-up with a message naming the setting.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
Indicator = Literal["info", "warning", "critical"]


class Issuer(BaseModel):
    """A CDS client (EHR tenant) we trust to call us."""

    iss: str
    jwks_url: HttpUrl | None = None  # where its public keys live; `jku` must match this or jku_allowlist
    jwks: dict[str, Any] | None = None  # inline JWKS (tests, air-gapped sites)
    jku_allowlist: list[str] = Field(default_factory=list)
    audiences: list[str] = Field(default_factory=list)  # extra accepted `aud` values (Epic: configured)
    fhir_servers: list[str] = Field(default_factory=list)  # fhirServer base URLs this issuer may send
    tenant: str | None = None
    dev_only: bool = False  # e.g. the public CDS Hooks sandbox key: trusted only in dev profile


class FhirSettings(BaseModel):
    timeout_s: float = Field(1.2, gt=0, le=30, description="whole time budget for FHIR calls of one request")
    connect_timeout_s: float = Field(0.5, gt=0, le=30)
    retries: int = Field(1, ge=0, le=5, description="retries on 5xx / timeouts, within the budget")
    max_pages: int = Field(5, ge=1, le=100)
    page_size: int = Field(100, ge=1, le=1000)
    allow_http: bool = Field(False, description="allow http:// fhirServer (dev and tests only)")


class CacheSettings(BaseModel):
    profile_ttl_s: int = Field(300, ge=0)
    local_ttl_s: float = Field(
        2.0, ge=0, le=60, description="in-process copy of a Redis snapshot, per replica (0 = always ask Redis)"
    )
    jwks_ttl_s: int = Field(3600, ge=0)
    jwks_min_refresh_s: float = Field(5.0, ge=0, description="least time between JWKS refetches on unknown kid")
    max_entries: int = Field(10_000, ge=1)
    dedupe_ttl_s: int = Field(3600, ge=0)


class ReuseSettings(BaseModel):
    """Reuse of work done for an earlier request with the same content (service/hooks/reuse.py)."""

    enabled: bool = Field(True, description="false: every request is evaluated afresh (answers are the same)")
    entries: int = Field(512, ge=1, le=100_000, description="derived results kept in process (LRU)")


class PhenoconversionSettings(BaseModel):
    """Phenoconversion from co-medication (cards/phenoconversion.yaml); switch off whole, per gene or per drug."""

    enabled: bool = True
    disabled_genes: list[str] = Field(default_factory=list)
    disabled_drugs: list[str] = Field(default_factory=list)  # perpetrator names, lower case


#: Resource types the SMART app's page reads. Observation is required; the others degrade gracefully.
DATA_RESOURCES = ("Patient", "Observation", "MedicationRequest", "Condition")


class SmartSettings(BaseModel):
    """The SMART on FHIR app: how it registers with an EHR's authorization server and keeps its sessions.
    The `smart` section of Settings; environment variables `PGX_CDS_SMART_<FIELD>` (e.g.
    `PGX_CDS_SMART_CLIENT_ID`; `PGX_CDS_SMART__CLIENT_ID` works too)."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = "pgx-cds"
    client_secret: SecretStr | None = Field(
        None, description="confidential client (client_secret_basic); public client with PKCE when unset"
    )
    scope_style: Literal["v2", "v1"] = Field(
        "v2", description="v2: patient/Observation.rs; v1: patient/Observation.read (older EHRs)"
    )
    extra_scopes: str = Field(
        "openid fhirUser online_access", description="added to the launch and data scopes"
    )
    redirect_path: str = Field("/callback", description="path under the app prefix the EHR redirects to")
    session_ttl_s: int = Field(900, ge=60, le=86_400, description="idle lifetime of a session and its cookie")
    session_max_s: int = Field(43_200, ge=60, description="absolute lifetime of a session")
    launch_ttl_s: int = Field(600, ge=30, le=3600, description="time allowed between /launch and /callback")
    cookie_name: str = "pgx_smart_sid"
    cookie_secure: bool = True
    cookie_samesite: Literal["lax", "strict", "none"] = Field(
        "lax", description="'none' (with Secure) only when the EHR frames the app cross-site"
    )
    http_timeout_s: float = Field(5.0, gt=0, le=60, description="timeout for discovery and token calls")
    fhir_budget_s: float = Field(8.0, gt=0, le=60, description="time budget for the page's FHIR reads")
    allowed_fhir_servers: list[str] = Field(
        default_factory=list, description="FHIR bases allowed as `iss` in addition to the issuers' fhir_servers"
    )
    default_iss: str | None = Field(None, description="FHIR base used by a standalone launch without ?iss=")

    def data_scopes(self) -> list[str]:
        suffix = ".rs" if self.scope_style == "v2" else ".read"
        return [f"patient/{r}{suffix}" for r in DATA_RESOURCES]

    def scope_for(self, *, ehr_launch: bool) -> str:
        """The scope string for the authorization request (EHR launch or standalone)."""
        launch = "launch" if ehr_launch else "launch/patient"
        parts = [launch, *self.data_scopes(), *self.extra_scopes.split()]
        seen: list[str] = []
        for p in parts:
            if p and p not in seen:
                seen.append(p)
        return " ".join(seen)



class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PGX_CDS_", env_nested_delimiter="__", extra="forbid")

    profile: Literal["production", "dev"] = "production"
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    public_base_url: str | None = Field(
        None,
        description="external base URL as the EHR calls it: the JWT `aud` is this plus the path called, and app "
        "links. Required in the production profile unless every issuer lists its `audiences`",
    )
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="addresses of reverse proxies whose X-Forwarded-For/-Proto headers uvicorn trusts; "
        "empty = proxy headers ignored",
    )
    issuers: list[Issuer] = Field(default_factory=list)
    trust_sandbox: bool = Field(
        False, description="trust the public CDS Hooks Sandbox signing key (its private key is public: dev only)"
    )
    jwt_skew_s: int = Field(60, ge=0, le=600)
    jwt_max_age_s: int = Field(3600, ge=1)
    cors_origins: list[str] = Field(default_factory=list)
    cors_private_network: bool | None = Field(
        None,
        description="answer Private Network Access preflights (Access-Control-Request-Private-Network) so an "
        "https EHR page or the hosted sandbox may call a loopback/intranet service; default: on in dev",
    )
    sandbox_fhir_servers: list[str] = Field(
        default_factory=list, description="FHIR servers the trusted sandbox issuer may send (dev profile only)"
    )
    redis_url: str | None = None
    redis_timeout_ms: int = Field(100, ge=1, le=10_000)
    fhir: FhirSettings = Field(default_factory=FhirSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    reuse: ReuseSettings = Field(default_factory=ReuseSettings)
    knowledge_dir: Path = REPO_ROOT / "cards"
    indicator_overrides: dict[str, Indicator] = Field(default_factory=dict, description="rule id -> indicator")
    disabled_rules: list[str] = Field(default_factory=list)
    pretest_cards: dict[str, Literal["off", "info", "warning"]] = Field(
        default_factory=dict, description="drug name -> pre-test card mode (overrides the guideline file)"
    )
    dedupe_order_sign: bool = True
    phenoconversion: PhenoconversionSettings = Field(default_factory=PhenoconversionSettings)
    feedback_file: Path = Field(
        Path(tempfile.gettempdir()) / "pgx-cds" / "feedback.ndjson",
        description="where feedback is appended when Redis is not configured (or unreachable)",
    )
    log_level: str = "info"
    log_salt: str = Field("pgx-cds-default-salt", description="salt for hashing patient ids in logs")
    smart_app_path: str = "/app"
    otlp_endpoint: str | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    smart: SmartSettings = Field(default_factory=SmartSettings, description="the SMART on FHIR app")
    hook_fast_path: bool = Field(
        True, description="hook calls skip the router, CORS and exception middleware (service/hooks/fastpath.py); "
        "same answers either way"
    )

    @field_validator("knowledge_dir")
    @classmethod
    def _knowledge_dir_exists(cls, v: Path) -> Path:
        if not v.is_dir():
            raise ValueError(f"knowledge directory {v} does not exist")
        return v

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.profile == "production" and (self.trust_sandbox or any(i.dev_only for i in self.issuers)):
            raise ValueError(
                "trust_sandbox / issuers marked dev_only (the public sandbox key) need PGX_CDS_PROFILE=dev"
            )
        if self.profile == "production" and self.sandbox_fhir_servers:
            raise ValueError("sandbox_fhir_servers (FHIR servers for the public sandbox key) need PGX_CDS_PROFILE=dev")
        if self.profile == "production" and self.fhir.allow_http:
            raise ValueError("fhir.allow_http (plain-http fhirServer) needs PGX_CDS_PROFILE=dev")
        if self.profile == "production" and not self.dev_mode:
            _check_production_issuers(self)
        if self.public_base_url is not None:
            parts = urlsplit(self.public_base_url)
            if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
                raise ValueError("public_base_url must be an absolute http(s) URL without query or fragment")
        return self

    @property
    def dev_mode(self) -> bool:
        """No issuers configured: unauthenticated, loopback only."""
        return not self.issuers and not self.trust_sandbox

    @property
    def private_network_cors(self) -> bool:
        """Private Network Access preflights are answered: by setting, else in dev mode or the dev profile."""
        if self.cors_private_network is not None:
            return self.cors_private_network
        return self.dev_mode or self.profile == "dev"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _SmartEnvSource(settings_cls), _FileSource(settings_cls),
                file_secret_settings)


class _SmartEnvSource(PydanticBaseSettingsSource):
    """The SMART section from `PGX_CDS_SMART_<FIELD>` (the names it had as a settings model of its own);
    `PGX_CDS_SMART__<FIELD>` (the nested form) is read by the environment source and wins."""

    _PREFIX = "PGX_CDS_SMART_"

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        env = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(self._PREFIX)}
        out: dict[str, Any] = {}
        for name, info in SmartSettings.model_fields.items():
            raw = env.get(self._PREFIX + name.upper())
            if raw is None:
                continue
            if getattr(info.annotation, "__origin__", None) is list:  # a JSON list, as pydantic-settings reads one
                try:
                    raw = json.loads(raw)
                except ValueError:
                    raise ValueError(f"{self._PREFIX}{name.upper()} must be a JSON list") from None
            out[name] = raw
        return {"smart": out} if out else {}


class _FileSource(PydanticBaseSettingsSource):
    """Reads the YAML or TOML file named by PGX_CDS_CONFIG_FILE."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("PGX_CDS_CONFIG_FILE")
        if not path:
            return {}
        p = Path(path)
        text = p.read_text(encoding="utf-8")
        data = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"config file {p} must hold a mapping")
        return data


def _check_production_issuers(s: "Settings") -> None:
    """Production: the expected JWT `aud` never comes from request headers (Host, X-Forwarded-*), and
    issuers' keys are never fetched over plain http."""
    if not s.public_base_url and any(not i.audiences for i in s.issuers):
        raise ValueError(
            "public_base_url is required in the production profile (the JWT audience is never taken from "
            "the request's Host header): set PGX_CDS_PUBLIC_BASE_URL to the URL the EHR calls, or give every "
            "issuer its `audiences`"
        )
    for i in s.issuers:
        for url in [*([str(i.jwks_url)] if i.jwks_url else []), *i.jku_allowlist]:
            if urlsplit(url).scheme != "https":
                raise ValueError(f"issuer {i.iss}: JWKS URL {url} must use https in the production profile")


# The process environment is read (and written) here only. Code that runs without a Settings object (the
# FHIR reader's code tables, the phenotype lookup's gene files, the CLI's fast lookups) asks these.


def configured_knowledge_dir() -> Path | None:
    """`PGX_CDS_KNOWLEDGE_DIR` as given (not validated), or None."""
    value = os.environ.get("PGX_CDS_KNOWLEDGE_DIR")
    return Path(value) if value else None


def configured_fhir_profiles_dir() -> Path | None:
    """`PGX_CDS_FHIR_PROFILES_DIR` as given, or None."""
    value = os.environ.get("PGX_CDS_FHIR_PROFILES_DIR")
    return Path(value) if value else None


def set_env(name: str, value: str, *, only_if_unset: bool = False) -> None:
    """Put a value into the process environment for code that starts later or elsewhere (uvicorn worker
    processes build their Settings from it; Spark's Python workers read PYSPARK_PYTHON)."""
    if only_if_unset:
        os.environ.setdefault(name, value)
    else:
        os.environ[name] = value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
