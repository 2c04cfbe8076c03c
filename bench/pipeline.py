"""Throughput of the inference pipeline on a real patient (run by hand, not a test).

    python bench/pipeline.py [--patient DIR] [--classifier BUNDLE] [--segmenter BUNDLE]
                             [--device auto|cpu|cuda|mps] [--batch-size N] [--repeats R] [--threads T]

In one process, on one patient (default: the first fixture patient of
``../shared/data/lgg/fixtures/kaggle_3m`` beside the repository), it measures slices per second of

  (a) a seed-style loop: one slice at a time, fp32, classifier then segmenter, no batching;
  (b) the pipeline in fp32;
  (c) the pipeline under bf16 autocast on the CPU (on a GPU: bf16 where supported, and fp16),
      with the largest absolute difference of its probabilities from (b) and the share of mask
      pixels that change;
  (d) in the fastest precision, what the classifier gate saves: the pipeline segmenting every
      slice without the classifier, and the same with flip test-time augmentation (the segmenter
      also reads each slice mirrored: thorough mode of a segmenter whose card names no ensemble);
  (g) in the fastest precision, the thorough mode of the segmenter (``--thorough``:
      :func:`brainseg_core.thorough.thorough_mode`, the shipped segmenter's two-model ensemble at the
      ensemble's thresholds, behind the same gate), when its card names an ensemble;
  (e) with ``--other-classifier BUNDLE``: the fastest precision with that classifier as the gate
      instead (e.g. the ResNet-18 against the encoder gate), with its card threshold;
  (f) for each row, the fraction of the FLOP floor reached: the models' FLOPs (counted with
      ``torch.utils.flop_counter.FlopCounterMode``) divided by the time taken, over this
      machine's matmul rate in the same dtype, measured in the same run.

Models: the explicit bundles, else the shipped ones in ``resources/models``, else randomly
initialised ResUNet (16 base filters) + ResNet-18. With random models every slice is gated
through to the segmenter (threshold 0: the worst case); with trained ones the card thresholds
apply. An encoder gate on the segmenter's own encoder (``resunet_gate``) shares the encoder pass:
its rows count the encoder once per slice and the decoder per segmented slice. Each figure is the
best of ``--repeats`` runs after a warm-up run.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from brainseg_core.bundle import ModelBundle, load_bundle, save_bundle
from brainseg_core.inference import PatientResult, Pipeline
from brainseg_core.inference.device import cpu_has_native_bf16, resolve_device
from brainseg_core.inference.pipeline import shares_encoder
from brainseg_core.io import open_volume
from brainseg_core.models import build_model
from brainseg_core.preprocessing import channel_stats, preprocess_volume, resize_prob
from brainseg_core.registry import list_bundles
from brainseg_core.thorough import thorough_mode
from brainseg_core.thresholds import Thresholds

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "data" / "lgg" / "fixtures" / "kaggle_3m"


T = TypeVar("T")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """Best measured FLOP/s of a square matmul in ``dtype`` on ``device``."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(6):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / 4)
    return 2 * n**3 / best


def model_flops(
    model: torch.nn.Module, size: int, device: torch.device, *, encoder_only: bool = False
) -> int:
    """FLOPs of one forward pass (or of the ResUNet's encoder alone) on one ``size`` x ``size`` slice."""
    x = torch.zeros(1, 3, size, size, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.encode(x) if encoder_only else model(x)  # type: ignore[operator]
    return int(counter.get_total_flops())


def pipeline_flops(cls: ModelBundle | None, seg: ModelBundle, n: int, n_seg: int, passes: int, device) -> int:
    """FLOPs of analysing ``n`` slices of which ``n_seg`` were segmented (``passes`` times each)."""
    seg_flops = model_flops(seg.model, seg.card.input_size, device)
    if cls is None:
        return passes * n_seg * seg_flops
    cls_flops = model_flops(cls.model, cls.card.input_size, device)
    if shares_encoder(cls, seg):
        decoder = seg_flops - model_flops(seg.model, seg.card.input_size, device, encoder_only=True)
        # the first pass reuses the gate's encoder; a flip TTA pass runs the whole segmenter
        return n * cls_flops + n_seg * decoder + (passes - 1) * n_seg * seg_flops
    return n * cls_flops + passes * n_seg * seg_flops


def load_models(args: argparse.Namespace, tmp: Path) -> tuple[ModelBundle, ModelBundle, str]:
    shipped = {
        kind: next((i.path for i in list_bundles(kind) if i.source == "shipped"), None)
        for kind in ("classifier", "segmenter")
    }
    cls_path = args.classifier or shipped["classifier"]
    seg_path = args.segmenter or shipped["segmenter"]
    if cls_path and seg_path:
        return load_bundle(cls_path), load_bundle(seg_path), "trained"
    torch.manual_seed(0)
    seg = save_bundle(
        build_model("resunet", base_filters=16),
        tmp / "seg.json",
        name="random-resunet16",
        kind="segmenter",
        arch="resunet",
        arch_args={"base_filters": 16},
        input_size=256,
        thresholds={"mask_probability": 0.5, "min_area_px": 0},
        dtype=torch.float32,
    )
    cls = save_bundle(
        build_model("resnet18"),
        tmp / "cls.json",
        name="random-resnet18",
        kind="classifier",
        arch="resnet18",
        arch_args={},
        input_size=256,
        thresholds={"tumour_probability": 0.0},
        dtype=torch.float32,
    )
    return load_bundle(cls), load_bundle(seg), "random"


def seed_loop(cls: ModelBundle, seg: ModelBundle, volume, threshold: float, device: torch.device) -> int:
    """The seed notebook's way: per slice, classify, then segment if flagged (fp32, NCHW)."""
    # torch's type stubs omit Module.to's memory_format keyword
    cls_model = copy.deepcopy(cls.model).to(device, memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    seg_model = copy.deepcopy(seg.model).to(device, memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    stats = channel_stats(volume.images)
    segmented = 0
    with torch.no_grad():
        for i in range(volume.n_slices):
            x = preprocess_volume(volume.images[i : i + 1], size=cls.card.input_size, stats=stats).to(device)
            if torch.sigmoid(cls_model(x)).item() >= threshold:
                prob = resize_prob(torch.sigmoid(seg_model(x))[:, 0], volume.shape).cpu().numpy()
                _ = prob[0] >= 0.5
                segmented += 1
    return segmented


def timed(fn: Callable[[], T], repeats: int, device: torch.device) -> tuple[float, T]:
    out = fn()  # warm-up (allocator, oneDNN/cuDNN kernel choice)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def compare(a: PatientResult, b: PatientResult) -> tuple[float, float, float]:
    """Max |tumour prob diff|, max |mask prob diff|, share of mask pixels that differ."""
    dt = max(
        abs(x.tumour_probability - y.tumour_probability) for x, y in zip(a.slices, b.slices, strict=True)
    )
    dm, changed, total = 0.0, 0, 0
    for x, y in zip(a.slices, b.slices, strict=True):
        if x.mask_probability is not None and y.mask_probability is not None:
            dm = max(dm, float(np.abs(x.mask_probability - y.mask_probability).max()))
        changed += int((x.mask != y.mask).sum())
        total += int(max(x.mask.sum(), y.mask.sum(), 1))
    return dt, dm, changed / total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patient", type=Path, help="patient folder or stack (default: first fixture patient)")
    p.add_argument("--classifier", help="classifier bundle")
    p.add_argument("--segmenter", help="segmenter bundle")
    p.add_argument("--other-classifier", help="also time the pipeline with this classifier as the gate")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    patient = args.patient or sorted(d for d in FIXTURES.iterdir() if d.is_dir())[0]
    device = resolve_device(args.device)
    volume = open_volume(patient)

    with tempfile.TemporaryDirectory() as tmp:
        cls, seg, kind = load_models(args, Path(tmp))
    other = load_bundle(args.other_classifier) if args.other_classifier else None
    threshold = cls.card.thresholds["tumour_probability"]
    cls_flops = model_flops(cls.model.to(device), cls.card.input_size, device)
    seg_flops = model_flops(seg.model.to(device), seg.card.input_size, device)

    half = [torch.bfloat16] if device.type != "cuda" else [torch.bfloat16, torch.float16]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        half = [torch.float16]
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    rates = {dt: matmul_rate(device, dt) for dt in [torch.float32, *half]}

    n = volume.n_slices
    rows: list[
        tuple[str, torch.dtype, float, int, int, tuple[float, float, float] | None, ModelBundle | None]
    ] = []
    # rows: label, dtype, seconds, segmenter passes per slice segmented, slices segmented, diff,
    # the classifier that ran
    t, n_seg = timed(lambda: seed_loop(cls, seg, volume, threshold, device), args.repeats, device)
    # the seed loop runs the classifier whole, then the whole segmenter: no encoder sharing
    rows.append(("(a) seed loop, 1 slice, fp32", torch.float32, t, 1, n_seg, None, None))
    seed_flops = n * model_flops(cls.model, cls.card.input_size, device) + pipeline_flops(
        None, seg, n, n_seg, 1, device
    )
    reference = None
    for dtype in [torch.float32, *half]:
        pipe = Pipeline(
            cls,
            seg,
            device=device,
            batch_size=args.batch_size,
            precision=names[dtype],
            thresholds=Thresholds.from_cards(cls.card, seg.card).replace(gate=threshold),
        )
        batches = f"{args.batch_size}/{pipe._plan.batch_size}"  # streamed / per forward pass
        t, result = timed(functools.partial(pipe.analyse, volume), args.repeats, device)
        n_seg = sum(s.segmented for s in result.slices)
        if dtype is torch.float32:
            reference = result
            rows.append((f"(b) pipeline fp32, batch {batches}", dtype, t, 1, n_seg, None, cls))
        else:
            label = f"(c) pipeline {names[dtype]} autocast, batch {batches}"
            assert reference is not None
            rows.append((label, dtype, t, 1, n_seg, compare(reference, result), cls))
    fast = half[0] if device.type != "cpu" or cpu_has_native_bf16() else torch.float32
    for tta in (False, True):
        pipe = Pipeline(
            None, seg, device=device, batch_size=args.batch_size, precision=names[fast], flip_tta=tta
        )
        t, result = timed(functools.partial(pipe.analyse, volume), args.repeats, device)
        label = f"(d) {names[fast]}, no gate: segment every slice" + (", flip TTA" if tta else "")
        rows.append((label, fast, t, 2 if tta else 1, n, None, None))
    mode = thorough_mode(seg)
    if mode.ensemble:
        pipe = Pipeline(
            cls,
            seg,
            device=device,
            batch_size=args.batch_size,
            precision=names[fast],
            ensemble=mode.ensemble,
            flip_tta=mode.flip_tta,
        )
        t, result = timed(functools.partial(pipe.analyse, volume), args.repeats, device)
        n_seg = sum(s.segmented for s in result.slices)
        # members of the segmenter's architecture: each a whole segmenter pass per slice segmented
        passes = (1 + len(mode.ensemble)) * (2 if mode.flip_tta else 1)
        label = f"(g) {names[fast]}, thorough: {mode.describe()}"
        rows.append((label, fast, t, passes, n_seg, None, cls))
    if other is not None:
        pipe = Pipeline(other, seg, device=device, batch_size=args.batch_size, precision=names[fast])
        t, result = timed(functools.partial(pipe.analyse, volume), args.repeats, device)
        n_seg = sum(s.segmented for s in result.slices)
        rows.append((f"(e) {names[fast]}, gate {other.card.arch}", fast, t, 1, n_seg, None, other))

    # The best matmul rate seen before or after the runs (other load on the machine lowers either).
    rates = {dt: max(r, matmul_rate(device, dt)) for dt, r in rates.items()}
    print(f"patient {volume.patient_id}: {n} slices {volume.shape[0]}x{volume.shape[1]}; device {device}; ")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; models ({kind}): "
        f"{cls.card.name} ({cls_flops / 1e9:.2f} GFLOP/slice"
        + (", shares the segmenter's encoder), " if shares_encoder(cls, seg) else "), ")
        + f"{seg.card.name} ({seg_flops / 1e9:.2f} GFLOP/slice)"
    )
    print("matmul rate: " + ", ".join(f"{names[d]} {r / 1e9:.0f} GFLOP/s" for d, r in rates.items()))
    header = (
        f"{'mode':50} {'slices/s':>9} {'x seed':>7} {'segm.':>6} {'GFLOP/s':>8} {'floor %':>8} "
        f"{'max|dp| cls':>11} {'max|dp| mask':>12} {'mask px chg':>11}"
    )
    print(header)
    print("-" * len(header))
    seed_rate = n / rows[0][2]
    for i, (label, dtype, t, passes, n_seg, diff, gate) in enumerate(rows):
        flops = seed_flops if i == 0 else pipeline_flops(gate, seg, n, n_seg, passes, device)
        achieved = flops / t
        d = ("", "", "") if diff is None else (f"{diff[0]:.2e}", f"{diff[1]:.2e}", f"{diff[2]:.2%}")
        print(
            f"{label:50} {n / t:9.2f} {n / t / seed_rate:7.2f} {n_seg:6d} {achieved / 1e9:8.1f} "
            f"{achieved / rates[dtype]:8.1%} {d[0]:>11} {d[1]:>12} {d[2]:>11}"
        )
    print(
        "floor % = model FLOPs / time over the torch.mm rate in the same dtype; above 100% the conv "
        "kernels (oneDNN) beat torch.mm (e.g. MKL sgemm on AMD CPUs)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
