"""Code versions: every cached artifact and bench cell records the version of each module that computed it.

The versions live in `code_versions.json` beside this file, one per source module whose code can change a
number (models, defenses, attacks, data, metrics, training; not the CLI, reports or error messages). It
also holds a hash of each module's source with comments, docstrings and layout removed, and
`tests/test_code_versions.py` fails when a module's code differs from its recorded hash: whoever changes
the code must bump that module's version (``python -m calor.versioning bump``), which makes every artifact
it produced stale. A stale artifact or cell is reported and rebuilt, never silently reused.

An artifact depends on the modules its work runs through: the roots of that work (the defense's class
hierarchy and the training loop; an attack's class hierarchy and the judging code) and every calor module
they import, transitively, within the versioned set.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import sys
import tokenize
from pathlib import Path
from typing import Any, Iterable

PACKAGE = Path(__file__).resolve().parent
LOCK = PACKAGE / "code_versions.json"

# Modules whose code can change a number calor reports (relative to the package, '/'-separated).
VERSIONED_DIRS = ("attacks", "defenses", "models", "data", "metrics")
VERSIONED_FILES = ("training.py", "evaluation.py", "diagnostics.py", "images.py", "runtime.py", "parallel.py")


def versioned_modules() -> list[str]:
    files = [f for d in VERSIONED_DIRS for f in sorted((PACKAGE / d).glob("*.py")) if f.name != "__init__.py"]
    files += [PACKAGE / f for f in VERSIONED_FILES]
    return [f.relative_to(PACKAGE).as_posix() for f in files]


def normalized_source(text: str) -> str:
    """The module's tokens without comments, docstrings and blank lines: what a version covers."""
    tree = ast.parse(text)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.add((first.lineno, first.col_offset))
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING):
            continue
        if tok.type == tokenize.STRING and tok.start in docstrings:
            continue
        out.append(tok.string if tok.type not in (tokenize.INDENT, tokenize.DEDENT) else f"<{tokenize.tok_name[tok.type]}>")
    return " ".join(out)


def source_hash(module: str) -> str:
    return hashlib.sha256(normalized_source((PACKAGE / module).read_text()).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _lock() -> dict[str, dict[str, Any]]:
    return json.loads(LOCK.read_text())


def version(module: str) -> int:
    """The recorded version of `module` (1 for a module added since the lock was written)."""
    return int(_lock().get(module, {}).get("version", 1))


def module_file(name: str) -> str | None:
    """'calor.attacks.gmi' -> 'attacks/gmi.py' if that module is versioned."""
    if not name.startswith("calor."):
        return None
    rel = name[len("calor."):].replace(".", "/") + ".py"
    return rel if (PACKAGE / rel).is_file() and rel in set(versioned_modules()) else None


@functools.lru_cache(maxsize=None)
def _imports(module: str) -> tuple[str, ...]:
    """The versioned calor modules `module` imports (relative imports resolved)."""
    tree = ast.parse((PACKAGE / module).read_text())
    package = ["calor", *module[:-3].split("/")[:-1]]
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for n in names:
            f = module_file(n)
            if f and f != module:
                found.append(f)
    return tuple(sorted(set(found)))


def closure(roots: Iterable[str]) -> list[str]:
    """`roots` and every versioned module they import, transitively."""
    seen: set[str] = set()
    todo = [r for r in roots if r in set(versioned_modules())]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(_imports(m))
    return sorted(seen)


def class_modules(cls: type) -> list[str]:
    """The versioned modules defining `cls` and its base classes."""
    return [f for f in (module_file(c.__module__) for c in cls.__mro__) if f]


def code_versions(roots: Iterable[str]) -> dict[str, int]:
    """{module: version} for the work rooted at `roots` (module paths like 'attacks/gmi.py')."""
    return {m: version(m) for m in closure(roots)}


def stale_modules(recorded: dict[str, int] | None, current: dict[str, int]) -> list[str]:
    """What makes an artifact stale: modules whose version differs (or 'no code versions recorded')."""
    if recorded is None:
        return ["(built before code versions were recorded)"]
    return [f"{m} v{recorded.get(m, '-')} -> v{v}" for m, v in current.items() if recorded.get(m) != v] + \
           [f"{m} (no longer used)" for m in recorded if m not in current]


def check() -> list[str]:
    """Modules whose source differs from the lock (what the test reports)."""
    lock = _lock()
    return [m for m in versioned_modules() if lock.get(m, {}).get("source") != source_hash(m)]


def bump(modules: Iterable[str] | None = None) -> list[str]:
    """Bump the version of every changed module (or of `modules`) and record the current sources."""
    lock = {k: dict(v) for k, v in _lock().items()} if LOCK.is_file() else {}
    changed = list(modules) if modules else check()
    for m in versioned_modules():
        entry = lock.setdefault(m, {"version": 1, "source": ""})
        if m in changed and entry["source"]:
            entry["version"] += 1
        entry["source"] = source_hash(m)
    lock = {m: lock[m] for m in versioned_modules()}
    LOCK.write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")
    _lock.cache_clear()
    return changed


if __name__ == "__main__":  # python -m calor.versioning [check|bump [MODULE ...]]
    cmd = sys.argv[1] if len(sys.argv) > 1 else "check"
    if cmd == "bump":
        print("bumped:", ", ".join(bump(sys.argv[2:] or None)) or "nothing changed")
    else:
        changed = check()
        print("changed without a version bump:", ", ".join(changed) if changed else "none")
        sys.exit(1 if changed else 0)
