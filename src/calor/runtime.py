"""The one device / thread / seed / version policy. Nothing else in calor calls `.cuda()`, sets the
number of torch threads or seeds an RNG globally."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import random
import sys
from typing import Any

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


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_precision = "fp32"


def set_precision(name: str) -> None:
    """Mixed precision for training and attacks: fp32 (default), bf16 or fp16 (autocast; fp16 with a gradient
    scaler, CUDA only). Recorded in `versions()` and in the cache key of everything trained under it."""
    global _precision
    if name not in PRECISIONS:
        raise ConfigError(f"--precision {name!r}: choose {', '.join(PRECISIONS)}")
    _precision = name


def precision() -> str:
    return _precision


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast region of a forward pass under the chosen precision (nothing for fp32)."""
    dtype = PRECISIONS[_precision]
    if dtype is None:
        return contextlib.nullcontext()
    if dtype is torch.float16 and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device (use bf16 on the CPU)")
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device) -> "torch.amp.GradScaler":
    """A gradient scaler, active for fp16 only (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=_precision == "fp16")


_channels_last = True


def set_channels_last(flag: bool) -> None:
    """Train on channels-last batches (default; 1.36x faster convolutions on the CPU here, BENCHMARKS.md, and
    the layout GPU tensor cores want; on CUDA the model is converted too) or on contiguous NCHW batches."""
    global _channels_last
    _channels_last = bool(flag)


def channels_last() -> bool:
    return _channels_last


def memory_format() -> torch.memory_format:
    """The memory format training batches (and, on CUDA, models) take."""
    return torch.channels_last if _channels_last else torch.contiguous_format


def compute_key() -> dict[str, Any]:
    """What the compute policy adds to cache keys: nothing for the defaults (fp32, channels-last), so their
    artifacts keep their keys."""
    key: dict[str, Any] = {} if _precision == "fp32" else {"precision": _precision}
    return key if _channels_last else key | {"channels_last": False}


THREADS_ENV = "CALOR_THREADS"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which respects taskset and container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count and return it.

    `threads` wins; else the ``CALOR_THREADS`` environment variable; else the CPUs this process may use.
    Numbers move with the thread count (different reduction orders), so `versions()` records it.
    """
    source = "--threads"
    if threads is None and os.environ.get(THREADS_ENV, "").strip():
        raw, source = os.environ[THREADS_ENV].strip(), THREADS_ENV
        try:
            threads = int(raw)
        except ValueError:
            raise ConfigError(f"{THREADS_ENV}={raw!r}: must be a positive integer") from None
    if threads is None:
        threads = available_cpus()
    if threads < 1:
        raise ConfigError(f"{source} {threads}: the number of threads must be >= 1")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
        "cpu": cpu_model(),
        # The SIMD kernels torch/oneDNN pick (AVX2 vs AVX512) and the thread count both change numbers.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
        "threads": str(torch.get_num_threads()),
        "precision": _precision,
        "channels_last": str(_channels_last),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "world_size": os.environ.get("WORLD_SIZE", "1"),
    }
