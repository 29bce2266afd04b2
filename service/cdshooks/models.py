"""CDS Hooks 2.0 wire models (requests, contexts, responses, cards, feedback).

Requests are tolerant: unknown fields and `extension` objects are accepted and ignored. Responses are
serialised without null or empty optional fields (spec: no null/""/[]/{} except `cards`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _In(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---------------------------------------------------------------- request


class FhirAuthorization(_In):
    access_token: str = Field(min_length=1)
    token_type: str = "Bearer"
    expires_in: int | None = None
    scope: str = ""
    subject: str | None = None
    patient: str | None = None

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, v: str) -> str:
        if v.lower() != "bearer":
            raise ValueError("token_type must be Bearer")
        return v


class HookContext(_In):
    userId: str | None = None
    patientId: str = Field(min_length=1)
    encounterId: str | None = None
    selections: list[str] | None = None
    draftOrders: dict[str, Any] | None = None


class HookRequest(_In):
    hook: str = Field(min_length=1)
    hookInstance: str = Field(min_length=1)
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: HookContext
    prefetch: dict[str, Any] | None = None


# ---------------------------------------------------------------- response


class Coding(_Out):
    system: str
    code: str
    display: str | None = None


class Source(_Out):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class ActionModel(_Out):
    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resourceId: str | None = None


class Suggestion(_Out):
    label: str
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[ActionModel] | None = None


class Link(_Out):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None
    autolaunchable: bool | None = None


class Card(_Out):
    uuid: str | None = None
    summary: str = Field(max_length=139)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None


class CdsResponse(_Out):
    cards: list[Card] = Field(default_factory=list)
    systemActions: list[ActionModel] | None = None


class Service(_Out):
    hook: str
    id: str
    title: str | None = None
    description: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None
    extension: dict[str, Any] | None = None


class Discovery(_Out):
    services: list[Service]


# ---------------------------------------------------------------- feedback


class OverrideReason(_In):
    reason: dict[str, Any] | None = None  # a Coding; the sandbox omits display
    userComment: str | None = None


class AcceptedSuggestion(_In):
    id: str = Field(min_length=1)


class FeedbackItem(_In):
    card: str | None = None  # the sandbox omits it when the card had no uuid
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: str = Field(min_length=1)

    @field_validator("outcomeTimestamp")
    @classmethod
    def _rfc3339(cls, v: str) -> str:
        try:
            datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError("outcomeTimestamp must be an RFC 3339 date-time") from exc
        return v

    @model_validator(mode="after")
    def _rules(self) -> "FeedbackItem":
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("accepted feedback needs acceptedSuggestions (cds-fb-2)")
        if self.overrideReason is not None and not (self.overrideReason.reason or self.overrideReason.userComment):
            raise ValueError("overrideReason needs reason or userComment (cds-fb-3)")
        return self


class FeedbackRequest(_In):
    feedback: list[FeedbackItem] = Field(min_length=1)
