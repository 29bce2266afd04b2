"""Time for the Redis circuit breaker, write-behind intervals and retry back-off, injectable so tests move
it forward instead of sleeping against timers (a test that sleeps 1.1 s past a 1 s breaker flakes on a
loaded machine).

`SystemClock` is the real one. `ManualClock` only moves when `advance()` is called: `sleep()` returns once
the clock has been advanced past its deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock for tests: `now()` is what `advance()` made it; `sleep()` waits for an advance past it."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._changed: asyncio.Condition | None = None

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + seconds
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            await self._changed.wait_for(lambda: self._now >= deadline)

    async def advance(self, seconds: float) -> None:
        """Move time forward and let every task whose sleep is over run until it waits again."""
        self._now += seconds
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()
        for _ in range(20):  # a few loop turns: woken tasks run their next step (a flush, a retry)
            await asyncio.sleep(0)


SYSTEM_CLOCK = SystemClock()
