"""Loading weights someone else wrote, without running their code.

calor's own cache holds only safetensors and JSON. A user's checkpoint may be a safetensors file or a
PyTorch state-dict file; the latter is read with ``torch.load(weights_only=True)``, whose restricted
unpickler refuses every object that is not a tensor or a plain container, so a malicious pickle raises
instead of executing. Nothing in calor calls ``pickle`` or an unrestricted ``torch.load``
(``tests/test_safe_loading.py`` checks the source).
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import pickletools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from safetensors.torch import load_file

from .errors import ArtifactError
from .filekinds import describe, sniff

EXPECTED = "a .safetensors file or a PyTorch state dict written by torch.save (.pt, .pth, .bin)"

# Keys under which training scripts commonly nest a state dict inside a checkpoint.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")


def load_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} state dict from a ``.safetensors`` file or a PyTorch checkpoint (``.pt``/``.pth``/``.bin``,
    read with ``weights_only=True``). A checkpoint that nests the state dict under a usual key (``state_dict``,
    ``model``...) is unwrapped; a ``module.`` prefix left by DataParallel/DDP is stripped.

    Raises ArtifactError naming the file when it is missing, corrupt, or needs code to be loaded."""
    path = Path(path)
    kind = sniff(path)
    if kind in ("missing", "directory"):
        raise ArtifactError(f"{path}: weights file does not exist" if kind == "missing" else f"{path}: a directory, not a weights file")
    if kind == "safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # the Rust reader's errors (header too large, truncated, bad dtype) have no common type
            raise ArtifactError(f"{path}: corrupt safetensors file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if kind not in ("zip", "pickle") or path.suffix == ".safetensors":
        raise ArtifactError(f"{path}: {describe(path)}, not a weights file; expected {EXPECTED}")
    try:
        with warnings.catch_warnings():  # "pickle protocol N": irrelevant to the user, the loader still refuses code
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        refs = [found.group(1)] if found else _pickle_globals(path) if kind == "pickle" else []
        if refs:
            raise ArtifactError(f"{path}: refused to load: the file holds objects other than tensors and could run code when "
                                f"unpickled (it references {', '.join(refs[:3])}); export a plain state dict or safetensors") from None
        op = re.search(r"Unsupported operand (\d+)", str(exc))
        if op:  # pickle.dump's protocol-4/5 framing, which torch's restricted reader does not implement
            raise ArtifactError(f"{path}: a pickle the weights-only reader cannot read (opcode {op.group(1)}; not written by "
                                "torch.save); re-save the state dict with torch.save or safetensors") from None
        raise ArtifactError(f"{path}: corrupt pickle data ({describe(path)}) that the weights-only reader refuses") from None
    except Exception as exc:  # torch's readers raise KeyError, IndexError, RuntimeError... on malformed files
        detail = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise ArtifactError(f"{path}: {describe(path)} that is not a readable PyTorch checkpoint ({type(exc).__name__}: {detail})") from None
    for key in NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise ArtifactError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ArtifactError(f"{path}: entries that are not tensors: {', '.join(map(str, bad[:5]))}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _pickle_globals(path: Path, limit: int = 1 << 26) -> list[str]:
    """The classes and functions a plain pickle names (GLOBAL / STACK_GLOBAL), read opcode by opcode without
    executing any: how a refusal can say what a protocol-4 pickle, which torch's reader stops at, would import."""
    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh.read(limit)):
                if op.name == "GLOBAL" and isinstance(arg, str):
                    names.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # a damaged pickle: report what was read before the damage
        pass
    return list(dict.fromkeys(names))


def file_digest(path: Path | str) -> str:
    """SHA-256 of a file's bytes (hex), e.g. to record which weights a backbone started from. Computed once
    per process for a file of unchanged size and modification time: cache keys ask for it for every cell."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: weights file does not exist")
    st = path.stat()
    return _digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Model entries a checkpoint may lack without anything being lost: BatchNorm's batch counter (absent
# from pre-0.4.1 checkpoints; only used with momentum=None). Not reported as missing, not counted.
IGNORABLE_SUFFIXES = ("num_batches_tracked",)


def _abbreviate(names: list[str], limit: int = 4) -> str:
    """Names grouped by parent module ("head.*" for head.weight and head.bias), at most `limit` groups."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(n.rpartition(".")[0], []).append(n)
    shown = [f"{parent}.*" if len(members) > 1 and parent else members[0] for parent, members in groups.items()]
    more = f", ... (+{len(shown) - limit} more)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


@dataclass
class WeightReport:
    """What `load_into` did. Every model entry is in exactly one of `matched` (loaded), `missing` (no
    checkpoint tensor maps to it) and `mismatched` (one does, with another shape; not loaded).

    matched, missing: model names. unexpected: checkpoint names (as in the file) mapping to no model
    entry. mismatched: (model name, checkpoint shape, model shape)."""

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Model entries considered (matched + missing + mismatched)."""
        return len(self.matched) + len(self.missing) + len(self.mismatched)

    @property
    def complete(self) -> bool:
        """Every model entry loaded and every checkpoint tensor used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line: "loaded 312/318 tensors; 6 missing: head.*, ...; 2 unexpected: ...; 1 shape mismatch: ..."."""
        parts = [f"loaded {len(self.matched)}/{self.total} tensors"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {_abbreviate(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {_abbreviate(self.unexpected)}")
        if self.mismatched:
            shown = ", ".join(f"{n} checkpoint {tuple(a)} vs model {tuple(b)}" for n, a, b in self.mismatched[:3])
            more = f", ... (+{len(self.mismatched) - 3} more)" if len(self.mismatched) > 3 else ""
            parts.append(f"{len(self.mismatched)} shape mismatch{'es' if len(self.mismatched) > 1 else ''}: {shown}{more}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the four lists (shapes as lists) and the summary."""
        return {"matched": list(self.matched), "missing": list(self.missing), "unexpected": list(self.unexpected),
                "mismatched": [[n, list(a), list(b)] for n, a, b in self.mismatched], "summary": self.summary()}


def _mapped(name: str, prefix_map: Mapping[str, str]) -> str:
    """`name` with its longest matching prefix in `prefix_map` replaced (unchanged when none matches)."""
    best = max((p for p in prefix_map if name.startswith(p)), key=len, default=None)
    return name if best is None else prefix_map[best] + name[len(best):]


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], *, prefix_map: Mapping[str, str] | None = None,
              strict: bool = False) -> WeightReport:
    """Copy the tensors of `state` (e.g. from `load_weights`) into `model` where name and shape match.

    `prefix_map` renames checkpoint names first: the longest matching prefix is replaced, e.g.
    ``{"feature.": "blocks.1."}`` (``models.faces.field_prefix_map`` gives the field's layouts). Entries are
    copied through ``model.load_state_dict`` (dtype and device follow the model). Returns a `WeightReport`.

    Raises ArtifactError, before changing the model, when nothing matches (surely the wrong file or a
    wrong prefix map: the message lists a few names of both), when two checkpoint tensors map to the same
    model entry, or, with `strict`, when anything is missing, unexpected or of another shape."""
    prefix_map = dict(prefix_map or {})
    own = model.state_dict()
    report = WeightReport()
    to_load: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for key, tensor in state.items():
        name = _mapped(key, prefix_map)
        if name not in own:
            report.unexpected.append(key)
            continue
        if name in source:
            raise ArtifactError(f"checkpoint entries {source[name]!r} and {key!r} both map to model entry {name!r}; "
                                "check the prefix map")
        source[name] = key
        if tuple(tensor.shape) != tuple(own[name].shape):
            report.mismatched.append((name, tuple(tensor.shape), tuple(own[name].shape)))
        else:
            to_load[name] = tensor
            report.matched.append(name)
    report.missing = [n for n in own if n not in source and not n.endswith(IGNORABLE_SUFFIXES)]
    if not report.matched:
        def few(names: list[str]) -> str:
            return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "") if names else "(none)"

        ckpt, mine = few(list(state)), few(list(own))
        mapping = f" after prefix map {prefix_map}" if prefix_map else ""
        raise ArtifactError(f"no checkpoint tensor matches the model{mapping} ({report.summary()}): this is probably "
                            f"the wrong file or needs a prefix_map. Checkpoint names: {ckpt}; model names: {mine}")
    if strict and not report.complete:
        raise ArtifactError(f"weights do not match the model exactly (strict): {report.summary()}")
    with torch.no_grad():
        model.load_state_dict(to_load, strict=False)
    return report
