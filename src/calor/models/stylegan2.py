"""A StyleGAN2 generator written for calor: the prior the field's high-resolution attacks (PPA, IF-GMI)
search, with the parameter names of the NVlabs PyTorch layout (stylegan2-ada-pytorch), so that the field's
state dicts load by name (`calor.stylegan_import`).

Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020. The pieces:

- **mapping** (`MappingNetwork`): z, normalised to unit second moment, through `mapping_layers` leaky-ReLU
  fully connected layers (learning-rate multiplier 0.01: equalised learning rate) to w; `w_avg` tracks the
  mean w during training, and truncation pulls w towards it (psi, optionally only the first `cutoff` of
  the `num_ws` copies).
- **synthesis** (`SynthesisNetwork`): one block per resolution 4, 8, ..., R (`b4`, `b8`, ...). Block 4 starts
  from a learnt constant; every other block upsamples (transposed 3x3 convolution followed by the [1, 3, 3, 1]
  FIR filter) and applies two *modulated* 3x3 convolutions: the weights are scaled per input channel by a
  style (an affine map of that layer's w) and *demodulated* (each output filter rescaled to unit norm), then
  per-pixel noise (`noise_const` x `noise_strength` in the 'const' mode attacks use), bias, leaky ReLU x
  sqrt 2, optional clamp. Each block adds its ToRGB output (a modulated 1x1 convolution, not demodulated) to
  the upsampled image of the blocks before it (the "skip" architecture).
- **W and W+**: `synthesize(ws)` takes one w per layer, ws of shape (N, num_ws, w_dim); W is the same w
  repeated (`broadcast`).

For IF-GMI, the synthesis can be cut between blocks: `features(ws, k)` runs blocks 0..k-1 and returns their
output (feature map and skip image), and `synthesize_from(k, x, img, ws)` runs blocks k.. from a given
output. Gradient checkpointing of the blocks (`checkpoint_blocks`) trades compute for memory at 1024 px.

Everything is float32 and runs on a CPU; `mixed_precision` runs the synthesis under CUDA autocast (float16)
on a GPU. The convolutions are plain PyTorch (the reference paths of the NVlabs custom ops, not their CUDA
kernels), so results match theirs to float rounding, not bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError, collect

LRELU_GAIN = math.sqrt(2.0)
RESAMPLE = (1, 3, 3, 1)


@dataclass(frozen=True)
class StyleGAN2Config:
    """A generator's shape. FFHQ at 1024 px (NVlabs `stylegan2` config): z_dim = w_dim = 512, 8 mapping
    layers, channel_base 32768, channel_max 512, conv_clamp 256. Channels of the block at resolution r:
    min(channel_base // r, channel_max)."""

    resolution: int = 32
    channels: int = 3  # image channels
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 32768
    channel_max: int = 512
    conv_clamp: Optional[float] = None
    mapping_lr_multiplier: float = 0.01
    w_avg_beta: float = 0.995

    def __post_init__(self) -> None:
        p = []
        r = self.resolution
        if r < 4 or r > 1024 or r & (r - 1):
            p.append(f"resolution={r}: must be a power of two from 4 to 1024")
        for name in ("channels", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max"):
            if getattr(self, name) < 1:
                p.append(f"{name}={getattr(self, name)}: must be >= 1")
        if self.conv_clamp is not None and self.conv_clamp <= 0:
            p.append(f"conv_clamp={self.conv_clamp}: must be > 0 (or None: no clamp)")
        if not 0 <= self.w_avg_beta < 1:
            p.append(f"w_avg_beta={self.w_avg_beta}: must be in [0, 1)")
        if self.mapping_lr_multiplier <= 0:
            p.append(f"mapping_lr_multiplier={self.mapping_lr_multiplier}: must be > 0")
        collect(p, "stylegan2 config")

    def block_channels(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.resolution)) + 1)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the resampling primitives (the reference paths of NVlabs' upfirdn2d / conv2d_resample) -------------

def setup_filter(taps: tuple[int, ...] = RESAMPLE) -> torch.Tensor:
    """The 2-D FIR filter: the outer product of `taps` with itself, normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """Upsample by inserting zeros, pad (x0, x1, y0, y1), and filter with `f` (per channel) scaled by `gain`."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    k = (f * (gain ** (f.ndim / 2))).to(x.dtype).flip([0, 1])
    k = k[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by `up` with the FIR filter (the skip image between blocks)."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)


def conv3x3_up2(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, groups: int) -> torch.Tensor:
    """A 3x3 convolution with padding 1 that doubles the resolution: a stride-2 transposed convolution,
    then the FIR filter (padding 1, gain 4) — NVlabs' fast path for up = 2."""
    out_ch, in_ch, kh, kw = w.shape
    if groups == 1:
        wt = w.transpose(0, 1)
    else:
        wt = w.reshape(groups, out_ch // groups, in_ch, kh, kw).transpose(1, 2).reshape(groups * in_ch, out_ch // groups, kh, kw)
    x = F.conv_transpose2d(x, wt, stride=2, padding=0, groups=groups)
    return upfirdn2d(x, f, pad=(1, 1, 1, 1), gain=4.0)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     up: bool = False, f: torch.Tensor | None = None) -> torch.Tensor:
    """Each sample's own convolution: weight scaled by its styles per input channel and, with `demodulate`,
    each output filter rescaled to unit L2 norm. Computed by scaling the activations before and after one
    convolution shared by the batch (NVlabs' `fused_modconv=False`: the same result, and on a CPU far faster
    than a grouped convolution of per-sample weights)."""
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:  # keep float16 in range: scaling cancels in the demodulation
        weight = weight * (1 / np.sqrt(in_ch * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
    w = weight.to(x.dtype)
    if up:
        assert f is not None
        x = conv3x3_up2(x, w, f, groups=1)
    else:
        x = F.conv2d(x, w, padding=kh // 2)
    if demodulate:
        d = ((weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)).square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        x = x * d.to(x.dtype).reshape(n, -1, 1, 1)
    return x


def bias_act(x: torch.Tensor, b: torch.Tensor, *, lrelu: bool, gain: float = 1.0, clamp: float | None = None) -> torch.Tensor:
    x = x + b.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if lrelu:
        x = F.leaky_relu(x, 0.2)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# --- layers -------------------------------------------------------------------------------------------

class FullyConnectedLayer(nn.Module):
    """Equalised learning rate: weights stored as N(0, 1) / lr_multiplier, scaled at run time."""

    def __init__(self, in_features: int, out_features: int, *, lrelu: bool = False, lr_multiplier: float = 1.0,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight.to(x.dtype) * self.weight_gain, self.bias.to(x.dtype) * self.bias_gain)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.lrelu else x


class MappingNetwork(nn.Module):
    """z -> w (`num_ws` copies), with the tracked mean `w_avg` and truncation towards it."""

    def __init__(self, cfg: StyleGAN2Config, num_ws: int) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = cfg.z_dim, cfg.w_dim, num_ws, cfg.w_avg_beta
        self.num_layers = cfg.mapping_layers
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(dims[i], dims[i + 1], lrelu=True, lr_multiplier=cfg.mapping_lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None, update_w_avg: bool = False) -> torch.Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg:  # training: a running mean of w
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1:
            if cutoff is None:
                x = self.w_avg.lerp(x, psi)
            else:
                x = torch.cat([self.w_avg.lerp(x[:, :cutoff], psi), x[:, cutoff:]], dim=1)
        return x


class SynthesisLayer(nn.Module):
    """A modulated, demodulated 3x3 convolution (optionally upsampling x2), noise, bias, leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, *, up: bool, conv_clamp: float | None) -> None:
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("resample_filter", setup_filter())
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, f=self.resample_filter)
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        return bias_act(x, self.bias, lrelu=True, gain=LRELU_GAIN, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """A modulated 1x1 convolution to image channels (no demodulation), bias, optional clamp."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, *, conv_clamp: float | None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.weight_gain = 1 / math.sqrt(in_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, lrelu=False, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 up) -> conv1 -> torgb, adding to the upsampled skip image."""

    def __init__(self, in_ch: int, out_ch: int, cfg: StyleGAN2Config, resolution: int) -> None:
        super().__init__()
        self.in_ch, self.resolution = in_ch, resolution
        self.register_buffer("resample_filter", setup_filter())
        if in_ch == 0:
            self.const = nn.Parameter(torch.randn(out_ch, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_ch, out_ch, cfg.w_dim, resolution, up=True, conv_clamp=cfg.conv_clamp)
        self.conv1 = SynthesisLayer(out_ch, out_ch, cfg.w_dim, resolution, up=False, conv_clamp=cfg.conv_clamp)
        self.torgb = ToRGBLayer(out_ch, cfg.channels, cfg.w_dim, conv_clamp=cfg.conv_clamp)
        self.num_conv = 1 if in_ch == 0 else 2
        self.num_torgb = 1

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str = "const") -> tuple[torch.Tensor, torch.Tensor]:
        w = ws.unbind(dim=1)
        if self.in_ch == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, w[0], noise_mode)
        else:
            assert x is not None
            x = self.conv0(x, w[0], noise_mode)
            x = self.conv1(x, w[1], noise_mode)
        y = self.torgb(x, w[self.num_conv]).float()
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """The blocks b4 ... bR; `num_ws` ws in, an image in about [-1, 1] out."""

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        self.block_resolutions = cfg.block_resolutions
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = cfg.block_channels(res // 2) if res > 4 else 0
            block = SynthesisBlock(in_ch, cfg.block_channels(res), cfg, res)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's torgb (each other torgb shares the next block's first w)

    def block(self, k: int) -> SynthesisBlock:
        return getattr(self, f"b{self.block_resolutions[k]}")

    def block_ws(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """Each block's slice of ws (its convolutions' and its torgb's; a torgb shares the next block's first w)."""
        out, i = [], 0
        for res in self.block_resolutions:
            b = getattr(self, f"b{res}")
            out.append(ws.narrow(1, i, b.num_conv + b.num_torgb))
            i += b.num_conv
        return out

    def run(self, ws: torch.Tensor, start: int = 0, stop: int | None = None, x: torch.Tensor | None = None,
            img: torch.Tensor | None = None, noise_mode: str = "const", checkpoint_blocks: bool = False
            ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Blocks start..stop-1 from block start's input (x, img): their output (x, img)."""
        parts = self.block_ws(ws.float())
        stop = len(self.block_resolutions) if stop is None else stop
        for k in range(start, stop):
            b = self.block(k)
            if checkpoint_blocks and torch.is_grad_enabled():
                x, img = checkpoint(b, x, img, parts[k], noise_mode, use_reentrant=False)
            else:
                x, img = b(x, img, parts[k], noise_mode)
        return x, img

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        _, img = self.run(ws, noise_mode=noise_mode)
        assert img is not None
        return img


class StyleGAN2Generator(nn.Module):
    """mapping + synthesis, with the prior contract the StyleGAN attacks use: `sample_w`, `synthesize`,
    `features` / `synthesize_from` (a synthesis cut between blocks), `w_avg`, `num_ws`, `resolution`."""

    def __init__(self, cfg: StyleGAN2Config, *, mixed_precision: bool = False, checkpoint_blocks: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.synthesis = SynthesisNetwork(cfg)
        self.mapping = MappingNetwork(cfg, self.synthesis.num_ws)
        self.mixed_precision, self.checkpoint_blocks = mixed_precision, checkpoint_blocks
        self.z_dim, self.w_dim, self.img_resolution, self.img_channels = cfg.z_dim, cfg.w_dim, cfg.resolution, cfg.channels

    @property
    def num_ws(self) -> int:
        return self.synthesis.num_ws

    @property
    def num_blocks(self) -> int:
        return len(self.synthesis.block_resolutions)

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def _autocast(self, device: torch.device):
        enabled = self.mixed_precision and device.type == "cuda"
        return torch.autocast("cuda", dtype=torch.float16, enabled=enabled) if enabled else torch.autocast("cpu", enabled=False)

    def sample_w(self, n: int, generator: torch.Generator | None = None, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        """(n, num_ws, w_dim) ws of n latents z ~ N(0, I) drawn from `generator`, truncated by psi / cutoff."""
        z = torch.randn(n, self.z_dim, generator=generator).to(self.w_avg.device)
        return self.mapping(z, psi=psi, cutoff=cutoff)

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """One w per image (N, w_dim) as W+ (N, num_ws, w_dim)."""
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)

    def synthesize(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """Images (N, C, R, R) in about [-1, 1] from ws (N, num_ws, w_dim)."""
        self._check_ws(ws)
        with self._autocast(ws.device):
            _, img = self.synthesis.run(ws, noise_mode=noise_mode, checkpoint_blocks=self.checkpoint_blocks)
        assert img is not None
        return img.float()

    def features(self, ws: torch.Tensor, k: int, noise_mode: str = "const") -> tuple[torch.Tensor, torch.Tensor]:
        """The output (feature map x, skip image) of blocks 0..k-1 (1 <= k < num_blocks): what IF-GMI frees."""
        self._check_ws(ws)
        if not 1 <= k < self.num_blocks:
            raise ConfigError(f"features: block index {k} outside 1..{self.num_blocks - 1}")
        with self._autocast(ws.device):
            x, img = self.synthesis.run(ws, 0, k, noise_mode=noise_mode, checkpoint_blocks=self.checkpoint_blocks)
        assert x is not None and img is not None
        return x, img

    def synthesize_from(self, k: int, x: torch.Tensor, img: torch.Tensor, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """Images from block k on, given the output (x, img) of blocks 0..k-1 (`features`)."""
        self._check_ws(ws)
        if not 1 <= k < self.num_blocks:
            raise ConfigError(f"synthesize_from: block index {k} outside 1..{self.num_blocks - 1}")
        with self._autocast(ws.device):
            _, out = self.synthesis.run(ws, k, None, x, img, noise_mode=noise_mode, checkpoint_blocks=self.checkpoint_blocks)
        assert out is not None
        return out.float()

    def forward(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesize(self.mapping(z, psi=psi, cutoff=cutoff), noise_mode=noise_mode)

    def _check_ws(self, ws: torch.Tensor) -> None:
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ConfigError(f"ws of shape {tuple(ws.shape)}: expected (N, {self.num_ws}, {self.w_dim})")


# --- the discriminator calor trains its StyleGAN2 priors with --------------------------------------------

class EqualizedConv2d(nn.Module):
    """A convolution with equalised learning rate (N(0, 1) weights scaled by 1 / sqrt(fan-in) at run time)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.gain, self.padding = 1 / math.sqrt(in_ch * kernel * kernel), kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.gain, self.bias, padding=self.padding)


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convolutions and a 2x downsampling (the FIR filter, then stride 2), with a 1x1 residual path."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv0, self.conv1 = EqualizedConv2d(in_ch, in_ch, 3), EqualizedConv2d(in_ch, out_ch, 3)
        self.skip = EqualizedConv2d(in_ch, out_ch, 1, bias=False)
        self.register_buffer("resample_filter", setup_filter())

    def down(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.resample_filter, pad=(1, 1, 1, 1))[:, :, ::2, ::2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(self.down(x))
        x = F.leaky_relu(self.conv0(x), 0.2) * LRELU_GAIN
        x = F.leaky_relu(self.conv1(self.down(x)), 0.2) * LRELU_GAIN
        return (x + y) * math.sqrt(0.5)


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2's residual discriminator, compact: fromRGB, one block per resolution down to 4x4, the
    minibatch standard deviation (groups of up to 4), a 3x3 convolution and two fully connected layers.
    Its output is a logit (real > 0); it is calor's, not the NVlabs layout (only generators are imported)."""

    def __init__(self, cfg: StyleGAN2Config) -> None:
        super().__init__()
        res = cfg.block_resolutions[::-1]  # R, R/2, ..., 4
        self.from_rgb = EqualizedConv2d(cfg.channels, cfg.block_channels(res[0]), 1)
        self.blocks = nn.ModuleList(DiscriminatorBlock(cfg.block_channels(r), cfg.block_channels(r // 2)) for r in res[:-1])
        c4 = cfg.block_channels(4)
        self.conv = EqualizedConv2d(c4 + 1, c4, 3)
        self.fc = FullyConnectedLayer(c4 * 16, c4, lrelu=True)
        self.out = FullyConnectedLayer(c4, 1)

    @staticmethod
    def minibatch_std(x: torch.Tensor, group: int = 4) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(group, n)
        while n % g:
            g -= 1
        y = x.reshape(g, -1, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=[1, 2, 3])  # (n / g,)
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.from_rgb(img), 0.2) * LRELU_GAIN
        for block in self.blocks:
            x = block(x)
        x = F.leaky_relu(self.conv(self.minibatch_std(x)), 0.2) * LRELU_GAIN
        return self.out(self.fc(x.flatten(1))).squeeze(1)


def prior_config(resolution: int, channels: int, width: int, z_dim: int, mapping_layers: int) -> StyleGAN2Config:
    """The generator of a scenario's `prior.kind: stylegan2`: block channels min(width * R // r, 4 * width)."""
    return StyleGAN2Config(resolution=resolution, channels=channels, z_dim=z_dim, w_dim=z_dim, mapping_layers=mapping_layers,
                           channel_base=width * resolution, channel_max=4 * width)
