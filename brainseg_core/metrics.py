"""Segmentation and classification metrics (numpy only), with their conventions spelled out.

Segmentation (``pred`` and ``target`` of the same shape; booleans give the usual hard scores,
probabilities in [0, 1] give the soft versions, with ``|A|`` the sum and ``A . B`` the sum of
the product):

- Dice ``2 |P . T| / (|P| + |T|)``; IoU (Jaccard) ``|P . T| / (|P| + |T| - |P . T|)``.
- **Empty-empty convention**: when both prediction and target are empty (a slice or volume with
  no tumour, correctly left empty) every overlap score is ``1.0`` (``empty=`` changes it, e.g.
  ``float("nan")`` to leave such cases out of a mean). A non-empty prediction on an empty target,
  or the reverse, scores 0.
- Per-volume scores treat the whole ``(N, H, W)`` stack as one 3-D object (one number per
  patient); :func:`per_slice_dice` gives one number per slice. :func:`per_patient_dice` and
  :func:`per_patient_iou` give the per-volume score of every patient of a stack that holds several
  slices of several patients (each slice tagged with its patient), from per-slice pixel counts,
  which the callers (validation, cross-validation) have at hand anyway.

Classification (binary, positive class = tumour = 1):

- accuracy, recall (sensitivity, TP / (TP + FN)), specificity, precision (TP / (TP + FP)),
  balanced accuracy (mean of recall and specificity), F1 of each class, macro F1 (unweighted
  mean over the two classes) and weighted F1 (mean weighted by each class's true count). A ratio
  with a zero denominator is 0.0 (scikit-learn's ``zero_division=0``), except balanced accuracy
  which averages only the classes present.
- ROC AUC is rank based (Mann-Whitney U): the probability that a random positive scores above a
  random negative, ties counting one half; NaN when only one class is present.
- Calibration (:func:`calibration`): whether a probability means what it says. The Brier score is
  the mean squared difference between probability and label; the reliability table bins the
  probabilities and gives each bin's mean probability beside its observed share of positives;
  the expected calibration error (ECE) is the mean gap between the two, weighted by the bins' sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "calibration",
    "classification_metrics",
    "confusion_counts",
    "dice",
    "f1_score",
    "iou",
    "per_patient_dice",
    "per_patient_iou",
    "per_slice_dice",
    "precision",
    "recall",
    "roc_auc",
    "summarize",
]


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred)
    t = np.asarray(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from target shape {t.shape}")
    return p.astype(np.float64, copy=False), t.astype(np.float64, copy=False)


def dice(pred: np.ndarray, target: np.ndarray, *, empty: float = 1.0) -> float:
    """Dice coefficient over all elements (hard for booleans, soft for probabilities).

    Args:
        pred: predicted mask or probabilities.
        target: ground-truth mask (same shape).
        empty: value returned when both are empty (see the module docstring).

    Returns:
        Dice in [0, 1] (or ``empty``).

    Raises:
        ValueError: if the shapes differ.
    """
    p, t = _pair(pred, target)
    denom = p.sum() + t.sum()
    if denom == 0:
        return float(empty)
    return float(2.0 * (p * t).sum() / denom)


def iou(pred: np.ndarray, target: np.ndarray, *, empty: float = 1.0) -> float:
    """Intersection over union (Jaccard index); see :func:`dice` for the arguments."""
    p, t = _pair(pred, target)
    inter = (p * t).sum()
    union = p.sum() + t.sum() - inter
    if union == 0:
        return float(empty)
    return float(inter / union)


def _per_slice(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, t = _pair(pred, target)
    if p.ndim < 2:
        raise ValueError(f"expected (N, H, W) stacks, got shape {p.shape}")
    axes = tuple(range(1, p.ndim))
    return (p * t).sum(axis=axes), p.sum(axis=axes), t.sum(axis=axes)


def per_slice_dice(pred: np.ndarray, target: np.ndarray, *, empty: float = 1.0) -> np.ndarray:
    """Dice of every slice of ``(N, H, W)`` stacks.

    Returns:
        ``(N,)`` float64, ``empty`` where both slices are empty.
    """
    inter, ps, ts = _per_slice(pred, target)
    denom = ps + ts
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, 2.0 * inter / np.where(denom > 0, denom, 1), empty)
    return out.astype(np.float64)


def _patient_sums(
    intersection: np.ndarray,
    pred_area: np.ndarray,
    true_area: np.ndarray,
    patient: np.ndarray,
    n_patients: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient ``|P . T|`` and ``|P| + |T|`` from per-slice counts."""
    idx = np.asarray(patient, dtype=np.int64).ravel()
    counts = [np.asarray(a, dtype=np.float64).ravel() for a in (intersection, pred_area, true_area)]
    if any(c.shape != idx.shape for c in counts):
        raise ValueError(
            f"per-slice counts of {[c.size for c in counts]} slices do not match {idx.size} patient indices"
        )
    if idx.size and idx.min() < 0:
        raise ValueError("patient indices must be >= 0")
    n = int(n_patients) if n_patients is not None else (int(idx.max()) + 1 if idx.size else 0)
    if idx.size and idx.max() >= n:
        raise ValueError(f"patient index {int(idx.max())} does not fit {n} patients")
    inter_p, pred_p, true_p = (np.bincount(idx, weights=c, minlength=n) for c in counts)
    return inter_p, pred_p + true_p


def per_patient_dice(
    intersection: np.ndarray,
    pred_area: np.ndarray,
    true_area: np.ndarray,
    patient: np.ndarray,
    *,
    n_patients: int | None = None,
    empty: float = 1.0,
) -> np.ndarray:
    """Per-volume Dice of each patient's stacked slices, from per-slice counts.

    The slices of a patient are one 3-D object: ``2 sum |P . T| / (sum |P| + sum |T|)`` over them
    (so a patient's score is not the mean of its slices' scores).

    Args:
        intersection: ``(N,)`` per-slice ``|P . T|``.
        pred_area: ``(N,)`` per-slice ``|P|``.
        true_area: ``(N,)`` per-slice ``|T|``.
        patient: ``(N,)`` index of each slice's patient, 0 <= index < ``n_patients``.
        n_patients: number of patients (default: the largest index + 1); a patient without any
            slice counts as empty / empty.
        empty: value of a patient whose prediction and ground truth are both empty (see the
            module docstring).

    Returns:
        ``(n_patients,)`` float64 Dice, in patient-index order.

    Raises:
        ValueError: if the arrays differ in length or an index does not fit ``n_patients``.
    """
    inter_p, den = _patient_sums(intersection, pred_area, true_area, patient, n_patients)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * inter_p / np.where(den > 0, den, 1), empty).astype(np.float64)


def per_patient_iou(
    intersection: np.ndarray,
    pred_area: np.ndarray,
    true_area: np.ndarray,
    patient: np.ndarray,
    *,
    n_patients: int | None = None,
    empty: float = 1.0,
) -> np.ndarray:
    """Per-volume IoU of each patient's stacked slices; see :func:`per_patient_dice` for the arguments.

    Returns:
        ``(n_patients,)`` float64 IoU, in patient-index order.

    Raises:
        ValueError: if the arrays differ in length or an index does not fit ``n_patients``.
    """
    inter_p, den = _patient_sums(intersection, pred_area, true_area, patient, n_patients)
    union = den - inter_p
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter_p / np.where(union > 0, union, 1), empty).astype(np.float64)


def summarize(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Mean, median, min and max of a list of scores, ignoring NaN (all NaN if none is left).

    Returns:
        ``{"mean", "median", "min", "max", "n"}``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        nan = float("nan")
        return {"mean": nan, "median": nan, "min": nan, "max": nan, "n": 0}
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


# --------------------------------------------------------------------------- classification


def _labels(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true).astype(bool).ravel()
    p = np.asarray(y_pred).astype(bool).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} predictions")
    return t, p


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """Binary confusion counts.

    Args:
        y_true: true labels (truthy = tumour).
        y_pred: predicted labels.

    Returns:
        ``{"tp", "fp", "tn", "fn"}``.
    """
    t, p = _labels(y_true, y_pred)
    return {
        "tp": int(np.sum(t & p)),
        "fp": int(np.sum(~t & p)),
        "tn": int(np.sum(~t & ~p)),
        "fn": int(np.sum(t & ~p)),
    }


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct labels (0.0 for empty input)."""
    c = confusion_counts(y_true, y_pred)
    return _ratio(c["tp"] + c["tn"], sum(c.values()))


def recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Sensitivity TP / (TP + FN) of the tumour class (0.0 without positives)."""
    c = confusion_counts(y_true, y_pred)
    return _ratio(c["tp"], c["tp"] + c["fn"])


def precision(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Positive predictive value TP / (TP + FP) (0.0 without positive predictions)."""
    c = confusion_counts(y_true, y_pred)
    return _ratio(c["tp"], c["tp"] + c["fp"])


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean of the recall of each class present in ``y_true`` (0.0 for empty input)."""
    c = confusion_counts(y_true, y_pred)
    recalls = []
    if c["tp"] + c["fn"] > 0:
        recalls.append(c["tp"] / (c["tp"] + c["fn"]))
    if c["tn"] + c["fp"] > 0:
        recalls.append(c["tn"] / (c["tn"] + c["fp"]))
    return float(np.mean(recalls)) if recalls else 0.0


def f1_score(y_true: np.ndarray, y_pred: np.ndarray, *, average: str = "binary") -> float:
    """F1 score.

    Args:
        y_true: true labels.
        y_pred: predicted labels.
        average: ``"binary"`` (F1 of the tumour class), ``"macro"`` (mean of both classes' F1)
            or ``"weighted"`` (mean weighted by the true count of each class).

    Returns:
        F1 in [0, 1].

    Raises:
        ValueError: on an unknown ``average``.
    """
    if average not in ("binary", "macro", "weighted"):
        raise ValueError(f"average must be 'binary', 'macro' or 'weighted', got {average!r}")
    c = confusion_counts(y_true, y_pred)
    f1_pos = _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])
    if average == "binary":
        return f1_pos
    f1_neg = _ratio(2 * c["tn"], 2 * c["tn"] + c["fn"] + c["fp"])
    if average == "macro":
        return float((f1_pos + f1_neg) / 2)
    n_pos, n_neg = c["tp"] + c["fn"], c["tn"] + c["fp"]
    return _ratio(f1_pos * n_pos + f1_neg * n_neg, n_pos + n_neg)


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U), ties counted as one half.

    Args:
        y_true: true labels.
        scores: a score per sample, higher = more likely tumour.

    Returns:
        AUC in [0, 1]; NaN if ``y_true`` holds a single class.

    Raises:
        ValueError: if the lengths differ.
    """
    t = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise ValueError(f"{t.size} true labels but {s.size} scores")
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # average 1-based rank within each run of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


#: Bin edges of :func:`calibration`'s reliability table: fine at the low end, where a slice gate
#: kept for high recall sets its threshold.
CALIBRATION_EDGES = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.8, 0.95, 1.0)


def calibration(y_true: np.ndarray, probs: np.ndarray, *, edges: Sequence[float] = CALIBRATION_EDGES) -> dict:
    """How well probabilities match the observed frequencies.

    Args:
        y_true: true labels (truthy = positive).
        probs: a probability in [0, 1] per sample.
        edges: increasing bin edges from 0 to 1; the last bin includes 1.

    Returns:
        ``{"n", "brier", "ece", "bins"}``: ``bins`` lists, for each non-empty bin, ``{"low", "high",
        "n", "mean_probability", "observed"}`` (the share of positives).

    Raises:
        ValueError: if the lengths differ, a probability is outside [0, 1], or the edges do not
            run from 0 to 1 in increasing order.
    """
    t = np.asarray(y_true).astype(bool).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    e = np.asarray(edges, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true labels but {p.size} probabilities")
    if not np.all((p >= 0) & (p <= 1)):  # NaN fails both
        raise ValueError("probabilities must lie in [0, 1]")
    if e.size < 2 or e[0] != 0 or e[-1] != 1 or np.any(np.diff(e) <= 0):
        raise ValueError(f"edges must increase from 0 to 1, got {list(edges)}")
    which = np.clip(np.searchsorted(e, p, side="right") - 1, 0, e.size - 2)
    bins, ece = [], 0.0
    for k in range(e.size - 1):
        m = which == k
        if not m.any():
            continue
        mean_p, observed = float(p[m].mean()), float(t[m].mean())
        ece += m.mean() * abs(mean_p - observed)
        bins.append(
            {
                "low": float(e[k]),
                "high": float(e[k + 1]),
                "n": int(m.sum()),
                "mean_probability": mean_p,
                "observed": observed,
            }
        )
    brier = float(np.mean((p - t) ** 2)) if p.size else float("nan")
    return {"n": int(p.size), "brier": brier, "ece": float(ece) if p.size else float("nan"), "bins": bins}


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5) -> dict:
    """All the slice-level classification metrics at one threshold.

    Args:
        y_true: true labels (truthy = tumour).
        scores: tumour probabilities; a slice is called tumour when ``score >= threshold``.
        threshold: decision threshold.

    Returns:
        ``{"n", "positives", "threshold", "accuracy", "balanced_accuracy", "recall",
        "specificity", "precision", "f1", "f1_macro", "f1_weighted", "roc_auc", "confusion"}``.
    """
    t = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    p = s >= threshold
    c = confusion_counts(t, p)
    return {
        "n": int(t.size),
        "positives": int(t.sum()),
        "threshold": float(threshold),
        "accuracy": accuracy(t, p),
        "balanced_accuracy": balanced_accuracy(t, p),
        "recall": recall(t, p),
        "specificity": _ratio(c["tn"], c["tn"] + c["fp"]),
        "precision": precision(t, p),
        "f1": f1_score(t, p),
        "f1_macro": f1_score(t, p, average="macro"),
        "f1_weighted": f1_score(t, p, average="weighted"),
        "roc_auc": roc_auc(t, s),
        "confusion": c,
    }
