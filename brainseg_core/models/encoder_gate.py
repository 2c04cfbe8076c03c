"""A slice classifier on a trained ResUNet's encoder: the gate that costs half a segmenter.

``resunet_gate`` is the ResUNet's stem and encoder (the same modules, so the same weight names
``stem.*`` and ``encoder.*``) followed by a small head that scores every cell of the bottleneck's
grid (16 x 16 cells of 16 x 16 pixels for ResUNet-16 at 256 px): ``Conv 3x3 -> ReLU -> Conv 1x1``,
one tumour logit per cell. A slice's logit is its largest cell's. The head learns *where* the
tumour is, from the ground-truth masks pooled to the grid (:meth:`ResUNetGate.cell_targets`), so
a small lesion is one positive cell among negatives instead of a faint trace in a slice-wide
average: held-out slice AUC per fold 0.961-0.990 (0.976 pooled) on the shipped recipe's fold
segmenters, where a global average-and-maximum pooling head trained on slice labels reached
0.898-0.970 on older ones (README, "The shipped gate").

The encoder belongs to a segmenter and stays frozen: it is built without gradients and stays in
evaluation mode (BatchNorm statistics unchanged) when the module is put in training mode, so
training learns the head only and the encoder's weights remain exactly the segmenter's. That is
what lets the inference pipeline run the encoder once per slice and the decoder only on the
slices the gate passes (:meth:`ResUNet.decode <brainseg_core.models.resunet.ResUNet.decode>`):
for ResUNet-16 at 256 px the encoder is 1.70 of the segmenter's 3.72 GFLOP per slice, the head
0.08. Training starts from a segmenter bundle (``brainseg-train classifier DATA --arch
resunet_gate --init-from SEGMENTER``); the card names that segmenter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from brainseg_core.models.resunet import ResUNet, encoder_features

__all__ = ["ENCODER_PREFIXES", "ResUNetGate", "resunet_gate"]

#: Weight-name prefixes the gate shares with its segmenter.
ENCODER_PREFIXES = ("stem.", "encoder.")
#: Channels of the head's hidden layer.
HEAD_CHANNELS = 64


class ResUNetGate(nn.Module):
    """A ResUNet's frozen encoder with a per-cell head: one tumour logit per slice, its largest cell's.

    Args:
        base_filters: the segmenter's ``base_filters``.
        depth: the segmenter's ``depth``.
        in_channels: input channels.

    Raises:
        ValueError: if an argument is not a positive integer.
    """

    def __init__(self, *, base_filters: int = 16, depth: int = 4, in_channels: int = 3) -> None:
        super().__init__()
        unet = ResUNet(base_filters=base_filters, depth=depth, in_channels=in_channels)
        self.in_channels = in_channels
        self.depth = depth
        self.stem = unet.stem
        self.encoder = unet.encoder
        for p in (*self.stem.parameters(), *self.encoder.parameters()):
            p.requires_grad_(False)
        self.head = nn.Sequential(
            nn.Conv2d(base_filters * 2**depth, HEAD_CHANNELS, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(HEAD_CHANNELS, 1, 1),
        )

    @property
    def cell(self) -> int:
        """Side in pixels of one cell of the bottleneck's grid (``2 ** depth``)."""
        return int(2**self.depth)

    def cell_targets(self, masks: torch.Tensor) -> torch.Tensor:
        """What the head learns: whether each grid cell of a mask holds tumour.

        Args:
            masks: ``(N, 1, H, W)`` ground truth (0/1), H and W divisible by :attr:`cell`.

        Returns:
            ``(N, 1, H / cell, W / cell)`` float 0/1 targets.
        """
        return F.max_pool2d(masks.float(), self.cell)

    def train(self, mode: bool = True) -> ResUNetGate:
        """Training mode for the head; the frozen encoder always stays in evaluation mode."""
        super().train(mode)
        self.stem.eval()
        self.encoder.eval()
        return self

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps, exactly as the segmenter's :meth:`ResUNet.encode`."""
        return encoder_features(self.stem, self.encoder, x)

    def classify(self, bottleneck: torch.Tensor, *, cells: bool = False) -> torch.Tensor:
        """Tumour logits from the bottleneck feature map ``(N, C, h, w)``.

        Args:
            bottleneck: the encoder's last feature map.
            cells: return every cell's logit instead of each slice's largest.

        Returns:
            ``(N, 1)`` slice logits, or ``(N, 1, h, w)`` cell logits with ``cells``.
        """
        logits = self.head(bottleneck)
        return logits if cells else logits.amax(dim=(2, 3))

    def forward(self, x: torch.Tensor, *, cells: bool = False) -> torch.Tensor:
        """Classify a batch of slices.

        Args:
            x: ``(N, in_channels, H, W)``, H and W divisible by ``2 ** depth``.
            cells: return every grid cell's logit (what training compares with
                :meth:`cell_targets`) instead of each slice's.

        Returns:
            ``(N, 1)`` logits, or ``(N, 1, H / 2**depth, W / 2**depth)`` with ``cells``.

        Raises:
            ValueError: if the input has the wrong rank, channel count or size.
        """
        m = 2**self.depth
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % m or x.shape[3] % m:
            raise ValueError(
                f"resunet_gate expects (N, {self.in_channels}, H, W) input with H and W divisible by {m}, "
                f"got shape {tuple(x.shape)}"
            )
        return self.classify(self.encode(x)[-1], cells=cells)


def resunet_gate(
    *, base_filters: int = 16, depth: int = 4, in_channels: int = 3, weights: str | None = None
) -> ResUNetGate:
    """Build a gate for a ResUNet of this shape (load the segmenter's encoder weights into it).

    Args:
        base_filters: the segmenter's stem channels.
        depth: the segmenter's number of poolings.
        in_channels: input channels.
        weights: accepted so every classifier builder takes it; must be None (the encoder's
            weights come from a segmenter bundle, never from ImageNet).

    Returns:
        A :class:`ResUNetGate` with a random encoder and head.

    Raises:
        ValueError: if ``weights`` is given or an argument is not a positive integer.
    """
    if weights is not None:
        raise ValueError("resunet_gate takes its encoder from a segmenter bundle (--init-from), not ImageNet")
    return ResUNetGate(base_filters=base_filters, depth=depth, in_channels=in_channels)
