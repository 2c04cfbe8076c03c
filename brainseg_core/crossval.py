"""Cross-validated scores and post-processing choices from out-of-fold segmenter predictions.

A K-fold run (``brainseg-train segmenter DATA --folds K --fold i --keep last``, i = 0..K-1) leaves in
each fold's output folder an ``out_of_fold.npz``: the fold model's probabilities on the patients it
never trained on, without and with left-right flip test-time augmentation
(:func:`brainseg_core.training.validation.save_out_of_fold`). With ``--keep last`` nothing about the model
was chosen on those patients, so these probabilities are honest held-out predictions.

This module turns them into numbers a reader can trust:

- :class:`PostProcessing` is one choice of everything applied after the network: the mask
  probability threshold, the smallest 2-D region kept (``min_area_px``), whether only one 3-D
  region is kept (the largest or the most confident), the faint edges, and whether flip test-time
  augmentation is used. They act exactly as in the
  inference pipeline (8-connected regions per slice, 26-connected 3-D regions per patient).
- :func:`cross_validate` picks the post-processing for each fold on the *other* folds' predictions
  (nested: the fold being scored never chooses its own thresholds), scores each fold with its
  choice, and pools the per-patient results. It also picks one post-processing on all folds
  together: that is what a model card ships, and its honest estimate is the nested score.
- Metrics per fold and pooled: mean / median / min per-volume Dice (the number Buda et al. report),
  slice-level detection (a slice is called tumour when its final mask is not empty: recall,
  specificity, balanced accuracy; ROC AUC of the slice's largest probability), and the ratio of
  predicted to true tumour volume per patient with tumour.

Probabilities are stored as ``round(p * 255)``; a threshold ``t`` keeps pixels with
``stored >= ceil(t * 255)``, which matches ``p >= t`` except within 1/255 of ``t``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from brainseg_core.errors import DataError
from brainseg_core.jsonsafe import json_safe
from brainseg_core.metrics import per_patient_dice, roc_auc, summarize
from brainseg_core.npz import NPZ_READ_ERRORS
from brainseg_core.thresholds import RegionRule, region_rule

__all__ = [
    "DEFAULT_GRID",
    "OUT_OF_FOLD_FILE",
    "RECALL_AREA_BANDS",
    "FoldPredictions",
    "FoldScorer",
    "PostProcessing",
    "apply_to_card",
    "cross_validate",
    "find_fold_files",
    "format_cv_report",
    "load_fold",
    "pct",
    "recall_by_area",
    "score_fold",
    "summary_metrics",
]

OUT_OF_FOLD_FILE = "out_of_fold.npz"

_KEYS = ("prob", "prob_flip", "mask", "patient", "patient_ids")
# 8-connected within a slice, never across slices
_SLICE_STRUCTURE = np.zeros((3, 3, 3), bool)
_SLICE_STRUCTURE[1] = True


@dataclass(frozen=True)
class PostProcessing:
    """Everything applied to the segmenter's probabilities to make the final mask.

    Attributes:
        mask_probability: pixels with probability >= this are tumour.
        min_area_px: 8-connected regions of a slice smaller than this are removed (0: none).
        largest_component: keep only one 26-connected 3-D region of each patient, the one
            ``region_rule`` picks.
        flip_tta: average the slice's probabilities with those of its left-right mirror.
        edge_probability: on slices left without outline, outline the pixels at or above this
            probability that connect in 3-D to an outline (0: off;
            :func:`brainseg_core.results.extend_faint_edges`).
        region_rule: which region ``largest_component`` keeps: the most pixels or the most
            confident (:class:`~brainseg_core.thresholds.RegionRule`; a JSON string is accepted).
    """

    mask_probability: float = 0.5
    min_area_px: int = 0
    largest_component: bool = False
    flip_tta: bool = False
    edge_probability: float = 0.0
    region_rule: RegionRule = RegionRule.LARGEST

    def __post_init__(self) -> None:
        object.__setattr__(self, "region_rule", region_rule(self.region_rule))
        if not 0.0 < self.mask_probability <= 1.0:
            raise ValueError(f"mask_probability must be in (0, 1], got {self.mask_probability}")
        if self.min_area_px < 0:
            raise ValueError(f"min_area_px must be >= 0, got {self.min_area_px}")
        if not 0.0 <= self.edge_probability <= 1.0:
            raise ValueError(f"edge_probability must be in [0, 1], got {self.edge_probability}")

    def describe(self) -> str:
        """A short human-readable form, e.g. ``p>=0.5, min area 20 px, largest region, flip TTA``."""
        parts = [f"p>={self.mask_probability:g}", f"min area {self.min_area_px} px"]
        if self.largest_component:
            parts.append(self.region_rule.describe().removesuffix(" only"))
        if self.edge_probability:
            parts.append(f"faint edges p>={self.edge_probability:g}")
        if self.flip_tta:
            parts.append("flip TTA")
        return ", ".join(parts)


def _grid(
    probabilities: Iterable[float],
    areas: Iterable[int],
    largest: Iterable[bool],
    flips: Iterable[bool],
    edges: Iterable[float] = (0.0,),
    rules: Iterable[RegionRule] = (RegionRule.LARGEST,),
) -> tuple[PostProcessing, ...]:
    # the faint-edge threshold varies slowest: the choices without it come first (ties go to
    # them), and FoldScorer labels each edge's faint pixels once; a region rule only where one
    # region is kept
    return tuple(
        PostProcessing(p, a, lc, f, e, r)
        for e, f, p, a, lc, r in itertools.product(edges, flips, probabilities, areas, largest, rules)
        if lc or r is RegionRule.LARGEST
    )


#: The choices tried by :func:`cross_validate` (simplest first: ties go to the earlier one). Only
#: what a model card can carry is selected: thresholds, minimum area, the one-region switch and
#: its rule (largest or most confident), the faint edges.
#: Flip test-time augmentation is a run mode the reader opts into (``--thorough``), not a card
#: default, so it is scored as a fixed row beside the selection, never selected and shipped: a
#: card must not claim the score of a TTA choice for a pipeline that runs without it.
DEFAULT_GRID: tuple[PostProcessing, ...] = _grid(
    (0.5, 0.4, 0.6, 0.3, 0.7),
    (0, 10, 20, 40, 80, 160),
    (False, True),
    (False,),
    (0.0, 0.05, 0.1),
    (RegionRule.LARGEST, RegionRule.MOST_CONFIDENT),
)


@dataclass
class FoldPredictions:
    """One fold's held-out predictions (see :func:`brainseg_core.training.validation.save_out_of_fold`).

    Attributes:
        name: the fold's name (its folder).
        prob: ``(N, H, W)`` uint8 probabilities x 255, no test-time augmentation.
        prob_flip: the same with flip test-time augmentation.
        mask: ``(N, H, W)`` bool ground truth.
        patient: ``(N,)`` index into ``patient_ids`` of each slice (slices of a patient in order).
        patient_ids: the held-out patients.
    """

    name: str
    prob: np.ndarray
    prob_flip: np.ndarray
    mask: np.ndarray
    patient: np.ndarray
    patient_ids: list[str]


def find_fold_files(root: str | Path) -> list[Path]:
    """The ``out_of_fold.npz`` files of a cross-validation folder (``root/*/out_of_fold.npz``).

    Args:
        root: a folder holding one sub-folder per fold, or one fold folder, or one ``.npz``.

    Returns:
        The files, sorted by folder name.

    Raises:
        DataError: if none is found.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if (root / OUT_OF_FOLD_FILE).is_file():
        return [root / OUT_OF_FOLD_FILE]
    files = sorted(root.glob(f"*/{OUT_OF_FOLD_FILE}"))
    if not files:
        raise DataError(
            root,
            f"no {OUT_OF_FOLD_FILE} found in its sub-folders; train each fold with "
            "`brainseg-train segmenter DATA --folds K --fold I --keep last --out ROOT/foldI`",
        )
    return files


def load_fold(path: str | Path) -> FoldPredictions:
    """Read one ``out_of_fold.npz`` (plain arrays only: nothing is unpickled).

    Raises:
        DataError: naming the file when it cannot be read or its arrays do not fit together.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "slice_prob" in z.files:
                raise DataError(
                    path, "holds a classifier's slice probabilities; pass its folds with --gate-cv"
                )
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise DataError(path, f"not an out-of-fold file: missing {', '.join(missing)}")
            arrays = {k: z[k] for k in _KEYS}
    except NPZ_READ_ERRORS as exc:
        raise DataError(path, f"cannot read out-of-fold predictions: {exc}") from exc
    prob, prob_flip, mask, patient = (arrays[k] for k in ("prob", "prob_flip", "mask", "patient"))
    ids = [str(i) for i in arrays["patient_ids"]]
    if prob.ndim != 3 or prob.shape != prob_flip.shape or prob.shape != mask.shape:
        raise DataError(path, f"array shapes do not match: {prob.shape}, {prob_flip.shape}, {mask.shape}")
    if patient.shape != (prob.shape[0],) or (
        patient.size and not 0 <= patient.min() <= patient.max() < len(ids)
    ):
        raise DataError(path, "slice-to-patient index does not fit the patient list")
    return FoldPredictions(
        name=path.parent.name,
        prob=prob.astype(np.uint8, copy=False),
        prob_flip=prob_flip.astype(np.uint8, copy=False),
        mask=mask.astype(bool, copy=False),
        patient=patient.astype(np.int64, copy=False),
        patient_ids=ids,
    )


def _level(probability: float) -> int:
    """The lowest stored ``uint8`` value (probability x 255) that reaches ``probability``."""
    return math.ceil(probability * 255 - 1e-9)


class FoldScorer:
    """Scores many :class:`PostProcessing` choices on one fold, sharing the expensive labelling.

    Args:
        fold: the fold's held-out predictions.
    """

    def __init__(self, fold: FoldPredictions) -> None:
        self.fold = fold
        self.n_patients = len(fold.patient_ids)
        self.true_area = fold.mask.reshape(len(fold.mask), -1).sum(1).astype(np.float64)
        self._labels: dict[tuple[bool, float], tuple[np.ndarray, np.ndarray]] = {}
        self._faint: dict[tuple[bool, float], list[np.ndarray]] = {}
        # each patient's slices (consecutive in the fold), in patient order
        starts = [np.flatnonzero(fold.patient == p) for p in range(self.n_patients)]
        self._volumes = [slice(i[0], i[-1] + 1) if i.size else slice(0, 0) for i in starts]
        self._cache: dict[PostProcessing, dict[str, Any]] = {}

    def _labelled(self, flip: bool, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        key = (flip, threshold)
        if key not in self._labels:
            prob = self.fold.prob_flip if flip else self.fold.prob
            binary = prob >= _level(threshold)
            labels, n = ndimage.label(binary, structure=_SLICE_STRUCTURE, output=np.int32)
            sizes = np.bincount(labels.ravel(), minlength=n + 1)
            self._labels = {key: (labels, sizes)}  # keep one: memory stays at one labelled stack
        return self._labels[key]

    def _faint_labels(self, flip: bool, edge: float) -> list[np.ndarray]:
        """Each patient's 3-D labels of the pixels at or above ``edge`` (the faint-edge step's)."""
        key = (flip, edge)
        if key not in self._faint:
            from brainseg_core.results import label_components

            prob = self.fold.prob_flip if flip else self.fold.prob
            # keep one edge's labels: memory stays at one labelled stack
            self._faint = {key: [label_components(prob[v] >= _level(edge))[0] for v in self._volumes]}
        return self._faint[key]

    def masks(self, post: PostProcessing, gated: np.ndarray | None = None) -> np.ndarray:
        """The final ``(N, H, W)`` masks of the fold under ``post``.

        Args:
            post: the post-processing.
            gated: ``(N,)`` bool, the slices a gate passes to the segmenter (the others get
                empty masks before the largest 3-D region is chosen, as in the pipeline);
                None: every slice.
        """
        labels, sizes = self._labelled(post.flip_tta, post.mask_probability)
        keep = sizes >= max(1, post.min_area_px)
        keep[0] = False
        pred = keep[labels]
        if gated is not None:
            pred[~gated] = False
        if post.largest_component or post.edge_probability:
            from brainseg_core.results import extend_faint_edges, keep_largest_component

            prob = self.fold.prob_flip if post.flip_tta else self.fold.prob
            faint = None
            if post.edge_probability and gated is None:
                faint = self._faint_labels(post.flip_tta, post.edge_probability)
            for p, volume in enumerate(self._volumes):
                if volume.start == volume.stop:
                    continue
                if post.largest_component:
                    confidence = None
                    if post.region_rule is RegionRule.MOST_CONFIDENT:  # what the segmenter read
                        confidence = prob[volume]  # uint8: the scale does not change the choice
                        if gated is not None:
                            confidence = np.where(gated[volume, None, None], confidence, 0)
                    pred[volume] = keep_largest_component(pred[volume], confidence)
                if post.edge_probability and faint is not None:  # labelled once for every choice
                    pred[volume] = extend_faint_edges(
                        pred[volume], prob[volume], post.edge_probability, labels=faint[p]
                    )
                elif post.edge_probability:  # the gate stopped some slices: they read nothing
                    assert gated is not None
                    read = np.where(gated[volume, None, None], prob[volume], 0) / 255.0
                    pred[volume] = extend_faint_edges(pred[volume], read, post.edge_probability)
        return pred

    def score(self, post: PostProcessing) -> dict[str, Any]:
        """Per-patient and per-slice numbers of the fold under ``post`` (cached)."""
        if post in self._cache:
            return self._cache[post]
        result = self.score_masks(self.masks(post), self.slice_score(post.flip_tta))
        self._cache[post] = result
        return result

    def slice_score(self, flip_tta: bool) -> np.ndarray:
        """``(N,)`` each slice's largest mask probability (with or without flip TTA), in [0, 1]."""
        prob = self.fold.prob_flip if flip_tta else self.fold.prob
        return prob.reshape(len(prob), -1).max(1).astype(np.float64) / 255.0

    def score_masks(self, pred: np.ndarray, slice_score: np.ndarray) -> dict[str, Any]:
        """Per-patient and per-slice numbers of final masks ``pred`` of this fold's slices.

        Args:
            pred: ``(N, H, W)`` bool final masks.
            slice_score: ``(N,)`` the score of each slice that ranks it for the ROC AUC.
        """
        from brainseg_core.review import past_tumour_ends

        n = len(pred)
        inter = (pred & self.fold.mask).reshape(n, -1).sum(1).astype(np.float64)
        parea = pred.reshape(n, -1).sum(1).astype(np.float64)
        # the empty slices the review queue flags beside each outlined run (tumour end or gap)
        beside = np.zeros(n, bool)
        for v in self._volumes:
            beside[[v.start + i for i in past_tumour_ends(parea[v] > 0)]] = True
        garea = self.true_area
        dice_p = per_patient_dice(inter, parea, garea, self.fold.patient, n_patients=self.n_patients)
        pred_p, true_p = (
            np.bincount(self.fold.patient, weights=w, minlength=self.n_patients) for w in (parea, garea)
        )
        return {
            "patient_ids": list(self.fold.patient_ids),
            "dice": dice_p,
            "pred_voxels": pred_p,
            "true_voxels": true_p,
            "slice_true": garea > 0,
            "slice_true_area": garea,
            "slice_pred": parea > 0,
            "slice_beside": beside,
            "slice_score": slice_score,
        }


#: Bands of true tumour area (pixels at the segmenter's input size; the upper bound excluded) over
#: which ``brainseg-eval --cv`` breaks down tumour-slice recall: misses concentrate in small slices.
RECALL_AREA_BANDS: tuple[tuple[int, int | None], ...] = ((1, 100), (100, 500), (500, 1000), (1000, None))


def recall_by_area(true_area: np.ndarray, detected: np.ndarray) -> list[dict[str, Any]]:
    """Tumour-slice recall in each band of :data:`RECALL_AREA_BANDS`.

    Args:
        true_area: ``(N,)`` each slice's true tumour area in pixels.
        detected: ``(N,)`` bool, whether the slice's final mask is not empty.

    Returns:
        One ``{"min_px", "max_px", "tumour_slices", "detected", "recall"}`` per band
        (``max_px`` None for the open band; ``recall`` NaN for an empty band).
    """
    bands = []
    for lo, hi in RECALL_AREA_BANDS:
        inside = (true_area >= lo) & (true_area < (np.inf if hi is None else hi))
        n, hit = int(inside.sum()), int((inside & detected).sum())
        recall = hit / n if n else float("nan")
        bands.append({"min_px": lo, "max_px": hi, "tumour_slices": n, "detected": hit, "recall": recall})
    return bands


def summary_metrics(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Summary metrics of one or more folds' :meth:`FoldScorer.score` results.

    Args:
        parts: per-fold results, pooled patient by patient and slice by slice.

    Returns:
        Per-volume Dice (mean, median, min, patients below 0.5), slice detection (recall,
        specificity, balanced accuracy, ROC AUC, recall by true tumour area), the empty slices
        flagged beside an outline (:func:`~brainseg_core.review.past_tumour_ends`: how many, how
        many hold tumour, the tumour slices outlined or so flagged and the tumour-free slices
        neither outlined nor so flagged), volume ratios and
        ``per_patient_dice``.
    """
    dice = np.concatenate([p["dice"] for p in parts])
    pred_v = np.concatenate([p["pred_voxels"] for p in parts])
    true_v = np.concatenate([p["true_voxels"] for p in parts])
    y = np.concatenate([p["slice_true"] for p in parts])
    yhat = np.concatenate([p["slice_pred"] for p in parts])
    score = np.concatenate([p["slice_score"] for p in parts])
    true_area = np.concatenate([p["slice_true_area"] for p in parts])
    beside = np.concatenate([p["slice_beside"] for p in parts])
    tp, fn = int(np.sum(y & yhat)), int(np.sum(y & ~yhat))
    tn, fp = int(np.sum(~y & ~yhat)), int(np.sum(~y & yhat))
    recall = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    with_tumour = true_v > 0
    ratio = pred_v[with_tumour] / true_v[with_tumour]
    d = summarize(dice)
    ids = [i for p in parts for i in p["patient_ids"]]
    return {
        "patients": len(dice),
        "dice_patient_mean": d["mean"],
        "dice_patient_median": d["median"],
        "dice_patient_min": d["min"],
        "patients_below_0.5": sorted(
            (ids[i], round(float(dice[i]), 3), int(true_v[i])) for i in np.flatnonzero(dice < 0.5)
        ),
        "slices": int(y.size),
        "tumour_slices": int(y.sum()),
        "slice_recall": recall,
        "slice_specificity": specificity,
        "slice_balanced_accuracy": (recall + specificity) / 2,
        "missed_tumour_slices": fn,
        "slice_recall_by_area": recall_by_area(true_area, yhat),
        "false_positive_slices": fp,
        "beside_flags": int(beside.sum()),
        "beside_flags_with_tumour": int(np.sum(beside & y)),
        "recall_outlined_or_beside": float(np.mean((yhat | beside)[y])) if y.any() else float("nan"),
        "specificity_outlined_or_beside": (
            float(np.mean(~(yhat | beside)[~y])) if (~y).any() else float("nan")
        ),
        "slice_roc_auc": roc_auc(y, score),
        "volume_ratio_median": float(np.median(ratio)) if ratio.size else float("nan"),
        "volume_ratio_mean": float(np.mean(ratio)) if ratio.size else float("nan"),
        "per_patient_dice": {i: float(v) for i, v in zip(ids, dice, strict=True)},
    }


def _choose(scorers: Sequence[FoldScorer], grid: Sequence[PostProcessing]) -> PostProcessing:
    """The choice with the best mean per-volume Dice over the given folds (ties: earliest)."""
    best: tuple[float, PostProcessing] | None = None
    for post in grid:
        value = float(np.mean(np.concatenate([s.score(post)["dice"] for s in scorers])))
        if best is None or value > best[0] + 1e-9:
            best = (value, post)
    assert best is not None
    return best[1]


def score_fold(fold: FoldPredictions, post: PostProcessing) -> dict[str, Any]:
    """Metrics of one fold under one fixed post-processing (see the module docstring)."""
    return summary_metrics([FoldScorer(fold).score(post)])


def cross_validate(
    folds: Sequence[FoldPredictions],
    *,
    grid: Sequence[PostProcessing] = DEFAULT_GRID,
    fixed: Sequence[PostProcessing] = (),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Nested cross-validated metrics, the post-processing to ship, and fixed-choice rows.

    Args:
        folds: every fold's held-out predictions (patients must not repeat across folds).
        grid: post-processing choices to select from.
        fixed: extra choices scored as they are over all folds (ablation rows).
        progress: receives a line per step.

    Returns:
        A JSON-ready dict: ``per_fold`` (each fold's choice, made on the other folds, and its
        metrics), ``pooled`` (the per-patient results of every fold under its own nested choice),
        ``chosen`` (the choice made on all folds together) with ``chosen_pooled`` (its metrics;
        optimistic, since the same patients chose it), ``default`` (the grid's first entry) with
        ``default_pooled``, ``ship``: ``chosen`` when the nested score beats the default's, else
        the default (a selection that does not pay on held-out patients is not shipped), with
        ``ship_metrics`` naming its honest metrics (``"pooled"`` or ``"default_pooled"``), and
        ``fixed`` rows.

    Raises:
        ValueError: with fewer than 2 folds, an empty grid, or a patient in two folds.
    """
    if len(folds) < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {len(folds)}")
    if not grid:
        raise ValueError("the post-processing grid is empty")
    seen: dict[str, str] = {}
    for f in folds:
        for pid in f.patient_ids:
            if pid in seen:
                raise ValueError(f"patient {pid} is held out by both {seen[pid]} and {f.name}")
            seen[pid] = f.name
    say = progress or (lambda _m: None)
    scorers = [FoldScorer(f) for f in folds]
    per_fold = []
    parts = []
    for k, scorer in enumerate(scorers):
        say(f"choosing post-processing for {folds[k].name} on the other folds ...")
        choice = _choose([s for j, s in enumerate(scorers) if j != k], grid)
        part = scorer.score(choice)
        parts.append(part)
        per_fold.append({"fold": folds[k].name, "choice": asdict(choice), "metrics": summary_metrics([part])})
    say("choosing the post-processing to ship on all folds ...")
    chosen = _choose(scorers, grid)
    rows = []
    for post in fixed:
        rows.append({"choice": asdict(post), "metrics": summary_metrics([s.score(post) for s in scorers])})
    pooled = summary_metrics(parts)
    default = grid[0]
    default_metrics = summary_metrics([s.score(default) for s in scorers])
    # Selection earns its place only if its honest (nested) score beats the plain default's.
    selection_pays = pooled["dice_patient_mean"] > default_metrics["dice_patient_mean"]
    return {
        "folds": len(folds),
        "grid_size": len(grid),
        "per_fold": per_fold,
        "pooled": pooled,
        "chosen": asdict(chosen),
        "chosen_pooled": summary_metrics([s.score(chosen) for s in scorers]),
        "default": asdict(default),
        "default_pooled": default_metrics,
        "ship": asdict(chosen if selection_pays else default),
        "ship_metrics": "pooled" if selection_pays else "default_pooled",
        "fixed": rows,
    }


def fold_models(fold_files: Sequence[Path]) -> list[dict[str, Any]]:
    """What each fold's own card says about its run (name, hash, patients, time, hardware).

    Args:
        fold_files: the folds' ``out_of_fold.npz`` files; each folder's bundle card is read.

    Returns:
        One dict per fold whose folder holds exactly one readable card (others are skipped).
    """
    from brainseg_core.errors import BundleError
    from brainseg_core.model_card import read_card

    out = []
    for f in fold_files:
        cards = sorted(Path(f).parent.glob("*.json"))
        if len(cards) != 1:
            continue
        try:
            card = read_card(cards[0])
        except BundleError:
            continue
        t = card.training
        out.append(
            {
                "fold": Path(f).parent.name,
                **card.ref.to_json(),
                "held_out_patients": t.get("split", {}).get("val_patients"),
                "epochs_run": t.get("epochs_run"),
                "wall_time_s": t.get("wall_time_s"),
                "device": t.get("device"),
            }
        )
    return out


def apply_to_card(
    result: dict[str, Any], card_path: str | Path, *, source: str, folds: Sequence[dict[str, Any]] = ()
) -> Path:
    """Write a cross-validation's chosen post-processing and honest metrics into a segmenter card.

    The card's ``thresholds`` get ``mask_probability``, ``min_area_px``, ``largest_component`` and
    ``edge_probability`` of ``result["chosen"]`` (flip test-time augmentation stays an opt-in of
    the pipeline; whether it was chosen is recorded in ``training.cross_validation``); ``metrics``
    becomes the nested cross-validated pooled metrics (plus each fold's choice) and
    ``training.cross_validation`` records where they came from. The weights and their hash are
    untouched.

    Args:
        result: what :func:`cross_validate` returned.
        card_path: the segmenter bundle (card, weights file or folder).
        source: where the folds came from (written into the card).
        folds: the fold models (:func:`fold_models`), recorded with their held-out patients.

    Returns:
        The card's path.

    Raises:
        ValueError: if the bundle is not a segmenter.
        BundleError: if the card cannot be read.
    """
    from brainseg_core.bundle import update_card
    from brainseg_core.model_card import read_card, resolve_card_path

    path = resolve_card_path(card_path)
    card = read_card(path)
    if card.kind != "segmenter":
        raise ValueError(f"{path}: is a {card.kind}; cross-validated thresholds belong to a segmenter")
    chosen = result["ship"]
    thresholds = {**card.thresholds, **_card_thresholds(chosen)}
    training = {
        **card.training,
        "cross_validation": {
            "source": source,
            "folds": result["folds"],
            "post_processing_grid_size": result["grid_size"],
            "shipped_post_processing": chosen,
            "fold_models": list(folds),
        },
    }
    metrics = _card_metrics(result, "fold models trained with this recipe")
    update_card(path, thresholds=thresholds, metrics=json_safe(metrics), training=json_safe(training))
    return path


def _card_thresholds(chosen: dict[str, Any]) -> dict[str, Any]:
    """A chosen post-processing in the card's threshold keys."""
    return {
        "mask_probability": float(chosen["mask_probability"]),
        "min_area_px": int(chosen["min_area_px"]),
        "largest_component": bool(chosen["largest_component"]),
        "region_rule": region_rule(chosen.get("region_rule", RegionRule.LARGEST)).value,
        "edge_probability": float(chosen.get("edge_probability", 0.0)),
    }


def _card_metrics(result: dict[str, Any], models: str) -> dict[str, Any]:
    """A cross-validation's honest metrics as a card carries them (``models``: whose predictions)."""
    honest = result[result["ship_metrics"]]
    selected = result["ship_metrics"] == "pooled"
    how = (
        "each fold's post-processing chosen on the other folds (nested)"
        if selected
        else "at the card's thresholds (the nested post-processing selection did not beat them)"
    )
    metrics = {
        "scope": (
            f"{result['folds']}-fold cross-validation by patient: out-of-fold predictions of {models}, {how}"
        ),
        **{k: v for k, v in honest.items() if k != "per_patient_dice"},
        "nested_selection": {
            "dice_patient_mean": result["pooled"]["dice_patient_mean"],
            "dice_patient_median": result["pooled"]["dice_patient_median"],
            "per_fold_choice": {f["fold"]: f["choice"] for f in result["per_fold"]},
            "chosen_on_all_folds": result["chosen"],
        },
        "per_patient_dice": honest["per_patient_dice"],
    }
    return json_safe(metrics)


def apply_thorough_to_card(
    result: dict[str, Any],
    card_path: str | Path,
    members: Sequence[str | Path],
    *,
    source: Sequence[str],
    folds: Sequence[dict[str, Any]] = (),
) -> Path:
    """Write an ensemble's cross-validation into a segmenter card's ``thorough`` section.

    The section names ``members`` (bundles beside the card, averaged with it in thorough mode;
    :mod:`brainseg_core.thorough`) and carries the post-processing the ensemble's own nested
    selection ships and its honest metrics. The card's own thresholds and metrics (the segmenter
    alone) and the weights are untouched.

    Args:
        result: what :func:`cross_validate` returned for the averaged fold sets
            (:func:`average_folds`).
        card_path: the segmenter bundle (card, weights file or folder).
        members: the other full-data segmenters of the ensemble, each a bundle in the card's folder.
        source: the fold sets averaged (written into the section).
        folds: the fold models (:func:`fold_models`) of every fold set.

    Returns:
        The card's path.

    Raises:
        ValueError: if the bundle or a member is not a segmenter, or a member is not beside the
            card.
        BundleError: if a card cannot be read.
    """
    from brainseg_core.bundle import update_card
    from brainseg_core.model_card import read_card, resolve_card_path

    path = resolve_card_path(card_path)
    card = read_card(path)
    entries = []
    for member in members:
        member_path = resolve_card_path(member)
        member_card = read_card(member_path)
        if card.kind != "segmenter" or member_card.kind != "segmenter":
            raise ValueError(
                f"{member_path}: an ensemble joins segmenters, not a {member_card.kind} to a {card.kind}"
            )
        if member_path.resolve().parent != path.resolve().parent or member_path.stem != member_card.name:
            raise ValueError(
                f"{member_path}: thorough mode finds its members beside {path.name} as NAME.json (the "
                f"card's name, {member_card.name}); copy the bundle into {path.parent} under that name first"
            )
        entries.append({"name": member_card.name, "weights_sha256": member_card.weights_sha256})
    chosen = result["ship"]
    thorough = {
        "ensemble": entries,
        "flip_tta": False,
        "thresholds": _card_thresholds(chosen),
        "metrics": _card_metrics(result, f"{len(entries) + 1}-model ensembles (the fold models averaged)"),
        "cross_validation": json_safe(
            {
                "source": list(source),
                "folds": result["folds"],
                "post_processing_grid_size": result["grid_size"],
                "shipped_post_processing": chosen,
                "fold_models": list(folds),
            }
        ),
    }
    update_card(path, thorough=thorough)
    return path


def average_folds(sets: Sequence[Sequence[FoldPredictions]]) -> list[FoldPredictions]:
    """Each fold's predictions averaged over fold sets trained on the same split: the out-of-fold
    predictions of the ensemble of their fold models (thorough mode's cross-validation).

    Args:
        sets: two or more fold sets, each its folds in the same order.

    Returns:
        One fold set, named as the first; probabilities the rounded mean of the sets' (with and
        without flip TTA).

    Raises:
        ValueError: when the sets differ in folds, held-out patients or slices.
    """
    if len(sets) < 2 or len({len(s) for s in sets}) != 1:
        raise ValueError(
            f"averaging needs two or more fold sets of as many folds, got {[len(s) for s in sets]}"
        )
    out = []
    for folds in zip(*sets, strict=True):
        first = folds[0]
        for other in folds[1:]:
            if (
                other.patient_ids != first.patient_ids
                or not np.array_equal(other.patient, first.patient)
                or not np.array_equal(other.mask, first.mask)
            ):
                raise ValueError(
                    f"{first.name} and {other.name}: the fold sets do not hold out the same patients and "
                    "slices; average fold sets trained on the same held-out patients (--val-patients, "
                    "or the same --folds K --fold I)"
                )

        def mean(arrays: list[np.ndarray]) -> np.ndarray:
            total = np.sum([a.astype(np.float32) for a in arrays], axis=0)
            return np.asarray(np.round(total / len(arrays)), dtype=np.uint8)

        out.append(
            FoldPredictions(
                first.name,
                mean([f.prob for f in folds]),
                mean([f.prob_flip for f in folds]),
                first.mask,
                first.patient,
                first.patient_ids,
            )
        )
    return out


def pct(v: Any) -> str:
    """A fraction as a percentage with one decimal for the reports ("n/a" when missing or not finite)."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * float(v):.1f}"


def format_cv_report(result: dict[str, Any]) -> str:
    """The text table ``brainseg-eval --cv`` prints."""
    head = (
        f"{'':<52} {'pat':>4} {'Dice mean':>9} {'median':>7} {'min':>6} {'<0.5':>5} {'recall':>7} "
        f"{'spec':>6} {'bal.acc':>7} {'AUC':>6} {'vol ratio':>9}"
    )

    def row(label: str, m: dict[str, Any]) -> str:
        return (
            f"{label:<52} {m['patients']:>4} {pct(m['dice_patient_mean']):>9} "
            f"{pct(m['dice_patient_median']):>7} {pct(m['dice_patient_min']):>6} "
            f"{len(m['patients_below_0.5']):>5} {pct(m['slice_recall']):>7} "
            f"{pct(m['slice_specificity']):>6} {pct(m['slice_balanced_accuracy']):>7} "
            f"{m['slice_roc_auc']:>6.3f} {m['volume_ratio_median']:>9.2f}"
        )

    lines = [
        f"Cross-validation over {result['folds']} folds, {result['pooled']['patients']} held-out patients "
        "(percent; slice detection = final mask not empty; vol ratio = median predicted/true voxels)",
        "",
        "Nested: each fold's post-processing chosen on the other folds",
        head,
        "-" * len(head),
    ]
    for f in result["per_fold"]:
        lines.append(row(f["fold"], f["metrics"]))
    lines.append(row("pooled (nested, honest)", result["pooled"]))
    for f in result["per_fold"]:
        lines.append(f"  {f['fold']}: {PostProcessing(**f['choice']).describe()}")
    lines += [
        "",
        f"Chosen on all folds: {PostProcessing(**result['chosen']).describe()}",
        row("same patients (optimistic)", result["chosen_pooled"]),
        f"Default: {PostProcessing(**result['default']).describe()}",
        row("default, every fold (honest)", result["default_pooled"]),
        "",
        f"Ship: {PostProcessing(**result['ship']).describe()} "
        + (
            "(the nested selection beats the default)"
            if result["ship_metrics"] == "pooled"
            else "(the nested selection does not beat the default on held-out patients)"
        ),
    ]
    if result["fixed"]:
        lines += ["", "Fixed post-processing, every fold", head, "-" * len(head)]
        for r in result["fixed"]:
            lines.append(row(PostProcessing(**r["choice"]).describe(), r["metrics"]))
    recalls = ", ".join(
        (f"{b['min_px']}-{b['max_px'] - 1} px" if b["max_px"] is not None else f">= {b['min_px']} px")
        + f" {pct(b['recall'])} ({b['detected']}/{b['tumour_slices']})"
        for b in result["pooled"]["slice_recall_by_area"]
    )
    lines += ["", f"Tumour-slice recall by true tumour area (nested): {recalls}"]
    pooled = result["pooled"]
    if pooled["beside_flags"]:
        lines += [
            "",
            "Empty slices just past an outline (flagged for review as a tumour end or a gap, nested): "
            f"{pooled['beside_flags']} ({pooled['beside_flags'] / pooled['patients']:.1f} per patient), "
            f"{pooled['beside_flags_with_tumour']} of them with tumour; tumour slices outlined or so "
            f"flagged {pct(pooled['recall_outlined_or_beside'])}, tumour-free slices neither "
            f"{pct(pooled['specificity_outlined_or_beside'])}",
        ]
    low = result["pooled"]["patients_below_0.5"]
    if low:
        lines += [
            "",
            "Patients below 0.5 Dice (nested): " + ", ".join(f"{p} {d} ({v} tumour px)" for p, d, v in low),
        ]
    return "\n".join(lines)
