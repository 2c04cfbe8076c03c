"""Training losses: hand-computed values and the class-balance weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from brainseg_core.training.losses import (
    BCEDiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    SoftDiceLoss,
    WeightedBCELoss,
    build_loss,
)

TARGET = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])


def test_focal_tversky_by_hand() -> None:
    logits = torch.zeros_like(TARGET)  # p = 0.5 everywhere: TP 1, FN 1, FP 1
    ti = (1 + 1) / (1 + 0.7 * 1 + 0.3 * 1 + 1)
    assert FocalTverskyLoss()(logits, TARGET).item() == pytest.approx((1 - ti) ** 0.75, rel=1e-6)


def test_soft_dice_by_hand_and_bce_dice_sum() -> None:
    logits = torch.zeros_like(TARGET)
    dice = 1 - (2 * 1.0 + 1) / (2.0 + 2.0 + 1)
    assert SoftDiceLoss()(logits, TARGET).item() == pytest.approx(dice, rel=1e-6)
    bce = F.binary_cross_entropy_with_logits(logits, TARGET).item()
    assert BCEDiceLoss()(logits, TARGET).item() == pytest.approx(bce + dice, rel=1e-6)


def test_perfect_prediction_has_near_zero_overlap_loss() -> None:
    logits = (TARGET * 2 - 1) * 30
    for loss in (SoftDiceLoss(), FocalTverskyLoss(), BCEDiceLoss()):
        assert loss(logits, TARGET).item() < 0.05


def test_classifier_weights_come_from_the_class_balance() -> None:
    bce = build_loss("bce", kind="classifier", positive_fraction=0.25)
    assert isinstance(bce, WeightedBCELoss)
    assert bce.pos_weight.item() == pytest.approx(3.0)
    x, y = torch.tensor([0.3, -0.2]), torch.tensor([1.0, 0.0])
    expected = (3 * F.softplus(-x[0]) + F.softplus(x[1])) / 2
    assert bce(x, y).item() == pytest.approx(expected.item(), rel=1e-6)
    focal = build_loss("focal", kind="classifier", positive_fraction=0.25)
    assert isinstance(focal, FocalLoss) and focal.alpha == pytest.approx(0.75)


def test_focal_without_focusing_is_bce() -> None:
    x, y = torch.randn(16), (torch.rand(16) > 0.5).float()
    assert FocalLoss(alpha=0.5, gamma=0.0)(x, y).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(x, y).item(), rel=1e-5
    )


def test_build_loss_rejects_mismatches() -> None:
    with pytest.raises(ValueError, match="bce_dice"):
        build_loss("bce", kind="segmenter")
    with pytest.raises(ValueError, match="both tumour"):
        build_loss("bce", kind="classifier", positive_fraction=0.0)
    with pytest.raises(ValueError, match="shape"):
        SoftDiceLoss()(torch.zeros(2, 1), torch.zeros(2))


def test_every_loss_name_the_settings_accept_is_built() -> None:
    from brainseg_core.training.config import CLASSIFIER_LOSSES, SEGMENTER_LOSSES

    for name in SEGMENTER_LOSSES:
        assert isinstance(build_loss(name, kind="segmenter"), torch.nn.Module)
    for name in CLASSIFIER_LOSSES:
        assert isinstance(build_loss(name, kind="classifier", positive_fraction=0.3), torch.nn.Module)
    with pytest.raises(ValueError):
        build_loss("focal", kind="segmenter")
