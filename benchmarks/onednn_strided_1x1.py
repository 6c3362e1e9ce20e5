"""Probe oneDNN's strided 1x1 convolution on this CPU: does its backward-weights pass hang or give wrong
gradients, and does calor's fallback (`calor.models.SubsampledConv1x1`) avoid it? Prints one table.

    .venv/bin/python benchmarks/onednn_strided_1x1.py                # ISAs AVX2, default; quick grid
    .venv/bin/python benchmarks/onednn_strided_1x1.py --isa AVX2 AVX ALL --channels 1 3 4 6 8 12 16 32

Each (ISA, layout, channels, stride, implementation) runs in its own subprocess with a timeout (a hang
cannot be interrupted from inside), 200 training steps at batch 32, 16x16 inputs, 2 threads; weight
gradients are checked against a float64 einsum. Times per step include that check.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

CHILD = r"""
import sys, time, torch
from torch import nn
from calor.models import SubsampledConv1x1
torch.set_num_threads(2)
torch.manual_seed(0)
cin, stride, layout, impl = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
conv = nn.Conv2d(cin, 2 * cin, 1, stride, bias=False)
if impl == "fallback":
    conv = SubsampledConv1x1.replacing(conv)
fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
conv = conv.to(memory_format=fmt)
wrong, t0 = 0, time.perf_counter()
for _ in range(200):
    x = torch.randn(32, cin, 16, 16).contiguous(memory_format=fmt)
    conv.zero_grad()
    y = conv(x)
    g = torch.randn_like(y)
    y.backward(g)
    ref = torch.einsum("nchw,nohw->oc", x.double()[:, :, ::stride, ::stride], g.double())
    wrong += int((conv.weight.grad.double().flatten(1) - ref).abs().max().item() > 1e-3)
print(wrong, (time.perf_counter() - t0) / 200 * 1e3)
"""


def probe(isa: str, layout: str, cin: int, stride: int, impl: str, timeout: float) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    if isa != "default":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(cin), str(stride), layout, impl], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"HANG (> {timeout:.0f} s)"
    if proc.returncode != 0:
        return f"CRASH (exit {proc.returncode})"
    wrong, ms = proc.stdout.split()
    return (f"WRONG grads {wrong}/200" if int(wrong) else "ok") + f", {float(ms):.2f} ms/step"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--isa", nargs="+", default=["AVX2", "default"], help="ONEDNN_MAX_CPU_ISA values (default: AVX2 default)")
    ap.add_argument("--channels", nargs="+", type=int, default=[3, 4, 6, 8])
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"{'ISA':<8} {'layout':<6} {'cin':>3} {'stride':>6}  {'native Conv2d':<32} {'SubsampledConv1x1':<32}")
    for isa in args.isa:
        for layout in ("nchw", "nhwc"):
            for cin in args.channels:
                for stride in (2, 1):
                    native = probe(isa, layout, cin, stride, "native", args.timeout)
                    fallback = probe(isa, layout, cin, stride, "fallback", args.timeout) if stride > 1 else "-"
                    print(f"{isa:<8} {layout:<6} {cin:>3} {stride:>6}  {native:<32} {fallback:<32}", flush=True)


if __name__ == "__main__":
    main()
