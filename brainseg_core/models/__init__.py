"""Network architectures, built by name from a model card's ``arch`` and ``arch_args``.

``build_model("resunet", base_filters=16)`` returns a randomly initialised module; weights come
from a bundle (:mod:`brainseg_core.bundle`). Every module takes ``(N, 3, H, W)`` float input. The
segmenter returns ``(N, 1, H, W)`` logits, the classifiers ``(N, 1)`` logits.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from brainseg_core.model_kind import ARCH_KINDS, ModelKind, arch_kind
from brainseg_core.models.classifier import plain_cnn, resnet18, resnet34, resnet50, vgg16
from brainseg_core.models.encoder_gate import ResUNetGate, resunet_gate
from brainseg_core.models.resunet import ResUNet, resunet

__all__ = [
    "ARCHITECTURES",
    "ARCH_KINDS",
    "ModelKind",
    "ResUNet",
    "ResUNetGate",
    "arch_kind",
    "build_model",
    "plain_cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resunet",
    "resunet_gate",
    "vgg16",
]


#: Builder of every architecture a model card may name.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resunet": resunet,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "vgg16": vgg16,
    "plain_cnn": plain_cnn,
    "resunet_gate": resunet_gate,
}

if set(ARCHITECTURES) != set(ARCH_KINDS):  # pragma: no cover - a programming error caught at import
    raise ImportError("brainseg_core.models.ARCHITECTURES and brainseg_core.model_kind.ARCH_KINDS differ")


def build_model(arch: str, **arch_args: Any) -> nn.Module:
    """Build an architecture by name.

    Args:
        arch: one of :data:`ARCHITECTURES` (``resunet``, ``resnet18``, ``resnet34``, ``resnet50``,
            ``vgg16``, ``plain_cnn``, ``resunet_gate``).
        **arch_args: keyword arguments of that architecture's builder.

    Returns:
        The module, randomly initialised (or from ImageNet with ``weights="DEFAULT"``, as in torchvision).

    Raises:
        ValueError: for an unknown ``arch`` or an argument the builder does not take (the message
            lists the valid ones), or an invalid argument value.
    """
    arch_kind(arch)  # raises for an unknown name
    builder = ARCHITECTURES[arch]
    params = inspect.signature(builder).parameters
    unknown = sorted(set(arch_args) - set(params))
    if unknown:
        raise ValueError(
            f"{arch} does not take argument(s) {', '.join(unknown)}; valid arguments: {', '.join(params)}"
        )
    return builder(**arch_args)
