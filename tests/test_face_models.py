"""The field's face architectures (VGG16-BN, IR-50/152, FaceNet64) and loading weights into a model with a report."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from calor.errors import ArtifactError
from calor.models import CLASSIFIERS, FACE_ARCHS, SubsampledConv1x1, affected_convs, build_classifier, field_prefix_map
from calor.models.faces import IRNet
from calor.weights import WeightReport, file_digest, load_into, load_weights

SMALL = {"num_classes": 3, "in_channels": 3, "resolution": 16, "width": 4, "feature_dim": 8}


def small(arch: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # make_conv_safe's warning would mean an affected conv slipped in
        return build_classifier(arch, **{**SMALL, **kw})


def test_face_architectures_are_registered() -> None:
    assert set(FACE_ARCHS) <= set(CLASSIFIERS)


@pytest.mark.parametrize("arch", FACE_ARCHS)
def test_forward_shapes_and_feature_dim(arch: str) -> None:
    model = small(arch).eval()
    x = torch.randn(2, 3, 16, 16)
    assert model.features(x).shape == (2, 8) and model.feature_dim == 8
    assert model(x).shape == (2, 3)
    assert affected_convs(model) == []
    hidden = model.hidden_layers()
    assert len(hidden) == 6 and hidden[-1] is model.blocks[-1]  # stem/stages + output layer: BiDO/TL granularity


@pytest.mark.parametrize("arch", FACE_ARCHS)
def test_a_gradient_step_runs_and_changes_the_output(arch: str) -> None:
    model = small(arch, width=8, resolution=32).train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_ir_depths_differ_and_shortcuts_are_safe() -> None:
    ir50, ir152, facenet = small("ir50"), small("ir152"), small("facenet64")
    assert len(ir50.units()) == 24 and len(ir152.units()) == 50 and len(facenet.units()) == 24
    assert [len(s) for s in ir152.blocks[1:5]] == [3, 8, 36, 3]
    assert isinstance(facenet, type(ir50))
    # channel-changing shortcuts subsample then apply a stride-1 1x1 conv (never the oneDNN shape)
    shortcut = ir50.blocks[2][0].shortcut_layer[0]
    assert isinstance(shortcut, SubsampledConv1x1) and shortcut.in_channels < 16


def test_published_sizes_on_the_meta_device() -> None:
    with torch.device("meta"):
        vgg = CLASSIFIERS.get("vgg16-bn")(num_classes=1000)
        ir50 = CLASSIFIERS.get("ir50")(num_classes=1000)
        ir152_112 = CLASSIFIERS.get("ir152")(num_classes=1000, resolution=112)

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert vgg.feature_dim == 2048 and isinstance(vgg.blocks[-1].proj, nn.Identity)  # 512 x 2 x 2 flattened
    assert sum(count(b) for b in vgg.blocks[:5]) == 14_723_136 and count(vgg) == 16_776_232
    assert ir50.feature_dim == 512 and ir50.blocks[-1][3].in_features == 512 * 4 * 4 and count(ir50) == 35_437_224
    assert ir152_112.blocks[-1][3].in_features == 512 * 7 * 7


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_load_into_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    src = small("ir50", seed=1)
    src.train()(torch.randn(4, 3, 16, 16))  # move the BN statistics away from their initial values
    src.eval()
    path = tmp_path / f"w{suffix}"
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    if suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    dst = small("ir50", seed=2).eval()
    x = torch.randn(2, 3, 16, 16)
    assert not torch.equal(src(x), dst(x))
    report = load_into(dst, load_weights(path))
    assert isinstance(report, WeightReport) and report.complete
    assert len(report.matched) == len(sd) and report.summary() == f"loaded {len(sd)}/{len(sd)} tensors"
    assert torch.equal(src(x), dst(x))
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_prefix_map_missing_and_shape_mismatch_are_reported() -> None:
    src = small("vgg16-bn", seed=1)
    state = {("feature." + k[len("blocks.0."):] if k.startswith("blocks.0.") else k): v
             for k, v in src.state_dict().items() if not k.startswith("blocks.4.")}
    state["head.weight"] = torch.zeros(7, 8)  # another class count
    state["extra.weight"] = torch.zeros(1)
    dst = small("vgg16-bn", seed=2)
    report = load_into(dst, state, prefix_map={"feature.": "blocks.0."})
    assert torch.equal(dst.blocks[0][0].weight, src.blocks[0][0].weight)
    assert report.mismatched == [("head.weight", (7, 8), (3, 8))]
    assert report.unexpected == ["extra.weight"]
    assert report.missing and all(n.startswith("blocks.4.") for n in report.missing)
    assert not any(n.endswith("num_batches_tracked") for n in report.missing)
    s = report.summary()
    assert f"loaded {len(report.matched)}/{report.total}" in s and "missing: blocks.4." in s
    assert "head.weight checkpoint (7, 8) vs model (3, 8)" in s and "1 unexpected: extra.weight" in s
    d = report.to_dict()
    assert d["mismatched"] == [["head.weight", [7, 8], [3, 8]]] and d["summary"] == s
    with pytest.raises(ArtifactError, match="strict.*missing"):
        load_into(small("vgg16-bn"), state, prefix_map={"feature.": "blocks.0."}, strict=True)


def test_nothing_matching_raises_with_names() -> None:
    model = small("ir50")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ArtifactError, match=r"wrong file.*Checkpoint names: conv1\.weight, fc\.bias; model names: head\.weight, "):
        load_into(model, {"conv1.weight": torch.zeros(3), "fc.bias": torch.zeros(2)})
    with pytest.raises(ArtifactError, match="no checkpoint tensor matches"):  # only shape clashes: nothing loaded
        load_into(model, {"head.bias": torch.zeros(5)})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", FACE_ARCHS)
def test_field_prefix_map_covers_every_tensor(arch: str) -> None:
    mapping = field_prefix_map(arch)
    inverse = {v: k for k, v in mapping.items()}
    # the field's VGG16 has no projection: flattened map (32 channels x 1 x 1 at width 4, 16 px) = feature
    shape = {"feature_dim": 32} if arch == "vgg16-bn" else {}
    src = small(arch, seed=1, **shape)

    def field_name(name: str) -> str:
        best = max((p for p in inverse if name.startswith(p)), key=len)
        return inverse[best] + name[len(best):]

    state = {field_name(k): v for k, v in src.state_dict().items()}
    report = load_into(small(arch, seed=2, **shape), state, prefix_map=mapping, strict=True)
    assert report.complete
    if isinstance(src, IRNet):
        assert "feature.body.3.shortcut_layer.0.weight" in state  # first unit of stage 2, flat index 3
        assert "output_layer.3.weight" in state and "feature.input_layer.0.weight" in state
    else:
        assert "feature.7.weight" in state and "bn.running_mean" in state  # torchvision vgg16_bn layout
    assert "fc_layer.weight" in state


def test_gan_prior_at_64px_has_the_papers_channel_sizes() -> None:
    # GMI's 64-px generator: z 100 -> 512 x 4 x 4 -> 256 -> 128 -> 64 -> 3 channels; its critic 3 -> 64 -> 128 -> 256 -> 512 -> 1
    # (calor's use 4x4 kernels where GMI's critic uses 5x5; the channel widths and depth are the same)
    from calor.models.gan import Critic, Generator

    g, d = Generator(100, 64, 3, 64), Critic(64, 3, 64)
    assert g.project[0].out_features == 512 * 16
    convs_g = [m for m in g.body if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in convs_g] == [(512, 256), (256, 128), (128, 64), (64, 3)]
    convs_d = [m for m in d.body if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs_d] == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    assert g(torch.randn(2, 100)).shape == (2, 3, 64, 64) and d(torch.randn(2, 3, 64, 64)).shape == (2,)
