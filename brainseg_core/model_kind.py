"""What a model does: :class:`ModelKind` and the kind each architecture serves (kept free of torch
so that cards can be read and light tools can start without it)."""

from __future__ import annotations

import enum

__all__ = ["ARCH_KINDS", "KIND_NAMES", "ModelKind", "arch_kind"]


class ModelKind(enum.StrEnum):
    """What a model does (a model card's ``kind``)."""

    CLASSIFIER = "classifier"
    """Slice classifier: one tumour logit per slice (the gate)."""
    SEGMENTER = "segmenter"
    """Segmenter: a tumour logit per pixel."""


#: The kinds' names, for argument choices and checks of values read from files.
KIND_NAMES: tuple[str, ...] = tuple(k.value for k in ModelKind)


#: The kind of model every architecture a card may name builds (the builders are
#: :data:`brainseg_core.models.ARCHITECTURES`, which has exactly these keys).
ARCH_KINDS: dict[str, ModelKind] = {
    "resunet": ModelKind.SEGMENTER,
    "resnet18": ModelKind.CLASSIFIER,
    "resnet34": ModelKind.CLASSIFIER,
    "resnet50": ModelKind.CLASSIFIER,
    "vgg16": ModelKind.CLASSIFIER,
    "plain_cnn": ModelKind.CLASSIFIER,
    "resunet_gate": ModelKind.CLASSIFIER,
}


def arch_kind(arch: str) -> ModelKind:
    """The bundle kind an architecture serves.

    Args:
        arch: a key of :data:`ARCH_KINDS`.

    Returns:
        :attr:`ModelKind.SEGMENTER` or :attr:`ModelKind.CLASSIFIER`.

    Raises:
        ValueError: for an unknown ``arch``.
    """
    if arch not in ARCH_KINDS:
        raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(sorted(ARCH_KINDS))}")
    return ARCH_KINDS[arch]
