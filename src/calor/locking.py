"""One writer per output directory: an advisory lock that a second `calor bench` on the same directory
meets with a clear message instead of interleaving its cells with the first one's."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .artifacts import ensure_directory
from .errors import ConfigError

LOCK_NAME = ".calor.lock"

_HELD: set[Path] = set()  # directories this process holds: the lock is re-entrant within one process

try:
    import fcntl
except ImportError:  # not POSIX: no lock (documented)
    fcntl = None  # type: ignore[assignment]


@contextmanager
def directory_lock(directory: Path, what: str = "calor bench") -> Iterator[None]:
    """Hold an exclusive lock on `directory` for the duration of the block, or raise ConfigError naming the
    process that holds it. The lock dies with its process (kill -9 included): nothing to clean up."""
    directory = ensure_directory(Path(directory))
    path = directory / LOCK_NAME
    if fcntl is None or directory.resolve() in _HELD:
        yield
        return
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ConfigError(f"{directory}: another {what} is writing here ({holder}); wait for it to finish or "
                              "choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        _HELD.add(directory.resolve())
        try:
            yield
        finally:
            _HELD.discard(directory.resolve())
    finally:
        fh.close()  # releases the lock
