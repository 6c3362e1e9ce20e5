"""Advisory file locks (flock): one writer per output directory (a second `calor bench` on the same directory
meets a clear message instead of interleaving its cells with the first one's), and one builder per cached
artifact (a second process that needs it waits, then loads it)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .artifacts import ensure_directory
from .errors import ConfigError
from .progress import log

LOCK_NAME = ".calor.lock"

_HELD: set[Path] = set()  # directories and artifact lock files this process holds: re-entrant within a process

try:
    import fcntl
except ImportError:  # not POSIX: no lock (documented)
    fcntl = None  # type: ignore[assignment]


@contextmanager
def directory_lock(directory: Path, what: str = "calor bench") -> Iterator[None]:
    """Hold an exclusive lock on `directory` for the duration of the block, or raise ConfigError naming the
    process that holds it. The lock dies with its process (kill -9 included): nothing to clean up."""
    from . import parallel

    directory = ensure_directory(Path(directory))
    path = directory / LOCK_NAME
    if fcntl is None or directory.resolve() in _HELD or not parallel.is_main():  # torchrun: rank 0 holds it for all
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


@contextmanager
def artifact_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the lock file `path` for the block, waiting while another process holds it.
    The lock dies with its process (kill -9 included). On NFS, flock is emulated with POSIX locks, which need
    a lock daemon (lockd) on the server; without one the locks do not exclude and builds may double."""
    key = Path(path).resolve()
    if fcntl is None or key in _HELD:
        yield
        return
    ensure_directory(key.parent)
    with open(key, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"[dim]waiting for another process to finish {what}[/dim]")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)  # closing the file releases the lock
