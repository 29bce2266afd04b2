"""Compatibility re-export: the CDS Hooks wire models moved to `service.cdshooks.models` (below
`hooks`, `cards` and `feedback`). New code imports them from there."""

from service.cdshooks.models import (  # noqa: F401
    FhirAuthorization,
    HookContext,
    HookRequest,
    Coding,
    Source,
    ActionModel,
    Suggestion,
    Link,
    Card,
    CdsResponse,
    Service,
    Discovery,
    OverrideReason,
    AcceptedSuggestion,
    FeedbackItem,
    FeedbackRequest,
)

__all__ = ["FhirAuthorization", "HookContext", "HookRequest", "Coding", "Source", "ActionModel", "Suggestion", "Link", "Card", "CdsResponse", "Service", "Discovery", "OverrideReason", "AcceptedSuggestion", "FeedbackItem", "FeedbackRequest"]
