"""Progress bars for long work (rich), switched off in tests and when output is not wanted.

On a terminal a live bar is drawn. When stderr is a file or a pipe (a cluster job's log, `nohup`), a
live bar would only appear once the work ends, so a plain line is printed instead at most every
`LINE_INTERVAL_S` seconds and at the end: a log shows where a long run is while it runs."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
_enabled = os.environ.get("CALOR_PROGRESS", "1") != "0"
LINE_INTERVAL_S = 30.0


def set_enabled(flag: bool) -> None:
    global _enabled
    _enabled = flag


@contextmanager
def task(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Context manager yielding `advance(n=1, info=None)` (info None keeps the last text); draws a bar on
    stderr when enabled."""
    if not _enabled:
        yield lambda n=1, info=None: None
        return
    if not console.is_terminal:
        with _line_progress(description, total) as advance:
            yield advance
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )
    with bar:
        tid = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            if info is None:
                bar.update(tid, advance=n)
            else:
                bar.update(tid, advance=n, info=info)

        yield advance


@contextmanager
def _line_progress(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Plain-text progress for logs: a line every LINE_INTERVAL_S seconds and one at the end."""
    t0 = last = time.perf_counter()
    state = {"done": 0, "info": ""}

    def line() -> str:
        elapsed = time.perf_counter() - t0
        info = f" {state['info']}" if state["info"] else ""
        return f"{description}: {state['done']}/{total}{info} ({elapsed:.0f}s)"

    def advance(n: int = 1, info: str | None = None) -> None:
        nonlocal last
        state["done"] += n
        state["info"] = info or state["info"]
        now = time.perf_counter()
        if now - last >= LINE_INTERVAL_S and state["done"] < total:
            last = now
            console.print(line(), highlight=False)

    yield advance
    console.print(line(), highlight=False)


def log(message: str) -> None:
    if _enabled:
        console.print(message)
