"""What a run tells its user: per-epoch records and log lines, the history table and the curves.

Files in the output folder: ``metrics.jsonl`` (one JSON object per epoch, :func:`epoch_record`,
rewritten after every epoch), ``learning_curves.png`` (:func:`plot_curves`) and
``val_patients.txt`` (the validation patient ids, one per line).
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

import torch

from brainseg_core.atomic import atomic_write
from brainseg_core.jsonsafe import json_safe
from brainseg_core.training.validation import selection_metric

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "learning_curves.png"
VAL_PATIENTS_FILE = "val_patients.txt"


def describe_device(device: torch.device) -> str:
    """The device as logs and cards name it, e.g. ``cpu (x86_64, 8 threads)``."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return str(device)


def write_val_patients(out: Path, ids: list[str]) -> Path:
    """Write ``val_patients.txt`` (atomically) and return its path."""
    path = Path(out) / VAL_PATIENTS_FILE
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path


def epoch_record(
    *,
    epoch: int,
    step: int,
    lr: float,
    train_loss: float,
    first_batch_loss: float,
    metrics: dict[str, Any],
    best: bool,
    train_time_s: float,
    val_time_s: float,
    slices: int,
    elapsed_s: float,
) -> dict[str, Any]:
    """One epoch's line of ``metrics.jsonl`` (before :func:`~brainseg_core.jsonsafe.json_safe`).

    Args:
        epoch: the epoch.
        step: the run's step count after it.
        lr: the learning rate of its last step.
        train_loss: its mean training loss.
        first_batch_loss: the loss of its first step.
        metrics: its validation metrics ({} when it was not validated); ``per_patient_dice`` is left
            out.
        best: whether its weights are now the kept ones.
        train_time_s: time spent in its training steps.
        val_time_s: time spent validating it.
        slices: training slices drawn in it (every process).
        elapsed_s: time since the start of the run.

    Returns:
        The record.
    """
    return {
        "epoch": epoch,
        "step": step,
        "lr": lr,
        "train_loss": train_loss,
        "first_batch_loss": first_batch_loss,
        "val": {k: v for k, v in metrics.items() if k != "per_patient_dice"},
        "best": best,
        "train_time_s": train_time_s,
        "val_time_s": val_time_s,
        "slices_per_s": slices / max(1e-9, train_time_s),
        "elapsed_s": elapsed_s,
    }


def epoch_line(record: dict[str, Any], kind: str, *, validated: bool, marked_best: bool) -> str:
    """The log line of one epoch, e.g. ``epoch 3: train loss 0.41, val loss 0.39, ...``.

    Args:
        record: the epoch's :func:`epoch_record`.
        kind: model kind (names the selection metric).
        validated: whether the epoch was validated.
        marked_best: add ``(best)`` after the selection metric.

    Returns:
        The line.
    """
    metrics = record["val"]
    key = selection_metric(kind)
    mv = metrics.get(key)
    val_text = (
        f", val loss {metrics['val_loss']:.4f}, {key} {mv if mv is None else round(float(mv), 4)}"
        f"{' (best)' if marked_best else ''}"
        if validated
        else ""
    )
    return (
        f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}{val_text}, "
        f"{record['slices_per_s']:.0f} slices/s, {record['elapsed_s']:.0f} s"
    )


def write_history(out: Path, history: list[dict[str, Any]]) -> Path:
    """Rewrite ``metrics.jsonl`` (atomically) with the records so far; returns its path."""
    path = Path(out) / METRICS_FILE
    with atomic_write(path) as tmp:
        tmp.write_text("".join(json.dumps(json_safe(r)) + "\n" for r in history), encoding="utf-8")
    return path


def read_history(out: Path, *, up_to_epoch: int) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` up to ``up_to_epoch`` (what a resumed run continues)."""
    path = Path(out) / METRICS_FILE
    if not path.is_file():
        return []
    records = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return [r for r in records if r["epoch"] <= up_to_epoch]


def summary_table(history: list[dict[str, Any]], kind: str) -> str:
    """A plain-text table of the per-epoch log (one row per epoch)."""
    key = selection_metric(kind)
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

    key = selection_metric(kind)
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
