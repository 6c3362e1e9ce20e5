"""The face-recognition architectures of the model-inversion literature, written for calor's contract.

GMI, KED-MI, PLG-MI, LOMMA, BiDO, MID, TL and their successors attack and defend three CelebA/FFHQ
targets at 64 x 64 px: VGG16 with batch norm (feature 2048), FaceNet64 (an IR-50 face ResNet, feature
512) and IR-152 (feature 512). This module builds the same layer stacks as calor classifiers: the
``blocks`` are the stem, one block per stage and the output (feature) layer, so ``hidden_layers()``
(BiDO) and front-freezing (TL) address the network at stage granularity; the classification head is
calor's ``LinearHead`` (the field's ``fc_layer``).

Every spatial size follows ``resolution`` (the same class runs at 16 px in tests and at 64 or 112 px
for real) and every channel count is scaled by ``width / 64`` (64 = the published networks).

Parameter names inside a stage follow the public implementations (torchvision's VGG ``features``,
face.evoLVe's ``bottleneck_IR`` with ``res_layer`` / ``shortcut_layer``, the field's ``output_layer``), so
:func:`field_prefix_map` maps the field's released checkpoints onto these models for
``calor.weights.load_into``.

oneDNN: the IR shortcut that changes the channel count is a 1x1 convolution with stride 2. It is
built as :class:`~calor.models.conv_safety.SubsampledConv1x1` (keep every second pixel, then a
stride-1 1x1 convolution): the same function and the same parameter names as the field's strided
``Conv2d``, without the oneDNN strided-1x1 shape at any width (see ``conv_safety``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import ConfigError
from .classifiers import CLASSIFIERS, Classifier
from .conv_safety import SubsampledConv1x1

# Registered names of this module's architectures (large networks: code that picks "any other
# registered architecture", e.g. for cheap surrogates, may want to leave them out).
FACE_ARCHS = ("vgg16-bn", "ir50", "ir152", "facenet64")

# (channels at width 64, 3x3 conv layers) per VGG16 stage.
VGG16_STAGES = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
# Bottleneck-IR units per stage (channels 64, 128, 256, 512 at width 64).
IR_UNITS = {50: (3, 4, 14, 3), 152: (3, 8, 36, 3)}
IR_CHANNELS = (64, 128, 256, 512)


def _scaled(channels: int, width: int) -> int:
    """A published channel count scaled by width / 64 (at least 1)."""
    return max(1, channels * width // 64)


def _halved(side: int) -> int:
    """Side after a stride-2 step of a 3x3 conv with padding 1 or a MaxPool2d(1, 2): ceil(side / 2)."""
    return (side + 1) // 2


@CLASSIFIERS.register("vgg16-bn")
class VGG16BN(Classifier):
    """VGG16 with batch norm: the VGG16 target of GMI, KED-MI, PLG-MI, LOMMA, BiDO and MID (CelebA, 64 px; feature 2048).

    Thirteen 3x3 conv + BN + ReLU layers in five stages (2, 2, 3, 3, 3 layers; 64, 128, 256, 512, 512
    channels x width/64), a 2x2 max-pool after each stage; at 64 px the last map is 512 x 2 x 2. The
    feature is that map flattened (2048-dim at width 64) followed by BatchNorm1d, as in the field's
    ``VGG16`` (torchvision's ``vgg16_bn().features`` + ``BatchNorm1d(2048)`` + ``fc_layer``); a Linear
    projection to `feature_dim` is inserted only when the flattened size differs from `feature_dim`.
    (The field freezes that BatchNorm1d's bias; here it trains like every other parameter.)

    Blocks: the five stages (each a flat Sequential laid out like torchvision's ``features``), then the
    feature layer (``flatten``, ``proj``, ``bn``). A pool that would shrink a 1-px map (inputs under 32 px)
    is left out, so tests can run at 16 px.

    Measured at width 64, 64 px, 1000 classes: 14,723,136 conv/BN parameters (14,714,688 in the 13
    convs) + 4,096 in the feature BatchNorm1d + 2,049,000 in the head = 16,776,232 parameters.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, resolution: int = 64, width: int = 64, feature_dim: int = 2048) -> None:
        super().__init__(feature_dim, num_classes)
        blocks: list[nn.Module] = []
        cin, side = in_channels, resolution
        for channels, layers in VGG16_STAGES:
            cout = _scaled(channels, width)
            stage: list[nn.Module] = []
            for _ in range(layers):
                stage += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
            stage.append(nn.MaxPool2d(2, 2) if side >= 2 else nn.Identity())
            side = max(1, side // 2)
            blocks.append(nn.Sequential(*stage))
        flat = cin * side * side
        proj: nn.Module = nn.Identity() if flat == feature_dim else nn.Linear(flat, feature_dim)
        blocks.append(nn.Sequential(OrderedDict(flatten=nn.Flatten(), proj=proj, bn=nn.BatchNorm1d(feature_dim))))
        self.blocks = nn.ModuleList(blocks)


class BottleneckIR(nn.Module):
    """The "improved residual" unit of ArcFace's IR networks (face.evoLVe's ``bottleneck_IR``):
    ``res_layer`` = BN -> 3x3 conv -> PReLU -> 3x3 conv (stride) -> BN, plus ``shortcut_layer`` =
    MaxPool2d(1, stride) when the channels stay, else a (subsampling) 1x1 conv + BN. No activation
    after the sum."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut_layer: nn.Module
        if cin == cout:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            # A strided 1x1 conv computed as "every stride-th pixel, then a stride-1 1x1 conv": the same
            # function and parameter names as the field's Conv2d(cin, cout, 1, stride), never the
            # oneDNN-hazardous shape (module docstring).
            conv = SubsampledConv1x1(cin, cout, 1, stride, bias=False) if stride != 1 else nn.Conv2d(cin, cout, 1, bias=False)
            self.shortcut_layer = nn.Sequential(conv, nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRNet(Classifier):
    """Face ResNet ("IR", ArcFace / face.evoLVe) with the field's 64-px output layer. Not registered
    itself: see `IR50`, `IR152`, `FaceNet64`.

    Stem Conv3x3(in, 64) + BN + PReLU; four stages of `BottleneckIR` units (64, 128, 256, 512 channels x
    width/64), the first unit of each with stride 2, so the map is resolution/16 on a side (4 at 64 px,
    7 at 112 px); output layer BatchNorm2d -> Dropout -> Flatten -> Linear(512 * side^2, feature_dim) ->
    BatchNorm1d (feature 512 by default). Dropout (p = `dropout`, the field's nn.Dropout() default 0.5)
    acts in training only.

    Blocks: stem, the four stages (Sequentials of units), the output layer.
    """

    depth: int = 50
    dropout: float = 0.5

    def __init__(self, num_classes: int, in_channels: int = 3, resolution: int = 64, width: int = 64, feature_dim: int = 512) -> None:
        super().__init__(feature_dim, num_classes)
        channels = [_scaled(c, width) for c in IR_CHANNELS]
        blocks: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False),
                                                 nn.BatchNorm2d(channels[0]), nn.PReLU(channels[0]))]
        cin, side = channels[0], resolution
        for cout, units in zip(channels, IR_UNITS[self.depth]):
            stage = [BottleneckIR(cin, cout, 2)] + [BottleneckIR(cout, cout, 1) for _ in range(units - 1)]
            blocks.append(nn.Sequential(*stage))
            cin, side = cout, _halved(side)
        blocks.append(nn.Sequential(nn.BatchNorm2d(cin), nn.Dropout(self.dropout), nn.Flatten(),
                                    nn.Linear(cin * side * side, feature_dim), nn.BatchNorm1d(feature_dim)))
        self.blocks = nn.ModuleList(blocks)

    def units(self) -> list[BottleneckIR]:
        """The bottleneck units, front to back."""
        return [m for m in self.modules() if isinstance(m, BottleneckIR)]


@CLASSIFIERS.register("ir50")
class IR50(IRNet):
    """IR-50 face ResNet (ArcFace-style, units 3/4/14/3) with the 64-px output layer: the IR-50 of BiDO/MID/KED-MI code (feature 512).

    Measured at width 64, 64 px, 1000 classes (24 units): 34,924,224 parameters in the blocks (stem
    1,920, stages 30,725,440, output layer 4,196,864) + 513,000 in the head = 35,437,224.
    """

    depth = 50


@CLASSIFIERS.register("ir152")
class IR152(IRNet):
    """IR-152 face ResNet (ArcFace-style, units 3/8/36/3) with the 64-px output layer: the IR-152 target of KED-MI, PLG-MI, LOMMA, BiDO and MID (feature 512).

    Measured at width 64, 64 px, 1000 classes (50 units): 62,086,848 parameters in the blocks (stem
    1,920, stages 57,888,064, output layer 4,196,864) + 513,000 in the head = 62,599,848.
    """

    depth = 152


@CLASSIFIERS.register("facenet64")
class FaceNet64(IR50):
    """FaceNet64: the field's FaceNet64 target (GMI/KED-MI/PLG-MI/LOMMA, CelebA 64 px) = IR-50 body + 64-px output layer (feature 512).

    The same network as ``ir50`` (registered under the name the papers use for it): 35,437,224
    parameters at width 64, 64 px, 1000 classes.
    """


def field_prefix_map(arch: str, *, feature: str = "feature.", head: str = "fc_layer.") -> dict[str, str]:
    """A `prefix_map` for `calor.weights.load_into` from the field's checkpoints (KED-MI / PLG-MI / LOMMA
    ``VGG16``, ``FaceNet64``, ``IR152``; a DataParallel ``module.`` prefix is already stripped by
    ``load_weights``) to this module's model `arch`.

    VGG16: ``feature.<i>.`` (torchvision ``features`` index) -> ``blocks.<stage>.<j>.``, ``bn.`` -> the
    feature BatchNorm1d, ``fc_layer.`` -> ``head.``. IR / FaceNet64: ``feature.input_layer.`` -> stem,
    ``feature.body.<k>.`` (flat unit index) -> ``blocks.<stage>.<unit>.``, ``output_layer.`` -> the output
    layer, ``fc_layer.`` -> ``head.``. The backbone's own unused ``feature.output_layer.*`` stays
    unmapped (it is reported as unexpected).
    """
    cls = CLASSIFIERS.get(arch)
    mapping: dict[str, str] = {}
    if issubclass(cls, VGG16BN):
        index = 0
        for stage, (_, layers) in enumerate(VGG16_STAGES):
            for j in range(3 * layers + 1):  # conv, bn, relu per layer, then the pool
                mapping[f"{feature}{index}."] = f"blocks.{stage}.{j}."
                index += 1
        mapping["bn."] = f"blocks.{len(VGG16_STAGES)}.bn."
    elif issubclass(cls, IRNet):
        mapping[f"{feature}input_layer."] = "blocks.0."
        k = 0
        for stage, units in enumerate(IR_UNITS[cls.depth]):
            for u in range(units):
                mapping[f"{feature}body.{k}."] = f"blocks.{stage + 1}.{u}."
                k += 1
        mapping["output_layer."] = f"blocks.{len(IR_UNITS[cls.depth]) + 1}."
    else:
        raise ConfigError(f"no field checkpoint layout known for {arch!r}")
    mapping[head] = "head."
    return mapping
