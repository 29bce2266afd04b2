"""Progress: a rich progress bar on a terminal, plain lines (at most one every few seconds) otherwise.
Counts only (bytes, patients): never an identifier."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class PlainProgress:
    def __init__(self, stream: TextIO, every_s: float = 5.0) -> None:
        self.stream = stream
        self.every_s = every_s
        self.name = ""
        self.total: int | None = None
        self.unit = ""
        self._last = 0.0
        self._start = time.monotonic()
        self._value = 0

    def phase(self, name: str, total: int | None, unit: str) -> None:
        self._flush_phase()
        self.name, self.total, self.unit = name, total, unit
        self._start = self._last = time.monotonic()
        self._value = 0
        self.stream.write(f"screen: {name}...\n")
        self.stream.flush()

    def update(self, value: int) -> None:
        self._value = value
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = self._value / max(now - self._start, 1e-9)
        pct = f" ({100 * self._value / self.total:.0f}%)" if self.total else ""
        shown = _fmt(self._value, self.unit)
        self.stream.write(f"screen: {self.name} {shown}{pct}, {_fmt(rate, self.unit)}/s\n")
        self.stream.flush()

    def _flush_phase(self) -> None:
        if self.name:
            self._line(time.monotonic())

    def done(self) -> None:
        self._flush_phase()
        self.name = ""

    def note(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.stream.write(f"screen: {text}\n")
            self.stream.flush()


class RichProgress:
    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[shown]}"), TimeElapsedColumn(),
                                 console=Console(file=stream), transient=False,
                                 auto_refresh=False)  # redrawn on update(): no thread (screen workers fork)
        self.task: Any = None
        self.unit = ""
        self.progress.start()

    def phase(self, name: str, total: int | None, unit: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[-1].total or 0)
        self.unit = unit
        self.task = self.progress.add_task(name, total=total, shown="")

    def update(self, value: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=value, shown=_fmt(value, self.unit), refresh=True)

    def done(self) -> None:
        self.progress.stop()

    def note(self, text: str) -> None:
        self.progress.console.log(text)


class NoProgress:
    def phase(self, name: str, total: int | None, unit: str) -> None: ...
    def update(self, value: int) -> None: ...
    def done(self) -> None: ...
    def note(self, text: str) -> None: ...


def reporter(stream: TextIO = sys.stderr, quiet: bool = False) -> Any:
    if quiet:
        return NoProgress()
    if stream.isatty():
        return RichProgress(stream)
    return PlainProgress(stream)


def _fmt(value: float, unit: str) -> str:
    if unit == "B":
        for u in ("B", "KB", "MB", "GB"):
            if value < 1024 or u == "GB":
                return f"{value:.0f} {u}" if u == "B" else f"{value:.1f} {u}"
            value /= 1024
    return f"{value:,.0f} {unit}"
