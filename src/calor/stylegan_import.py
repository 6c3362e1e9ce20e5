"""The field's StyleGAN2 weights as a calor prior artifact, without running anyone's code.

Three formats are read (`read_stylegan2`), each into the NVlabs parameter names of
`calor.models.stylegan2.StyleGAN2Generator`:

- **NVIDIA's pickles** (`ffhq.pkl`, `network-snapshot-*.pkl`). Their classes come from
  `torch_utils.persistence`, which stores each class's *source code* in the pickle and executes it when the
  file is unpickled the usual way. `InertUnpickler` instead maps every global the file names to an inert
  stub — a dict that records its arguments and state and does nothing else — except the handful of
  functions that rebuild tensors, whose inputs it checks: `_reconstruct_persistent_obj` returns a stub that
  keeps the class name, the (unread, never executed) source and the state. The state dicts of `G_ema` and
  its sub-modules are then walked like `nn.Module.state_dict()` and its init kwargs give the config.
- **Plain state dicts** (IF-GMI's converted `ffhq_G.pth`: `{"state_dict": G.state_dict()}`, or a bare
  one; `.pth`/`.pt` read with `torch.load(weights_only=True)`, or `.safetensors`).
- **rosinality-style checkpoints** (`{"g_ema": ..., "latent_avg": ...}`): recognised and refused with a
  message, since their layer names and the TF config-f weights they hold need a name map that calor
  does not have yet.

`import_stylegan2(file, out)` writes the artifact: weights.safetensors + meta.json with the config, the
source file's SHA-256, its format and the key report (every expected key found, none left over, every
shape right — anything else is refused, naming the keys).
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from .artifacts import save_artifact
from .errors import ArtifactError
from .filekinds import describe, sniff
from .models.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from .weights import file_digest, load_into, load_weights

KIND = "stylegan2"
IMPORT_SCHEMA = 1


class Inert(dict):
    """What every global of an untrusted pickle becomes: it records how it was called and what state it
    was given (as a dict, for dict-like state), and has no behaviour. Objects made by NEWOBJ skip
    `__init__`, hence the class-level defaults."""

    _args: tuple[Any, ...] = ()
    _kwargs: dict[str, Any] = {}
    _state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.__dict__["_args"], self.__dict__["_kwargs"] = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def append(self, item: Any) -> None:  # list-like objects are rebuilt with APPEND(S)
        self.__dict__.setdefault("_items", []).append(item)

    def extend(self, items: Any) -> None:
        self.__dict__.setdefault("_items", []).extend(items)


def _stub(module: str, name: str) -> type:
    return type(name, (Inert,), {"__module__": f"inert.{module}", "_global": f"{module}.{name}"})


class PersistentObject(Inert):
    """A `torch_utils.persistence` object: its class name, its source code (kept as text, never run) and
    its state (an `nn.Module.__dict__`)."""

    @property
    def meta(self) -> dict[str, Any]:
        meta = self._args[0] if self._args else {}
        return meta if isinstance(meta, dict) else {}


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    return PersistentObject(meta)


def _storage_from_bytes(data: Any) -> Any:
    """A storage pickled by `torch.storage._load_from_bytes`: legacy torch.save bytes, read with weights_only."""
    if not isinstance(data, (bytes, bytearray)):
        raise ArtifactError("pickle: a storage's payload is not bytes")
    buffer = io.BytesIO(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = torch.load(buffer, map_location="cpu", weights_only=True)
    if not isinstance(out, (torch.TypedStorage, torch.UntypedStorage)):
        raise ArtifactError(f"pickle: a storage's payload holds {type(out).__name__}, not a storage")
    return out


def _ints(v: Any) -> bool:
    return isinstance(v, (tuple, list, torch.Size)) and all(isinstance(i, int) for i in v)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)) or not isinstance(offset, int) \
            or not _ints(size) or not _ints(stride):
        raise ArtifactError("pickle: a tensor with an unexpected layout (not a storage, offset, size and stride)")
    t = torch.empty(0, dtype=storage.dtype if isinstance(storage, torch.TypedStorage) else torch.uint8)
    t.set_(storage if isinstance(storage, torch.UntypedStorage) else storage._untyped_storage, offset, tuple(size), tuple(stride))
    return t


def _rebuild_parameter(data: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise ArtifactError("pickle: a parameter whose data is not a tensor")
    return data


SAFE = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
}


class InertUnpickler(pickle.Unpickler):
    """Unpickles a file without importing or running anything it names (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        return SAFE.get((module, name)) or _stub(module, name)

    def persistent_load(self, pid: Any) -> Any:  # torch.save's zip format: not what these pickles are
        raise ArtifactError("pickle: persistent storage ids (a torch.save file): read it as a state dict instead")


def _module_state(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, PersistentObject):
        state = obj.meta.get("state")
    elif isinstance(obj, Inert):
        state = obj._state
    else:
        return None
    return state if isinstance(state, dict) else None


def walk_state_dict(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The parameters and persistent buffers of an unpickled module tree, named as `nn.Module.state_dict()`."""
    state = _module_state(obj)
    if state is None:
        return {}
    out: dict[str, torch.Tensor] = {}
    skip = state.get("_non_persistent_buffers_set")
    skip = set(skip) if isinstance(skip, (set, frozenset, list, tuple)) else set()
    for group in ("_parameters", "_buffers"):
        for name, t in (state.get(group) or {}).items():
            if isinstance(t, torch.Tensor) and name not in skip:
                out[prefix + name] = t
    for name, child in (state.get("_modules") or {}).items():
        out.update(walk_state_dict(child, f"{prefix}{name}."))
    return out


def _kwargs(v: Any) -> dict[str, Any]:
    if isinstance(v, dict):
        return {k: _kwargs(x) if isinstance(x, dict) else x for k, x in dict(v).items()}
    return {}


def config_from_kwargs(kw: dict[str, Any]) -> StyleGAN2Config:
    """A StyleGAN2Config from NVlabs Generator init kwargs (z_dim, w_dim, img_resolution, img_channels,
    mapping_kwargs, synthesis_kwargs); conditional or non-skip generators are refused."""
    if kw.get("c_dim", 0):
        raise ArtifactError(f"a conditional generator (c_dim={kw['c_dim']}): calor's StyleGAN2 prior is unconditional")
    mk, sk = _kwargs(kw.get("mapping_kwargs")), _kwargs(kw.get("synthesis_kwargs"))
    if sk.get("architecture", "skip") != "skip":
        raise ArtifactError(f"synthesis architecture {sk['architecture']!r}: only 'skip' (the FFHQ generators') is supported")
    try:
        return StyleGAN2Config(resolution=int(kw["img_resolution"]), channels=int(kw["img_channels"]), z_dim=int(kw["z_dim"]),
                               w_dim=int(kw["w_dim"]), mapping_layers=int(mk.get("num_layers", 8)),
                               channel_base=int(sk.get("channel_base", 32768)), channel_max=int(sk.get("channel_max", 512)),
                               conv_clamp=None if sk.get("conv_clamp") is None else float(sk["conv_clamp"]),
                               mapping_lr_multiplier=float(mk.get("lr_multiplier", 0.01)),
                               w_avg_beta=float(mk.get("w_avg_beta", 0.995)))
    except KeyError as exc:
        raise ArtifactError(f"generator init kwargs lack {exc.args[0]!r}") from None


def read_pickle(path: Path) -> tuple[dict[str, torch.Tensor], StyleGAN2Config, dict[str, Any]]:
    """G_ema's tensors and config from an NVIDIA pickle, read by `InertUnpickler`."""
    if sniff(path) != "pickle":
        raise ArtifactError(f"{path}: {describe(path)}, not a network pickle (expected an NVIDIA network-snapshot .pkl)")
    try:
        with open(path, "rb") as fh:
            data = InertUnpickler(fh).load()
    except ArtifactError:
        raise
    except Exception as exc:  # a damaged pickle fails in the opcode reader with KeyError, struct.error, EOFError...
        raise ArtifactError(f"{path}: a damaged pickle ({type(exc).__name__}: {str(exc)[:160]})") from None
    if not isinstance(data, dict) or "G_ema" not in data:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ArtifactError(f"{path}: no 'G_ema' in the pickle (found {keys}): not a StyleGAN2 network snapshot")
    g = data["G_ema"]
    state = _module_state(g)
    if state is None:
        raise ArtifactError(f"{path}: 'G_ema' is not a network object")
    kwargs = _kwargs(state.get("_init_kwargs", state.get("init_kwargs")))
    if not kwargs:
        raise ArtifactError(f"{path}: 'G_ema' carries no init kwargs (resolution, channels...): cannot size the generator")
    info = {"class": g.meta.get("class_name") if isinstance(g, PersistentObject) else type(g).__name__,
            "source_code_executed": False}
    return walk_state_dict(g), config_from_kwargs(kwargs), info


def infer_config(sd: dict[str, torch.Tensor]) -> StyleGAN2Config:
    """The config of a plain NVlabs-named state dict, from its tensors' names and shapes."""
    try:
        blocks = sorted({int(k.split(".")[1][1:]) for k in sd if k.startswith("synthesis.b")})
        layers = sorted({int(k.split(".")[1][2:]) for k in sd if k.startswith("mapping.fc")})
        z_dim = sd["mapping.fc0.weight"].shape[1]
        w_dim = sd[f"mapping.fc{layers[-1]}.weight"].shape[0]
        res = blocks[-1]
        channels = sd[f"synthesis.b{res}.torgb.weight"].shape[0]
        widths = {r: sd[f"synthesis.b{r}.conv1.weight"].shape[0] for r in blocks}
    except (KeyError, IndexError, ValueError) as exc:
        raise ArtifactError(f"not a StyleGAN2 state dict in the NVlabs layout (missing {exc}): expected mapping.fc*, synthesis.b*") from None
    # channel_base // r capped at channel_max: the widest block is the cap, the narrowest the base / R
    cmax = max(widths.values())
    base = widths[res] * res
    cfg = StyleGAN2Config(resolution=res, channels=channels, z_dim=z_dim, w_dim=w_dim, mapping_layers=len(layers),
                          channel_base=base, channel_max=cmax)
    if any(cfg.block_channels(r) != c for r, c in widths.items()):
        raise ArtifactError(f"block widths {widths} do not follow min(channel_base // r, channel_max)")
    return cfg


def read_stylegan2(path: Path | str, conv_clamp: float | None = None) -> tuple[dict[str, torch.Tensor], StyleGAN2Config, dict[str, Any]]:
    """(state dict, config, info) of a StyleGAN2 generator file in any format the module docstring lists."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file does not exist")
    if path.suffix == ".pkl":
        sd, cfg, info = read_pickle(path)
        fmt = "nvidia-pickle"
    else:
        rosinality = (f"{path}: a rosinality-style checkpoint (g_ema / style / convs / to_rgbs names); calor reads the NVlabs "
                      "layout only: export G.state_dict() of an NVlabs generator, or convert the checkpoint to NVlabs names")
        try:
            raw = load_weights(path)
        except ArtifactError as exc:  # {"g_ema": {...}, "latent_avg": ...}: nested dicts that are not one state dict
            if "g_ema" in str(exc):
                raise ArtifactError(rosinality) from None
            raise
        if any(k.startswith(("g_ema.", "style.", "convs.", "to_rgbs.")) for k in raw):
            raise ArtifactError(rosinality)
        sd = {k[len("G_ema."):] if k.startswith("G_ema.") else k: v for k, v in raw.items()}
        cfg = infer_config(sd)
        if conv_clamp is not None:
            cfg = StyleGAN2Config(**{**cfg.to_dict(), "conv_clamp": conv_clamp})
        fmt, info = "state-dict", {}
    return sd, cfg, {"format": fmt, **info}


def build_checked(sd: dict[str, torch.Tensor], cfg: StyleGAN2Config, **kwargs: Any) -> tuple[StyleGAN2Generator, dict[str, Any]]:
    """The generator of `cfg` with `sd` loaded, every key and shape checked (`weights.load_into`, strict):
    anything missing, left over or misshapen is refused, naming it."""
    G = StyleGAN2Generator(cfg, **kwargs)
    try:
        report = load_into(G, sd, strict=True)
    except ArtifactError as exc:
        raise ArtifactError(f"the weights do not fit a StyleGAN2 generator at {cfg.resolution} px: {exc}") from None
    return G.eval(), report.to_dict()


def import_stylegan2(path: Path | str, out: Path | str, conv_clamp: float | None = None) -> Path:
    """Write the calor prior artifact of a StyleGAN2 generator file to `out` (atomic); see the module docstring."""
    path = Path(path)
    sd, cfg, info = read_stylegan2(path, conv_clamp)
    G, report = build_checked(sd, cfg)
    meta = {"schema": IMPORT_SCHEMA, "kind": KIND, "config": cfg.to_dict(), "num_ws": G.num_ws,
            "source": {"file": path.name, "sha256": file_digest(path), **info}, "key_report": report}
    return save_artifact(Path(out), G.state_dict(), meta)


def load_stylegan2(path: Path | str, **kwargs: Any) -> StyleGAN2Generator:
    """A StyleGAN2Generator from a calor artifact written by `import_stylegan2`, or a StyleGAN2 prior calor
    trained (`prior.kind: stylegan2`, from the cache)."""
    from .artifacts import load_artifact

    art = load_artifact(Path(path))
    tensors = art.tensors
    if art.meta.get("kind") == KIND:  # imported
        cfg = StyleGAN2Config(**art.meta["config"])
    elif "stylegan2_config" in art.meta:  # trained by calor (a cached prior: generator and critic)
        cfg = StyleGAN2Config(**art.meta["stylegan2_config"])
        tensors = {k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")}
    else:
        raise ArtifactError(f"{path}: not a {KIND} prior (neither imported by `calor prior import` nor trained with prior.kind: {KIND})")
    return build_checked(tensors, cfg, **kwargs)[0]
