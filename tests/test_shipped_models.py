"""The bundles shipped in resources/models: they verify, and they work on a real fixture patient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainseg_core.bundle import load_bundle
from brainseg_core.inference.pipeline import Pipeline
from brainseg_core.io import open_volume
from brainseg_core.metrics import dice
from brainseg_core.model_card import bundle_summary
from brainseg_core.registry import list_bundles, resolve_models, shipped_models_dir
from brainseg_core.thorough import thorough_mode


@pytest.fixture(scope="module")
def shipped_result(fixture_patient: Path):
    classifier, segmenter = resolve_models()
    volume = open_volume(fixture_patient)
    return volume, Pipeline(classifier, segmenter, device="cpu").analyse(volume)


def test_shipped_bundles_verify_and_are_both_kinds() -> None:
    cards = sorted(shipped_models_dir().glob("*.json"))
    bundles = [load_bundle(card) for card in cards]  # load_bundle checks sha256 and architecture
    assert sorted(i.card.kind for i in list_bundles()) == ["classifier", "segmenter"]
    # the others are the shipped segmenter's thorough ensemble (thorough_mode checks their hashes)
    (segmenter,) = list_bundles("segmenter")
    members = thorough_mode(load_bundle(segmenter.path)).ensemble
    assert len(bundles) == 2 + len(members) and members
    cv = segmenter.card.thorough["cross_validation"]  # the ensemble's metrics: its own folds
    held_out = [p for f in cv["fold_models"] for p in f["held_out_patients"]]
    assert len(held_out) == 2 * len(set(held_out)) == 2 * segmenter.card.thorough["metrics"]["patients"]
    assert set(segmenter.card.thorough["metrics"]["per_patient_dice"]) == set(held_out)
    for b in bundles:
        assert b.card.training["split"]["by"] == "patient"
        cv = b.card.training.get("cross_validation")
        if b.card.ref in {m.card.ref for m in members} and cv is None:  # the trainer's own held-out
            val = b.card.training["split"]["val_patients"]
            assert set(b.card.metrics["per_patient_dice"]) == set(val) and val
        elif cv is not None:  # metrics from out-of-fold predictions of fold models
            held_out = [p for f in cv["fold_models"] for p in f["held_out_patients"]]
            assert len(held_out) == len(set(held_out)) == b.card.metrics["patients"]
            assert set(b.card.metrics["per_patient_dice"]) == set(held_out)
            assert 0.0 < b.card.metrics["dice_patient_mean"] <= 1.0
            # the viewer's model panel shows it (it said "no validation metrics" before): the
            # segmenter's Dice, the gate's own ROC AUC (its Dice is the segmenter's behind it)
            key = "dice_patient_mean" if b.card.kind == "segmenter" else "gate_roc_auc"
            shown = "dice_patient_mean" if b.card.kind == "segmenter" else "roc_auc"
            assert f"{shown} {b.card.metrics[key]:.3f}" in bundle_summary(b.card)
        else:
            assert b.card.metrics["brainseg_eval_validation"]["n_patients"] == len(
                b.card.training["split"]["val_patients"]
            )


def test_largest_ground_truth_tumour_slice_gets_a_matching_mask(shipped_result) -> None:
    volume, result = shipped_result
    i = int(volume.masks.sum(axis=(1, 2)).argmax())
    predicted = result.slices[i].mask
    assert predicted.any()
    assert dice(predicted, volume.masks[i]) > 0.5


def test_first_slice_without_tumour_gets_an_empty_mask(shipped_result) -> None:
    volume, result = shipped_result
    assert not volume.masks[0].any()  # the first slice of the fixture is above the tumour
    assert not result.slices[0].mask.any()
    assert result.slices[0].area_px == 0


def test_patient_volume_dice_on_fixture(shipped_result) -> None:
    volume, result = shipped_result
    predicted = np.stack([s.mask for s in result.slices])
    assert dice(predicted, volume.masks) > 0.7


def test_thorough_mode_outlines_the_fixture_patient(fixture_patient: Path) -> None:
    classifier, segmenter = resolve_models()
    mode = thorough_mode(segmenter)
    volume = open_volume(fixture_patient)
    result = Pipeline(classifier, segmenter, device="cpu", ensemble=mode.ensemble).analyse(volume)
    assert result.ensemble == tuple(m.card.ref for m in mode.ensemble) and result.ensemble
    assert result.thresholds.region_rule.value == segmenter.card.thorough["thresholds"]["region_rule"]
    assert dice(np.stack([s.mask for s in result.slices]), volume.masks) > 0.7
