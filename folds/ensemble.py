"""Two fold sets averaged into a two-model ensemble, and which 3-D region it keeps.

    python folds/ensemble.py folds/segmenter folds/segmenter-seed1 runs/ensemble [I ...]

For each fold ``foldI`` (default: every one in both), the two ``out_of_fold.npz`` files are averaged
(:func:`brainseg_core.crossval.average_folds`) into ``OUT/foldI/out_of_fold.npz``. The files are not
kept in git: ``brainseg-eval --cv DIR DATA`` rebuilds them from each fold's bundle first, for both
DIRs. Then it prints the mean / median per-volume Dice of each input and the ensemble with the
shipped card's post-processing held fixed (p >= 0.3, 40 px, faint edges >= 0.05) under the two
region rules (:class:`brainseg_core.thresholds.RegionRule`): the record of the pre-registered
check in the README's "A second seed, all five folds". Not nested: the post-processing is the
card's. The nested cross-validation of the ensemble is ``brainseg-eval --cv A --with B``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from brainseg_core.crossval import FoldPredictions, FoldScorer, PostProcessing, average_folds, load_fold
from brainseg_core.thresholds import RegionRule


def region_dice(fold: FoldPredictions, rule: RegionRule) -> list[float]:
    """Per-patient Dice with the card's steps and one region kept by ``rule``."""
    post = PostProcessing(0.3, 40, True, False, 0.05, rule)
    return [float(v) for v in FoldScorer(fold).score(post)["dice"]]


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    first, second, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    folds = [f"fold{i}" for i in argv[3:]] or sorted(
        p.name for p in first.iterdir() if p.name.startswith("fold") and (second / p.name).is_dir()
    )
    missing = [f for f in (first, second) for n in folds if not (f / n / "out_of_fold.npz").is_file()]
    if missing:
        for folder in dict.fromkeys(missing):
            print(f"{folder}: out-of-fold files missing; rebuild them: brainseg-eval --cv {folder} DATA")
        return 2
    scores: dict[str, dict[RegionRule, list[float]]] = {}
    for name in folds:
        a, b = load_fold(first / name / "out_of_fold.npz"), load_fold(second / name / "out_of_fold.npz")
        try:
            (ensemble,) = average_folds([[a], [b]])
        except ValueError as exc:
            print(exc)
            return 2
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
            for rule in RegionRule:
                scores.setdefault(label, {}).setdefault(rule, []).extend(region_dice(fold, rule))
    print(
        f"folds {', '.join(folds)}; p >= 0.3, 40 px, faint edges >= 0.05; mean / median Dice, patients < 0.5"
    )
    for label, by_rule in scores.items():
        for rule, values in by_rule.items():
            d = np.array(values)
            print(
                f"{label:32s} {rule.describe():32s} {100 * d.mean():6.2f} {100 * np.median(d):6.2f} "
                f"{int((d < 0.5).sum()):3d}  ({d.size} patients)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
