"""Validation on the held-out patients: metrics, the selection metric and the card's thresholds.

- Segmenter: mean per-patient 3-D Dice of the 0.5-thresholded masks (the selection metric,
  :func:`~brainseg_core.metrics.per_patient_dice`), its median and minimum, per-patient IoU, mean
  Dice over tumour slices and over all slices, and the false-positive slices.
- Classifier: ROC AUC (the selection metric), and balanced accuracy, recall, ... at the chosen
  threshold (and at 0.5).
- Thresholds chosen on the validation patients with the kept weights: classifier
  ``tumour_probability`` = the highest threshold keeping tumour-slice recall >=
  :data:`TARGET_RECALL` (0.5 when the validation patients hold no tumour slice); segmenter
  ``mask_probability`` 0.5 and ``min_area_px`` = the candidate with the best mean per-patient Dice
  after removing smaller connected components exactly as the inference pipeline does (ties go to
  the smaller value).
- A segmenter's held-out probabilities are saved for cross-validation (:func:`save_out_of_fold`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brainseg_core.atomic import atomic_write
from brainseg_core.metrics import classification_metrics, per_patient_dice, per_patient_iou, summarize
from brainseg_core.model_card import KEY_METRICS
from brainseg_core.model_kind import ModelKind
from brainseg_core.training.data import SliceSet

#: Recall on tumour slices the classifier threshold must keep on the validation patients.
TARGET_RECALL = 0.97
#: Slices per chunk when the validation loss is computed from precomputed logits.
_LOSS_CHUNK = 64


def selection_metric(kind: str) -> str:
    """The validation metric that selects the best epoch: the kind's ranking metric
    (:data:`brainseg_core.model_card.KEY_METRICS`, which ranks installed bundles too)."""
    return KEY_METRICS[ModelKind(kind)]


def default_thresholds(kind: str) -> dict[str, Any]:
    """The card's thresholds when there is no validation patient to choose them on."""
    return {"mask_probability": 0.5, "min_area_px": 0} if kind == "segmenter" else {"tumour_probability": 0.5}


def selection_value(kind: str, metrics: dict[str, Any]) -> float:
    """The value compared between epochs (higher is better; -inf when it cannot be computed).

    A classifier whose ROC AUC is undefined (one class only) falls back to balanced accuracy.
    """
    v = metrics.get(selection_metric(kind))
    if v is None or not math.isfinite(float(v)):
        v = metrics.get("balanced_accuracy", -math.inf) if kind == "classifier" else -math.inf
    return float(v)


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, *, batch_size: int, amp: torch.dtype | None
) -> torch.Tensor:
    """Logits of every slice of ``images`` (float32, on the images' device), in eval mode.

    Args:
        model: the model (left in eval mode).
        images: ``(N, 3, S, S)`` slices.
        batch_size: slices per forward pass.
        amp: autocast dtype or None.

    Returns:
        ``(N, 1, S, S)`` or ``(N, 1)`` logits.
    """
    from brainseg_core.inference.device import autocast

    model.eval()
    outs = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].float().contiguous(memory_format=torch.channels_last)
        with autocast(images.device, amp):
            outs.append(model(x).float())
    return torch.cat(outs) if outs else images.new_zeros((0, 1))


def segmentation_scores(
    inter: np.ndarray, parea: np.ndarray, garea: np.ndarray, patient: np.ndarray, n_patients: int
) -> dict[str, Any]:
    """Segmentation metrics from per-slice intersection / predicted / true areas (pixels).

    Args:
        inter: ``(N,)`` per-slice intersection.
        parea: ``(N,)`` per-slice predicted area.
        garea: ``(N,)`` per-slice true area.
        patient: ``(N,)`` patient index of each slice.
        n_patients: number of patients.

    Returns:
        ``dice_patient_mean/median/min``, ``iou_patient_mean``, ``dice_tumour_slices`` (NaN without
        a tumour slice), ``dice_all_slices``, ``false_positive_slices`` and ``per_patient_dice``
        (a list in patient-index order).
    """
    dice_p = per_patient_dice(inter, parea, garea, patient, n_patients=n_patients)
    iou_p = per_patient_iou(inter, parea, garea, patient, n_patients=n_patients)
    sden = parea + garea
    slice_dice = np.where(sden > 0, 2 * inter / np.maximum(sden, 1), 1.0)
    tumour = garea > 0
    d = summarize(dice_p)
    return {
        "dice_patient_mean": d["mean"],
        "dice_patient_median": d["median"],
        "dice_patient_min": d["min"],
        "iou_patient_mean": float(iou_p.mean()),
        "dice_tumour_slices": float(slice_dice[tumour].mean()) if tumour.any() else float("nan"),
        "dice_all_slices": float(slice_dice.mean()),
        "false_positive_slices": int(np.sum((parea > 0) & ~tumour)),
        "per_patient_dice": [float(v) for v in dice_p],
    }


def validate(
    model: nn.Module,
    val: SliceSet,
    loss_fn: nn.Module,
    *,
    kind: str,
    batch_size: int,
    amp: torch.dtype | None,
    min_area_px: int = 0,
    logits: torch.Tensor | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validation metrics of ``model`` (or of precomputed ``logits``) and their thresholds.

    Args:
        model: the model.
        val: the validation slices (on the model's device).
        loss_fn: the training loss (reported as ``val_loss``).
        kind: ``"segmenter"`` or ``"classifier"``.
        batch_size: slices per forward pass.
        amp: autocast dtype or None.
        min_area_px: segmenter: remove connected components smaller than this first, as the
            inference pipeline does.
        logits: the model's logits on ``val`` when already computed (not computed again).

    Returns:
        ``(metrics, thresholds)``; a segmenter's ``per_patient_dice`` maps patient id to Dice.
    """
    if logits is None:
        logits = predict_logits(model, val.images, batch_size=batch_size, amp=amp)
    if kind == "segmenter":
        return _segmenter_metrics(logits, val, loss_fn, min_area_px)
    y = val.labels.float()
    loss = float(loss_fn(logits.reshape(-1), y).item())
    probs = torch.sigmoid(logits.reshape(-1)).cpu().numpy().astype(np.float64)
    labels = y.cpu().numpy() > 0.5
    thr = choose_classifier_threshold(labels, probs)
    scores = classification_metrics(labels, probs, threshold=thr)
    at_half = classification_metrics(labels, probs, threshold=0.5)
    scores["balanced_accuracy_at_0.5"] = at_half["balanced_accuracy"]
    scores["recall_at_0.5"] = at_half["recall"]
    scores["val_loss"] = loss
    return scores, {"tumour_probability": thr}


def _segmenter_metrics(
    logits: torch.Tensor, val: SliceSet, loss_fn: nn.Module, min_area_px: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    target = val.masks.float()
    loss = float(
        sum(
            loss_fn(logits[i : i + _LOSS_CHUNK], target[i : i + _LOSS_CHUNK]).item()
            * min(_LOSS_CHUNK, len(val) - i)
            for i in range(0, len(val), _LOSS_CHUNK)
        )
        / max(1, len(val))
    )
    pred = logits > 0  # probability > 0.5, as the pipeline's ">= 0.5" up to a tie at exactly 0.5
    if min_area_px > 1:
        from brainseg_core.results import remove_small_components

        pred_np = pred[:, 0].cpu().numpy()
        pred = torch.from_numpy(np.stack([remove_small_components(m, min_area_px) for m in pred_np])).to(
            logits.device
        )[:, None]
    t = val.masks.bool()
    inter = (pred & t).flatten(1).sum(1).cpu().numpy().astype(np.float64)
    parea = pred.flatten(1).sum(1).cpu().numpy().astype(np.float64)
    garea = t.flatten(1).sum(1).cpu().numpy().astype(np.float64)
    scores = segmentation_scores(inter, parea, garea, val.patient.cpu().numpy(), len(val.patient_ids))
    scores["val_loss"] = loss
    scores["per_patient_dice"] = dict(zip(val.patient_ids, scores["per_patient_dice"], strict=True))
    return scores, {"mask_probability": 0.5, "min_area_px": int(min_area_px)}


def choose_classifier_threshold(
    labels: np.ndarray, probs: np.ndarray, target: float = TARGET_RECALL
) -> float:
    """The highest threshold ``t`` such that ``recall(probs >= t) >= target``.

    Rounded down to 4 decimals (a card value); 0.5 when there is no positive.

    Args:
        labels: true labels (truthy = tumour).
        probs: tumour probabilities.
        target: recall to keep.

    Returns:
        The threshold in [0, 1].
    """
    pos = np.sort(np.asarray(probs, dtype=np.float64)[np.asarray(labels).astype(bool)])[::-1]
    if pos.size == 0:
        return 0.5
    k = math.ceil(target * pos.size)
    t = math.floor(pos[k - 1] * 1e4) / 1e4
    return float(min(max(t, 0.0), 1.0))


def choose_min_area(
    model: nn.Module,
    val: SliceSet,
    loss_fn: nn.Module,
    *,
    candidates: tuple[int, ...],
    batch_size: int,
    amp: torch.dtype | None,
    logits: torch.Tensor | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[int, float]]:
    """The segmenter's ``min_area_px``: the candidate with the best mean per-patient Dice.

    Args:
        model: the segmenter.
        val: the validation slices.
        loss_fn: the training loss.
        candidates: ``min_area_px`` values, tried in order (ties keep the earlier, smaller one).
        batch_size: slices per forward pass.
        amp: autocast dtype or None.
        logits: the model's logits on ``val`` when already computed.

    Returns:
        ``(metrics, thresholds, tried)``: the best candidate's metrics and thresholds, and each
        candidate's mean per-patient Dice.
    """
    best: tuple[float, dict[str, Any], dict[str, Any]] | None = None
    tried: dict[int, float] = {}
    for area in candidates:
        metrics, thr = validate(
            model,
            val,
            loss_fn,
            kind="segmenter",
            batch_size=batch_size,
            amp=amp,
            min_area_px=area,
            logits=logits,
        )
        tried[area] = metrics["dice_patient_mean"]
        if best is None or metrics["dice_patient_mean"] > best[0] + 1e-9:
            best = (metrics["dice_patient_mean"], metrics, thr)
    if best is None:
        raise ValueError("no min_area_px candidate to try")
    return best[1], best[2], tried


def final_evaluation(
    model: nn.Module,
    val: SliceSet,
    loss_fn: nn.Module,
    *,
    kind: str,
    batch_size: int,
    amp: torch.dtype | None,
    min_area_candidates: tuple[int, ...],
    out_of_fold: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The kept model's metrics and the card's thresholds, chosen on the validation patients.

    The held-out probabilities are also written to ``out_of_fold``, from the same forward pass
    as the metrics: a segmenter's maps (:func:`save_out_of_fold`), a classifier's slice
    probabilities (:func:`save_gate_out_of_fold`).

    Args:
        model: the kept model.
        val: the validation slices (none: no metric, :func:`default_thresholds`).
        loss_fn: the training loss.
        kind: ``"segmenter"`` or ``"classifier"``.
        batch_size: slices per forward pass.
        amp: autocast dtype or None.
        min_area_candidates: a segmenter's ``min_area_px`` candidates.
        out_of_fold: where the held-out probabilities go.

    Returns:
        ``(metrics, thresholds)``.
    """
    if not val.patient_ids:
        return {}, default_thresholds(kind)
    if kind != "segmenter":
        logits = predict_logits(model, val.images, batch_size=batch_size, amp=amp)
        save_gate_out_of_fold(val, logits, out_of_fold)
        return validate(model, val, loss_fn, kind=kind, batch_size=batch_size, amp=amp, logits=logits)
    # one pass over the held-out slices serves the minimum-area choice and the saved file
    logits = predict_logits(model, val.images, batch_size=batch_size, amp=amp)
    metrics, thresholds, tried = choose_min_area(
        model,
        val,
        loss_fn,
        candidates=min_area_candidates,
        batch_size=batch_size,
        amp=amp,
        logits=logits,
    )
    metrics["min_area_dice_by_candidate"] = {str(k): v for k, v in tried.items()}
    save_out_of_fold(model, val, out_of_fold, batch_size=batch_size, amp=amp, logits=logits)
    return metrics, thresholds


def save_out_of_fold(
    model: nn.Module,
    val: SliceSet,
    path: Path,
    *,
    batch_size: int,
    amp: torch.dtype | None,
    logits: torch.Tensor | None = None,
) -> Path:
    """Write the segmenter's probabilities on the held-out patients (for threshold selection).

    The file is a compressed ``.npz`` of plain arrays (read it with ``allow_pickle=False``):
    ``prob`` and ``prob_flip`` (``(N, H, W)`` uint8, probability x 255, without and with
    left-right flip test-time augmentation, the mean of the slice and its mirror), ``mask``
    (``(N, H, W)`` bool ground truth), ``patient`` (``(N,)`` index into ``patient_ids``) and
    ``patient_ids``.

    Args:
        model: the trained segmenter.
        val: the held-out slices.
        path: the ``.npz`` to write (atomically).
        batch_size: inference batch size.
        amp: autocast dtype or None.
        logits: the model's logits on ``val`` when already computed (not computed again).

    Returns:
        ``path``.
    """
    if logits is None:
        logits = predict_logits(model, val.images, batch_size=batch_size, amp=amp)
    plain = torch.sigmoid(logits)
    mirrored = torch.sigmoid(predict_logits(model, val.images.flip(-1), batch_size=batch_size, amp=amp)).flip(
        -1
    )

    def q(prob: torch.Tensor) -> np.ndarray:
        return (prob[:, 0] * 255).round().to(torch.uint8).cpu().numpy()

    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            prob=q(plain),
            prob_flip=q((plain + mirrored) / 2),
            mask=val.masks[:, 0].cpu().numpy().astype(bool),
            patient=val.patient.cpu().numpy().astype(np.int64),
            patient_ids=np.array(val.patient_ids, dtype=str),
        )
    return path


def save_gate_out_of_fold(val: SliceSet, logits: torch.Tensor, path: Path) -> Path:
    """Write a classifier's tumour probability of every held-out slice (for a gate's threshold).

    The compressed ``.npz`` holds plain arrays (read it with ``allow_pickle=False``): ``kind``
    (``"classifier"``), ``slice_prob`` (``(N,)`` float32), ``label`` (``(N,)`` bool: the slice's
    true mask is not empty), ``patient`` and ``patient_ids`` as in :func:`save_out_of_fold`, so
    a classifier's and a segmenter's files of the same fold line up slice by slice.

    Args:
        val: the held-out slices.
        logits: the classifier's ``(N, 1)`` logits on them.
        path: the ``.npz`` to write (atomically).

    Returns:
        ``path``.
    """
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            kind=np.array("classifier"),
            slice_prob=torch.sigmoid(logits.reshape(-1).float()).cpu().numpy().astype(np.float32),
            label=val.labels.cpu().numpy() > 0.5,
            patient=val.patient.cpu().numpy().astype(np.int64),
            patient_ids=np.array(val.patient_ids, dtype=str),
        )
    return path
