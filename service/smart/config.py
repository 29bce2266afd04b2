"""Settings of the SMART on FHIR app: the `smart` section of the one settings model
(:class:`service.config.SmartSettings`; environment variables ``PGX_CDS_SMART_<FIELD>``)."""

from __future__ import annotations

from service.config import DATA_RESOURCES, SmartSettings, get_settings

__all__ = ["DATA_RESOURCES", "SmartSettings", "get_smart_settings"]


def get_smart_settings() -> SmartSettings:
    """The SMART section of the process's settings (service.config.get_settings)."""
    return get_settings().smart
