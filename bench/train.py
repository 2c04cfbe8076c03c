"""Training throughput of the segmenter per configuration (run by hand, not a test).

    python bench/train.py [--steps N] [--batch-size B] [--threads T] [--widths 16,32]
                          [--configs whole-fp32,whole-bf16,crop128-fp32,crop128-bf16]

In one process, on synthetic data of the LGG shape (3 x 256 x 256 slices with a tumour blob),
it times full training steps exactly as ``brainseg-train`` takes them (augmentation on the
device, optional tumour-centred crop, channels-last, autocast, forward, loss, backward, gradient
clipping, AdamW) and prints for each configuration:

- training slices per second (best of three timed blocks of ``--steps`` steps after a warm-up);
- the speed-up over ``whole-bf16`` at the same width, today's ``brainseg-train`` default on a CPU
  with native bf16 (``whole-fp32`` elsewhere);
- the share of the FLOP floor reached: the step's FLOPs (forward + backward, counted with
  ``torch.utils.flop_counter.FlopCounterMode``) divided by the time taken, over this machine's
  matmul rate in the same dtype, measured in the same run.

Compare ratios measured in one run: a shared machine's absolute figures move from run to run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from brainseg_core.inference.device import autocast, cpu_has_native_bf16, resolve_device
from brainseg_core.models import build_model
from brainseg_core.training.data import augment, crop_batch
from brainseg_core.training.losses import build_loss

CONFIGS = ("whole-fp32", "whole-bf16", "crop128-fp32", "crop128-bf16", "crop160-bf16")


def matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """Best measured FLOP/s of a 2048 x 2048 matmul in ``dtype``."""
    n = 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t0) / 3)
    return 2 * n**3 / best


def synthetic_batch(n: int, size: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised-looking images and a round tumour on every other slice."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, size, size, generator=g).to(torch.float16)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    for i in range(0, n, 2):
        cy, cx = torch.randint(60, size - 60, (2,), generator=g).tolist()
        masks[i, 0] = ((yy - cy) ** 2 + (xx - cx) ** 2 < 30**2).to(torch.uint8)
    return images, masks


def parse_config(name: str) -> tuple[int | None, str]:
    """``crop128-bf16`` -> (128, "bf16"); ``whole-fp32`` -> (None, "fp32")."""
    where, precision = name.split("-")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision in {name!r}")
    if where == "whole":
        return None, precision
    if not where.startswith("crop"):
        raise ValueError(f"unknown configuration {name!r}: use whole-PREC or cropN-PREC")
    return int(where[4:]), precision


def bench_config(
    width: int, crop: int | None, precision: str, *, steps: int, batch_size: int, device: torch.device
) -> tuple[float, float]:
    """(slices per second, FLOPs of one training step) of one configuration."""
    torch.manual_seed(0)
    # torch's type stubs omit Module.to's memory_format keyword
    model = build_model("resunet", base_filters=width).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    loss_fn = build_loss("bce_dice", kind="segmenter")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    amp = torch.bfloat16 if precision == "bf16" else None
    images, masks = synthetic_batch(4 * batch_size)
    gen = torch.Generator(device=device).manual_seed(1)

    def step(i: int) -> None:
        sel = torch.arange(i * batch_size, (i + 1) * batch_size) % images.shape[0]
        x, m = augment(images[sel], masks[sel], gen)
        assert m is not None
        if crop is not None:
            x, m = crop_batch(x, m, crop, gen)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(x)
        loss = loss_fn(logits, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    side = crop or 256
    x = torch.randn(batch_size, 3, side, side).contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        with autocast(device, amp):
            out = model(x)
        loss_fn(out, torch.zeros_like(out)).backward()
    flops = float(counter.get_total_flops())
    opt.zero_grad(set_to_none=True)
    for i in range(2):  # warm-up (oneDNN primitive creation)
        step(i)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        best = min(best, time.perf_counter() - t0)
    return steps * batch_size / best, flops


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4, help="steps per timed block")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--widths", default="16", help="comma-separated ResUNet base widths")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configurations")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device("cpu")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    parsed = {c: parse_config(c) for c in configs}
    widths = [int(w) for w in args.widths.split(",")]
    baseline = "whole-bf16" if cpu_has_native_bf16() else "whole-fp32"
    rates = {
        "fp32": matmul_rate(device, torch.float32),
        "bf16": matmul_rate(device, torch.bfloat16),
    }
    print(
        f"CPU, {torch.get_num_threads()} threads, batch {args.batch_size}, {args.steps} steps per block; "
        f"matmul fp32 {rates['fp32'] / 1e9:.0f} GFLOP/s, bf16 {rates['bf16'] / 1e9:.0f} GFLOP/s; "
        f"native bf16: {cpu_has_native_bf16()}"
    )
    vs = "vs " + baseline
    print(f"{'width':>5} {'config':<14} {'slices/s':>9} {vs:>16} {'GFLOP/step':>11} {'floor %':>8}")
    for width in widths:
        results: dict[str, float] = {}
        for name in configs:
            crop, precision = parsed[name]
            sps, flops = bench_config(
                width, crop, precision, steps=args.steps, batch_size=args.batch_size, device=device
            )
            results[name] = sps
            achieved = flops * sps / args.batch_size
            ratio = f"{sps / results[baseline]:.2f}x" if baseline in results else "-"
            print(
                f"{width:>5} {name:<14} {sps:>9.1f} {ratio:>16} {flops / 1e9:>11.1f} "
                f"{100 * achieved / rates[precision]:>7.0f}%"
            )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
