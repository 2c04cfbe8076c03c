"""Local training checkpoints in ``OUT/checkpoint/``: what ``--resume`` continues from.

- ``last.pt``, written after every epoch: the model's weights, the optimiser's state, the schedule
  (warm-up length), the run's counters (:class:`Progress`), the validation patients and the
  resolved settings. Random state needs no saving: every epoch's generators are seeded from
  ``(seed, epoch)`` (:mod:`brainseg_core.training.epoch`).
- ``best.pt``, written when a validation epoch improves the selection metric: that epoch's weights,
  metrics and thresholds.

Both are ``torch.save`` files of tensors and plain values only, read back with
``torch.load(..., weights_only=True)``, which refuses anything else (no arbitrary unpickling).
They are scratch files of one run on one machine; the model a run ships is the safetensors + JSON
bundle (:mod:`brainseg_core.bundle`), never a checkpoint. Checkpoints of older versions
(``last.json`` + ``last.safetensors``) are recognised and refused with a message saying what to do.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainseg_core.atomic import atomic_write
from brainseg_core.errors import DataError
from brainseg_core.jsonsafe import json_safe

CHECKPOINT_DIR = "checkpoint"
LAST_FILE = "last.pt"
BEST_FILE = "best.pt"
#: Identifies the layout of the dicts in ``last.pt`` / ``best.pt``.
FORMAT = "brainseg-train-checkpoint/2"
#: What an older brainseg-train left (counters as JSON, weights and optimiser as safetensors).
_LEGACY_FILE = "last.json"


@dataclass
class Progress:
    """The counters of a run that a resumed run continues from.

    Attributes:
        epoch: epochs completed.
        step: optimiser steps taken (by each process).
        best_value: best selection-metric value so far (-inf before any validation).
        best_epoch: epoch of ``best_value`` (0: none yet).
        since_best: validations without improvement since then.
        best_metrics: metrics of the best epoch.
        best_thresholds: thresholds of the best epoch.
        train_time_s: time spent in training steps, over every resume.
        slices_seen: training slices drawn, over every resume and process.
    """

    epoch: int = 0
    step: int = 0
    best_value: float = -math.inf
    best_epoch: int = 0
    since_best: int = 0
    best_metrics: dict[str, Any] = field(default_factory=dict)
    best_thresholds: dict[str, Any] = field(default_factory=dict)
    train_time_s: float = 0.0
    slices_seen: int = 0


@dataclass
class Checkpoint:
    """The content of ``last.pt``.

    Attributes:
        progress: the run's counters.
        warmup: warm-up steps of the learning-rate schedule.
        val_patients: the validation patient ids.
        config: the resolved settings as plain values (:meth:`TrainConfig.to_plain`).
        model: the model's state dict (on the CPU).
        optimizer: the optimiser's state dict (on the CPU).
    """

    progress: Progress
    warmup: int
    val_patients: list[str]
    config: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]


def checkpoint_dir(out: Path) -> Path:
    """The checkpoint folder of the run in ``out``."""
    return Path(out) / CHECKPOINT_DIR


def has_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a run's checkpoint (of this version or an older one)."""
    ckdir = checkpoint_dir(out)
    return (ckdir / LAST_FILE).is_file() or (ckdir / _LEGACY_FILE).is_file()


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _save(path: Path, payload: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def save_last(
    out: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    warmup: int,
    val_patients: list[str],
    config: dict[str, Any],
) -> Path:
    """Write ``last.pt`` (atomically) after an epoch.

    Args:
        out: the run's output folder.
        model: the bare model.
        optimizer: its optimiser.
        progress: the counters after the epoch.
        warmup: warm-up steps of the schedule.
        val_patients: the validation patient ids.
        config: the resolved settings as plain values.

    Returns:
        The file's path.
    """
    path = checkpoint_dir(out) / LAST_FILE
    counters = asdict(progress)
    for key in ("best_metrics", "best_thresholds"):  # plain values only (no numpy scalars)
        counters[key] = json_safe(counters[key])
    _save(
        path,
        {
            "format": FORMAT,
            "model": _cpu(model.state_dict()),
            "optimizer": optimizer.state_dict(),
            "progress": counters,
            "schedule": {"warmup": int(warmup)},
            "val_patients": list(val_patients),
            "config": config,
        },
    )
    return path


def _what_to_do(out: Path) -> str:
    return (
        f"start without --resume in a new --out folder, or delete {checkpoint_dir(out)} to train "
        f"{out} from scratch"
    )


def load_last(out: Path) -> Checkpoint:
    """Read the checkpoint ``--resume`` continues from.

    Args:
        out: the run's output folder.

    Returns:
        The :class:`Checkpoint`.

    Raises:
        ValueError: if ``out`` holds no checkpoint.
        DataError: naming the file, if it is from an older version or cannot be read.
    """
    ckdir = checkpoint_dir(out)
    path = ckdir / LAST_FILE
    if not path.is_file():
        legacy = ckdir / _LEGACY_FILE
        if legacy.is_file():
            raise DataError(
                legacy,
                "a checkpoint of an older brainseg-train, which this version cannot resume; "
                + _what_to_do(out),
            )
        raise ValueError(f"{path}: no checkpoint to resume from; start without --resume")
    payload = _load(path, out)
    try:
        p = payload["progress"]
        return Checkpoint(
            progress=Progress(
                epoch=int(p["epoch"]),
                step=int(p["step"]),
                best_value=float(p["best_value"]),
                best_epoch=int(p["best_epoch"]),
                since_best=int(p["since_best"]),
                best_metrics=dict(p["best_metrics"]),
                best_thresholds=dict(p["best_thresholds"]),
                train_time_s=float(p["train_time_s"]),
                slices_seen=int(p["slices_seen"]),
            ),
            warmup=int(payload["schedule"]["warmup"]),
            val_patients=[str(i) for i in payload["val_patients"]],
            config=dict(payload["config"]),
            model=payload["model"],
            optimizer=payload["optimizer"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(path, f"incomplete training checkpoint (missing {exc}); {_what_to_do(out)}") from exc


def _load(path: Path, out: Path) -> dict[str, Any]:
    """A checkpoint file's dict, read with ``weights_only=True``, of this version's format."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise DataError(path, f"cannot read the training checkpoint ({exc}); {_what_to_do(out)}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DataError(
            path,
            f"not a checkpoint of this brainseg-train (format {found!r}, expected {FORMAT!r}); "
            + _what_to_do(out),
        )
    return payload


def save_best(
    out: Path, model: nn.Module, *, epoch: int, metrics: dict[str, Any], thresholds: dict[str, Any]
) -> Path:
    """Write ``best.pt`` (atomically): the weights, metrics and thresholds of an improving epoch.

    Args:
        out: the run's output folder.
        model: the bare model.
        epoch: the epoch.
        metrics: its validation metrics.
        thresholds: its thresholds.

    Returns:
        The file's path.
    """
    path = checkpoint_dir(out) / BEST_FILE
    _save(
        path,
        {
            "format": FORMAT,
            "model": _cpu(model.state_dict()),
            "epoch": int(epoch),
            "metrics": json_safe(metrics),
            "thresholds": json_safe(thresholds),
        },
    )
    return path


def load_best_weights(out: Path) -> dict[str, torch.Tensor] | None:
    """The weights of the best validation epoch, or None if no epoch was saved as best.

    Raises:
        DataError: naming the file, if it cannot be read.
    """
    path = checkpoint_dir(out) / BEST_FILE
    if not path.is_file():
        return None
    return _load(path, out)["model"]
