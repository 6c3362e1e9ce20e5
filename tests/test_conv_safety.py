"""The oneDNN strided-1x1 guard: calor's own models never have the shape, users' models get an exact fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

from calor.models import CLASSIFIERS, FACE_ARCHS, SubsampledConv1x1, affected_convs, build_classifier, make_conv_safe
from calor.models.cgan import ConditionalGenerator, ProjectionDiscriminator
from calor.models.gan import Critic, Generator

WIDTHS = list(range(1, 65))


@pytest.mark.parametrize("arch", list(CLASSIFIERS))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_no_registered_architecture_has_the_affected_conv_shape(arch: str, in_channels: int) -> None:
    # Built raw (without build_classifier's rewrite) on the meta device: every width, no memory.
    cls = CLASSIFIERS.get(arch)
    # The face networks are deep (IR-152: 50 units) and build their shortcuts from the safe class at every
    # width, so a sample of widths keeps this test short.
    face = arch in FACE_ARCHS
    for width in (1, 2, 3, 4, 5, 8, 16, 64) if face else WIDTHS:
        for resolution in (16, 64) if face else (16, 32, 64):
            with torch.device("meta"):
                model = cls(num_classes=5, in_channels=in_channels, resolution=resolution, width=width, feature_dim=16)
            assert affected_convs(model) == [], (arch, width, resolution)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_no_gan_has_the_affected_conv_shape(in_channels: int) -> None:
    # GANs use 4x4 convolutions only; a sample of widths keeps spectral norm's set-up cheap.
    for width in (1, 2, 3, 4, 6, 8, 16, 32):
        for resolution in (16, 32, 64):
            with torch.device("meta"):
                models = [Generator(16, resolution, in_channels, width), Critic(resolution, in_channels, width),
                          ConditionalGenerator(3, 16, resolution, in_channels, width),
                          ProjectionDiscriminator(3, resolution, in_channels, width)]
            for m in models:
                assert affected_convs(m) == [], (type(m).__name__, width, resolution)


def test_build_classifier_never_needs_the_fallback() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback's warning would raise here
        model = build_classifier("resnet", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    assert not any(isinstance(m, SubsampledConv1x1) for m in model.modules())


@pytest.mark.parametrize("stride,padding,groups,bias", [(2, 0, 1, False), (2, 0, 2, True), (3, 1, 1, True), ((2, 1), 0, 1, False)])
def test_fallback_matches_the_strided_conv_in_outputs_and_gradients(stride, padding, groups, bias) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 1, stride, padding, groups=groups, bias=bias).double()
    safe = SubsampledConv1x1.replacing(conv)
    assert safe.weight is conv.weight
    x = torch.randn(3, 4, 11, 10, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(conv(x))
    grads = []
    for m in (conv, safe):
        m.zero_grad()
        x.grad = None
        y = m(x)
        y.backward(g)
        grads.append((y.detach().clone(), x.grad.clone(), m.weight.grad.clone()))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-12)


class UserNet(nn.Module):
    """A model calor did not define, with the shape that trips oneDNN."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.down = nn.Sequential(nn.Conv2d(6, 12, 1, stride=2, bias=False), nn.BatchNorm2d(12))
        self.wide = nn.Conv2d(12, 24, 1, stride=2)  # 12 input channels: guarded too (< one AVX-512 block)
        self.ok = nn.Conv2d(24, 24, 1, stride=2)  # 24 channels: left alone
        self.fc = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.ok(self.wide(self.down(self.stem(x)))).mean((2, 3)))


def test_make_conv_safe_rewrites_a_user_model_exactly() -> None:
    torch.manual_seed(0)
    model = UserNet().eval()
    x = torch.randn(2, 1, 16, 16)
    before, keys = model(x), list(model.state_dict())
    assert affected_convs(model) == ["down.0", "wide"]
    with pytest.warns(RuntimeWarning, match=r"down\.0, wide"):
        assert make_conv_safe(model) == ["down.0", "wide"]
    assert isinstance(model.down[0], SubsampledConv1x1) and type(model.ok) is nn.Conv2d
    assert list(model.state_dict()) == keys
    assert torch.allclose(model(x), before, atol=1e-6)
    assert make_conv_safe(model) == []  # idempotent


def test_fallback_trains_on_the_avx2_kernels_that_hang(tmp_path) -> None:
    """In a subprocess on oneDNN's AVX2 kernels, channels-last, 2 threads: the rewritten layer trains with
    correct weight gradients. The raw Conv2d(6, 12, 1, stride=2) in this setting hung or returned wrong
    gradients on every run we tried, so a broken fallback would fail here (timeout or assertion)."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        from calor.models import make_conv_safe
        torch.set_num_threads(2)
        torch.manual_seed(0)
        for cin in (3, 4, 6):
            model = nn.Sequential(nn.Conv2d(cin, 2 * cin, 1, stride=2, bias=False))
            make_conv_safe(model, warn=False)
            model = model.to(memory_format=torch.channels_last)
            for _ in range(100):
                x = torch.randn(32, cin, 16, 16).contiguous(memory_format=torch.channels_last)
                model.zero_grad()
                y = model(x)
                g = torch.randn_like(y)
                y.backward(g)
                ref = torch.einsum("nchw,nohw->oc", x.double()[:, :, ::2, ::2], g.double())
                err = (model[0].weight.grad.double().flatten(1) - ref).abs().max().item()
                assert err < 1e-3, (cin, err)
        print("ok")
    """))
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "2"}
    try:
        proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("training through the fallback hung on oneDNN's AVX2 kernels")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
