"""What a file handed to calor really is, told from its first bytes, so that a refusal can say what was found
and what was expected ("notes.pt: a text file beginning 'hello', not a weights file") instead of passing a
loader's internal exception on to the user.

Also the one bounded way calor reads a small text file a user wrote (scenario, harden record, bench plan): a
size cap (a multi-gigabyte file named `scenario.yaml` is refused before it is read), UTF-8 checked.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Literal

from .errors import CalorError

Kind = Literal["missing", "directory", "empty", "safetensors", "zip", "pickle", "png", "jpeg", "gif", "gzip", "json", "text",
               "binary"]

# Small text files (scenarios, records, plans) are a few kB; 8 MiB leaves room for a long sweep file.
TEXT_LIMIT_BYTES = 8 << 20
_HEAD = 64


def _head(path: Path, n: int = _HEAD) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut by the 64-byte window is still text
        if exc.start < len(head) - 3:
            return False
        text = head[:exc.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\r\n\f" for c in text)


def sniff(path: Path | str) -> Kind:
    """The format of `path` by its content (never its suffix)."""
    path = Path(path)
    if path.is_dir():
        return "directory"
    if not path.is_file():
        return "missing"
    head = _head(path)
    if not head:
        return "empty"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 little-endian header length, then a JSON header
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:  # pickle protocol 2-5 (torch.save's legacy format)
        return "pickle"
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if _looks_like_text(head):
        return "json" if head.lstrip()[:1] in (b"{", b"[") and _parses_as_json(path) else "text"
    return "binary"


def _parses_as_json(path: Path) -> bool:
    if path.stat().st_size > TEXT_LIMIT_BYTES:
        return False
    try:
        json.loads(path.read_bytes())
        return True
    except ValueError:
        return False


def describe(path: Path | str) -> str:
    """A phrase for what `path` holds: "an empty file", "a text file beginning 'model: cnn'", "a PNG image"..."""
    path = Path(path)
    kind = sniff(path)
    if kind == "missing":
        return "no such file"
    if kind == "directory":
        return "a directory"
    size = path.stat().st_size
    if kind == "empty":
        return "an empty file (0 bytes)"
    if kind == "text":
        first = _head(path, 40).decode("utf-8", "replace").splitlines()[0] if size else ""
        return f"a text file beginning {first[:32]!r} ({size:,} bytes)"
    if kind == "safetensors":
        (n,) = struct.unpack("<Q", _head(path, 8))
        return f"a safetensors file ({size:,} bytes, header {n:,})"
    names = {"zip": "a zip archive", "pickle": "a Python pickle", "png": "a PNG image", "jpeg": "a JPEG image",
             "gif": "a GIF image", "gzip": "a gzip stream", "json": "a JSON document"}
    if kind in names:
        return f"{names[kind]} ({size:,} bytes)"
    return f"binary data of no known format ({size:,} bytes, beginning {_head(path, 8).hex(' ')})"


def read_small_text(path: Path | str, what: str, error: type[CalorError], limit: int = TEXT_LIMIT_BYTES) -> str:
    """The UTF-8 text of a small file a user wrote, or `error` naming the file and what it holds instead."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path}: is a directory, not a file")
    if not path.is_file():
        raise error(f"{what} {path}: file does not exist")
    size = path.stat().st_size
    if size > limit:
        raise error(f"{what} {path}: {size:,} bytes, more than a {what} can be ({limit:,}); is it the right file?")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {path}: {describe(path)}, not a UTF-8 text file") from None
