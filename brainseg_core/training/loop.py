"""The trainer behind ``brainseg-train``: one function, :func:`train`, for both model kinds.

How it works (see :mod:`brainseg_core.training.data` for the data side):

- Every patient is read once, normalised per volume (``preprocess_volume``) and kept as one float16
  tensor on the training device; batches are gathered by index and augmented there.
- Split by patient (``val_patients``: a fraction drawn with ``seed``, or explicit ids); the
  validation ids are written to ``OUT/val_patients.txt`` and into the card.
- Segmenter: trained on every slice, with a share ``tumour_fraction`` (default 0.7) of each
  epoch's draws taken from tumour slices and the rest from tumour-free ones, so it learns to
  leave empty slices empty as well as to outline tumours. Classifier: natural frequencies and a
  class-balanced loss (label = the slice's mask is not empty).
- AdamW (weight decay 1e-4, none on norms and biases), linear warm-up over ``min(1 epoch, 5 %)`` of
  the steps then cosine decay to 1 % of ``lr``, gradient norm clipped at 1.0, bf16 autocast and
  channels-last on CUDA. With a time budget the schedule's length is re-planned after every epoch
  from the measured speed, so the learning rate reaches its floor when the budget runs out.
- An epoch is ``len(training slices)`` draws. After each epoch the model is validated on the
  validation patients: segmenter, mean per-patient 3-D Dice of the 0.5-thresholded masks (the
  selection metric), its median, IoU, and mean Dice over tumour slices; classifier, ROC AUC (the
  selection metric), balanced accuracy, recall, ... at the chosen threshold. The best epoch's
  weights are kept; training stops after ``epochs``, after ``patience`` epochs without
  improvement, or when the time budget is used up (the current epoch is cut short and validated).
- Thresholds written into the card, chosen on the validation patients with the best weights:
  classifier ``tumour_probability`` = the highest threshold keeping tumour-slice recall >= 0.97
  (0.5 when the validation patients hold no tumour slice); segmenter ``mask_probability`` 0.5 and
  ``min_area_px`` = the candidate of :data:`MIN_AREA_CANDIDATES` with the best mean per-patient
  Dice after removing smaller connected components exactly as the inference pipeline does (ties
  go to the smaller value).
- Files in ``out``: the bundle ``NAME.safetensors`` + ``NAME.json`` (so ``out`` itself is a bundle
  folder), ``metrics.jsonl`` (one JSON object per epoch), ``learning_curves.png``,
  ``val_patients.txt``, and ``checkpoint/`` with ``last.*`` (weights + optimiser state as
  safetensors, counters and settings as JSON; what ``resume`` continues from) and ``best.*``.
- Reproducible: the model is initialised from ``seed``, and every epoch's sampling and
  augmentation come from generators seeded by ``(seed, epoch)``, so a resumed run continues with
  the same draws, and the same seed and data give the same split and the same first-batch loss
  (on one device; GPU kernels may still differ in the last bits).
- Distributed (``torchrun``): one process per device; DistributedDataParallel (NCCL on CUDA, Gloo
  on the CPU); each rank trains on a disjoint shard of every epoch's draws (``batch_size`` is per
  process); rank 0 validates, decides when to stop, and writes every file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brainseg_core.atomic import atomic_write
from brainseg_core.crossval import OUT_OF_FOLD_FILE
from brainseg_core.errors import Cancelled
from brainseg_core.jsonsafe import json_safe
from brainseg_core.metrics import classification_metrics, per_patient_dice, per_patient_iou, summarize
from brainseg_core.training.data import (
    AUGMENTATION,
    SliceSet,
    augment,
    crop_batch,
    epoch_indices,
    find_labelled_patients,
    fold_patients,
    load_slices,
    read_patient_list,
    split_patients,
)
from brainseg_core.training.losses import CLASSIFIER_LOSSES, SEGMENTER_LOSSES, build_loss

KINDS = ("segmenter", "classifier")
SEGMENTER_ARCHS = ("resunet",)
CLASSIFIER_ARCHS = ("resnet18", "resnet34", "resnet50", "vgg16", "plain_cnn")
#: Recall on tumour slices the classifier threshold must keep on the validation patients.
TARGET_RECALL = 0.97
#: ``min_area_px`` values tried on the validation patients (pixels at the training image size).
MIN_AREA_CANDIDATES = (0, 10, 20, 40, 80, 160)
WEIGHT_DECAY = 1e-4
GRAD_CLIP = 1.0
FINAL_LR_FRACTION = 0.01
CHECKPOINT_DIR = "checkpoint"

#: Settings that define a run; ``resume`` takes them from the checkpoint, never from the caller.
_FROZEN_ON_RESUME = (
    "kind",
    "arch",
    "width",
    "depth",
    "batch_size",
    "lr",
    "image_size",
    "val_patients",
    "seed",
    "loss",
    "tumour_fraction",
    "pretrained",
    "name",
    "crop",
    "folds",
    "fold",
    "init_from",
    "keep",
    "val_every",
)
KEEP_CHOICES = ("best", "last")


@dataclass
class TrainConfig:
    """Settings of one training run (``brainseg-train`` options).

    Attributes:
        kind: ``"segmenter"`` or ``"classifier"``.
        data: dataset root (LGG layout, masks for every slice).
        out: output folder.
        arch: architecture (default ``resunet`` for a segmenter, ``resnet18`` for a classifier).
        width: ResUNet ``base_filters`` or plain CNN ``width`` (None: the builder's default).
        depth: ResUNet depth (None: the builder's default).
        epochs: most epochs to run.
        batch_size: slices per step (per process when distributed).
        lr: peak learning rate.
        image_size: training (and model input) size.
        val_patients: validation fraction, or a text file listing validation patient ids.
        seed: seed of the split, initialisation, sampling and augmentation.
        loss: loss name (default ``bce_dice`` / ``bce``).
        tumour_fraction: share of tumour slices among each epoch's draws; None for natural
            frequencies; ``"default"`` picks 0.7 for a segmenter and None for a classifier.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: autocast precision (``auto`` = bf16 on CUDA, fp32 on the CPU).
        patience: stop after this many epochs without improvement (0: never).
        pretrained: start a torchvision classifier from ImageNet weights (from the local cache).
        time_budget_min: stop cleanly when this many minutes of wall time are used.
        resume: continue from ``out/checkpoint/last.*``.
        name: bundle name (default ``brainseg-<kind>-<arch>-<date>``).
        install: copy the finished bundle into the user's model folder (refused when its
            validation metric is missing or below the active model's, unless ``force_install``).
        force_install: install even then.
        min_area_candidates: ``min_area_px`` values tried for a segmenter.
        crop: train a segmenter on random ``crop`` x ``crop`` patches of the slices
            (tumour-centred in tumour slices, :func:`~brainseg_core.training.data.crop_batch`);
            None trains on whole slices. Validation and inference always use whole slices.
        folds: K of a K-fold cross-validation by patient; with ``fold`` it replaces
            ``val_patients`` (:func:`~brainseg_core.training.data.fold_patients`).
        fold: the held-out fold, 0 <= fold < folds.
        init_from: a model bundle (card or folder) whose weights start this run; the schedule,
            optimiser and epoch count start fresh (unlike ``resume``).
        keep: ``"best"`` keeps the weights of the validation epoch with the best selection metric;
            ``"last"`` keeps the final weights, so the validation patients never select anything
            and their scores are honest held-out estimates (use it for cross-validation).
        val_every: validate every this many epochs (and always after the last one).
    """

    kind: str
    data: Path
    out: Path
    arch: str | None = None
    width: int | None = None
    depth: int | None = None
    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    image_size: int = 256
    val_patients: float | str = 0.2
    seed: int = 0
    loss: str | None = None
    tumour_fraction: float | str | None = "default"
    device: str = "auto"
    precision: str = "auto"
    patience: int = 15
    pretrained: bool = False
    time_budget_min: float | None = None
    resume: bool = False
    name: str | None = None
    install: bool = False
    force_install: bool = False
    min_area_candidates: tuple[int, ...] = MIN_AREA_CANDIDATES
    crop: int | None = None
    folds: int | None = None
    fold: int | None = None
    init_from: str | None = None
    keep: str = "best"
    val_every: int = 1

    def resolved(self) -> TrainConfig:
        """A copy with defaults filled in and every value checked.

        Raises:
            ValueError: naming the invalid setting and its valid values.
        """
        c = TrainConfig(**asdict(self))
        c.data, c.out = Path(c.data), Path(c.out)
        if c.kind not in KINDS:
            raise ValueError(f"kind must be 'segmenter' or 'classifier', got {c.kind!r}")
        seg = c.kind == "segmenter"
        c.arch = c.arch or ("resunet" if seg else "resnet18")
        valid_archs = SEGMENTER_ARCHS if seg else CLASSIFIER_ARCHS
        if c.arch not in valid_archs:
            raise ValueError(f"--arch {c.arch} cannot be a {c.kind}; choose one of {', '.join(valid_archs)}")
        c.loss = c.loss or ("bce_dice" if seg else "bce")
        valid_losses = SEGMENTER_LOSSES if seg else CLASSIFIER_LOSSES
        if c.loss not in valid_losses:
            raise ValueError(
                f"--loss {c.loss} is not a {c.kind} loss; choose one of {', '.join(valid_losses)}"
            )
        if c.tumour_fraction == "default":
            c.tumour_fraction = 0.7 if seg else None
        if c.tumour_fraction is not None and not 0.0 < float(c.tumour_fraction) < 1.0:
            raise ValueError(
                f"--tumour-fraction must be between 0 and 1 (exclusive), got {c.tumour_fraction}"
            )
        if c.width is not None and c.arch not in ("resunet", "plain_cnn"):
            raise ValueError(f"--width applies to resunet and plain_cnn only, not {c.arch}")
        if c.depth is not None and c.arch != "resunet":
            raise ValueError(f"--depth applies to resunet only, not {c.arch}")
        if c.pretrained and c.arch in ("resunet", "plain_cnn"):
            raise ValueError(f"--pretrained needs a torchvision architecture, not {c.arch}")
        for key, lo in (("epochs", 1), ("batch_size", 1), ("image_size", 16), ("patience", 0)):
            if int(getattr(c, key)) < lo:
                raise ValueError(f"--{key.replace('_', '-')} must be >= {lo}, got {getattr(c, key)}")
        if c.image_size % 2**4 and seg:
            raise ValueError(f"--image-size must be a multiple of 16 for the ResUNet, got {c.image_size}")
        if not c.lr > 0:
            raise ValueError(f"--lr must be > 0, got {c.lr}")
        if c.time_budget_min is not None and not c.time_budget_min > 0:
            raise ValueError(f"--time-budget must be > 0 minutes, got {c.time_budget_min}")
        if isinstance(c.val_patients, str):
            try:
                c.val_patients = float(c.val_patients)
            except ValueError:
                c.val_patients = str(Path(c.val_patients).resolve())
        if c.val_patients == 0.0 and c.folds is None:
            # no validation: train on every patient and keep the last weights (the recipe's
            # honest estimate then comes from a cross-validation with the same settings)
            c.keep = "last"
        if c.crop is not None:
            if not seg:
                raise ValueError("--crop applies to a segmenter only (a classifier sees whole slices)")
            if c.crop % 2**4 or not 16 <= c.crop <= c.image_size:
                raise ValueError(
                    f"--crop must be a multiple of 16 from 16 to --image-size ({c.image_size}), got {c.crop}"
                )
        if (c.folds is None) != (c.fold is None):
            raise ValueError("--folds and --fold go together (e.g. --folds 5 --fold 0)")
        if c.folds is not None and c.fold is not None and not 0 <= c.fold < c.folds:
            raise ValueError(f"--fold must be between 0 and {c.folds - 1}, got {c.fold}")
        if c.keep not in KEEP_CHOICES:
            raise ValueError(f"--keep must be one of {', '.join(KEEP_CHOICES)}, got {c.keep!r}")
        if c.val_every < 1:
            raise ValueError(f"--val-every must be >= 1, got {c.val_every}")
        if c.init_from is not None:
            c.init_from = str(Path(c.init_from).resolve())
        if c.name is None:
            c.name = f"brainseg-{c.kind}-{c.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
        c.min_area_candidates = tuple(sorted({int(a) for a in c.min_area_candidates}))
        return c

    def arch_args(self) -> dict[str, Any]:
        """Builder arguments written into the card (``pretrained`` is not one of them)."""
        args: dict[str, Any] = {}
        if self.arch == "resunet":
            if self.width is not None:
                args["base_filters"] = int(self.width)
            if self.depth is not None:
                args["depth"] = int(self.depth)
        elif self.arch == "plain_cnn" and self.width is not None:
            args["width"] = int(self.width)
        return args


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        card_path: the bundle's card (None on ranks other than 0).
        best_epoch: epoch whose weights were kept.
        epochs_run: epochs completed (in total, over resumes).
        metrics: validation metrics of the saved model (thresholds applied).
        thresholds: the card's thresholds.
        stop_reason: why training ended.
        history: the per-epoch log records.
    """

    card_path: Path | None
    best_epoch: int
    epochs_run: int
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    stop_reason: str
    history: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# small helpers


def _write_json(path: Path, data: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(json_safe(data), indent=2) + "\n", encoding="utf-8")


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    import safetensors.torch

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_write(path) as tmp:
        safetensors.torch.save_file(flat, str(tmp))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    import safetensors.torch

    return safetensors.torch.load_file(str(path))


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _seed_for(seed: int, epoch: int, salt: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + salt) % (2**63 - 1)


def _is_cancelled(cancel: threading.Event | Callable[[], bool] | None) -> bool:
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())


def lr_at(step: int, *, peak: float, total: int, warmup: int) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up, then cosine to ``FINAL_LR_FRACTION``.

    Args:
        step: optimiser step about to be taken.
        peak: peak learning rate.
        total: planned number of steps.
        warmup: warm-up steps.

    Returns:
        The learning rate.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    p = min(1.0, (step - warmup) / span)
    return peak * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * p)))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return str(device)


# ----------------------------------------------------------------------------------------------
# optimiser state as safetensors + JSON (never pickle)


def _optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{pid}.{key}"] = val
            else:
                scalars.setdefault(str(pid), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_files(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = val
    for pid, sc in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ----------------------------------------------------------------------------------------------
# validation


@torch.no_grad()
def _predict(
    model: nn.Module, images: torch.Tensor, *, batch_size: int, amp: torch.dtype | None
) -> torch.Tensor:
    """Logits of every slice of ``images`` (float32, on the images' device)."""
    from brainseg_core.inference.device import autocast

    model.eval()
    outs = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].float().contiguous(memory_format=torch.channels_last)
        with autocast(images.device, amp):
            outs.append(model(x).float())
    return torch.cat(outs) if outs else images.new_zeros((0, 1))


def _segmentation_scores(
    inter: np.ndarray, parea: np.ndarray, garea: np.ndarray, patient: np.ndarray, n_patients: int
) -> dict[str, Any]:
    """Segmentation metrics from per-slice intersection / predicted / true areas (pixels)."""
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


def _validate(
    model: nn.Module,
    val: SliceSet,
    loss_fn: nn.Module,
    cfg: TrainConfig,
    amp: torch.dtype | None,
    *,
    min_area_px: int = 0,
    logits: torch.Tensor | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validation metrics of ``model`` (or of precomputed ``logits``) and their thresholds."""
    if logits is None:
        logits = _predict(model, val.images, batch_size=max(1, 2 * cfg.batch_size), amp=amp)
    if cfg.kind == "segmenter":
        target = val.masks.float()
        loss = float(
            sum(
                loss_fn(logits[i : i + 64], target[i : i + 64]).item() * min(64, len(val) - i)
                for i in range(0, len(val), 64)
            )
            / max(1, len(val))
        )
        pred = logits > 0  # probability > 0.5, as the pipeline's ">= 0.5" up to a tie at exactly 0.5
        if min_area_px > 1:
            from brainseg_core.inference.pipeline import remove_small_components

            pred_np = pred[:, 0].cpu().numpy()
            pred = torch.from_numpy(np.stack([remove_small_components(m, min_area_px) for m in pred_np])).to(
                logits.device
            )[:, None]
        t = val.masks.bool()
        inter = (pred & t).flatten(1).sum(1).cpu().numpy().astype(np.float64)
        parea = pred.flatten(1).sum(1).cpu().numpy().astype(np.float64)
        garea = t.flatten(1).sum(1).cpu().numpy().astype(np.float64)
        scores = _segmentation_scores(inter, parea, garea, val.patient.cpu().numpy(), len(val.patient_ids))
        scores["val_loss"] = loss
        scores["per_patient_dice"] = dict(zip(val.patient_ids, scores["per_patient_dice"], strict=True))
        return scores, {"mask_probability": 0.5, "min_area_px": int(min_area_px)}
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


def _selection_value(kind: str, metrics: dict[str, Any]) -> float:
    key = "dice_patient_mean" if kind == "segmenter" else "roc_auc"
    v = metrics.get(key)
    if v is None or not math.isfinite(float(v)):
        v = metrics.get("balanced_accuracy", -math.inf) if kind == "classifier" else -math.inf
    return float(v)


def _choose_min_area(
    model: nn.Module,
    val: SliceSet,
    loss_fn: nn.Module,
    cfg: TrainConfig,
    amp: torch.dtype | None,
    logits: torch.Tensor,
) -> tuple[dict[str, Any], dict[str, Any], dict[int, float]]:
    best: tuple[float, dict[str, Any], dict[str, Any]] | None = None
    tried: dict[int, float] = {}
    for area in cfg.min_area_candidates:
        metrics, thr = _validate(model, val, loss_fn, cfg, amp, min_area_px=area, logits=logits)
        tried[area] = metrics["dice_patient_mean"]
        if best is None or metrics["dice_patient_mean"] > best[0] + 1e-9:
            best = (metrics["dice_patient_mean"], metrics, thr)
    assert best is not None
    return best[1], best[2], tried


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
        logits = _predict(model, val.images, batch_size=batch_size, amp=amp)
    plain = torch.sigmoid(logits)
    mirrored = torch.sigmoid(_predict(model, val.images.flip(-1), batch_size=batch_size, amp=amp)).flip(-1)

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


def _init_from_bundle(model: nn.Module, path: Path, cfg: TrainConfig) -> None:
    """Load a bundle's weights into ``model`` after checking it is the same architecture.

    Raises:
        ValueError: if the bundle is another kind, architecture or shape.
    """
    from brainseg_core.bundle import load_bundle

    bundle = load_bundle(path)
    card = bundle.card
    if card.kind != cfg.kind or card.arch != cfg.arch:
        raise ValueError(
            f"{path}: --init-from needs a {cfg.kind} of architecture {cfg.arch}, but the bundle is a "
            f"{card.kind} of architecture {card.arch}"
        )
    theirs = bundle.model.state_dict()
    ours = model.state_dict()
    bad = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape]
    if bad or len(theirs) != len(ours):
        raise ValueError(
            f"{path}: --init-from weights do not fit this model ({len(bad)} tensors differ, e.g. "
            f"{bad[:1]}); pass the same --width/--depth as the bundle ({card.arch_args})"
        )
    model.load_state_dict({k: v.float() for k, v in theirs.items()})


# ----------------------------------------------------------------------------------------------
# reporting


def summary_table(history: list[dict[str, Any]], kind: str) -> str:
    """A plain-text table of the per-epoch log (one row per epoch)."""
    key = "dice_patient_mean" if kind == "segmenter" else "roc_auc"
    head = (
        f"{'epoch':>5} {'steps':>7} {'lr':>9} {'train loss':>10} {'val loss':>9} {key:>17} "
        f"{'slices/s':>9} {'time s':>7}"
    )
    rows = [head, "-" * len(head)]
    for r in history:
        v = r["val"].get(key)
        rows.append(
            f"{r['epoch']:>5} {r['step']:>7} {r['lr']:>9.2e} {r['train_loss']:>10.4f} "
            f"{r['val'].get('val_loss', float('nan')):>9.4f} {(v if v is not None else float('nan')):>17.4f} "
            f"{r['slices_per_s']:>9.1f} {r['elapsed_s']:>7.0f}" + ("  *" if r.get("best") else "")
        )
    return "\n".join(rows)


def plot_curves(history: list[dict[str, Any]], kind: str, path: Path) -> Path:
    """Draw the learning curves (losses and the validation metric per epoch) as a PNG with Pillow.

    Args:
        history: per-epoch records (``metrics.jsonl``).
        kind: model kind (selects the metric).
        path: PNG to write.

    Returns:
        ``path``.
    """
    from PIL import Image, ImageDraw, ImageFont

    key = "dice_patient_mean" if kind == "segmenter" else "roc_auc"
    epochs = [r["epoch"] for r in history]
    series_l = {
        "train loss": [r["train_loss"] for r in history],
        "val loss": [r["val"].get("val_loss") for r in history],
    }
    series_m = {f"val {key}": [r["val"].get(key) for r in history]}
    w, h, pad = 900, 360, 50
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]

    def panel(x0: int, title: str, series: dict[str, list], fixed: tuple[float, float] | None) -> None:
        x1, y0, y1 = x0 + w // 2 - pad - 10, pad, h - pad
        vals = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
        lo, hi = fixed if fixed else ((min(vals), max(vals)) if vals else (0.0, 1.0))
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        e0, e1 = (min(epochs), max(epochs)) if epochs else (0, 1)
        e1 = e1 if e1 > e0 else e0 + 1
        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((x0, 15), title, fill="black", font=font)
        for frac in (0.0, 0.5, 1.0):
            yv = lo + frac * (hi - lo)
            y = y1 - frac * (y1 - y0)
            draw.line([x0 - 4, y, x0, y], fill="black")
            draw.text((x0 - 45, y - 6), f"{yv:.3g}", fill="black", font=font)
        for ev in (e0, e1):
            x = x0 + (ev - e0) / (e1 - e0) * (x1 - x0)
            draw.text((x - 5, y1 + 6), str(ev), fill="black", font=font)
        draw.text(((x0 + x1) // 2 - 15, y1 + 20), "epoch", fill="black", font=font)
        for i, (label, ys) in enumerate(series.items()):
            pts = [
                (x0 + (e - e0) / (e1 - e0) * (x1 - x0), y1 - (v - lo) / (hi - lo) * (y1 - y0))
                for e, v in zip(epochs, ys, strict=True)
                if v is not None and math.isfinite(v)
            ]
            colour = colours[i % len(colours)]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
            for x, y in pts if len(pts) <= 1 else []:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
            draw.text((x1 - 120, y0 + 8 + 14 * i), label, fill=colour, font=font)

    panel(pad + 10, "loss", series_l, None)
    panel(w // 2 + pad, f"validation {key}", series_m, (0.0, 1.0))
    with atomic_write(path) as tmp:
        img.save(tmp, format="PNG")
    return path


# ----------------------------------------------------------------------------------------------
# the trainer


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    from brainseg_core.inference.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist_info = _Dist(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", dist_info.local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            backend = "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
    return dist_info, device


def _broadcast(values: list[float], dist_info: _Dist, device: torch.device) -> list[float]:
    if dist_info.world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def _mean_across(value: torch.Tensor, dist_info: _Dist) -> torch.Tensor:
    if dist_info.world == 1:
        return value
    import torch.distributed as dist

    v = value.clone()
    dist.all_reduce(v)
    return v / dist_info.world


def train(
    config: TrainConfig,
    *,
    log: Callable[[str], None] = print,
    progress: bool = True,
    cancel: threading.Event | Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a classifier or a segmenter and write its bundle (see the module docstring).

    Args:
        config: the run's settings.
        log: receives one line per event (data loaded, epoch summary, ...).
        progress: show tqdm bars (rank 0 only).
        cancel: a ``threading.Event`` or zero-argument callable; when set, training stops between
            steps with :class:`~brainseg_core.errors.Cancelled` (the last epoch's checkpoint
            stays, ``resume`` continues from it).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: for invalid settings, or ``out`` holding a checkpoint without ``resume``.
        DataError: for unusable data.
        Cancelled: when ``cancel`` is set.
    """
    from tqdm import tqdm

    from brainseg_core.inference.device import autocast, resolve_precision
    from brainseg_core.models import build_model

    t_start = time.perf_counter()
    cfg = config.resolved()
    ckdir = cfg.out / CHECKPOINT_DIR
    state: dict[str, Any] | None = None
    if cfg.resume:
        last = ckdir / "last.json"
        if not last.is_file():
            raise ValueError(f"{last}: no checkpoint to resume from; start without --resume")
        state = json.loads(last.read_text(encoding="utf-8"))
        saved = state["config"]
        for key in _FROZEN_ON_RESUME:
            setattr(cfg, key, saved[key])
        cfg.min_area_candidates = tuple(saved.get("min_area_candidates", cfg.min_area_candidates))
    elif (ckdir / "last.json").exists():
        raise ValueError(
            f"{cfg.out} already holds a training checkpoint; pass --resume to continue it, or choose "
            "another --out folder"
        )

    dist_info, device = _setup_distributed(cfg.device)
    amp = resolve_precision(cfg.precision, device)
    seg = cfg.kind == "segmenter"
    say = log if dist_info.main else (lambda _msg: None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---------------------------------------------------------------- data
    patients = find_labelled_patients(cfg.data)
    say(f"reading {len(patients)} patients from {cfg.data} at {cfg.image_size}x{cfg.image_size} ...")
    bar = tqdm(total=len(patients), desc="loading", unit="patient", disable=not (progress and dist_info.main))
    data = load_slices(
        patients,
        size=cfg.image_size,
        workers=min(8, os.cpu_count() or 1),
        progress=lambda done, total: bar.update(1),
        warn=say,
    )
    bar.close()
    if state is not None:
        val_spec: float | list[str] = state["val_patients"]
    elif cfg.folds is not None and cfg.fold is not None:
        val_spec = fold_patients(data.patient_ids, folds=cfg.folds, fold=cfg.fold, seed=cfg.seed)
    elif isinstance(cfg.val_patients, float):
        val_spec = cfg.val_patients
    else:
        val_spec = read_patient_list(Path(cfg.val_patients))
    if val_spec == 0.0:
        train_ids, val_ids = sorted(data.patient_ids), []
    else:
        train_ids, val_ids = split_patients(data.patient_ids, val_spec, seed=cfg.seed)
    has_val = bool(val_ids)
    train_set = data.subset(train_ids).to(device)
    val_set = data.subset(val_ids).to(device)
    del data
    if len(train_set) == 0 or (has_val and len(val_set) == 0):
        raise ValueError("the split left no slice on one side; use more patients")
    t_loaded = time.perf_counter()
    say(
        f"{len(train_ids)} training patients ({len(train_set)} slices, {train_set.n_tumour} with tumour), "
        f"{len(val_ids)} validation patients ({len(val_set)} slices, {val_set.n_tumour} with tumour); "
        f"loaded in {t_loaded - t_start:.1f} s; device {_device_name(device)}"
    )
    if dist_info.main:
        cfg.out.mkdir(parents=True, exist_ok=True)
        ckdir.mkdir(parents=True, exist_ok=True)
        with atomic_write(cfg.out / "val_patients.txt") as tmp:
            tmp.write_text("\n".join(val_ids) + "\n", encoding="utf-8")

    # ---------------------------------------------------------------- model, loss, optimiser
    torch.manual_seed(cfg.seed)
    arch_args = cfg.arch_args()
    model = build_model(cfg.arch, **arch_args, **({"pretrained": True} if cfg.pretrained else {}))
    if cfg.init_from is not None and state is None:
        _init_from_bundle(model, Path(cfg.init_from), cfg)
        say(f"initialised from {cfg.init_from}")
    model = model.to(device, memory_format=torch.channels_last)
    tf = cfg.tumour_fraction
    pos_frac = float(tf) if tf is not None else train_set.n_tumour / len(train_set)
    loss_fn = build_loss(cfg.loss, kind=cfg.kind, positive_fraction=pos_frac if not seg else 0.5).to(device)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        fused=device.type == "cuda",
    )
    epoch_len = len(train_set)
    shard_len = epoch_len // dist_info.world
    if shard_len < 1:
        raise ValueError(f"{epoch_len} training slices cannot be shared by {dist_info.world} processes")
    bs = min(cfg.batch_size, shard_len)
    spe = shard_len // bs
    max_steps = cfg.epochs * spe
    history: list[dict[str, Any]] = []
    epoch = step = 0
    best_value, best_epoch, since_best = -math.inf, 0, 0
    best_metrics: dict[str, Any] = {}
    best_thresholds: dict[str, Any] = {}
    total_steps = max_steps
    warmup = max(1, min(spe, round(0.05 * max_steps)))
    train_time = 0.0
    slices_seen = 0
    if state is not None:
        tensors = _load_tensors(ckdir / "last.safetensors")
        _unwrap(model).load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        _optimizer_from_files(opt, {k: v.to(device) for k, v in tensors.items()}, state["optimizer"])
        epoch, step = int(state["epoch"]), int(state["step"])
        best_value = float(state["best_value"]) if state["best_value"] is not None else -math.inf
        best_epoch, since_best = int(state["best_epoch"]), int(state["since_best"])
        best_metrics, best_thresholds = state["best_metrics"], state["best_thresholds"]
        warmup = int(state["warmup"])
        train_time, slices_seen = float(state["train_time_s"]), int(state["slices_seen"])
        total_steps = max_steps
        log_path = cfg.out / "metrics.jsonl"
        if log_path.is_file():
            for line in log_path.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line) if line.strip() else None
                if rec and rec["epoch"] <= epoch:
                    history.append(rec)
        say(f"resuming after epoch {epoch} (step {step}); best so far epoch {best_epoch}")
    net: nn.Module = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    budget_s = cfg.time_budget_min * 60 if cfg.time_budget_min else None
    reserve_s = 0.0  # time kept for the final validation and writing, measured as we go
    stop_reason = "epochs"
    if epoch >= cfg.epochs:
        stop_reason = "epochs (already reached)"
    labels_cpu = train_set.labels.cpu()
    run_train_time = 0.0
    run_steps = 0
    last_val_s = 0.0

    def over_budget() -> bool:
        return budget_s is not None and time.perf_counter() - t_start > budget_s - reserve_s

    while epoch < cfg.epochs and step < total_steps:
        epoch += 1
        torch.manual_seed(_seed_for(cfg.seed, epoch, 1))
        gen = torch.Generator().manual_seed(_seed_for(cfg.seed, epoch, 2))
        idx = epoch_indices(labels_cpu, length=epoch_len, tumour_fraction=tf, generator=gen)
        shard = idx[dist_info.rank :: dist_info.world][:shard_len].to(device)
        aug_gen = torch.Generator(device=device).manual_seed(_seed_for(cfg.seed, epoch, 3 + dist_info.rank))
        net.train()
        loss_sum = torch.zeros((), device=device)
        n_steps = 0
        first_loss = float("nan")
        pbar = tqdm(
            total=spe,
            desc=f"epoch {epoch}/{cfg.epochs}",
            unit="batch",
            leave=False,
            disable=not (progress and dist_info.main),
            dynamic_ncols=True,
        )
        t_epoch = time.perf_counter()
        for i in range(spe):
            if step >= total_steps:
                break
            if _is_cancelled(cancel):
                pbar.close()
                raise Cancelled("training cancelled; resume continues from the last completed epoch")
            if dist_info.world == 1 and n_steps > 0 and over_budget():
                stop_reason = "time budget"
                break
            b = shard[i * bs : (i + 1) * bs]
            x, m = augment(train_set.images[b], train_set.masks[b] if seg else None, aug_gen)
            if cfg.crop is not None and m is not None:
                x, m = crop_batch(x, m, cfg.crop, aug_gen)
            x = x.contiguous(memory_format=torch.channels_last)
            target = m if seg else train_set.labels[b][:, None]
            lr = lr_at(step, peak=cfg.lr, total=total_steps, warmup=warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast(device, amp):
                logits = net(x)
            loss = loss_fn(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            step += 1
            n_steps += 1
            loss_sum += loss.detach()
            if n_steps == 1:
                first_loss = float(loss.item())
            pbar.update(1)
            if n_steps % 10 == 0 or n_steps == spe:
                rate = n_steps * bs * dist_info.world / max(1e-9, time.perf_counter() - t_epoch)
                pbar.set_postfix(loss=f"{(loss_sum / n_steps).item():.4f}", slices_s=f"{rate:.0f}")
        pbar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_train_s = time.perf_counter() - t_epoch
        train_loss = float(_mean_across(loss_sum / max(1, n_steps), dist_info).item())
        epoch_slices = n_steps * bs * dist_info.world
        train_time += epoch_train_s
        slices_seen += epoch_slices
        run_train_time += epoch_train_s
        run_steps += n_steps

        # ------------------------------------------------------------ validate, checkpoint, plan
        stop = 0.0
        if dist_info.main:
            last_epoch = (
                epoch >= cfg.epochs or step >= total_steps or stop_reason == "time budget" or over_budget()
            )
            validated = has_val and (last_epoch or epoch % cfg.val_every == 0)
            metrics, thresholds, val_s, improved = {}, {}, 0.0, False
            if validated:
                t_val = time.perf_counter()
                metrics, thresholds = _validate(model, val_set, loss_fn, cfg, amp)
                val_s = time.perf_counter() - t_val
                last_val_s = val_s
                value = _selection_value(cfg.kind, metrics)
                improved = cfg.keep == "last" or value > best_value + 1e-6
                if improved:
                    best_value, best_epoch, since_best = value, epoch, 0
                    best_metrics, best_thresholds = metrics, thresholds
                    _save_tensors(ckdir / "best.safetensors", _unwrap(model).state_dict())
                    _write_json(
                        ckdir / "best.json", {"epoch": epoch, "metrics": metrics, "thresholds": thresholds}
                    )
                else:
                    since_best += 1
            record = {
                "epoch": epoch,
                "step": step,
                "lr": lr_at(max(0, step - 1), peak=cfg.lr, total=total_steps, warmup=warmup),
                "train_loss": train_loss,
                "first_batch_loss": first_loss,
                "val": {k: v for k, v in metrics.items() if k != "per_patient_dice"},
                "best": improved,
                "train_time_s": epoch_train_s,
                "val_time_s": val_s,
                "slices_per_s": epoch_slices / max(1e-9, epoch_train_s),
                "elapsed_s": time.perf_counter() - t_start,
            }
            history.append(json_safe(record))
            opt_tensors, opt_meta = _optimizer_to_files(opt)
            model_tensors = {f"model.{k}": v for k, v in _unwrap(model).state_dict().items()}
            _save_tensors(ckdir / "last.safetensors", {**model_tensors, **opt_tensors})
            _write_json(
                ckdir / "last.json",
                {
                    "epoch": epoch,
                    "step": step,
                    "best_value": best_value if math.isfinite(best_value) else None,
                    "best_epoch": best_epoch,
                    "since_best": since_best,
                    "best_metrics": best_metrics,
                    "best_thresholds": best_thresholds,
                    "warmup": warmup,
                    "train_time_s": train_time,
                    "slices_seen": slices_seen,
                    "val_patients": val_ids,
                    "config": asdict(cfg),
                    "optimizer": opt_meta,
                },
            )
            with atomic_write(cfg.out / "metrics.jsonl") as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")
            key = "dice_patient_mean" if seg else "roc_auc"
            mv = metrics.get(key)
            val_text = (
                f", val loss {metrics['val_loss']:.4f}, {key} {mv if mv is None else round(float(mv), 4)}"
                f"{' (best)' if improved and cfg.keep == 'best' else ''}"
                if validated
                else ""
            )
            say(
                f"epoch {epoch}: train loss {train_loss:.4f}{val_text}, "
                f"{record['slices_per_s']:.0f} slices/s, {record['elapsed_s']:.0f} s"
            )
            # the final validation, threshold choice and out-of-fold predictions take ~4 passes
            reserve_s = 4 * last_val_s + 5.0
            if stop_reason == "time budget" or over_budget():
                stop, stop_reason = 1.0, "time budget"
            elif cfg.patience and since_best >= cfg.patience:
                stop, stop_reason = 1.0, f"no improvement for {cfg.patience} epochs"
            elif budget_s is not None and run_steps > 0:
                per_step = (run_train_time / run_steps) + last_val_s / max(1, n_steps * cfg.val_every)
                left = budget_s - reserve_s - (time.perf_counter() - t_start)
                affordable = step + max(0, int(left / per_step))
                total_steps = min(max_steps, affordable)
                if step >= total_steps:
                    stop, stop_reason = 1.0, "time budget"
        stop, total_f = _broadcast([stop, float(total_steps)], dist_info, device)
        total_steps = int(total_f)
        if stop:
            break
        if step >= total_steps and epoch < cfg.epochs:
            stop_reason = "time budget"
    wall_training = time.perf_counter() - t_start

    # ---------------------------------------------------------------- final model and bundle
    card_path: Path | None = None
    final_metrics: dict[str, Any] = dict(best_metrics)
    thresholds: dict[str, Any] = dict(best_thresholds)
    if dist_info.main:
        if cfg.keep == "last":
            best_epoch = epoch
        elif (ckdir / "best.safetensors").is_file():
            _unwrap(model).load_state_dict(_load_tensors(ckdir / "best.safetensors"))
        if not has_val:
            final_metrics = {}
            thresholds = {"mask_probability": 0.5, "min_area_px": 0} if seg else {"tumour_probability": 0.5}
        elif seg:
            # one pass over the held-out slices serves the minimum-area choice and the saved file
            logits = _predict(model, val_set.images, batch_size=max(1, 2 * cfg.batch_size), amp=amp)
            final_metrics, thresholds, tried = _choose_min_area(model, val_set, loss_fn, cfg, amp, logits)
            final_metrics["min_area_dice_by_candidate"] = {str(k): v for k, v in tried.items()}
            save_out_of_fold(
                model,
                val_set,
                cfg.out / OUT_OF_FOLD_FILE,
                batch_size=2 * cfg.batch_size,
                amp=amp,
                logits=logits,
            )
        else:
            final_metrics, thresholds = _validate(model, val_set, loss_fn, cfg, amp)
        final_metrics["epoch"] = best_epoch
        training = {
            "data": str(cfg.data.resolve()),
            "patients": {"train": len(train_ids), "val": len(val_ids)},
            "slices": {
                "train": len(train_set),
                "train_tumour": train_set.n_tumour,
                "val": len(val_set),
                "val_tumour": val_set.n_tumour,
            },
            "split": {
                "by": "patient",
                "val_patients": val_ids,
                "rule": (
                    f"fraction {val_spec} of the sorted ids shuffled with numpy default_rng(seed)"
                    if isinstance(val_spec, float)
                    else "explicit list"
                ),
            },
            "seed": cfg.seed,
            "epochs_run": epoch,
            "epochs_max": cfg.epochs,
            "best_epoch": best_epoch,
            "stop_reason": stop_reason,
            "steps": step,
            "loss": cfg.loss,
            "sampling": (
                f"{tf:.2f} of each epoch's draws from tumour slices"
                if tf is not None
                else "natural frequencies, class-balanced loss"
            ),
            "augmentation": AUGMENTATION.card(),
            "optimiser": {
                "name": "AdamW",
                "weight_decay": WEIGHT_DECAY,
                "schedule": f"linear warm-up {warmup} steps, cosine to {FINAL_LR_FRACTION} x lr",
                "grad_clip_norm": GRAD_CLIP,
            },
            "lr": cfg.lr,
            "batch_size": bs,
            "processes": dist_info.world,
            "image_size": cfg.image_size,
            "crop": cfg.crop,
            "folds": {"k": cfg.folds, "fold": cfg.fold, "seed": cfg.seed} if cfg.folds else None,
            "init_from": cfg.init_from,
            "kept_weights": "last epoch" if cfg.keep == "last" else "best validation epoch",
            "val_every": cfg.val_every,
            "pretrained": cfg.pretrained,
            "precision": str(amp).replace("torch.", "") if amp else "fp32",
            "device": _device_name(device),
            "wall_time_s": round(wall_training, 1),
            "load_time_s": round(t_loaded - t_start, 1),
            "train_time_s": round(train_time, 1),
            "slices_per_s": round(slices_seen / max(1e-9, train_time), 1),
            "selection_metric": "dice_patient_mean" if seg else "roc_auc",
            "threshold_rule": (
                "mask_probability 0.5; min_area_px: candidate with the best mean per-patient Dice on the "
                "validation patients (ties: smaller)"
                if seg
                else f"highest tumour_probability keeping validation tumour-slice recall >= {TARGET_RECALL}"
            ),
        }
        from brainseg_core.bundle import save_bundle

        metrics_card = {k: v for k, v in final_metrics.items()}
        card_path = save_bundle(
            _unwrap(model),
            cfg.out,
            name=cfg.name,
            kind=cfg.kind,
            arch=cfg.arch,
            arch_args=arch_args,
            input_size=cfg.image_size,
            thresholds=thresholds,
            training=json_safe(training),
            metrics=json_safe(metrics_card),
            notes=(
                "Trained with brainseg-train. Weights derived from the LGG Segmentation Dataset are "
                "CC BY-NC-SA 4.0 (non-commercial)."
            ),
        )
        if history:
            plot_curves(history, cfg.kind, cfg.out / "learning_curves.png")
        say(summary_table(history, cfg.kind))
        say(f"stopped: {stop_reason}; best epoch {best_epoch}; bundle {card_path}")
        if cfg.install:
            from brainseg_core.registry import install_bundle

            # raises InstallRefused (naming the bundle, which stays in ``out``) when it is worse
            installed = install_bundle(card_path, force=cfg.force_install)
            say(f"installed into the user's model folder: {installed}")
    if dist_info.world > 1:
        import torch.distributed as dist

        with contextlib.suppress(Exception):
            dist.barrier()
            dist.destroy_process_group()
    return TrainResult(
        card_path=card_path,
        best_epoch=best_epoch,
        epochs_run=epoch,
        metrics=json_safe(final_metrics),
        thresholds=thresholds,
        stop_reason=stop_reason,
        history=history,
    )
