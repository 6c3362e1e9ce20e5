"""Progress output: a live bar on a terminal, plain periodic lines when stderr goes to a log file."""

import io

from rich.console import Console

from calor import progress


def test_non_terminal_output_gets_plain_progress_lines(monkeypatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buf, force_terminal=False, width=200))
    monkeypatch.setattr(progress, "_enabled", True)
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)  # print on every step
    with progress.task("GAN prior", total=3) as advance:
        advance(info="loss 1.5")
        advance()
        advance(info="loss 0.5")
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("GAN prior: 1/3 loss 1.5")
    assert lines[1].startswith("GAN prior: 2/3 loss 1.5")  # the last info is kept
    assert lines[-1].startswith("GAN prior: 3/3 loss 0.5")  # the final line, printed once
    assert len(lines) == 3 and "\x1b" not in buf.getvalue()  # no escape codes in a log


def test_disabled_progress_prints_nothing(monkeypatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buf, force_terminal=False))
    monkeypatch.setattr(progress, "_enabled", False)
    with progress.task("x", total=2) as advance:
        advance()
        advance()
    progress.log("hello")
    assert buf.getvalue() == ""
