"""YAML parsing for the knowledge files: libyaml's safe loader (C) where PyYAML was built with it, the
pure-Python one otherwise. Both use PyYAML's safe constructors and resolver; the C parser is several times
faster, and loading the knowledge is on the start-up path of the service and of every screening run."""

from __future__ import annotations

from typing import Any

import yaml

SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with the fastest safe loader available."""
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - a safe loader
