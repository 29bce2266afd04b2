"""Card `detail` is markdown (CDS Hooks 2.0: GitHub-flavoured): data put into it must stay literal text."""

from __future__ import annotations

import re

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<])")
_MD_CELL = re.compile(r"([\\`*_\[\]<|])")


def md_text(text: str, *, cell: bool = False) -> str:
    """Data (diplotypes, notes, labels) as literal markdown text: `*2/*2` must not become emphasis."""
    return (_MD_CELL if cell else _MD_SPECIAL).sub(r"\\\1", " ".join(str(text).split()))
