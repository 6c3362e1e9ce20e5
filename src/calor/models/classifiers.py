"""Image classifiers. Every one exposes `features(x)` (penultimate) and a replaceable `head`."""

from __future__ import annotations

import torch
from torch import nn

from ..registry import Registry
from .conv_safety import make_conv_safe
from .heads import LinearHead

CLASSIFIERS: Registry = Registry("classifier architecture")


class Classifier(nn.Module):
    """Contract: `forward(x) = head(features(x))`, `features(x)` = the `blocks` applied in order.

    Defenses that change the head just replace `head`; `blocks` (front to back, the last one
    producing the `feature_dim`-dimensional penultimate features) is what defenses that work on
    hidden layers (BiDO) or freeze the front of the network (TL) address.
    """

    feature_dim: int
    num_classes: int
    blocks: nn.ModuleList

    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.feature_dim, self.num_classes = feature_dim, num_classes
        self.head: nn.Module = LinearHead(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def hidden_layers(self) -> list[nn.Module]:
        """The blocks whose outputs are the hidden representations, front to back."""
        return list(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@CLASSIFIERS.register("cnn")
class ConvNet(Classifier):
    """A small VGG-style target (the MNIST targets of GMI/MID/BiDO are of this kind): three conv blocks
    with max-pooling, then a fully connected feature layer."""

    def __init__(self, num_classes: int, in_channels: int = 1, resolution: int = 32, width: int = 32, feature_dim: int = 128) -> None:
        super().__init__(feature_dim, num_classes)
        w = width
        side = resolution // 8
        self.blocks = nn.ModuleList([
            nn.Sequential(_conv_bn(in_channels, w), nn.MaxPool2d(2)),
            nn.Sequential(_conv_bn(w, 2 * w), nn.MaxPool2d(2)),
            nn.Sequential(_conv_bn(2 * w, 4 * w), nn.MaxPool2d(2)),
            nn.Sequential(nn.Flatten(), nn.Linear(4 * w * side * side, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True)),
        ])


class BasicBlock(nn.Module):
    """Residual block with a ResNet-D shortcut; `residual_scale` scales the skip path (1 = standard,
    0 = skip removed)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            # ResNet-D shortcut: average-pool, then a stride-1 1x1 conv. Besides using every input pixel,
            # it never produces a strided 1x1 conv, whose oneDNN backward-weights kernel can hang or
            # write wrong gradients with few input channels (see models/conv_safety.py).
            pool: nn.Module = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride != 1 else nn.Identity()
            self.shortcut = nn.Sequential(pool, nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual_scale = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.residual_scale * self.shortcut(x))


@CLASSIFIERS.register("resnet")
class ResNet(Classifier):
    """A compact ResNet (4 stages of `blocks` basic blocks, widths w, 2w, 4w, 8w) with global pooling.
    The default evaluation model: a different, stronger architecture than the `cnn` target."""

    def __init__(self, num_classes: int, in_channels: int = 1, resolution: int = 32, width: int = 32, feature_dim: int = 128, blocks: int = 1) -> None:
        super().__init__(feature_dim, num_classes)
        w = width
        layers: list[nn.Module] = [_conv_bn(in_channels, w)]
        cin = w
        for i, cout in enumerate((w, 2 * w, 4 * w, 8 * w)):
            for b in range(blocks):
                layers.append(BasicBlock(cin, cout, 2 if (i > 0 and b == 0) else 1))
                cin = cout
        layers.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True)))
        self.blocks = nn.ModuleList(layers)

    def residual_blocks(self) -> list[BasicBlock]:
        """The residual blocks, front to back (RoLSS scales the skip paths of the last ones)."""
        return [b for b in self.blocks if isinstance(b, BasicBlock)]


def build_classifier(arch: str, *, num_classes: int, in_channels: int, resolution: int, width: int, feature_dim: int) -> Classifier:
    """Build a registered architecture with its plain linear head (oneDNN-unsafe convs rewritten, see
    `conv_safety`; a registered architecture has none, which the tests check)."""
    cls = CLASSIFIERS.get(arch)
    model = cls(num_classes=num_classes, in_channels=in_channels, resolution=resolution, width=width, feature_dim=feature_dim)
    make_conv_safe(model)
    return model
