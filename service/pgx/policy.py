"""The few site settings the engine reads, as one small immutable object (not the whole service Settings).

``EnginePolicy.of(settings)`` builds it from the service Settings (or anything with the same attributes);
the engine's public functions accept either and convert once per call (:func:`as_policy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PhenoconversionPolicy:
    """Phenoconversion from co-medication: switched off whole, per gene or per perpetrator drug."""

    enabled: bool = True
    disabled_genes: frozenset[str] = frozenset()
    disabled_drugs: frozenset[str] = frozenset()  # perpetrator names, lower case


@dataclass(frozen=True, slots=True)
class EnginePolicy:
    indicator_overrides: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # rule id -> indicator
    disabled_rules: frozenset[str] = frozenset()
    pretest_cards: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # drug name -> off | info | warning (overrides the guideline file)
    phenoconversion: PhenoconversionPolicy = field(default_factory=PhenoconversionPolicy)

    @classmethod
    def of(cls, settings: Any) -> "EnginePolicy":
        """The policy of a service Settings object (attributes missing on it keep their defaults)."""
        ps = getattr(settings, "phenoconversion", None)
        pheno = PhenoconversionPolicy() if ps is None else PhenoconversionPolicy(
            bool(ps.enabled), frozenset(ps.disabled_genes), frozenset(ps.disabled_drugs))
        return cls(
            indicator_overrides=MappingProxyType(dict(getattr(settings, "indicator_overrides", None) or {})),
            disabled_rules=frozenset(getattr(settings, "disabled_rules", None) or ()),
            pretest_cards=MappingProxyType(dict(getattr(settings, "pretest_cards", None) or {})),
            phenoconversion=pheno,
        )


DEFAULT_POLICY = EnginePolicy()


def as_policy(policy_or_settings: Any) -> EnginePolicy:
    """An EnginePolicy as is; a Settings object (or None: the defaults) converted."""
    if type(policy_or_settings) is EnginePolicy:
        return policy_or_settings
    if policy_or_settings is None:
        return DEFAULT_POLICY
    return EnginePolicy.of(policy_or_settings)
