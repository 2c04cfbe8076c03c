"""ResUNet: the seed notebook's residual U-Net for per-pixel tumour segmentation.

Layout for the seed configuration (``base_filters=16, depth=4``)::

    stem      two 3x3 conv + BN + ReLU                      16 ch, H
    encoder   maxpool 2x2 -> residual block                 32 ch, H/2
              maxpool 2x2 -> residual block                 64 ch, H/4
              maxpool 2x2 -> residual block                128 ch, H/8
    bottleneck maxpool 2x2 -> residual block               256 ch, H/16
    decoder   upsample 2x -> concat skip -> residual block 128, 64, 32, 16 ch
    head      1x1 conv -> 1 logit per pixel

Residual block (seed): ``1x1 conv -> BN -> ReLU -> 3x3 conv -> BN`` plus a ``1x1 conv -> BN``
shortcut, added, then ReLU.

Upsampling is parameter-free nearest-neighbour 2x (as Keras' ``UpSampling2D`` in the seed); the
residual block that follows does the learned mixing. Convolutions followed by BatchNorm carry no
bias. The module returns logits (no sigmoid): apply ``torch.sigmoid`` for probabilities and use a
logits loss (``BCEWithLogitsLoss``) for training, which is stable under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResUNet", "ResidualBlock", "encoder_features", "resunet"]


def _conv_bn(in_ch: int, out_ch: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(out_ch)]


class ResidualBlock(nn.Module):
    """Seed residual block: ``1x1 conv-BN-ReLU-3x3 conv-BN`` + ``1x1 conv-BN`` shortcut, then ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(in_channels, out_channels, 1),
            nn.ReLU(inplace=True),
            *_conv_bn(out_channels, out_channels, 3),
        )
        self.shortcut = nn.Sequential(*_conv_bn(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResUNet(nn.Module):
    """Residual U-Net returning one logit per pixel.

    Args:
        base_filters: channels of the stem; each of the ``depth`` poolings doubles them.
        depth: number of 2x2 poolings (encoder levels plus the bottleneck). Input height and width
            must be divisible by ``2 ** depth``.
        in_channels: input channels (3: pre-contrast, FLAIR, post-contrast).

    Raises:
        ValueError: if an argument is not a positive integer.
    """

    def __init__(self, *, base_filters: int = 16, depth: int = 4, in_channels: int = 3) -> None:
        super().__init__()
        for name, value in (("base_filters", base_filters), ("depth", depth), ("in_channels", in_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ResUNet: {name} must be a positive integer, got {value!r}")
        self.base_filters = base_filters
        self.depth = depth
        self.in_channels = in_channels
        widths = [base_filters * 2**i for i in range(depth + 1)]
        self.stem = nn.Sequential(
            *_conv_bn(in_channels, base_filters, 3),
            nn.ReLU(inplace=True),
            *_conv_bn(base_filters, base_filters, 3),
            nn.ReLU(inplace=True),
        )
        # encoder[-1] is the bottleneck.
        self.encoder = nn.ModuleList(ResidualBlock(widths[i], widths[i + 1]) for i in range(depth))
        self.decoder = nn.ModuleList(
            ResidualBlock(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(base_filters, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch.

        Args:
            x: ``(N, in_channels, H, W)`` float tensor, H and W divisible by ``2 ** depth``.

        Returns:
            ``(N, 1, H, W)`` logits.

        Raises:
            ValueError: if the input has the wrong rank, channel count or size.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResUNet expects (N, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}"
            )
        m = 2**self.depth
        if x.shape[2] % m or x.shape[3] % m:
            raise ValueError(
                f"ResUNet(depth={self.depth}) needs H and W divisible by {m}, got {x.shape[2]}x{x.shape[3]}; "
                f"resize or pad the input (e.g. to {(-(-x.shape[2] // m)) * m}x{(-(-x.shape[3] // m)) * m})"
            )
        return self.decode(self.encode(x))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder half: the stem's output, each level's and last the bottleneck's.

        Args:
            x: ``(N, in_channels, H, W)`` input (checked by :meth:`forward`, not here).

        Returns:
            ``depth + 1`` feature maps, from ``(N, base_filters, H, W)`` to the bottleneck's
            ``(N, base_filters * 2**depth, H / 2**depth, W / 2**depth)``.
        """
        return encoder_features(self.stem, self.encoder, x)

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The decoder half: per-pixel logits from :meth:`encode`'s feature maps.

        Args:
            features: what :meth:`encode` returned (or a slice of every map along the batch).

        Returns:
            ``(N, 1, H, W)`` logits.
        """
        skips = list(features)
        y = skips.pop()
        for block in self.decoder:
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            y = block(torch.cat([y, skips.pop()], dim=1))
        return self.head(y)


def encoder_features(stem: nn.Module, encoder: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """The ResUNet encoder's feature maps (shared by :class:`ResUNet` and the encoder gate).

    Args:
        stem: the stem.
        encoder: the encoder's residual blocks, the bottleneck last.
        x: ``(N, in_channels, H, W)`` input.

    Returns:
        The stem's output, then each level's, the bottleneck's last.
    """
    skips = [stem(x)]
    for block in encoder:
        skips.append(block(F.max_pool2d(skips[-1], 2)))
    return skips


def resunet(*, base_filters: int = 16, depth: int = 4, in_channels: int = 3) -> ResUNet:
    """Build the seed ResUNet (about 1.2 M parameters with the defaults).

    Args:
        base_filters: stem channels (16 in the seed); doubled at each pooling.
        depth: number of poolings (4 in the seed: 32/64/128 encoder levels and a 256 bottleneck).
        in_channels: input channels.

    Returns:
        A randomly initialised :class:`ResUNet` returning ``(N, 1, H, W)`` logits.

    Raises:
        ValueError: on a non-positive argument.
    """
    return ResUNet(base_filters=base_filters, depth=depth, in_channels=in_channels)
