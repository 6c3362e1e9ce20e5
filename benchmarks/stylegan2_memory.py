"""Memory and time of one forward + backward through calor's StyleGAN2 generator at the field's sizes, on CPU.

Each configuration runs in a fresh subprocess (peak RSS is its own): a generator of the NVlabs config
(FFHQ-1024: channel_base 32768, channel_max 512; the 256-px config: channel_base 16384) is initialised at
random, saved as a plain state dict, imported with `calor.stylegan_import.import_stylegan2` (the path a user's
`ffhq_G.pth` takes) and loaded back; then ws (requires_grad, as an attack's latents) go through the
synthesis, and the mean of the image is backpropagated to them. Printed per configuration: parameters,
seconds of the forward + backward, peak RSS of the process and the part of it the step added (peak after
the step minus RSS after loading). With --checkpoint the synthesis blocks are checkpointed.

    .venv/bin/python benchmarks/stylegan2_memory.py [--sizes 256,1024] [--batches 1,2] [--threads 2]

Extrapolation to a GPU (BENCHMARKS.md): the step's activation memory grows linearly with the batch, so
batch b needs about (weights + optimiser state) + b x (the step's per-image memory).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
import torch
from calor.models.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from calor.stylegan_import import import_stylegan2, load_stylegan2

res, batch, ckpt, threads = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
torch.set_num_threads(threads)
cfg = StyleGAN2Config(resolution=res, channels=3, channel_base=32768 if res >= 512 else 16384, conv_clamp=256.0)
with tempfile.TemporaryDirectory() as tmp:
    G = StyleGAN2Generator(cfg)
    torch.save({"state_dict": G.state_dict()}, Path(tmp) / "G.pth")
    del G
    t0 = time.perf_counter()
    art = import_stylegan2(Path(tmp) / "G.pth", Path(tmp) / "prior", conv_clamp=256.0)
    import_s = time.perf_counter() - t0
    G = load_stylegan2(art, checkpoint_blocks=ckpt)
params = sum(p.numel() for p in G.parameters())
for p in G.parameters():
    p.requires_grad_(False)
ws = G.sample_w(batch, torch.Generator().manual_seed(0)).detach().requires_grad_(True)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
img = G.synthesize(ws)
img.mean().backward()
step = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"resolution": res, "batch": batch, "checkpoint_blocks": ckpt, "params_m": params / 1e6, "num_ws": G.num_ws,
                  "import_s": import_s, "step_s": step, "peak_rss_mb": peak, "step_added_mb": peak - loaded,
                  "grad_finite": bool(torch.isfinite(ws.grad).all())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="256,1024")
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", action="store_true", help="also measure with checkpointed synthesis blocks")
    args = ap.parse_args()
    import torch

    from calor.runtime import versions

    v = versions()
    print(f"torch {torch.__version__} on {v['cpu']} ({v['cpu_capability']}), {args.threads} threads")
    print(f"{'px':>5} {'batch':>5} {'ckpt':>5} {'params':>8} {'num_ws':>6} {'import s':>8} {'fwd+bwd s':>9} {'peak RSS MB':>11} {'step added MB':>13}")
    for res in (int(s) for s in args.sizes.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            for ckpt in ((False, True) if args.checkpoint else (False,)):
                out = subprocess.run([sys.executable, "-c", CHILD, str(res), str(batch), "1" if ckpt else "0", str(args.threads)],
                                     capture_output=True, text=True, env={**os.environ, "CALOR_PROGRESS": "0"})
                if out.returncode:
                    print(f"{res:>5} {batch:>5} failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{res:>5} {batch:>5} {'yes' if ckpt else 'no':>5} {r['params_m']:>7.1f}M {r['num_ws']:>6} {r['import_s']:>8.1f} "
                      f"{r['step_s']:>9.1f} {r['peak_rss_mb']:>11.0f} {r['step_added_mb']:>13.0f}")


if __name__ == "__main__":
    main()
