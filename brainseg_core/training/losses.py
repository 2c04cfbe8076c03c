"""Training losses for the segmenter and the classifier.

All losses take raw logits (no sigmoid in the models) and compute in float32 whatever the autocast
precision. Overlap losses are computed over the whole batch at once ("batch Dice"): one sum over
every pixel of every slice, so an empty slice neither explodes nor vanishes the loss.

Segmenter (``--loss``):

- ``bce_dice`` (default): binary cross-entropy + soft Dice loss ``1 - (2 sum(p t) + s) / (sum p +
  sum t + s)`` with smoothing ``s = 1``; BCE keeps gradients well behaved on empty slices, Dice
  fights the foreground/background imbalance.
- ``dice``: the soft Dice loss alone.
- ``focal_tversky``: the seed's loss ``(1 - TI) ** gamma`` with the Tversky index
  ``TI = (TP + s) / (TP + alpha FN + beta FP + s)``, ``alpha = 0.7`` (false negatives),
  ``beta = 0.3`` (false positives), ``gamma = 0.75``.

Classifier (``--loss``):

- ``bce`` (default): binary cross-entropy with ``pos_weight = negatives / positives`` of the
  training sampling distribution, so both classes weigh the same.
- ``focal``: focal loss ``-alpha_t (1 - p_t) ** gamma log p_t`` with ``gamma = 2`` and ``alpha_t``
  the same class balance weight (positives ``n_neg / n``, negatives ``n_pos / n``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _flat(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.shape != target.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} differs from target {tuple(target.shape)}")
    return logits.float().reshape(-1), target.float().reshape(-1)


class SoftDiceLoss(nn.Module):
    """Batch soft Dice loss on sigmoid probabilities.

    Args:
        smooth: additive smoothing of numerator and denominator.
    """

    def __init__(self, *, smooth: float = 1.0) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = _flat(logits, target)
        p = torch.sigmoid(x)
        return 1.0 - (2.0 * (p * t).sum() + self.smooth) / (p.sum() + t.sum() + self.smooth)


class BCEDiceLoss(nn.Module):
    """Binary cross-entropy plus soft Dice.

    Args:
        bce_weight: weight of the BCE term.
        dice_weight: weight of the Dice term.
        smooth: Dice smoothing.
    """

    def __init__(self, *, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.dice = SoftDiceLoss(smooth=smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = _flat(logits, target)
        bce = F.binary_cross_entropy_with_logits(x, t)
        return self.bce_weight * bce + self.dice_weight * self.dice(x, t)


class FocalTverskyLoss(nn.Module):
    """Focal Tversky loss ``(1 - TI) ** gamma`` (the seed's segmentation loss).

    Args:
        alpha: weight of false negatives.
        beta: weight of false positives.
        gamma: focal exponent (< 1 emphasises hard, low-overlap batches).
        smooth: additive smoothing.

    Raises:
        ValueError: on negative weights or a non-positive gamma.
    """

    def __init__(
        self, *, alpha: float = 0.7, beta: float = 0.3, gamma: float = 0.75, smooth: float = 1.0
    ) -> None:
        super().__init__()
        if alpha < 0 or beta < 0 or gamma <= 0:
            raise ValueError(f"need alpha, beta >= 0 and gamma > 0, got {alpha}, {beta}, {gamma}")
        self.alpha, self.beta, self.gamma, self.smooth = alpha, beta, gamma, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = _flat(logits, target)
        p = torch.sigmoid(x)
        tp = (p * t).sum()
        fn = ((1 - p) * t).sum()
        fp = (p * (1 - t)).sum()
        ti = (tp + self.smooth) / (tp + self.alpha * fn + self.beta * fp + self.smooth)
        return (1.0 - ti).clamp_min(0).pow(self.gamma)


class WeightedBCELoss(nn.Module):
    """BCE with logits and a positive-class weight.

    Args:
        pos_weight: multiplier of the positive examples' loss (``n_neg / n_pos`` balances).
    """

    pos_weight: torch.Tensor  # a buffer (moves with the module)

    def __init__(self, *, pos_weight: float = 1.0) -> None:
        super().__init__()
        if pos_weight <= 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = _flat(logits, target)
        return F.binary_cross_entropy_with_logits(x, t, pos_weight=self.pos_weight)


class FocalLoss(nn.Module):
    """Binary focal loss.

    Args:
        alpha: weight of positives (negatives get ``1 - alpha``).
        gamma: focusing exponent.
    """

    def __init__(self, *, alpha: float = 0.5, gamma: float = 2.0) -> None:
        super().__init__()
        if not 0 < alpha < 1 or gamma < 0:
            raise ValueError(f"need 0 < alpha < 1 and gamma >= 0, got {alpha}, {gamma}")
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, t = _flat(logits, target)
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        p_t = torch.exp(-ce)
        a_t = self.alpha * t + (1 - self.alpha) * (1 - t)
        # scaled by 2 so that alpha = 0.5, gamma = 0 is exactly BCE
        return (2.0 * a_t * (1 - p_t).pow(self.gamma) * ce).mean()


def build_loss(name: str, *, kind: str, positive_fraction: float = 0.5) -> nn.Module:
    """The loss ``name`` for a model ``kind``.

    Args:
        name: one of :data:`~brainseg_core.training.config.SEGMENTER_LOSSES` or
            :data:`~brainseg_core.training.config.CLASSIFIER_LOSSES`.
        kind: ``"segmenter"`` or ``"classifier"``.
        positive_fraction: fraction of tumour slices the classifier sees in training (sets the
            class balance weights).

    Returns:
        The loss module.

    Raises:
        ValueError: for a loss that does not exist for ``kind``.
    """
    if kind == "segmenter":
        losses: dict[str, nn.Module] = {
            "bce_dice": BCEDiceLoss(),
            "dice": SoftDiceLoss(),
            "focal_tversky": FocalTverskyLoss(),
        }
    elif kind == "classifier":
        if not 0 < positive_fraction < 1:
            raise ValueError(
                f"the training set needs both tumour and tumour-free slices (tumour fraction "
                f"{positive_fraction:.3f})"
            )
        losses = {
            "bce": WeightedBCELoss(pos_weight=(1 - positive_fraction) / positive_fraction),
            "focal": FocalLoss(alpha=1 - positive_fraction),
        }
    else:
        raise ValueError(f"kind must be 'segmenter' or 'classifier', got {kind!r}")
    if name not in losses:
        raise ValueError(f"unknown {kind} loss {name!r}; choose one of {', '.join(losses)}")
    return losses[name]
