"""Artifacts: a directory holding `weights.safetensors` + `meta.json`, written atomically, found by config hash.

A half-written artifact is never visible under its final name: everything is written into a hidden
temporary directory beside it, which is renamed into place in one step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import ArtifactError

WEIGHTS = "weights.safetensors"
META = "meta.json"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict[str, Any]) -> str:
    """Short, stable hash of a JSON-able config (key order does not matter)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


@dataclass
class Artifact:
    path: Path
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]


def write_file_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a hidden temporary file beside `path`, then rename it into place, so readers
    never see half a file (nor a leftover temporary one if `write` fails)."""
    path = Path(path)
    ensure_directory(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot write ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a quota, permissions: the old file (if any) is untouched
        Path(tmp).unlink(missing_ok=True)
        raise ArtifactError(f"{path}: cannot write ({exc.strerror or exc}); the previous version, if any, is unchanged") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ensure_directory(path: Path) -> Path:
    """Create directory `path` (and its parents), or raise ArtifactError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot create the directory ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK):
        raise ArtifactError(f"{path}: the directory is not writable")
    return path


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    write_file_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"))


def save_artifact(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Atomically create artifact directory `path` (replacing an older one of the same name)."""
    path = Path(path)
    ensure_directory(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; a cache is meant to be shared
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as its own error type
            raise ArtifactError(f"{path}: cannot write the weights ({exc}); the previous version, if any, is unchanged") from None
        write_json_atomic(tmp / META, meta)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_meta(path: Path) -> dict[str, Any]:
    meta_file = Path(path) / META
    if not meta_file.is_file():
        raise ArtifactError(f"{path}: not an artifact (no {META}); pass a directory written by calor")
    try:
        return json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{meta_file}: corrupt JSON ({exc})") from None


def load_artifact(path: Path) -> Artifact:
    """Load an artifact, with a clear error if it is missing or corrupt. Never unpickles."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: artifact directory does not exist")
    meta = load_meta(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{path}: missing {WEIGHTS}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights}: corrupt weights file ({exc})") from None
    return Artifact(path, tensors, meta)


def find_artifact(path: Path) -> Path | None:
    """Return `path` if a finished artifact lives there (both files present), else None."""
    path = Path(path)
    if (path / META).is_file() and (path / WEIGHTS).is_file():
        return path
    return None
