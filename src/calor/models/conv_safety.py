"""Guard against a oneDNN kernel bug: strided 1x1 convolutions with few input channels.

oneDNN's ``jit_1x1`` convolution handles a stride > 1 by first copying the strided input into a
unit-stride workspace ("rtus"). Its backward-weights pass on AVX2 kernels can write past that
workspace when the input channels do not fill a SIMD block (oneDNN issue #6035): the training step
hangs at the OpenMP barrier, crashes, or returns wrong weight gradients without a sign.

Measured with ``benchmarks/onednn_strided_1x1.py`` (torch 2.13.0 CPU, AMD EPYC with AVX-512, 2
threads, 200 steps per shape, 1-32 input channels, stride 1 and 2, NCHW and channels-last): with
``ONEDNN_MAX_CPU_ISA=AVX2``, channels-last, stride 2, 3 and 4 input channels hung on every run and 6
channels gave wrong weight gradients on 200 of 200 steps; nothing failed on the AVX-512 or AVX kernels,
at stride 1, or from 8 channels up. (The NCHW hang in the issue's full test suite is timing-dependent
and did not show in a single-layer loop.) In a bare forward+backward loop (batch 64, 32x32, default
kernels) the fallback took 0.65-0.75 ms against 0.93-1.13 ms native for 3-6 channels, so it is applied
on every CPU, not only where the faulty kernel is selected.

A 1x1 convolution with stride s and zero padding is exactly "keep every s-th pixel, then a stride-1
1x1 convolution", so the fallback changes no number beyond float rounding and keeps the parameter
names (state dicts load unchanged). calor's own architectures never contain the affected shape (the
ResNet uses a ResNet-D shortcut); :func:`make_conv_safe` protects models that come from elsewhere and
runs whenever calor builds or loads a classifier.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

# Input channels per group below which a strided 1x1 conv is treated as affected. The reproduced
# failures have 3-6 channels (padded to an 8-wide AVX2 block); we guard up to one AVX-512 block (16),
# because the fallback is exact and was not slower.
SAFE_MIN_CHANNELS = 16


def is_affected_conv(module: nn.Module) -> bool:
    """True for a 2-d 1x1 convolution with stride > 1 and fewer than 16 input channels per group."""
    if type(module) is not nn.Conv2d:  # subclasses (including our fallback) are left alone
        return False
    return (tuple(module.kernel_size) == (1, 1) and tuple(module.stride) != (1, 1)
            and module.in_channels // module.groups < SAFE_MIN_CHANNELS)


def affected_convs(model: nn.Module) -> list[str]:
    """Names of the sub-modules of `model` with the affected shape (empty when the model is safe)."""
    return [name for name, m in model.named_modules() if is_affected_conv(m)]


class SubsampledConv1x1(nn.Conv2d):
    """A strided 1x1 `Conv2d` computed as slicing + a stride-1 1x1 conv (same parameters, same math)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding  # a tuple: `replacing` refuses string padding
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph), mode="constant" if self.padding_mode == "zeros" else self.padding_mode)
        sh, sw = self.stride
        return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias, 1, 0, self.dilation, self.groups)

    @classmethod
    def replacing(cls, conv: nn.Conv2d) -> "SubsampledConv1x1":
        """A fallback that shares `conv`'s parameter tensors (so optimisers and state dicts still match)."""
        if isinstance(conv.padding, str):
            raise ValueError(f"cannot rewrite a 1x1 conv with padding={conv.padding!r}")
        new = cls(conv.in_channels, conv.out_channels, 1, conv.stride, conv.padding, conv.dilation, conv.groups,
                  conv.bias is not None, conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype)
        new.weight = conv.weight
        if conv.bias is not None:
            new.bias = conv.bias
        new.train(conv.training)
        return new


def make_conv_safe(model: nn.Module, *, warn: bool = True) -> list[str]:
    """Replace every affected conv of `model` in place by :class:`SubsampledConv1x1`; return their names.

    Outputs and gradients are unchanged (up to float rounding); parameter names are unchanged.
    """
    names = affected_convs(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, SubsampledConv1x1.replacing(getattr(parent, child)))
    if names and warn:
        warnings.warn(f"strided 1x1 conv with < {SAFE_MIN_CHANNELS} input channels ({', '.join(names)}) now computed as "
                      "slicing + a stride-1 1x1 conv, avoiding a oneDNN backward-weights bug (hangs or wrong "
                      "gradients on AVX2 CPUs); outputs are unchanged", RuntimeWarning, stacklevel=2)
    return names
