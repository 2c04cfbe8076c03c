"""Patch training, K-fold splits, keeping the last weights, init-from, no-validation runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from brainseg_core.bundle import load_bundle
from brainseg_core.crossval import load_fold
from brainseg_core.training.config import TrainConfig
from brainseg_core.training.data import crop_batch, fold_patients
from brainseg_core.training.loop import train
from tests.support import tiny_config


def _quiet(cfg: TrainConfig):
    return train(cfg, progress=False, log=lambda m: None)


def test_crop_keeps_a_tumour_pixel_in_tumour_slices() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 64, 64)
    masks = torch.zeros(6, 1, 64, 64)
    masks[0, 0, 2, 60] = 1  # one pixel in a corner: the crop must still hold it
    masks[1, 0, 30:34, 40:44] = 1
    for _ in range(20):
        x, m = crop_batch(images, masks, 16, gen)
        assert x.shape == (6, 3, 16, 16) and m.shape == (6, 1, 16, 16)
        assert m[0].sum() == 1 and m[1].sum() >= 1 and m[2:].sum() == 0
    # the crop is a window of the input, not a resampling
    x, _m = crop_batch(images[2:3], masks[2:3], 16, gen)
    windows = images[2].unfold(1, 16, 1).unfold(2, 16, 1)  # (3, 49, 49, 16, 16)
    assert any(torch.equal(windows[:, i, j], x[0]) for i in range(49) for j in range(49))


def test_crop_no_larger_than_the_slice_is_a_no_op_and_bad_sizes_raise() -> None:
    gen = torch.Generator().manual_seed(0)
    images, masks = torch.randn(2, 3, 32, 32), torch.zeros(2, 1, 32, 32)
    x, m = crop_batch(images, masks, 32, gen)
    assert x is images and m is masks
    with pytest.raises(ValueError, match="positive"):
        crop_batch(images, masks, 0, gen)


def test_folds_partition_the_patients_reproducibly() -> None:
    ids = [f"P{i:02d}" for i in range(23)]
    folds = [fold_patients(ids, folds=5, fold=k, seed=3) for k in range(5)]
    assert sorted(i for f in folds for i in f) == ids
    assert {len(f) for f in folds} <= {4, 5}
    assert folds == [fold_patients(list(reversed(ids)), folds=5, fold=k, seed=3) for k in range(5)]
    assert folds != [fold_patients(ids, folds=5, fold=k, seed=4) for k in range(5)]
    with pytest.raises(ValueError, match="--fold must be between 0 and 4"):
        fold_patients(ids, folds=5, fold=5)
    with pytest.raises(ValueError, match="--folds must be between 2"):
        fold_patients(ids, folds=1, fold=0)


def test_config_rejects_crop_for_a_classifier_and_half_fold_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--crop applies to a segmenter"):
        TrainConfig(kind="classifier", data=tmp_path, out=tmp_path, crop=64).resolved()
    with pytest.raises(ValueError, match="multiple of 16"):
        TrainConfig(kind="segmenter", data=tmp_path, out=tmp_path, crop=100).resolved()
    with pytest.raises(ValueError, match="--folds and --fold go together"):
        TrainConfig(kind="segmenter", data=tmp_path, out=tmp_path, folds=5).resolved()
    with pytest.raises(ValueError, match="--keep"):
        TrainConfig(kind="segmenter", data=tmp_path, out=tmp_path, keep="worst").resolved()


def test_fold_run_on_crops_keeps_last_weights_and_writes_out_of_fold(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fold1"
    res = _quiet(tiny_config(tiny_dataset, out, epochs=3, crop=32, folds=4, fold=1, keep="last", val_every=2))
    card = load_bundle(res.card_path).card
    ids = sorted(p.name for p in tiny_dataset.iterdir())
    assert card.training["split"]["val_patients"] == fold_patients(ids, folds=4, fold=1)
    assert card.training["crop"] == 32 and card.training["folds"] == {"k": 4, "fold": 1, "seed": 0}
    assert card.training["kept_weights"] == "last epoch" and res.best_epoch == 3 == card.metrics["epoch"]
    hist = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [bool(r["val"]) for r in hist] == [False, True, True]  # every 2nd epoch and the last
    fold = load_fold(out / "out_of_fold.npz")
    assert fold.patient_ids == card.training["split"]["val_patients"]
    assert fold.prob.shape == (8, 64, 64) and fold.mask.shape == (8, 64, 64) and fold.mask.any()
    # the stored probabilities are the saved model's own
    bundle = load_bundle(res.card_path)
    from brainseg_core.training.data import load_slices

    val = load_slices([tiny_dataset / fold.patient_ids[0]], size=64)
    with torch.no_grad():
        prob = torch.sigmoid(bundle.model(val.images.float()))[:, 0].numpy()
        mirrored = torch.sigmoid(bundle.model(val.images.float().flip(-1))).flip(-1)[:, 0].numpy()
    assert np.abs(prob * 255 - fold.prob.astype(np.float64)).max() <= 3  # fp16 weights, uint8 storage
    assert np.abs((prob + mirrored) / 2 * 255 - fold.prob_flip).max() <= 3


def test_no_validation_trains_on_every_patient(tiny_dataset: Path, tmp_path: Path) -> None:
    res = _quiet(tiny_config(tiny_dataset, tmp_path / "all", val_patients=0.0, epochs=2))
    card = load_bundle(res.card_path).card
    assert card.training["patients"] == {"train": 4, "val": 0}
    assert card.training["kept_weights"] == "last epoch" and card.metrics == {"epoch": 2}
    assert card.thresholds == {"mask_probability": 0.5, "min_area_px": 0}


def test_init_from_starts_at_the_bundle_weights(tiny_dataset: Path, tmp_path: Path) -> None:
    first = _quiet(tiny_config(tiny_dataset, tmp_path / "a", epochs=2))
    # a learning rate of ~0 leaves the initial weights in place: they must be the bundle's
    second = _quiet(
        tiny_config(tiny_dataset, tmp_path / "b", epochs=1, lr=1e-12, init_from=str(first.card_path))
    )
    a = load_bundle(first.card_path).model.state_dict()
    b = load_bundle(second.card_path).model.state_dict()
    params = [k for k in a if a[k].is_floating_point() and "running" not in k]
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in params)
    fresh = _quiet(tiny_config(tiny_dataset, tmp_path / "c", epochs=1, lr=1e-12, seed=5))
    c = load_bundle(fresh.card_path).model.state_dict()
    assert not all(torch.allclose(a[k], c[k], atol=1e-3) for k in params)
    start = load_bundle(second.card_path).card.training["init_from"]
    first_card = load_bundle(first.card_path).card
    assert start == {
        "path": str(first.card_path.resolve()),
        "name": first_card.name,
        "sha256": first_card.weights_sha256,  # which weights, even after the file is replaced
    }


def test_init_from_refuses_another_shape(tiny_dataset: Path, tmp_path: Path) -> None:
    first = _quiet(tiny_config(tiny_dataset, tmp_path / "a", epochs=1))
    with pytest.raises(ValueError, match="--init-from weights do not fit"):
        _quiet(tiny_config(tiny_dataset, tmp_path / "b", width=8, init_from=str(first.card_path)))
