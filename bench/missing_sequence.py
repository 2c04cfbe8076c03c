"""Out-of-fold Dice of K-fold segmenters when a sequence is missing (run by hand, not a test).

    python bench/missing_sequence.py DATA CV_DIR [CV_DIR ...] [--folds 5] [--seed 0]

For each cross-validation folder (one ``foldI`` sub-folder per fold, as ``brainseg-train ... --folds
K --fold I`` writes them), every fold model reads its held-out patients with the pre-contrast, the
post-contrast or both channels replaced by FLAIR, which is how the readers fill a missing sequence.
It prints the mean and median per-volume Dice (mask probability >= 0.5, nothing removed) and the
number of patients below 0.5 for each case.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from brainseg_core.bundle import load_bundle
from brainseg_core.io.volume import CHANNELS
from brainseg_core.metrics import per_patient_dice
from brainseg_core.training.data import find_labelled_patients, fold_patients, load_slices
from brainseg_core.training.validation import predict_logits

FLAIR = CHANNELS.index("FLAIR")
CASES = {
    "all three as stored": (),
    "pre-contrast := FLAIR": (CHANNELS.index("pre-contrast"),),
    "post-contrast := FLAIR": (CHANNELS.index("post-contrast"),),
    "both := FLAIR": (CHANNELS.index("pre-contrast"), CHANNELS.index("post-contrast")),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="the labelled dataset the folds were trained on")
    p.add_argument("cv", nargs="+", type=Path, help="cross-validation folders")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    paths = find_labelled_patients(args.data)
    ids = [q.name for q in paths]
    for root in args.cv:
        dice: dict[str, list[float]] = {case: [] for case in CASES}
        for fold in range(args.folds):
            card = next((root / f"fold{fold}").glob("*.json"))
            bundle = load_bundle(card)
            model = bundle.model.eval()
            held_out = set(fold_patients(ids, folds=args.folds, fold=fold, seed=args.seed))
            slices = load_slices(
                [q for q in paths if q.name in held_out],
                size=int(bundle.card.input_size),
                context=bundle.card.context_slices,
            )
            truth = slices.masks[:, 0].numpy().astype(bool)
            n = len(truth)
            for case, channels in CASES.items():
                x = slices.images.clone()
                for base in range(0, x.shape[1], len(CHANNELS)):  # every stacked slice
                    for c in channels:
                        x[:, base + c] = x[:, base + FLAIR]
                prob = torch.sigmoid(predict_logits(model, x, batch_size=16, amp=torch.bfloat16))[:, 0]
                pred = (prob >= 0.5).numpy()
                inter = (pred & truth).reshape(n, -1).sum(1).astype(float)
                d = per_patient_dice(
                    inter,
                    pred.reshape(n, -1).sum(1).astype(float),
                    truth.reshape(n, -1).sum(1).astype(float),
                    slices.patient.numpy(),
                    n_patients=len(slices.patient_ids),
                )
                dice[case] += [float(v) for v in d]
        print(root)
        for case, values in dice.items():
            v = np.asarray(values)
            print(
                f"  {case:24} mean {100 * v.mean():.1f}  median {100 * np.median(v):.1f}  "
                f"below 0.5: {int((v < 0.5).sum())} of {v.size}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
