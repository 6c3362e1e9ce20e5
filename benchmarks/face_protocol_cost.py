"""What the CelebA-64 protocol costs, stage by stage, from timed steps of the real networks.

Times a few training steps of each network at the scenario's sizes (VGG16-BN and IR-152 targets, the IR-50
judge, GMI's WGAN-GP prior at 64 px) and a few GMI latent-search iterations, on the device given, with
random tensors of the right shapes (a step's cost does not depend on the pixels). Then multiplies by the
scenario's budgets (epochs x batches of ~27k private images, prior steps, attack iterations over 300
identities x 5 reconstructions) to estimate each stage of `calor bench --scenario celeba64`. The output
says which figures are measured (seconds per step) and which are extrapolated (stage totals).

    .venv/bin/python benchmarks/face_protocol_cost.py [--device cuda] [--precision bf16] [--steps 3]

For a data-parallel run, divide the training stages by the number of processes (the global batch stays
the scenario's; DDP's all-reduce is not included); attack cells split over processes or Ray tasks.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from calor.attacks.priors import gradient_penalty
from calor.models import build_classifier
from calor.models.gan import Critic, Generator
from calor.runtime import autocast, configure_threads, cpu_model, resolve_device, set_precision, versions
from calor.scenario import load_scenario

PRIVATE_TRAIN = 27_018  # CelebA-64 protocol, as published (calor's split of a real copy gives ~27k)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, steps: int, device: torch.device) -> float:
    fn()  # warm-up (kernel selection, allocator)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def classifier_step(arch: str, width: int, feature_dim: int, classes: int, batch: int, device: torch.device):
    model = build_classifier(arch, num_classes=classes, in_channels=3, resolution=64, width=width, feature_dim=feature_dim).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 64, 64, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)

    def step() -> None:
        with autocast(device):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def gan_step(width: int, z_dim: int, batch: int, n_critic: int, device: torch.device):
    G, D = Generator(z_dim, 64, 3, width).to(device), Critic(64, 3, width).to(device)
    og, od = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999)), torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    real = torch.randn(batch, 3, 64, 64, device=device)

    def step() -> None:
        for _ in range(n_critic):
            with torch.no_grad():
                fake = G(torch.randn(batch, z_dim, device=device))
            loss = D(fake).mean() - D(real).mean() + 10 * gradient_penalty(D, real, fake, None, torch.rand(batch, 1, 1, 1))
            od.zero_grad(set_to_none=True)
            loss.backward()
            od.step()
        loss = -D(G(torch.randn(batch, z_dim, device=device))).mean()
        og.zero_grad(set_to_none=True)
        loss.backward()
        og.step()

    return step


def gmi_iteration(arch: str, width: int, feature_dim: int, gan_width: int, batch: int, device: torch.device):
    target = build_classifier(arch, num_classes=1000, in_channels=3, resolution=64, width=width, feature_dim=feature_dim).to(device).eval()
    G, D = Generator(100, 64, 3, gan_width).to(device).eval(), Critic(64, 3, gan_width).to(device).eval()
    z = torch.randn(batch, 100, device=device, requires_grad=True)
    y = torch.randint(0, 1000, (batch,), device=device)
    opt = torch.optim.SGD([z], lr=0.02, momentum=0.9)

    def step() -> None:
        x = G(z)
        loss = -D(x).mean() + 100 * F.cross_entropy(target(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    configure_threads(args.threads)
    set_precision(args.precision)
    device = resolve_device(args.device)
    sc = load_scenario("celeba64")
    t, e, p, a = sc.target, sc.evaluation, sc.prior, sc.attack
    batches = -(-PRIVATE_TRAIN // t.batch_size)
    reconstructions = len(sc.attacked_classes()) * a.per_class
    rows = []

    def measure(stage: str, fn, per_unit: str, units: float) -> None:
        s = _timed(fn, args.steps, device)
        rows.append((stage, s, per_unit, units, s * units))
        print(f"  {stage:<34} {s:8.3f} s/{per_unit:<12} x {units:>9,.0f} = {s * units / 3600:8.2f} h", flush=True)

    print(f"celeba64 stages on {device} ({cpu_model() if device.type == 'cpu' else torch.cuda.get_device_name()}), "
          f"precision {args.precision}, {torch.get_num_threads()} threads; s/step measured, hours extrapolated")
    measure(f"target vgg16-bn w{t.width} ({t.epochs} ep)", classifier_step("vgg16-bn", t.width, t.feature_dim, 1000, t.batch_size, device),
            "step", batches * t.epochs)
    measure(f"target ir152 w{t.width} ({t.epochs} ep)", classifier_step("ir152", t.width, 512, 1000, t.batch_size, device),
            "step", batches * t.epochs)
    measure(f"judge {e.arch} w{e.width} ({e.epochs} ep)", classifier_step(e.arch, e.width, e.feature_dim, 1000, e.batch_size, device),
            "step", batches * e.epochs)
    measure(f"GAN prior {p.kind} w{p.width} ({p.steps} steps)", gan_step(p.width, p.z_dim, p.batch_size, p.n_critic, device),
            "step", p.steps)
    # calor's GMI moves all latents in one batch; an iteration over 64 latents is timed and scaled linearly
    # to the seed's reconstructions (the cost is close to linear in the batch on one device)
    attack_batch = 64
    measure(f"GMI vs vgg16-bn ({reconstructions} latents, per 64)", gmi_iteration("vgg16-bn", t.width, t.feature_dim, p.width,
            attack_batch, device), "64 x iter", a.iterations * reconstructions / attack_batch)
    v = versions()
    print(f"torch {v['torch']}, {v['cpu_capability']}, threads {v['threads']}")


if __name__ == "__main__":
    main()
