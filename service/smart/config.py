"""Settings of the SMART on FHIR app (env prefix ``PGX_CDS_SMART_``).

Kept apart from :class:`service.config.Settings` (which forbids unknown keys) so the app can be
configured today; the lead may fold it into the main model as a nested ``smart`` section later.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Resource types the page reads. Observation is required; the others degrade gracefully.
DATA_RESOURCES = ("Patient", "Observation", "MedicationRequest", "Condition")


class SmartSettings(BaseSettings):
    """How the app registers with an EHR's authorization server and keeps its sessions."""

    model_config = SettingsConfigDict(env_prefix="PGX_CDS_SMART_", extra="forbid")

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


@lru_cache(maxsize=1)
def get_smart_settings() -> SmartSettings:
    return SmartSettings()
