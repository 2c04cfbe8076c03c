"""Evaluate the inference pipeline on labelled patients (``brainseg-eval``).

Every patient is run through :class:`brainseg_core.inference.pipeline.Pipeline` exactly as the
viewer runs it (same preprocessing, thresholds from the model cards, masks at the source size) and
compared with its ground-truth masks. Definitions:

**Classification** (slice level, the classifier alone, pooled over every slice of every patient).
A slice's true label is "tumour" when its ground-truth mask is not empty; it is called tumour
when its gate score reaches the classifier card's threshold (``tumour_probability``; the gate
score is the slice's own tumour probability or, within the card's ``gate_reach_slices``, a
neighbouring slice's, whichever is higher). Reported:
accuracy, balanced accuracy (mean of the recalls of the two classes), recall = sensitivity on
tumour slices, specificity, precision, F1 of the tumour class, F1 macro (mean of the two classes'
F1) and weighted (weighted by class frequency), and ROC AUC (rank based, threshold free).

**Segmentation** (the segmenter on every slice, ``segment_all``, no classifier). Per patient, the
Dice ``2|P∩T| / (|P|+|T|)`` and IoU ``|P∩T| / |P∪T|`` of the whole 3-D volume (all slices of the
patient at once); then their mean, median and minimum over patients. A patient with no tumour
whose prediction is also empty scores 1 (empty-empty convention). Also reported:

- *Dice over tumour slices*: the mean of the per-slice Dice over the slices whose ground truth is
  not empty (pooled over patients); it ignores false positives on tumour-free slices.
- *Dice over all slices*: the mean per-slice Dice over every slice, an empty prediction on an
  empty slice counting as 1. Usually the highest number because most slices are empty and easy;
  it is what many public notebooks report, so it is given for comparison only.

**End-to-end pipeline** (classifier gate, then the segmenter on the slices that pass). The same
per-patient 3-D Dice and IoU as above, the Dice over tumour slices, and the number of ground-truth
tumour slices the gate missed (below the classifier threshold, hence never segmented).

**Throughput**: slices per second of each run (segment-all and end-to-end), wall time including
preprocessing, on the reported device. Reading the files is not counted.

:func:`evaluate` returns everything as a JSON-ready dict, per patient too; :func:`format_report`
turns it into the text ``brainseg-eval`` prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainseg_core.compute import Device
from brainseg_core.errors import Cancelled, DataError
from brainseg_core.jsonsafe import json_safe
from brainseg_core.metrics import classification_metrics, dice, iou, per_slice_dice, summarize
from brainseg_core.progress import CancelArg, ProgressFn, cancel_checker
from brainseg_core.results import ENSEMBLE_KEY
from brainseg_core.thresholds import region_rule

if TYPE_CHECKING:
    from brainseg_core.bundle import ModelBundle
    from brainseg_core.thresholds import Thresholds

__all__ = ["evaluate", "format_report"]


def _select_patients(paths: list[Path], ids: Sequence[str] | None, root: Path) -> list[Path]:
    if ids is None:
        return paths
    wanted = list(dict.fromkeys(ids))
    by_name = {p.name: p for p in paths}
    by_stem = {p.stem: p for p in paths}
    missing = [i for i in wanted if i not in by_name and i not in by_stem]
    if missing:
        raise DataError(root, f"patients not found here: {', '.join(missing)}")
    return [by_name.get(i) or by_stem[i] for i in wanted]


def _segmentation_summary(
    per_patient: list[dict[str, Any]], key: str, slice_dice: list[np.ndarray], tumour_masks: list[np.ndarray]
) -> dict[str, Any]:
    d = np.array([p[key]["dice"] for p in per_patient])
    j = np.array([p[key]["iou"] for p in per_patient])
    all_slices = np.concatenate(slice_dice) if slice_dice else np.zeros(0)
    tumour = np.concatenate(tumour_masks) if tumour_masks else np.zeros(0, bool)
    return {
        "dice_patient": summarize(d),
        "iou_patient": summarize(j),
        "dice_tumour_slices": float(all_slices[tumour].mean()) if tumour.any() else float("nan"),
        "dice_all_slices": float(all_slices.mean()) if all_slices.size else float("nan"),
        "tumour_slices": int(tumour.sum()),
        "slices": int(tumour.size),
    }


def evaluate(
    data: str | Path,
    *,
    classifier: ModelBundle | None,
    segmenter: ModelBundle,
    thresholds: Thresholds | None = None,
    device: Device | str = Device.AUTO,
    batch_size: int = 16,
    patients: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelArg = None,
    thorough: bool = False,
    warn: Callable[[str], None] | None = None,
    series: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Evaluate a classifier + segmenter pair on every labelled patient under ``data``.

    Args:
        data: a dataset root, a patient folder or a stack (anything
            :func:`brainseg_core.io.find_patients` accepts); every patient needs masks.
        classifier: classifier :class:`~brainseg_core.bundle.ModelBundle`, or None (then only
            the segmentation section is computed).
        segmenter: segmenter :class:`~brainseg_core.bundle.ModelBundle`.
        thresholds: the thresholds (default: the model cards'; see
            :class:`~brainseg_core.inference.Pipeline`).
        device: where the networks run.
        batch_size: slices per forward pass.
        patients: restrict to these patient ids (folder names or stack stems), in this order.
        progress: ``progress(done_patients, total_patients)``.
        cancel: a ``threading.Event`` or zero-argument callable; stops between batches.
        thorough: the segmenter's thorough mode (:func:`brainseg_core.thorough.thorough_mode`: its
            card's ensemble, with the ensemble's thresholds unless ``thresholds`` is given; else
            flip TTA).
        warn: receives each volume's warnings and skipped slices (one line each, naming the file).
        series: for DICOM studies, the series read per sequence (``--flair/--pre/--post``).

    Returns:
        A JSON-ready dict: ``data``, ``device``, ``models``, ``thresholds``, ``classification``
        (or None), ``segmentation``, ``pipeline`` (or None), ``throughput`` and ``patients``
        (one entry per patient with its scores and per-slice values).

    Raises:
        DataError: if a patient cannot be read, has no masks, or a listed id is not found.
        Cancelled: when ``cancel`` is set.
    """
    from brainseg_core.inference.pipeline import Pipeline
    from brainseg_core.io import find_patients, open_volume
    from brainseg_core.thorough import ThoroughMode, thorough_mode

    root = Path(data)
    paths = _select_patients(list(find_patients(root)), patients, root)
    if not paths:
        raise DataError(root, "no patient folders or TIFF stacks found")
    is_cancelled = cancel_checker(cancel)
    mode = thorough_mode(segmenter) if thorough else ThoroughMode((), False)
    pipe = Pipeline(
        classifier,
        segmenter,
        thresholds=thresholds,
        device=device,
        batch_size=batch_size,
        flip_tta=mode.flip_tta,
        ensemble=mode.ensemble,
    )
    # The same pipeline without the gate, sharing the device state (one falling back to the CPU on
    # GPU out-of-memory moves both).
    pipe_all = pipe.replace(segment_all=True)
    per_patient: list[dict[str, Any]] = []
    labels_all: list[np.ndarray] = []
    probs_all: list[np.ndarray] = []
    sd_seg: list[np.ndarray] = []
    sd_e2e: list[np.ndarray] = []
    tumour_all: list[np.ndarray] = []
    time_seg = time_e2e = 0.0
    n_slices = 0
    for k, path in enumerate(paths):
        vol = open_volume(path, choose=series)
        if warn is not None:
            for line in vol.problem_lines():
                warn(line)
        if vol.masks is None:
            raise DataError(path, "no ground-truth masks (_mask.tif for every slice); cannot evaluate")
        gt = vol.masks
        labels: np.ndarray = np.asarray(gt.reshape(len(gt), -1).any(axis=1))
        t0 = time.perf_counter()
        res_seg = pipe_all.analyse(vol, cancel=cancel)
        time_seg += time.perf_counter() - t0
        pred = np.stack([s.mask for s in res_seg.slices])
        slice_d = per_slice_dice(pred, gt)
        entry: dict[str, Any] = {
            "patient_id": vol.patient_id,
            "source": str(vol.source),
            "slices": vol.n_slices,
            "tumour_slices": int(labels.sum()),
            "tumour_voxels": int(gt.sum()),
            "segment_all": {
                "dice": dice(pred, gt),
                "iou": iou(pred, gt),
                "predicted_voxels": int(pred.sum()),
                "dice_tumour_slices": float(slice_d[labels].mean()) if labels.any() else None,
                "slice_dice": [round(float(v), 5) for v in slice_d],
            },
            "labels": [int(v) for v in labels],
        }
        sd_seg.append(slice_d)
        tumour_all.append(labels)
        if classifier is not None:
            t0 = time.perf_counter()
            res = pipe.analyse(vol, cancel=cancel)
            time_e2e += time.perf_counter() - t0
            # what the gate compared with its threshold (its own probability or a neighbour's)
            probs = np.array([s.gate_score for s in res.slices], dtype=np.float64)
            pred_e2e = np.stack([s.mask for s in res.slices])
            segmented = np.array([s.segmented for s in res.slices])
            slice_e = per_slice_dice(pred_e2e, gt)
            entry["tumour_probability"] = [round(float(s.tumour_probability), 5) for s in res.slices]
            entry["gate_score"] = [round(float(v), 5) for v in probs]
            entry["pipeline"] = {
                "dice": dice(pred_e2e, gt),
                "iou": iou(pred_e2e, gt),
                "predicted_voxels": int(pred_e2e.sum()),
                "dice_tumour_slices": float(slice_e[labels].mean()) if labels.any() else None,
                "segmented_slices": int(segmented.sum()),
                "missed_tumour_slices": int(np.sum(labels & ~segmented)),
                "slice_dice": [round(float(v), 5) for v in slice_e],
            }
            labels_all.append(labels)
            probs_all.append(probs)
            sd_e2e.append(slice_e)
        n_slices += vol.n_slices
        per_patient.append(entry)
        if progress is not None:
            progress(k + 1, len(paths))
        if is_cancelled():
            raise Cancelled("evaluation cancelled")

    def card_info(bundle: ModelBundle | None) -> dict[str, Any] | None:
        return None if bundle is None else {**bundle.card.ref.to_json(), "path": str(bundle.path)}

    used = pipe.thresholds.to_json()
    if classifier is None:
        used["tumour_probability"] = None

    out: dict[str, Any] = {
        "data": str(root),
        "device": str(pipe.device),
        "models": {
            "classifier": card_info(classifier),
            "segmenter": card_info(segmenter),
            **({ENSEMBLE_KEY: [card_info(m) for m in mode.ensemble]} if mode.ensemble else {}),
        },
        "flip_tta": mode.flip_tta,
        "thresholds": used,
        "n_patients": len(per_patient),
        "n_slices": n_slices,
        "classification": None,
        "segmentation": _segmentation_summary(per_patient, "segment_all", sd_seg, tumour_all),
        "pipeline": None,
        "throughput": {
            "segment_all_slices_per_s": n_slices / time_seg if time_seg > 0 else None,
            "pipeline_slices_per_s": n_slices / time_e2e if classifier is not None and time_e2e > 0 else None,
        },
        "patients": per_patient,
    }
    if classifier is not None:
        y = np.concatenate(labels_all)
        s = np.concatenate(probs_all)
        out["classification"] = classification_metrics(y, s, threshold=pipe.thresholds.gate)
        summary = _segmentation_summary(per_patient, "pipeline", sd_e2e, tumour_all)
        summary["missed_tumour_slices"] = int(sum(p["pipeline"]["missed_tumour_slices"] for p in per_patient))
        summary["segmented_slices"] = int(sum(p["pipeline"]["segmented_slices"] for p in per_patient))
        out["pipeline"] = summary
    return json_safe(out)


def _f(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f} %" if pct else f"{v:.4f}"


def format_report(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`evaluate`'s result (what ``brainseg-eval`` prints)."""
    lines = [
        f"BrainSeg evaluation of {result['n_patients']} patients ({result['n_slices']} slices) "
        f"from {result['data']} on {result['device']}",
    ]
    models = result["models"]
    for kind in ("classifier", "segmenter"):
        m = models.get(kind)
        lines.append(f"  {kind:10s}: {m['name']} ({m['path']})" if m else f"  {kind:10s}: none")
    for m in models.get(ENSEMBLE_KEY, []):
        lines.append(f"  {'+ averaged':10s}: {m['name']} ({m['path']})")
    if result.get("flip_tta"):
        lines.append("  flip test-time augmentation")
    th = result["thresholds"]
    lines.append(
        f"  thresholds: tumour_probability {th['tumour_probability']}, mask_probability "
        f"{th['mask_probability']}, min_area_px {th['min_area_px']}"
        + (f", {region_rule(th.get('region_rule', 'largest')).describe()}" if th["largest_component"] else "")
        + (f", faint edges >= {th['edge_probability']:g}" if th.get("edge_probability") else "")
    )
    c = result.get("classification")
    if c:
        lines += [
            "",
            f"Classification (slice level, classifier alone; {c['n']} slices, {c['positives']} with tumour, "
            f"tumour when probability >= {c['threshold']:.4g})",
            f"  accuracy           {_f(c['accuracy'], True)}",
            f"  balanced accuracy  {_f(c['balanced_accuracy'], True)}",
            f"  recall (tumour)    {_f(c['recall'], True)}",
            f"  specificity        {_f(c['specificity'], True)}",
            f"  precision          {_f(c['precision'], True)}",
            f"  F1 weighted        {_f(c['f1_weighted'], True)}",
            f"  F1 macro           {_f(c['f1_macro'], True)}",
            f"  ROC AUC            {_f(c['roc_auc'])}",
            f"  confusion          TP {c['confusion']['tp']}  FP {c['confusion']['fp']}  "
            f"TN {c['confusion']['tn']}  FN {c['confusion']['fn']}",
        ]

    def seg_block(title: str, s: dict[str, Any]) -> list[str]:
        d, j = s["dice_patient"], s["iou_patient"]
        return [
            "",
            title,
            f"  Dice per patient volume   mean {_f(d['mean'])}  median {_f(d['median'])}  min {_f(d['min'])}",
            f"  IoU per patient volume    mean {_f(j['mean'])}  median {_f(j['median'])}  min {_f(j['min'])}",
            f"  Dice over tumour slices   {_f(s['dice_tumour_slices'])}  (mean per-slice Dice on the "
            f"{s['tumour_slices']} slices with ground-truth tumour)",
            f"  Dice over all slices      {_f(s['dice_all_slices'])}  (every slice, empty prediction on an "
            "empty slice = 1; inflated by easy empty slices, for comparison only)",
        ]

    lines += seg_block(
        "Segmentation (segmenter on every slice; 3-D Dice/IoU per patient)", result["segmentation"]
    )
    p = result.get("pipeline")
    if p:
        lines += seg_block("End-to-end pipeline (classifier gate, then segmenter)", p)
        lines.append(
            f"  gate: {p['segmented_slices']} slices segmented; {p['missed_tumour_slices']} of "
            f"{p['tumour_slices']} tumour slices missed by the classifier"
        )
    t = result["throughput"]
    lines += ["", f"Throughput on {result['device']} (preprocessing included, file reading excluded)"]
    if t["segment_all_slices_per_s"]:
        lines.append(f"  segmenter on every slice  {t['segment_all_slices_per_s']:.1f} slices/s")
    if t.get("pipeline_slices_per_s"):
        lines.append(f"  end-to-end pipeline       {t['pipeline_slices_per_s']:.1f} slices/s")
    lines += ["", "Per patient (3-D Dice: segment-all / pipeline):"]
    for e in result["patients"]:
        pipe = e.get("pipeline")
        lines.append(
            f"  {e['patient_id']:28s} {e['slices']:3d} slices {e['tumour_slices']:3d} tumour  "
            f"Dice {_f(e['segment_all']['dice'])}"
            + (f" / {_f(pipe['dice'])}  missed {pipe['missed_tumour_slices']}" if pipe else "")
        )
    return "\n".join(lines)
