"""Progress output: a rich bar on a terminal, plain lines otherwise; counts only."""

from __future__ import annotations

import io

from service.screen.progress import NoProgress, PlainProgress, RichProgress, reporter


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_progress_bar():
    stream = _Tty()
    p = reporter(stream)
    assert isinstance(p, RichProgress)
    p.phase("reading", total=1000, unit="B")
    p.update(500)
    p.phase("evaluating", total=10, unit="patients")
    p.update(10)
    p.note("export in progress")
    p.done()
    out = stream.getvalue()
    assert "evaluating" in out and "10 patients" in out


def test_pipe_gets_plain_lines():
    stream = io.StringIO()
    p = reporter(stream)
    assert isinstance(p, PlainProgress)
    p.every_s = 0
    p.phase("evaluating", total=4, unit="patients")
    p.update(2)
    p.done()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "screen: evaluating..." and any("2 patients (50%)" in line for line in lines)
    assert isinstance(reporter(stream, quiet=True), NoProgress)
