"""Two fold sets averaged into a two-model ensemble, and which 3-D region it keeps.

    python folds/ensemble.py folds/segmenter folds/segmenter-seed1 runs/ensemble [I ...]

For each fold ``foldI`` (default: every one in both), the two ``out_of_fold.npz`` files are averaged
into ``OUT/foldI/out_of_fold.npz``, which ``brainseg-eval --cv OUT`` then scores like any fold set
(give each fold set its own OUT: folds left there by an earlier run would be scored with it). The
files are not kept in git: ``brainseg-eval --cv DIR DATA`` rebuilds them from each fold's bundle
first, for both DIRs.
Then it prints the mean / median per-volume Dice of each input and the ensemble with the shipped
card's post-processing held fixed (p >= 0.3, 40 px, faint edges >= 0.05) under two rules for the
3-D region kept: the largest (the card's) and the most confident (the largest sum of p^4 over its
pixels), the README's "A second seed, all five folds". Not nested: the post-processing is the
card's, chosen on the seed-0 folds. An analysis script, not part of the app.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from brainseg_core.crossval import FoldPredictions, FoldScorer, PostProcessing, load_fold
from brainseg_core.metrics import dice
from brainseg_core.results import extend_faint_edges, label_components

CARD = PostProcessing(0.3, 40, False, False, 0.0)  # the region and the faint edges come after
EDGE = 0.05


def average(a: FoldPredictions, b: FoldPredictions) -> FoldPredictions:
    """The two folds' probabilities averaged (the same patients and slices in the same order)."""
    if a.patient_ids != b.patient_ids or not np.array_equal(a.mask, b.mask):
        raise SystemExit(f"{a.name}: the two fold sets do not hold out the same patients and slices")

    def mean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.round((x.astype(np.float32) + y.astype(np.float32)) / 2).astype(np.uint8)

    return FoldPredictions(
        a.name, mean(a.prob, b.prob), mean(a.prob_flip, b.prob_flip), a.mask, a.patient, a.patient_ids
    )


def region_dice(fold: FoldPredictions, confident: bool) -> list[float]:
    """Per-patient Dice with the card's steps and one region kept: the largest or most confident."""
    scorer = FoldScorer(fold)
    masks = scorer.masks(CARD)
    out = []
    for p in range(len(fold.patient_ids)):
        rows = np.flatnonzero(fold.patient == p)
        prob = fold.prob[rows].astype(np.float64) / 255.0
        labels, n = label_components(masks[rows])
        kept = labels > 0
        if n > 1:
            index = np.arange(1, n + 1)
            weight = prob**4 if confident else np.ones_like(prob)
            kept = labels == index[int(np.argmax(ndimage.sum(weight, labels, index)))]
        kept = extend_faint_edges(kept, prob, EDGE)
        out.append(dice(kept, fold.mask[rows]))
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    first, second, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    folds = [f"fold{i}" for i in argv[3:]] or sorted(
        p.name for p in first.iterdir() if p.name.startswith("fold") and (second / p.name).is_dir()
    )
    scores: dict[str, dict[bool, list[float]]] = {}
    missing = [f for f in (first, second) for n in folds if not (f / n / "out_of_fold.npz").is_file()]
    if missing:
        for folder in dict.fromkeys(missing):
            print(f"{folder}: out-of-fold files missing; rebuild them: brainseg-eval --cv {folder} DATA")
        return 2
    for name in folds:
        a, b = load_fold(first / name / "out_of_fold.npz"), load_fold(second / name / "out_of_fold.npz")
        ensemble = average(a, b)
        (out / name).mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            out / name / "out_of_fold.npz",
            prob=ensemble.prob,
            prob_flip=ensemble.prob_flip,
            mask=ensemble.mask,
            patient=ensemble.patient,
            patient_ids=np.array(ensemble.patient_ids),
        )
        for label, fold in ((str(first), a), (str(second), b), ("ensemble", ensemble)):
            for confident in (False, True):
                scores.setdefault(label, {}).setdefault(confident, []).extend(region_dice(fold, confident))
    print(
        f"folds {', '.join(folds)}; p >= 0.3, 40 px, faint edges >= 0.05; mean / median Dice, patients < 0.5"
    )
    for label, by_rule in scores.items():
        for confident, values in by_rule.items():
            d = np.array(values)
            rule = "most confident region" if confident else "largest region"
            print(
                f"{label:32s} {rule:22s} {100 * d.mean():6.2f} {100 * np.median(d):6.2f} "
                f"{int((d < 0.5).sum()):3d}  ({d.size} patients)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
