"""Reuse of work done for an earlier request with the same content: the one place the hook pipeline keeps
results derived from requests (never the source of truth; the snapshot cache is service/hooks/snapshots.py).

What pays on distinct-patient traffic (measured with `python -m bench.inproc`, docs/performance.md) is the
order-sign that follows an order-select for the same patient and orders moments later: it reuses the
patient snapshot order-select derived from the same prefetch, and the card templates of each order
evaluated against it. Both are found by a small key (whose patient, which order) and taken only when the
content they were derived from is equal (`==`; a miss costs a dict lookup). An order's content is its parsed
resource (small). A snapshot's content is the prefetch serialised once, as one flat bytes object: holding
the parsed prefetch (~1,500 objects per patient) kept hundreds of thousands of objects churning through
the cyclic GC's generations (measured on the live mix: GC time 720-910 -> 320-410 ms per 35k requests,
collections over 5 ms 18-19 -> 4, p99 88-155 -> 42-59 ms). Nothing else is kept: whole-request memos
cost more on distinct traffic than they returned.

`PGX_CDS_REUSE__ENABLED=false` keeps nothing: every request is evaluated afresh, with the same answers
(tests/hooks/test_reuse.py compares both over a set of requests).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class Reuse:
    """A bounded LRU of (key -> content, value). `get` returns the value only for equal content."""

    __slots__ = ("enabled", "_data", "_size")

    def __init__(self, enabled: bool = True, size: int = 512) -> None:
        self.enabled = enabled
        self._data: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
        self._size = size

    def get(self, key: Hashable, content: Any) -> Any:
        """What was kept for `key` when it was derived from content equal to `content`, else None."""
        hit = self._data.get(key)
        if hit is None or not (hit[0] is content or hit[0] == content):
            return None
        self._data.move_to_end(key)
        return hit[1]

    def put(self, key: Hashable, content: Any, value: Any) -> None:
        """Keep `value`, derived from `content` (which must not be changed afterwards)."""
        if not self.enabled:
            return
        self._data[key] = (content, value)
        self._data.move_to_end(key)
        if len(self._data) > self._size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
