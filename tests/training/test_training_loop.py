"""The trainer on a tiny generated dataset: learning, files, resume, reproducibility, budget."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brainseg_core.bundle import load_bundle
from brainseg_core.errors import Cancelled
from brainseg_core.training.config import TrainConfig
from brainseg_core.training.loop import train
from brainseg_core.training.schedule import lr_at
from brainseg_core.training.validation import choose_classifier_threshold
from tests.support import tiny_config


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_segmenter_learns_and_writes_a_loadable_bundle(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    config = tiny_config(tiny_dataset, out, epochs=4, missing_sequence=0.2, intensity="strong")
    res = train(config, progress=False, log=lambda m: None)
    hist = _history(out)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4] and res.epochs_run == 4
    assert hist[-1]["train_loss"] < hist[0]["first_batch_loss"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    bundle = load_bundle(res.card_path)
    card = bundle.card
    assert card.kind == "segmenter" and card.arch == "resunet" and card.input_size == 64
    assert card.arch_args == {"base_filters": 4, "depth": 2}
    assert card.thresholds["mask_probability"] == 0.5 and card.thresholds["min_area_px"] >= 0
    val_ids = (out / "val_patients.txt").read_text().split()
    t = card.training
    assert t["split"]["val_patients"] == val_ids and len(val_ids) == 1
    assert t["patients"] == {"train": 3, "val": 1} and t["epochs_run"] == 4
    assert 1 <= t["best_epoch"] <= 4 and t["seed"] == 0 and t["loss"] == "bce_dice"
    for key in (
        "augmentation",
        "optimiser",
        "lr",
        "batch_size",
        "image_size",
        "device",
        "wall_time_s",
        "slices_per_s",
    ):
        assert key in t
    assert t["augmentation"]["missing_sequence"]["probability"] == 0.2
    assert t["augmentation"]["gamma"] == [0.7, 1.5] and t["augmentation"]["intensity_gain"] == [0.75, 1.25]
    assert t["augmentation"]["intensity_preset"] == "strong"
    assert 0.0 <= card.metrics["dice_patient_mean"] <= 1.0 and card.metrics["epoch"] == t["best_epoch"]
    with Image.open(out / "learning_curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert (out / "checkpoint" / "last.pt").is_file() and (out / "checkpoint" / "best.pt").is_file()


def test_resume_continues_from_the_saved_step(tiny_dataset: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    train(tiny_config(tiny_dataset, full, epochs=3), progress=False, log=lambda m: None)
    part = tmp_path / "part"
    # "kill" the run as soon as the first epoch's checkpoint exists
    with pytest.raises(Cancelled):
        train(
            tiny_config(tiny_dataset, part, epochs=3),
            progress=False,
            log=lambda m: None,
            cancel=lambda: (part / "checkpoint" / "last.pt").exists(),
        )
    state = torch.load(part / "checkpoint" / "last.pt", weights_only=True)["progress"]  # plain data only
    assert state["epoch"] == 1
    with pytest.raises(ValueError, match="--resume"):
        train(tiny_config(tiny_dataset, part, epochs=3), progress=False, log=lambda m: None)
    res = train(tiny_config(tiny_dataset, part, epochs=3, resume=True), progress=False, log=lambda m: None)
    h_full, h_part = _history(full), _history(part)
    assert [r["epoch"] for r in h_part] == [1, 2, 3] and res.epochs_run == 3
    assert h_part[0]["train_loss"] == h_full[0]["train_loss"]
    assert (
        [r["step"] for r in h_part] == [r["step"] for r in h_full] == [state["step"] * k for k in (1, 2, 3)]
    )
    # same draws, same weights and optimiser state: the resumed run matches the uninterrupted one
    for a, b in zip(h_part[1:], h_full[1:], strict=True):
        assert a["first_batch_loss"] == pytest.approx(b["first_batch_loss"], rel=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val"]["val_loss"] == pytest.approx(b["val"]["val_loss"], rel=1e-5)


def test_same_seed_same_split_and_first_loss(tiny_dataset: Path, tmp_path: Path) -> None:
    runs = [
        train(
            tiny_config(tiny_dataset, tmp_path / name, epochs=1, seed=seed),
            progress=False,
            log=lambda m: None,
        )
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]
    first = [_history(tmp_path / n)[0]["first_batch_loss"] for n in ("a", "b", "c")]
    val = [(tmp_path / n / "val_patients.txt").read_text() for n in ("a", "b", "c")]
    assert val[0] == val[1] and first[0] == first[1]
    assert first[2] != first[0]
    assert runs[0].history[0]["train_loss"] == runs[1].history[0]["train_loss"]


def test_classifier_threshold_and_metrics(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cls"
    res = train(
        tiny_config(
            tiny_dataset,
            out,
            kind="classifier",
            arch="plain_cnn",
            width=4,
            depth=None,
            epochs=2,
            tumour_fraction=None,
        ),
        progress=False,
        log=lambda m: None,
    )
    card = load_bundle(res.card_path).card
    thr = card.thresholds["tumour_probability"]
    assert 0.0 <= thr <= 1.0
    m = card.metrics
    assert m["threshold"] == thr and m["recall"] >= 0.97  # the rule the threshold was chosen by
    for key in ("balanced_accuracy", "roc_auc", "f1_macro", "f1_weighted", "precision"):
        assert key in m
    assert card.training["sampling"].startswith("natural")
    assert card.training["targets"].startswith("one label per slice")


def test_time_budget_stops_cleanly(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "budget"
    res = train(
        tiny_config(tiny_dataset, out, epochs=50, time_budget_min=0.001), progress=False, log=lambda m: None
    )
    assert res.stop_reason == "time budget" and res.epochs_run == 1
    assert res.card_path is not None and res.card_path.is_file()
    assert load_bundle(res.card_path).card.training["stop_reason"] == "time budget"


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be a segmenter"):
        TrainConfig(kind="segmenter", data=tmp_path, out=tmp_path, arch="resnet18").resolved()
    with pytest.raises(ValueError, match="not a classifier loss"):
        TrainConfig(kind="classifier", data=tmp_path, out=tmp_path, loss="bce_dice").resolved()
    with pytest.raises(ValueError, match="--depth"):
        TrainConfig(kind="classifier", data=tmp_path, out=tmp_path, depth=3).resolved()
    with pytest.raises(ValueError, match="tumour-fraction"):
        TrainConfig(kind="segmenter", data=tmp_path, out=tmp_path, tumour_fraction=1.5).resolved()
    with pytest.raises(ValueError, match="no checkpoint"):
        train(TrainConfig(kind="segmenter", data=tmp_path, out=tmp_path, resume=True))


def test_threshold_rule_by_hand() -> None:
    labels = np.array([1] * 100 + [0] * 3)
    probs = np.r_[np.linspace(0.99, 0.01, 100), [0.5, 0.4, 0.3]]
    thr = choose_classifier_threshold(labels, probs)
    recall = (probs[:100] >= thr).mean()
    assert recall >= 0.97 and (probs[:100] >= thr + 0.011).mean() < 0.97
    assert thr == pytest.approx(np.sort(probs[:100])[::-1][96], abs=1e-4)
    assert choose_classifier_threshold(np.zeros(3), np.ones(3)) == 0.5


def test_lr_schedule_warms_up_and_decays() -> None:
    lrs = [lr_at(s, peak=1.0, total=100, warmup=10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(0.01, abs=1e-3)


def test_step_progress_counts_every_step(tiny_dataset: Path, tmp_path: Path) -> None:
    """``step_progress(step, total)`` is the core's progress protocol for callers without a terminal."""
    calls: list[tuple[int, int]] = []
    res = train(
        tiny_config(tiny_dataset, tmp_path / "steps", epochs=2, val_patients=0.0),
        progress=False,
        log=lambda m: None,
        step_progress=lambda done, total: calls.append((done, total)),
    )
    assert res.epochs_run == 2
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1))
    assert calls[-1][0] == calls[-1][1]  # the last step reaches the planned total
