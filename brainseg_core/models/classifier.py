"""Slice classifiers: does this slice hold tumour? One logit per slice, shape ``(N, 1)``.

``resnet18``, ``resnet34``, ``resnet50`` and ``vgg16`` are torchvision's backbones (the ResNets built
by :mod:`brainseg_core.models.resnet` in torchvision's exact layout, so that building the default
gate does not import torchvision) with the ImageNet classifier replaced by a light head,
``Dropout(0.3) -> Linear(features, 1)``. The seed notebook used
dense 256-256-128 heads with dropout 0.3; on a single logit that extra capacity only overfits the
small LGG set, so BrainSeg keeps the dropout and drops the hidden layers. For ``vgg16`` the
7x7-pooled 4096-4096 classifier (120 M of its 138 M parameters) is replaced by global average
pooling and the same head, which leaves the 14.7 M-parameter convolutional VGG16.

``pretrained=True`` loads torchvision's ImageNet weights (``ResNet18_Weights.IMAGENET1K_V1`` etc.)
from the torch hub cache (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub``) and never
downloads: BrainSeg runs offline. The checkpoint is read with ``torch.load(weights_only=True)``,
which only rebuilds tensors and cannot run code. With ``in_channels != 3`` the pretrained first
convolution is averaged over RGB and repeated (scaled by ``3 / in_channels``).

``plain_cnn`` is a small plain CNN (four conv-BN-ReLU-maxpool stages) for quick experiments.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from brainseg_core.errors import DataError
from brainseg_core.models.resnet import DEPTHS, ResNet

if TYPE_CHECKING:
    from torchvision.models import (
        ResNet18_Weights,
        ResNet34_Weights,
        ResNet50_Weights,
        VGG16_Weights,
        WeightsEnum,
    )

__all__ = ["plain_cnn", "pretrained_weights_path", "resnet18", "resnet34", "resnet50", "vgg16"]

HEAD_DROPOUT = 0.3


def _check_in_channels(arch: str, in_channels: int) -> None:
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"{arch}: in_channels must be a positive integer, got {in_channels!r}")


def _head(features: int) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(HEAD_DROPOUT), nn.Linear(features, 1))


def pretrained_weights_path(weights: WeightsEnum) -> Path:
    """Where torchvision's hub cache keeps the checkpoint of ``weights``.

    Args:
        weights: a torchvision weights enum member, e.g. ``ResNet18_Weights.IMAGENET1K_V1``.

    Returns:
        ``<torch hub dir>/checkpoints/<file name of weights.url>`` (may not exist).
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]


def _load_pretrained(arch: str, model: nn.Module, weights: WeightsEnum, prefix: str = "") -> None:
    """Load ``weights`` from the hub cache into ``model`` (only the keys under ``prefix``)."""
    path = pretrained_weights_path(weights)
    if not path.is_file():
        raise DataError(
            path,
            f"ImageNet weights for {arch} ({weights}) are not in the torch hub cache and BrainSeg never "
            f"downloads at run time. Download {weights.url} on a connected machine and place it at this "
            "path (or set TORCH_HOME), or train without pretrained weights.",
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if prefix:
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # corrupt file, pickle with code, wrong architecture
        raise DataError(
            path, f"cannot load ImageNet weights for {arch}: {exc}. Delete the file and download it again."
        ) from exc


def _adapt_stem(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs; pretrained RGB filters are averaged."""
    if in_channels == conv.in_channels:
        return conv
    kh, kw = conv.kernel_size[:2]
    sh, sw = conv.stride[:2]
    padding = conv.padding if isinstance(conv.padding, str) else (conv.padding[0], conv.padding[1])
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        (kh, kw),
        stride=(sh, sw),
        padding=padding,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (conv.in_channels / in_channels))
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _weights(enum_name: str, weights: WeightsEnum | str | None) -> WeightsEnum | None:
    """torchvision's weights member for ``weights`` (None stays None: torchvision is not imported)."""
    if weights is None:
        return None
    import torchvision.models

    enum: type[WeightsEnum] = getattr(torchvision.models, enum_name)
    return enum.verify(weights)


def _resnet(arch: str, depth: int, weights: WeightsEnum | str | None, in_channels: int) -> nn.Module:
    _check_in_channels(arch, in_channels)
    chosen = _weights(f"ResNet{depth}_Weights", weights)
    block, layers = DEPTHS[depth]
    model = ResNet(block, layers)
    if chosen is not None:
        _load_pretrained(arch, model, chosen)
    model.conv1 = _adapt_stem(model.conv1, in_channels)
    model.fc = _head(512 * block.expansion)
    return model


def resnet18(*, weights: ResNet18_Weights | str | None = None, in_channels: int = 3) -> nn.Module:
    """ResNet-18 slice classifier with one logit.

    Args:
        weights: ImageNet weights to start from, as in torchvision (``ResNet18_Weights.IMAGENET1K_V1``
            or its name, ``"DEFAULT"``), read from the torch hub cache and never downloaded;
            None: random initialisation.
        in_channels: input channels.

    Returns:
        Module mapping ``(N, in_channels, H, W)`` to ``(N, 1)`` logits.

    Raises:
        DataError: if the ImageNet checkpoint is missing or unreadable.
        ValueError: on a bad ``in_channels`` or an unknown weights name.
    """
    return _resnet("resnet18", 18, weights, in_channels)


def resnet34(*, weights: ResNet34_Weights | str | None = None, in_channels: int = 3) -> nn.Module:
    """ResNet-34 slice classifier with one logit (see :func:`resnet18` for arguments)."""
    return _resnet("resnet34", 34, weights, in_channels)


def resnet50(*, weights: ResNet50_Weights | str | None = None, in_channels: int = 3) -> nn.Module:
    """ResNet-50 slice classifier with one logit (see :func:`resnet18` for arguments)."""
    return _resnet("resnet50", 50, weights, in_channels)


class VGG16Classifier(nn.Module):
    """torchvision's VGG16 ``features``, global average pooling and the one-logit head.

    Built without torchvision's 4096-4096 classifier, which would cost 120 M parameters (and
    seconds of initialisation) only to be thrown away. Takes 3 input channels; :func:`vgg16`
    adapts the first convolution for other counts.
    """

    def __init__(self) -> None:
        from torchvision.models import vgg

        super().__init__()
        self.features = vgg.make_layers(vgg.cfgs["D"])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = _head(512)
        for m in self.features.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16(*, weights: VGG16_Weights | str | None = None, in_channels: int = 3) -> nn.Module:
    """Convolutional VGG16 + global average pooling + one-logit head.

    Args:
        weights: ImageNet weights to start from (``VGG16_Weights.IMAGENET1K_V1`` or its name),
            read from the torch hub cache, never downloaded; only the convolutional ``features``
            are used. None: random initialisation.
        in_channels: input channels.

    Returns:
        Module mapping ``(N, in_channels, H, W)`` (H, W >= 32) to ``(N, 1)`` logits.

    Raises:
        DataError: if the ImageNet checkpoint is missing or unreadable.
        ValueError: on a bad ``in_channels`` or an unknown weights name.
    """
    _check_in_channels("vgg16", in_channels)
    model = VGG16Classifier()
    chosen = _weights("VGG16_Weights", weights)
    if chosen is not None:
        _load_pretrained("vgg16", model.features, chosen, prefix="features.")
    model.features[0] = _adapt_stem(model.features[0], in_channels)
    return model


class PlainCNN(nn.Module):
    """Four ``3x3 conv-BN-ReLU-maxpool`` stages (width, 2x, 4x, 8x), global average pool, head.

    Args:
        width: channels of the first stage.
        in_channels: input channels.
    """

    def __init__(self, *, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(4):
            out = width * 2**i
            layers += [
                nn.Conv2d(ch, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            ch = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = _head(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def plain_cnn(*, width: int = 32, weights: str | None = None, in_channels: int = 3) -> nn.Module:
    """Small plain CNN slice classifier with one logit.

    Args:
        width: channels of the first of four stages (doubled at each).
        weights: accepted so every classifier builder takes it; must be None (no ImageNet
            weights exist for this network).
        in_channels: input channels.

    Returns:
        Module mapping ``(N, in_channels, H, W)`` (H, W >= 16) to ``(N, 1)`` logits.

    Raises:
        ValueError: if ``weights`` is given or an argument is not a positive integer.
    """
    if weights is not None:
        raise ValueError("plain_cnn has no pretrained weights; use weights=None or a resnet/vgg16 arch")
    _check_in_channels("plain_cnn", in_channels)
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"plain_cnn: width must be a positive integer, got {width!r}")
    return PlainCNN(width=width, in_channels=in_channels)
