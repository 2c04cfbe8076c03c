"""The segmenter at low resolution as its own slice gate (run by hand, not a test).

    python bench/lowres_gate.py DATA CV_DIR [--sizes 256,128,96] [--recall 0.99,0.98,0.97]

A gate pays only when it costs less than the decoding it spares. The cheapest gate at hand is the
segmenter itself on a downsampled slice (128 px: a quarter of the FLOPs). For each fold of a
cross-validation folder (``foldI`` sub-folders with a bundle and ``out_of_fold.npz``, as
``brainseg-train ... --folds K --fold I --keep last`` writes them), the fold's model reads its
held-out patients at each size; a slice's gate score is its largest mask probability. Each fold's
gate threshold is chosen on the other folds (the highest that keeps the asked share of their tumour
slices), then the full-size masks of the gated slices go through the card's post-processing
(mask probability, minimum area, largest 3-D region: ``--post``). Printed per size and gate recall:
the gate's ROC AUC, the share of slices it passes to full-size decoding, its recall, and the
per-volume Dice and slice recall / specificity end to end.

The 256-px row gates on the full-size pass itself, so it spares nothing; it is the reference for
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
from brainseg_core.metrics import roc_auc
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

    labels = [f.mask.reshape(len(f.mask), -1).any(1) for f in folds]
    scorers = [cv.FoldScorer(f) for f in folds]
    print(f"\nPost-processing: {post.describe()}")
    print(
        "| gate size | gate recall target | gate AUC | slices decoded | gate recall | Dice mean | median "
        "| min | < 0.5 | slice recall | specificity |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for target in targets:
        for size in sizes:
            parts, passed, found = [], 0, 0
            for k, scorer in enumerate(scorers):
                others = [j for j in range(len(folds)) if j != k]
                pos = np.sort(np.concatenate([scores[size][j][labels[j]] for j in others]))
                threshold = pos[int(np.floor((1 - target) * len(pos)))] if pos.size else 0.0
                gated = scores[size][k] >= threshold
                passed += int(gated.sum())
                found += int((gated & labels[k]).sum())
                parts.append(scorer.score_masks(scorer.masks(post, gated), scorer.slice_score(False)))
            m = cv.summary_metrics(parts)
            y = np.concatenate(labels)
            auc = roc_auc(y, np.concatenate(scores[size]))
            decoded, gate_recall = 100 * passed / y.size, 100 * found / y.sum()
            print(
                f"| {size} px | {target:.2f} | {auc:.3f} | {decoded:.1f} % | {gate_recall:.1f} "
                f"| {cv.pct(m['dice_patient_mean'])} | {cv.pct(m['dice_patient_median'])} "
                f"| {cv.pct(m['dice_patient_min'])} | {len(m['patients_below_0.5'])} "
                f"| {cv.pct(m['slice_recall'])} | {cv.pct(m['slice_specificity'])} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
