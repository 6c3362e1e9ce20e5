"""RoLSS: the skip path of the last residual block(s) is scaled by keep_ratio, set again on every rebuild."""

from pathlib import Path

import pytest
import torch

from calor import ConfigError
from calor.cli import main
from calor.defenses import build_defense
from calor.models.classifiers import BasicBlock, build_classifier


def _resnet(seed: int = 0):
    torch.manual_seed(seed)
    return build_classifier("resnet", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8).eval()


def _no_skip(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """The block's output with the shortcut taken out, written out by hand."""
    return torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))))


def test_defaults_and_validation() -> None:
    d = build_defense("rolss")
    assert d.config.keep_ratio == 0.0 and d.config.last_blocks == 1
    for bad in ({"keep_ratio": -0.1}, {"keep_ratio": 1.5}, {"last_blocks": 0}):
        with pytest.raises(ConfigError):
            build_defense("rolss", bad)


def test_prepare_scales_only_the_last_blocks() -> None:
    m = build_defense("rolss", {"keep_ratio": 0.01}).prepare(_resnet())
    assert [b.residual_scale for b in m.residual_blocks()] == [1.0, 1.0, 1.0, 0.01]
    m = build_defense("rolss", {"keep_ratio": 0.0, "last_blocks": 2}).prepare(_resnet())
    assert [b.residual_scale for b in m.residual_blocks()] == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="last_blocks=5"):
        build_defense("rolss", {"last_blocks": 5}).prepare(_resnet())


def test_keep_ratio_one_is_the_standard_network() -> None:
    x = torch.randn(2, 1, 16, 16)
    plain, scaled = _resnet(), build_defense("rolss", {"keep_ratio": 1.0}).prepare(_resnet())
    assert torch.equal(plain(x), scaled(x))


def test_keep_ratio_zero_removes_the_shortcut() -> None:
    m = build_defense("rolss").prepare(_resnet())
    last = m.residual_blocks()[-1]
    assert not isinstance(last.shortcut, torch.nn.Identity)  # stage 4 downsamples: a real 1x1 conv shortcut
    h = torch.randn(2, last.conv1.in_channels, 4, 4)
    assert torch.allclose(last(h), _no_skip(last, h))
    with torch.no_grad():  # the shortcut's weights no longer matter
        for p in last.shortcut.parameters():
            p.add_(torch.randn_like(p))
    assert torch.allclose(last(h), _no_skip(last, h))


def test_intermediate_keep_ratio_follows_the_formula() -> None:
    m = build_defense("rolss", {"keep_ratio": 0.25}).prepare(_resnet())
    last = m.residual_blocks()[-1]
    h = torch.randn(2, last.conv1.in_channels, 4, 4)
    pre = last.bn2(last.conv2(torch.relu(last.bn1(last.conv1(h)))))
    assert torch.allclose(last(h), torch.relu(pre + 0.25 * last.shortcut(h)))


def test_rebuilt_model_gets_the_scale_back() -> None:
    d = build_defense("rolss")
    a = d.prepare(_resnet(0))
    b = d.prepare(_resnet(1))
    b.load_state_dict(a.state_dict(), strict=True)  # residual_scale is not in the state dict...
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(a(x), b(x))  # ...prepare sets it from the config
    assert b.residual_blocks()[-1].residual_scale == 0.0


def test_cnn_is_refused_with_a_clear_error(tiny_yaml: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="target.arch=resnet"):
        build_defense("rolss").check_architecture("cnn")
    cnn = build_classifier("cnn", num_classes=3, in_channels=1, resolution=16, width=4, feature_dim=8)
    with pytest.raises(ConfigError, match="residual"):
        build_defense("rolss").prepare(cnn)
    assert main(["train", "--scenario", str(tiny_yaml), "--defense", "rolss", "--cache", str(tmp_path), "--quiet"]) == 2
    assert "target.arch=resnet" in capsys.readouterr().err
