"""The one device / seed / version policy. Nothing else in calor calls `.cuda()` or seeds an RNG globally."""

from __future__ import annotations

import platform
import random
import sys

import numpy as np
import torch

from .errors import ConfigError


def resolve_device(name: str = "cpu") -> torch.device:
    """Turn 'cpu', 'cuda', 'cuda:N' or 'auto' into a device, refusing devices this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        return torch.device(name)
    raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a CPU generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def versions() -> dict[str, str]:
    """Versions of everything that can change a number calor reports."""
    from . import __version__

    return {
        "calor": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
