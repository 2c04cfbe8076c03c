"""What a model does: :class:`ModelKind` (kept free of torch so light tools can use it)."""

from __future__ import annotations

import enum

__all__ = ["KIND_NAMES", "ModelKind"]


class ModelKind(enum.StrEnum):
    """What a model does (a model card's ``kind``)."""

    CLASSIFIER = "classifier"
    """Slice classifier: one tumour logit per slice (the gate)."""
    SEGMENTER = "segmenter"
    """Segmenter: a tumour logit per pixel."""


#: The kinds' names, for argument choices and checks of values read from files.
KIND_NAMES: tuple[str, ...] = tuple(k.value for k in ModelKind)
