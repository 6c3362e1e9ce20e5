"""calor's StyleGAN2 generator (NVlabs names and shapes, W/W+, truncation, a synthesis cut between blocks,
gradient checkpointing) and the import of the field's weights: an NVIDIA-structure pickle whose embedded
source code never runs, plain state dicts, and one-line refusals."""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from calor.errors import ArtifactError, ConfigError
from calor.models.stylegan2 import StyleGAN2Config, StyleGAN2Generator, conv3x3_up2, setup_filter, upfirdn2d
from calor.stylegan_import import import_stylegan2, load_stylegan2, read_stylegan2

TINY = StyleGAN2Config(resolution=16, channels=3, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32,
                       conv_clamp=256.0)
FFHQ_1024 = StyleGAN2Config(resolution=1024, channels=3, conv_clamp=256.0)  # NVlabs `stylegan2` config


def tiny_generator(seed: int = 0) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    G = StyleGAN2Generator(TINY)
    with torch.no_grad():  # trained generators have non-zero noise strengths and a tracked w_avg
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
        G.mapping.w_avg.normal_()
    return G.eval()


def test_the_layout_is_nvlabs_at_every_size() -> None:
    with torch.device("meta"):  # shapes only: no memory for the 1024-px weights
        G = StyleGAN2Generator(FFHQ_1024)
        assert G.num_ws == 18 and StyleGAN2Generator(StyleGAN2Config(resolution=256, channel_base=16384)).num_ws == 14
    sd = G.state_dict()
    assert tuple(sd["synthesis.b4.const"].shape) == (512, 4, 4)
    assert tuple(sd["synthesis.b1024.conv0.weight"].shape) == (32, 64, 3, 3)  # 32768 // 1024 = 32 channels
    assert tuple(sd["synthesis.b1024.torgb.weight"].shape) == (3, 32, 1, 1)
    assert tuple(sd["mapping.fc7.weight"].shape) == (512, 512) and tuple(sd["mapping.w_avg"].shape) == (512,)
    for key in ("synthesis.b8.conv0.noise_const", "synthesis.b8.conv0.noise_strength", "synthesis.b8.conv0.affine.bias",
                "synthesis.b8.resample_filter", "synthesis.b8.conv1.resample_filter"):
        assert key in sd
    assert not any(k.startswith("synthesis.b4.conv0") for k in sd)  # block 4 starts from its constant
    with pytest.raises(ConfigError, match="power of two"):
        StyleGAN2Config(resolution=48)


def test_the_upsampling_convolution_is_the_filtered_transposed_convolution() -> None:
    torch.manual_seed(0)
    x, w, f = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), setup_filter()
    # the slow path of the definition: zero-insertion x2, FIR filter (gain 4), a true 3x3 convolution
    slow = F.conv2d(upfirdn2d(x, f, up=2, pad=(3, 2, 3, 2), gain=4.0), w.flip([2, 3]))
    assert conv3x3_up2(x, w, f, groups=1).shape == (2, 4, 10, 10)
    assert torch.allclose(conv3x3_up2(x, w, f, groups=1), slow, atol=1e-5)


def test_w_plus_truncation_and_the_cut_synthesis() -> None:
    G = tiny_generator()
    gen = torch.Generator().manual_seed(0)
    ws = G.sample_w(3, gen)
    assert ws.shape == (3, G.num_ws, 32) and torch.equal(ws[:, 0], ws[:, -1])  # W: one w per image, repeated
    assert torch.allclose(G.sample_w(2, psi=0.0), G.w_avg.expand(2, G.num_ws, 32))
    cut = G.mapping(torch.randn(2, 32), psi=0.0, cutoff=3)
    assert torch.allclose(cut[:, :3], G.w_avg.expand(2, 3, 32)) and not torch.allclose(cut[:, 3], G.w_avg)
    images = G.synthesize(ws)
    assert images.shape == (3, 3, 16, 16) and torch.isfinite(images).all()
    for k in range(1, G.num_blocks):
        x, img = G.features(ws, k)
        assert torch.equal(G.synthesize_from(k, x, img, ws), images)
    w_plus = ws.clone()
    w_plus[:, -1] += 1.0
    assert not torch.equal(G.synthesize(w_plus), images)
    with pytest.raises(ConfigError, match="expected"):
        G.synthesize(ws[:, :2])


def test_checkpointed_blocks_give_the_same_gradients() -> None:
    G = tiny_generator()
    Gc = StyleGAN2Generator(TINY, checkpoint_blocks=True)
    Gc.load_state_dict(G.state_dict())
    ws = G.sample_w(2, torch.Generator().manual_seed(1)).requires_grad_(True)
    grads = [torch.autograd.grad(g.eval().synthesize(ws).square().mean(), ws)[0] for g in (G, Gc)]
    assert torch.equal(grads[0], grads[1])


# --- an NVIDIA-structure pickle ------------------------------------------------------------------------------

class _Persistent:
    """Pickles like a `torch_utils.persistence` object: its class's source code travels in the pickle and the
    official loader executes it (here the source writes a marker file)."""

    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self):
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _wrap(module: torch.nn.Module, source: str, init_kwargs: dict | None = None) -> _Persistent:
    state = {"training": False, "_parameters": OrderedDict(module._parameters), "_buffers": OrderedDict(module._buffers),
             "_non_persistent_buffers_set": set(), "_modules": OrderedDict((n, _wrap(c, source)) for n, c in module._modules.items()),
             "_init_args": (), "_init_kwargs": init_kwargs or {}}
    return _Persistent({"type": "class", "version": 4, "module_src": source, "class_name": type(module).__name__, "state": state})


def write_official_pickle(path: Path, G: StyleGAN2Generator, marker: Path, extra: dict | None = None) -> Path:
    """A network pickle in the official structure, written with stand-in `torch_utils` / `dnnlib` modules."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # what the official module does: run the embedded source
        exec(compile(meta["module_src"], "<persistent>", "exec"), {})
        return meta

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    mods = {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
            "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    source = f"open({str(marker)!r}, 'w').write('the pickle ran its code')\n"
    c = G.cfg
    kwargs = EasyDict(z_dim=c.z_dim, c_dim=0, w_dim=c.w_dim, img_resolution=c.resolution, img_channels=c.channels,
                      mapping_kwargs=EasyDict(num_layers=c.mapping_layers),
                      synthesis_kwargs=EasyDict(channel_base=c.channel_base, channel_max=c.channel_max, num_fp16_res=4,
                                                conv_clamp=c.conv_clamp, architecture="skip"))
    sys.modules.update(mods)
    try:
        data = {"G": _wrap(G, source, kwargs), "D": _wrap(torch.nn.Linear(2, 2), source), "G_ema": _wrap(G, source, kwargs),
                "augment_pipe": None, "training_set_kwargs": EasyDict(path="ffhq.zip"), **(extra or {})}
        with open(path, "wb") as fh:
            pickle.dump(data, fh)
    finally:
        for name in mods:
            sys.modules.pop(name, None)
    return path


def test_an_official_pickle_imports_without_its_code_ever_running(tmp_path: Path) -> None:
    marker, evil = tmp_path / "source-ran", tmp_path / "payload-ran"
    G = tiny_generator()
    pkl = write_official_pickle(tmp_path / "network-snapshot-000000.pkl", G, marker, {"evil": _Payload(evil)})
    assert b"the pickle ran its code" in pkl.read_bytes()  # the source travels in the file
    out = import_stylegan2(pkl, tmp_path / "prior")
    assert not marker.exists() and not evil.exists()
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules  # nothing was imported either
    G2 = load_stylegan2(out)
    assert G2.cfg == TINY
    ws = G.sample_w(4, torch.Generator().manual_seed(3))
    direct = StyleGAN2Generator(TINY).eval()
    direct.load_state_dict(G.state_dict())
    with torch.no_grad():
        assert torch.equal(G2.synthesize(ws), direct.synthesize(ws))  # bit-identical to a direct load_state_dict
    import json

    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"]["format"] == "nvidia-pickle" and meta["source"]["source_code_executed"] is False
    assert len(meta["source"]["sha256"]) == 64 and len(meta["key_report"]["matched"]) == len(G.state_dict()) and not meta["key_report"]["missing"]


def test_a_plain_state_dict_imports_with_its_config_read_from_the_shapes(tmp_path: Path) -> None:
    G = tiny_generator(1)
    torch.save({"state_dict": G.state_dict()}, tmp_path / "ffhq_G.pth")  # IF-GMI's converted format
    sd, cfg, info = read_stylegan2(tmp_path / "ffhq_G.pth", conv_clamp=256.0)
    assert cfg == TINY and info["format"] == "state-dict"
    G2 = load_stylegan2(import_stylegan2(tmp_path / "ffhq_G.pth", tmp_path / "p", conv_clamp=256.0))
    ws = G.sample_w(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(G2.synthesize(ws), G.synthesize(ws))


def test_every_refusal_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    from calor.cli import main

    G = tiny_generator()
    sd = G.state_dict()
    cases = {
        "layout": ({"fc.weight": torch.zeros(2, 2)}, "not a StyleGAN2 state dict in the NVlabs layout"),
        "missing": ({k: v for k, v in sd.items() if k != "synthesis.b8.conv0.noise_const"}, "1 missing: synthesis.b8.conv0.noise_const"),
        "shape": ({**sd, "synthesis.b8.torgb.bias": torch.zeros(5)}, "1 shape mismatch: synthesis.b8.torgb.bias checkpoint (5,) vs model (3,)"),
        "rosinality": ({"style.1.weight": torch.zeros(2, 2), "convs.0.conv.weight": torch.zeros(1)}, "rosinality-style"),
    }
    for name, (tensors, message) in cases.items():
        torch.save(tensors, tmp_path / f"{name}.pth")
        assert main(["prior", "import", str(tmp_path / f"{name}.pth"), "--kind", "stylegan2", "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, (name, err)
        assert not (tmp_path / name).exists()
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2)}, "latent_avg": torch.zeros(2), "g": {}}, tmp_path / "rosi.pt")
    assert main(["prior", "import", str(tmp_path / "rosi.pt"), "--kind", "stylegan2", "--out", str(tmp_path / "r")]) == 2
    assert "rosinality-style" in capsys.readouterr().err
    with open(tmp_path / "nog.pkl", "wb") as fh:
        pickle.dump({"G": 1}, fh)
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04not a pickle")
    for f, message in (("nog.pkl", "no 'G_ema'"), ("junk.pkl", "a damaged pickle"), ("gone.pkl", "does not exist")):
        assert main(["prior", "import", str(tmp_path / f), "--kind", "stylegan2", "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err


def test_the_cli_imports_and_samples(tmp_path: Path, capsys) -> None:
    from calor.cli import main

    pkl = write_official_pickle(tmp_path / "ffhq.pkl", tiny_generator(), tmp_path / "ran")
    assert main(["prior", "import", str(pkl), "--kind", "stylegan2", "--out", str(tmp_path / "prior")]) == 0
    out = capsys.readouterr().out
    assert "StyleGAN2 at 16 px" in out and "every key and shape checked" in out
    assert main(["prior", "sample", str(tmp_path / "prior"), "--out", str(tmp_path / "grid.png"), "--n", "4", "--psi", "0.7"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 0 and not (tmp_path / "ran").exists()
    with pytest.raises(ArtifactError):
        load_stylegan2(tmp_path / "nowhere")
