"""Metrics against values computed by hand on small arrays."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from brainseg_core import metrics as M


def test_hard_overlap_scores() -> None:
    pred = np.array([[1, 1, 0, 0]], bool)
    target = np.array([[1, 0, 1, 0]], bool)
    # TP 1, FP 1, FN 1
    assert M.dice(pred, target) == pytest.approx(2 * 1 / (2 + 2))
    assert M.iou(pred, target) == pytest.approx(1 / 3)


def test_soft_scores_use_probabilities() -> None:
    p = np.array([0.8, 0.2])
    t = np.array([1.0, 1.0])
    # |P . T| 1.0, |P| 1.0, |T| 2
    assert M.dice(p, t) == pytest.approx(2 * 1.0 / 3.0)
    assert M.iou(p, t) == pytest.approx(1.0 / 2.0)


def test_empty_empty_convention() -> None:
    z = np.zeros((2, 3, 3), bool)
    one = z.copy()
    one[0, 1, 1] = True
    assert M.dice(z, z) == 1.0
    assert M.iou(z, z) == 1.0
    assert math.isnan(M.dice(z, z, empty=float("nan")))
    assert M.dice(one, z) == 0.0
    assert M.dice(z, one) == 0.0
    assert M.iou(one, z) == 0.0


def test_per_slice_and_volume_dice_differ_as_expected() -> None:
    pred = np.zeros((3, 2, 2), bool)
    gt = np.zeros((3, 2, 2), bool)
    gt[0] = True  # 4 px, predicted 2 of them
    pred[0, 0] = True
    pred[1, 0, 0] = True  # false positive on an empty slice
    # slice 2: empty / empty
    np.testing.assert_allclose(M.per_slice_dice(pred, gt), [2 * 2 / (2 + 4), 0.0, 1.0])
    assert M.dice(pred, gt) == pytest.approx(2 * 2 / (3 + 4))


def test_per_patient_dice_is_per_volume_with_the_empty_convention() -> None:
    # patient 0: slices 0-1, 4 true px predicted 2 + 1 false positive; patient 1: empty / empty;
    # patient 2: tumour missed; patient 3: no slice at all
    pred = np.zeros((5, 2, 2), bool)
    gt = np.zeros((5, 2, 2), bool)
    gt[0] = True
    pred[0, 0] = True
    pred[1, 0, 0] = True
    gt[4, 1, 1] = True
    patient = np.array([0, 0, 1, 1, 2])
    inter = (pred & gt).reshape(5, -1).sum(1)
    parea, garea = pred.reshape(5, -1).sum(1), gt.reshape(5, -1).sum(1)
    dice = M.per_patient_dice(inter, parea, garea, patient, n_patients=4)
    np.testing.assert_allclose(dice, [M.dice(pred[:2], gt[:2]), 1.0, 0.0, 1.0])
    assert dice[0] == pytest.approx(2 * 2 / (3 + 4))  # one volume, not the mean of its slices
    iou = M.per_patient_iou(inter, parea, garea, patient, n_patients=4)
    np.testing.assert_allclose(iou, [M.iou(pred[:2], gt[:2]), 1.0, 0.0, 1.0])
    nan = M.per_patient_dice(inter, parea, garea, patient, empty=float("nan"))
    assert nan.shape == (3,) and math.isnan(nan[1]) and nan[2] == 0.0
    with pytest.raises(ValueError, match="do not match"):
        M.per_patient_dice(inter[:4], parea, garea, patient)
    with pytest.raises(ValueError, match="does not fit"):
        M.per_patient_dice(inter, parea, garea, patient, n_patients=2)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        M.dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_summarize_ignores_nan() -> None:
    s = M.summarize([0.2, float("nan"), 0.6, 1.0])
    assert s == {"mean": pytest.approx(0.6), "median": 0.6, "min": 0.2, "max": 1.0, "n": 3}
    assert M.summarize([])["n"] == 0


def test_classification_metrics_by_hand() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    # TP 2, FN 1, FP 1, TN 4
    assert M.confusion_counts(y, p) == {"tp": 2, "fp": 1, "tn": 4, "fn": 1}
    assert M.accuracy(y, p) == pytest.approx(6 / 8)
    assert M.recall(y, p) == pytest.approx(2 / 3)
    assert M.precision(y, p) == pytest.approx(2 / 3)
    assert M.balanced_accuracy(y, p) == pytest.approx((2 / 3 + 4 / 5) / 2)
    f1_pos, f1_neg = 4 / 6, 8 / 10
    assert M.f1_score(y, p) == pytest.approx(f1_pos)
    assert M.f1_score(y, p, average="macro") == pytest.approx((f1_pos + f1_neg) / 2)
    assert M.f1_score(y, p, average="weighted") == pytest.approx((3 * f1_pos + 5 * f1_neg) / 8)
    with pytest.raises(ValueError, match="average"):
        M.f1_score(y, p, average="micro")


def test_zero_division_is_zero() -> None:
    y = np.array([0, 0, 0])
    p = np.array([0, 0, 0])
    assert M.precision(y, p) == 0.0
    assert M.recall(y, p) == 0.0
    assert M.balanced_accuracy(y, p) == 1.0  # only the negative class is present


def test_roc_auc_by_hand_with_ties() -> None:
    assert M.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(3 / 4)
    # a tie between a positive and a negative counts one half
    assert M.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert M.roc_auc([0, 1], [0.3, 0.3]) == pytest.approx(0.5)
    assert math.isnan(M.roc_auc([1, 1], [0.2, 0.3]))


def test_roc_auc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    s = rng.integers(0, 6, 60) / 5.0  # many ties
    pairs = [(a, b) for a, b in itertools.product(s[y == 1], s[y == 0])]
    expected = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert M.roc_auc(y, s) == pytest.approx(expected)


def test_classification_metrics_threshold_is_inclusive() -> None:
    out = M.classification_metrics([1, 0, 1, 0], [0.5, 0.49, 0.9, 0.1], threshold=0.5)
    assert out["confusion"] == {"tp": 2, "fp": 0, "tn": 2, "fn": 0}
    assert out["roc_auc"] == 1.0 and out["n"] == 4 and out["positives"] == 2


def test_calibration_by_hand() -> None:
    # two bins: 0.1 said of four slices (one tumour: observed 0.25), 0.9 of two (both tumour)
    y = [0, 0, 0, 1, 1, 1]
    p = [0.1, 0.1, 0.1, 0.1, 0.9, 0.9]
    out = M.calibration(y, p, edges=(0.0, 0.5, 1.0))
    assert out["n"] == 6
    assert [(b["n"], b["mean_probability"], b["observed"]) for b in out["bins"]] == [
        (4, pytest.approx(0.1), 0.25),
        (2, pytest.approx(0.9), 1.0),
    ]
    assert out["ece"] == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.1)
    assert out["brier"] == pytest.approx((3 * 0.01 + 0.81 + 2 * 0.01) / 6)
    # probabilities that match the frequencies score (near) zero; 1.0 falls in the last bin
    rng = np.random.default_rng(0)
    q = rng.uniform(size=20000)
    good = M.calibration(rng.uniform(size=q.size) < q, q)
    assert good["ece"] < 0.02 and good["bins"][-1]["high"] == 1.0
    assert M.calibration([1], [1.0])["bins"][-1]["n"] == 1
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        M.calibration([1], [1.5])
    with pytest.raises(ValueError, match="edges"):
        M.calibration([1], [0.5], edges=(0.2, 1.0))
