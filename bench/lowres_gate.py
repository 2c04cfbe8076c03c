"""The segmenter at low resolution as its own slice gate (run by hand, not a test).

    python bench/lowres_gate.py DATA CV_DIR [--sizes 256,128,96] [--recall 0.99,0.98,0.97]

A gate pays only when it costs less than the decoding it spares. The cheapest gate at hand is the
segmenter itself on a downsampled slice (128 px: a quarter of the FLOPs). For each fold of a
cross-validation folder (``foldI`` sub-folders with a bundle and ``out_of_fold.npz``, as
``brainseg-train ... --folds K --fold I --keep last`` writes them), the fold's model reads its
held-out patients at each size; a slice's gate score is its largest mask probability. Those
scores go through the same nested evaluation as a trained gate (``brainseg-eval --gate-cv``,
:func:`brainseg_core.gate_crossval.gated_cross_validation`): each fold's gate threshold chosen on
the other folds, then the full-size masks of the gated slices through the card's post-processing
(``--post``: mask probability, minimum area, largest 3-D region). One report per size and gate
recall target.

The 256-px gate scores the full-size pass itself, so it spares nothing; it is the reference for
what the smaller sizes lose.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from brainseg_core import crossval as cv
from brainseg_core.bundle import load_bundle
from brainseg_core.gate_crossval import GateFold, format_gate_report, gated_cross_validation
from brainseg_core.training.data import load_slices
from brainseg_core.training.validation import predict_logits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="dataset root (LGG layout)")
    p.add_argument("cv_dir", type=Path, help="cross-validation folder with one foldI sub-folder per fold")
    p.add_argument("--sizes", default="256,128,96", help="gate input sizes in px (default: 256,128,96)")
    p.add_argument("--recall", default="0.99,0.98,0.97", help="gate recall targets on the other folds")
    p.add_argument(
        "--post",
        default="0.3,0,1",
        help="mask probability, min area px, largest region 0/1",
    )
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    targets = [float(r) for r in args.recall.split(",")]
    prob, area, largest = args.post.split(",")
    post = cv.PostProcessing(float(prob), int(area), largest == "1")

    folds: list[cv.FoldPredictions] = []
    scores: dict[int, list[np.ndarray]] = {s: [] for s in sizes}
    for path in cv.find_fold_files(args.cv_dir):
        fold = cv.load_fold(path)
        folds.append(fold)
        bundle = load_bundle(next(path.parent.glob("*.json")))
        val = load_slices([args.data / pid for pid in fold.patient_ids], size=bundle.card.input_size)
        for size in sizes:
            x = val.images.float()
            if size != x.shape[-1]:
                x = F.interpolate(x, size=(size, size), mode="area")
            logits = predict_logits(bundle.model, x, batch_size=16, amp=torch.bfloat16)
            scores[size].append(torch.sigmoid(logits).flatten(1).amax(1).numpy())
        print(f"{path.parent.name}: {len(fold.patient_ids)} patients, {len(fold.prob)} slices", flush=True)

    for target in targets:
        for size in sizes:
            gates = [
                GateFold(f.name, score, np.asarray(f.mask.any(axis=(1, 2))), f.patient, f.patient_ids)
                for f, score in zip(folds, scores[size], strict=True)
            ]
            result = gated_cross_validation(folds, gates, post=post, target_recall=target)
            print(f"\n{size}-px gate", format_gate_report(result), sep="\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
