"""Loading weights someone else wrote, without running their code.

calor's own cache holds only safetensors and JSON. A user's checkpoint may be a safetensors file or a
PyTorch state-dict file; the latter is read with ``torch.load(weights_only=True)``, whose restricted
unpickler refuses every object that is not a tensor or a plain container, so a malicious pickle raises
instead of executing. Nothing in calor calls ``pickle`` or an unrestricted ``torch.load``
(``tests/test_safe_loading.py`` checks the source).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import ArtifactError

# Keys under which training scripts commonly nest a state dict inside a checkpoint.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")


def load_weights(path: Path | str) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} state dict from a ``.safetensors`` file or a PyTorch checkpoint (``.pt``/``.pth``/``.bin``,
    read with ``weights_only=True``). A checkpoint that nests the state dict under a usual key (``state_dict``,
    ``model``...) is unwrapped; a ``module.`` prefix left by DataParallel/DDP is stripped.

    Raises ArtifactError naming the file when it is missing, corrupt, or needs code to be loaded."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: weights file does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: corrupt safetensors file ({exc})") from None
    try:
        with warnings.catch_warnings():  # "pickle protocol N": irrelevant to the user, the loader still refuses code
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it references {found.group(1)})" if found else ""
        raise ArtifactError(f"{path}: refused to load: the file holds objects other than tensors and could run code when "
                            f"unpickled{what}; export a plain state dict or safetensors") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
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
