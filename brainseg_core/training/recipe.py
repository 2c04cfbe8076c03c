"""What the model card records about the run that trained it (its ``training`` section), and the bundle.

The output folder receives the bundle ``NAME.safetensors`` + ``NAME.json``
(:func:`~brainseg_core.bundle.save_bundle`; ``out`` itself is then a bundle folder). The card's
``training`` section is the recipe: data and split, sampling, augmentation, optimiser and schedule,
sizes, device and timings, how the weights were kept and how the thresholds were chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainseg_core.jsonsafe import json_safe
from brainseg_core.training.checkpoint import Progress
from brainseg_core.training.config import Keep, TrainConfig
from brainseg_core.training.data import Split
from brainseg_core.training.learner import GRAD_CLIP, WEIGHT_DECAY
from brainseg_core.training.schedule import StepPlan
from brainseg_core.training.validation import TARGET_RECALL, selection_metric

NOTES = (
    "Trained with brainseg-train. Weights derived from the LGG Segmentation Dataset are "
    "CC BY-NC-SA 4.0 (non-commercial)."
)


@dataclass
class Timings:
    """Wall times of the run (seconds).

    Attributes:
        load_s: reading and normalising the data.
        wall_s: from the start of the run to the end of the last epoch.
    """

    load_s: float
    wall_s: float


def _init_from(path: str | None) -> dict[str, str] | None:
    """The bundle a run started from: its path, name and weights' sha256 (the path alone would
    not say which weights once a shipped bundle is replaced by its successor)."""
    if path is None:
        return None
    from brainseg_core.model_card import read_card, resolve_card_path

    card = read_card(resolve_card_path(path))
    return {"path": str(path), **card.ref.to_json()}


def _targets(cfg: TrainConfig) -> str:
    """What the loss compares the network's output with."""
    if cfg.segmenter:
        return "the ground-truth mask, pixel by pixel"
    if cfg.arch == "resunet_gate":
        return (
            "the ground-truth mask pooled to the bottleneck's grid (a cell is tumour when any of its "
            "pixels is), cell by cell; a slice's probability is its largest cell's"
        )
    return "one label per slice: tumour when its ground-truth mask is not empty"


def _sampling(tumour_fraction: float | None) -> str:
    if tumour_fraction is None:
        return "natural frequencies, class-balanced loss"
    return f"{tumour_fraction:.2f} of each epoch's draws from tumour slices"


def training_summary(
    cfg: TrainConfig,
    *,
    split: Split,
    progress: Progress,
    stop_reason: str,
    plan: StepPlan,
    processes: int,
    amp: torch.dtype | None,
    device: str,
    timings: Timings,
) -> dict[str, Any]:
    """The card's ``training`` section.

    Args:
        cfg: the run's settings.
        split: its patients and slices.
        progress: its final counters (``best_epoch`` = the kept weights' epoch).
        stop_reason: why it ended.
        plan: its step plan.
        processes: number of processes.
        amp: autocast dtype or None.
        device: the device's description.
        timings: wall times.

    Returns:
        The section (JSON-ready after :func:`~brainseg_core.jsonsafe.json_safe`).
    """
    seg = cfg.segmenter
    return {
        "data": str(cfg.data.resolve()),
        "patients": {"train": len(split.train_ids), "val": len(split.val_ids)},
        "slices": {
            "train": len(split.train),
            "train_tumour": split.train.n_tumour,
            "val": len(split.val),
            "val_tumour": split.val.n_tumour,
        },
        "split": {
            "by": "patient",
            "val_patients": split.val_ids,
            "rule": (
                f"fraction {split.val_spec} of the sorted ids shuffled with numpy default_rng(seed)"
                if isinstance(split.val_spec, float)
                else "explicit list"
            ),
        },
        "seed": cfg.seed,
        "epochs_run": progress.epoch,
        "epochs_max": cfg.epochs,
        "best_epoch": progress.best_epoch,
        "stop_reason": stop_reason,
        "steps": progress.step,
        "loss": cfg.loss,
        "targets": _targets(cfg),
        "sampling": _sampling(cfg.tumour_fraction),
        "augmentation": {"intensity_preset": cfg.intensity, **cfg.augmentation.card()},
        "optimiser": {
            "name": "AdamW",
            "weight_decay": WEIGHT_DECAY,
            "schedule": plan.describe(),
            "grad_clip_norm": GRAD_CLIP,
        },
        "lr": cfg.lr,
        "batch_size": plan.batch_size,
        "processes": processes,
        "image_size": cfg.image_size,
        "crop": cfg.crop,
        "folds": {"k": cfg.folds, "fold": cfg.fold, "seed": cfg.seed} if cfg.folds else None,
        "init_from": _init_from(cfg.init_from),
        "encoder_from": _init_from(cfg.encoder_from),
        "kept_weights": "last epoch" if cfg.keep == Keep.LAST else "best validation epoch",
        "val_every": cfg.val_every,
        "pretrained": cfg.pretrained,
        "precision": str(amp).replace("torch.", "") if amp else "fp32",
        "device": device,
        "wall_time_s": round(timings.wall_s, 1),
        "load_time_s": round(timings.load_s, 1),
        "train_time_s": round(progress.train_time_s, 1),
        "slices_per_s": round(progress.slices_seen / max(1e-9, progress.train_time_s), 1),
        "selection_metric": selection_metric(cfg.kind),
        "threshold_rule": (
            "mask_probability 0.5; min_area_px: candidate with the best mean per-patient Dice on the "
            "validation patients (ties: smaller)"
            if seg
            else f"highest tumour_probability keeping validation tumour-slice recall >= {TARGET_RECALL}"
        ),
    }


def write_bundle(
    model: nn.Module,
    cfg: TrainConfig,
    *,
    thresholds: dict[str, Any],
    training: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Write the run's bundle into ``cfg.out`` (safetensors weights + JSON card).

    Args:
        model: the kept model.
        cfg: the run's settings (name, kind, architecture, input size).
        thresholds: the card's thresholds.
        training: the card's ``training`` section (:func:`training_summary`).
        metrics: the kept model's validation metrics.

    Returns:
        The card's path.
    """
    from brainseg_core.bundle import save_bundle

    assert cfg.name is not None and cfg.arch is not None, "write_bundle needs TrainConfig.resolved()"
    return save_bundle(
        model,
        cfg.out,
        name=cfg.name,
        kind=cfg.kind,
        arch=cfg.arch,
        arch_args=cfg.arch_args(),
        input_size=cfg.image_size,
        thresholds=thresholds,
        training=json_safe(training),
        metrics=json_safe(metrics),
        notes=NOTES,
        context_slices=cfg.context,
    )
