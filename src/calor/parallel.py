"""Data-parallel training over `torch.distributed` (processes launched by ``torchrun``), CPU (gloo) or GPU (nccl).

The design keeps one training loop: every process draws the same global batch from the same seeded
generator (so augmentation and sampling consume the random streams exactly as a single process would), keeps
its contiguous share, weights its loss by its share of the batch, and after `backward` the gradients are
summed across processes in one flat all-reduce. Batch norm computes its statistics over the global batch
(`GlobalBatchNorm`), so N processes compute the same update as one process with the same global batch, to
float rounding; `tests/test_distributed.py` checks it with 2 gloo processes. Differences that remain by
design: dropout masks (each process draws its own), and defenses whose loss is not a mean over samples or
that keep per-process state (`Defense.data_parallel = False` refuses them).

Only rank 0 writes artifacts (`Workspace.cached`); the others wait at a barrier and keep the model they
trained, which is rank 0's (every process applies the same summed gradients to the same weights).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DataParallel:
    rank: int
    world: int

    def share(self, n: int) -> slice:
        """This process's contiguous part of a global batch of `n` (sizes differ by at most one)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


_local_only = False


def current() -> Optional[DataParallel]:
    """The process group training should use, or None (single process, or inside `local_only`)."""
    if _local_only or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    return DataParallel(dist.get_rank(), dist.get_world_size())


def is_main() -> bool:
    """True on the process that reports and writes the run's results (rank 0, or the only one)."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def is_writer() -> bool:
    """True where this process saves what it computes: alone, rank 0 of a data-parallel group, or any process
    inside `local_only` (where each computes work of its own)."""
    dp = current()
    return dp is None or dp.rank == 0


@contextmanager
def local_only() -> Iterator[None]:
    """Work each process does alone (an attack cell), so its training loops must not wait for the others."""
    global _local_only
    old, _local_only = _local_only, True
    try:
        yield
    finally:
        _local_only = old


def init_from_environment(device: str) -> Optional[DataParallel]:
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1) and return the device this process
    uses: nccl on cuda:LOCAL_RANK for a CUDA run, gloo on the CPU otherwise. No-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2:
        return None
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return current()


def local_device(device: str) -> str:
    """Under torchrun, a CUDA run uses the GPU of this process's LOCAL_RANK."""
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def barrier() -> None:
    if current() is not None:
        dist.barrier()


def broadcast(obj: object) -> object:
    """Rank 0's `obj` on every process (for decisions all processes must take alike)."""
    if current() is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over processes in place (no-op for one process)."""
    if current() is not None:
        dist.all_reduce(t)
    return t


def sum_gradients(params: Iterable[nn.Parameter], dp: DataParallel) -> None:
    """Sum the gradients of `params` over processes, in one flat all-reduce."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) whose backward sums the incoming gradients too: each process's share of a global
    statistic receives the gradient of every process's loss."""

    @staticmethod
    def forward(ctx: object, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = grad.clone()
        dist.all_reduce(out)
        return out


def shutdown() -> None:
    """Leave the process group (at the end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are taken over the global batch of all processes (the
    statistics are all-reduced with autograd, so gradients flow through them as in one process). Works on
    the CPU with gloo, where `nn.SyncBatchNorm` does not. Same parameters and buffers as `BatchNorm{1,2}d`."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-d input, got {input.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or current() is None:
            return super().forward(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.full((1,), xf.numel() // c, dtype=xf.dtype, device=x.device)
        # Two passes (mean, then squared deviations), as batch norm computes them in one process: the one-pass
        # E[x^2] - E[x]^2 loses digits where the mean is large against the spread (e.g. images padded with -1).
        first = _SumOverProcesses.apply(torch.cat([xf.sum(dims), count]))
        n = first[-1]
        mean = first[:c] / n
        shape = [1, c] + [1] * (x.dim() - 2)
        var = _SumOverProcesses.apply((xf - mean.view(shape)).pow(2).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
                self.num_batches_tracked.add_(1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


_PLAIN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@contextmanager
def global_batch_norm(*models: nn.Module) -> Iterator[None]:
    """Within the block, the models' batch norms use global statistics when training data-parallel (the
    modules keep their parameters and buffers: only their class is switched, and switched back after)."""
    if current() is None:
        yield
        return
    switched: list[tuple[nn.Module, type]] = []
    for model in models:
        for m in model.modules():
            if type(m) in _PLAIN:
                switched.append((m, type(m)))
                m.__class__ = GlobalBatchNorm
    try:
        yield
    finally:
        for m, cls in switched:
            m.__class__ = cls
