"""A slice classifier on a trained ResUNet's encoder: the gate that costs half a segmenter.

``resunet_gate`` is the ResUNet's stem and encoder (the same modules, so the same weight names
``stem.*`` and ``encoder.*``) followed by a small head: the bottleneck's global average and
global maximum (the maximum keeps a small lesion from being averaged away), concatenated,
``Dropout(0.3) -> Linear(2 * bottleneck channels, 1)``.

The encoder belongs to a segmenter and stays frozen: it is built without gradients and stays in
evaluation mode (BatchNorm statistics unchanged) when the module is put in training mode, so
training learns the head only and the encoder's weights remain exactly the segmenter's. That is
what lets the inference pipeline run the encoder once per slice and the decoder only on the
slices the gate passes (:meth:`ResUNet.decode <brainseg_core.models.resunet.ResUNet.decode>`):
for ResUNet-16 at 256 px the encoder is 1.70 of the segmenter's 3.72 GFLOP per slice. Training
starts from a segmenter bundle (``brainseg-train classifier DATA --arch resunet_gate
--init-from SEGMENTER``); the card names that segmenter.
"""

from __future__ import annotations

import torch
from torch import nn

from brainseg_core.models.resunet import ResUNet, encoder_features

__all__ = ["ENCODER_PREFIXES", "ResUNetGate", "resunet_gate"]

#: Weight-name prefixes the gate shares with its segmenter.
ENCODER_PREFIXES = ("stem.", "encoder.")
HEAD_DROPOUT = 0.3


class ResUNetGate(nn.Module):
    """A ResUNet's frozen encoder with a global-pooling head: one tumour logit per slice.

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
        self.head = nn.Sequential(nn.Dropout(HEAD_DROPOUT), nn.Linear(2 * base_filters * 2**depth, 1))

    def train(self, mode: bool = True) -> ResUNetGate:
        """Training mode for the head; the frozen encoder always stays in evaluation mode."""
        super().train(mode)
        self.stem.eval()
        self.encoder.eval()
        return self

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps, exactly as the segmenter's :meth:`ResUNet.encode`."""
        return encoder_features(self.stem, self.encoder, x)

    def classify(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """``(N, 1)`` logits from the bottleneck feature map ``(N, C, h, w)``."""
        pooled = torch.cat([bottleneck.mean(dim=(2, 3)), bottleneck.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify a batch of slices.

        Args:
            x: ``(N, in_channels, H, W)``, H and W divisible by ``2 ** depth``.

        Returns:
            ``(N, 1)`` logits.

        Raises:
            ValueError: if the input has the wrong rank, channel count or size.
        """
        m = 2**self.depth
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % m or x.shape[3] % m:
            raise ValueError(
                f"resunet_gate expects (N, {self.in_channels}, H, W) input with H and W divisible by {m}, "
                f"got shape {tuple(x.shape)}"
            )
        return self.classify(self.encode(x)[-1])


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
