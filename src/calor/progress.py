"""Progress bars for long work (rich), switched off in tests and when output is not wanted."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
_enabled = os.environ.get("CALOR_PROGRESS", "1") != "0"


def set_enabled(flag: bool) -> None:
    global _enabled
    _enabled = flag


@contextmanager
def task(description: str, total: int) -> Iterator[Callable[..., None]]:
    """Context manager yielding `advance(n=1, info="")`; draws a bar on stderr when enabled."""
    if not _enabled:
        yield lambda n=1, info="": None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )
    with bar:
        tid = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str = "") -> None:
            bar.update(tid, advance=n, info=info)

        yield advance


def log(message: str) -> None:
    if _enabled:
        console.print(message)
