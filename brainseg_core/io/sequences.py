"""Which MRI sequence a file or series holds, and how sequences become the models' three channels.

The models read three channels in :data:`brainseg_core.io.volume.CHANNELS` order: pre-contrast
T1, FLAIR, post-contrast T1. NIfTI files are recognised by name the way BraTS names them
(``<id>_t1`` / ``t1n``, ``<id>_flair`` / ``t2f``, ``<id>_t1ce`` / ``t1c`` / ``t1gd`` / ``post``,
``<id>_t2``; ``<id>_seg`` / ``_mask`` / ``_label`` is ground truth); DICOM series by their SeriesDescription,
ProtocolName and contrast tags. :func:`assemble_channels` resamples every sequence onto the FLAIR
grid by physical position when the grids differ and fills a missing sequence with FLAIR (as the
LGG dataset itself does), saying so in a warning.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # nibabel loads with the readers, not with these names
    from brainseg_core.geometry import Geometry

__all__ = [
    "MODEL_SEQUENCES",
    "Sequence",
    "SequenceImage",
    "assemble_channels",
    "sequence_from_description",
    "sequence_from_filename",
]


class Sequence(enum.StrEnum):
    """The MRI sequences BrainSeg tells apart."""

    PRE = "pre"
    """T1-weighted before contrast."""
    FLAIR = "flair"
    POST = "post"
    """T1-weighted after gadolinium."""
    T2 = "t2"
    """T2-weighted (recognised, not used by the models)."""
    LABEL = "label"
    """A ground-truth segmentation (any non-zero label is tumour)."""

    @property
    def label(self) -> str:
        """How a reader names the sequence."""
        return _TITLES[self]


_TITLES = {
    Sequence.PRE: "T1 pre-contrast",
    Sequence.FLAIR: "FLAIR",
    Sequence.POST: "T1 post-contrast",
    Sequence.T2: "T2",
    Sequence.LABEL: "segmentation",
}

#: The sequences behind the models' channels, in channel order.
MODEL_SEQUENCES: tuple[Sequence, Sequence, Sequence] = (Sequence.PRE, Sequence.FLAIR, Sequence.POST)

# File-name suffixes after the patient id, BraTS style (``BraTS20_001_t1ce.nii.gz``).
_NAME_SUFFIXES: tuple[tuple[Sequence, tuple[str, ...]], ...] = (
    (Sequence.LABEL, ("seg", "mask", "label", "labels", "gt")),
    (Sequence.FLAIR, ("flair", "t2flair", "t2_flair", "t2-flair", "t2f")),  # t2f: BraTS 2023
    (Sequence.POST, ("t1ce", "t1c", "t1gd", "t1_gd", "t1post", "t1_post", "post", "t1-ce", "t1-gd")),
    (Sequence.PRE, ("t1", "t1n", "t1pre", "t1_pre", "pre", "t1w")),
    (Sequence.T2, ("t2", "t2w")),
)


def sequence_from_filename(stem: str) -> Sequence | None:
    """The sequence a NIfTI file holds, from the end of its name (case-insensitive).

    Args:
        stem: file name without ``.nii`` / ``.nii.gz``, e.g. ``BraTS20_001_t1ce``.

    Returns:
        The sequence, or None when the name ends in none of the known suffixes.
    """
    low = stem.lower()
    for seq, suffixes in _NAME_SUFFIXES:
        for suffix in suffixes:
            if low == suffix or re.search(rf"[_\-.]{re.escape(suffix)}$", low):
                return seq
    return None


def sequence_from_description(text: str, *, contrast_agent: bool = False) -> Sequence | None:
    """Guess a DICOM series' sequence from its SeriesDescription / ProtocolName.

    Args:
        text: the descriptions joined (any case).
        contrast_agent: whether the series records a contrast agent (ContrastBolusAgent).

    Returns:
        The best guess, or None when nothing in the text points to a sequence the models use.
    """
    low = text.lower()
    words = set(re.split(r"[^a-z0-9+]+", low))
    if "flair" in low or "dark fluid" in low or "darkfluid" in low:
        return Sequence.FLAIR
    if any(w in low for w in ("seg", "mask", "label")) and "t1" not in low:
        return None
    post_words = ("post", "+c", "gad", "gd", "contrast", "t1ce", "t1c", "+gd", "kontrast", "ce")
    t1_like = "t1" in low or "mprage" in low or "spgr" in low or "bravo" in low or "tfl" in words
    if t1_like or contrast_agent:
        post = contrast_agent or any(w in words or w in low.split() for w in post_words) or "+c" in low
        if "pre" in words or "precontrast" in low or "pre-contrast" in low:
            post = False
        if t1_like or post:
            return Sequence.POST if post else Sequence.PRE
    if "t2" in low:
        return Sequence.T2
    return None


@dataclass(frozen=True)
class SequenceImage:
    """One sequence's 3-D image on its own stored grid.

    Attributes:
        data: the stored array (any real dtype), shape ``geometry.source_shape``.
        geometry: where its voxels are.
        source: the file or series it came from, for messages and sidecars.
    """

    data: np.ndarray
    geometry: Geometry
    source: str


def assemble_channels(
    images: Mapping[Sequence, SequenceImage], *, where: str
) -> tuple[np.ndarray, Geometry, list[str]]:
    """Stack pre-contrast, FLAIR and post-contrast on the FLAIR grid, in display order.

    Args:
        images: the sequences found (FLAIR is required; the others are optional).
        where: the patient (folder or study) for messages.

    Returns:
        ``(channels, geometry, warnings)``: ``channels`` is ``(N, H, W, 3)`` (the sources' dtype
        when they share one, else float32) on the
        display grid of the FLAIR ``geometry``; ``warnings`` says which sequences were resampled or
        replaced by FLAIR.

    Raises:
        ValueError: without a FLAIR image (the caller names the file in a DataError).
    """
    from brainseg_core.geometry import resample_onto

    flair = images.get(Sequence.FLAIR)
    if flair is None:
        raise ValueError(f"{where}: no FLAIR image found; BrainSeg's models need FLAIR")
    ref = flair.geometry
    warnings: list[str] = []
    channels = []
    for seq in MODEL_SEQUENCES:
        img = images.get(seq)
        if img is None:
            warnings.append(
                f"{where}: no {seq.label} image; its channel is filled with FLAIR (the models read "
                "all three sequences: expect a weaker reading)"
            )
            img = flair
        data = np.asarray(img.data)  # 8-bit data stays 8-bit: to_uint8 then copies it unchanged
        if not img.geometry.same_grid(ref):
            warnings.append(
                f"{img.source}: {seq.label} is on another grid than FLAIR; resampled onto the FLAIR "
                "grid by physical position (linear)"
            )
            resampled = resample_onto(data, img.geometry, ref)
            if np.issubdtype(data.dtype, np.integer):  # keep the stored type (8-bit stays 8-bit)
                info = np.iinfo(data.dtype)
                resampled = np.clip(np.rint(resampled), info.min, info.max).astype(data.dtype)
            data = resampled
        channels.append(ref.to_display(data))
    dtypes = {c.dtype for c in channels}
    stacked = np.stack(channels if len(dtypes) == 1 else [c.astype(np.float32) for c in channels], axis=-1)
    return stacked, ref, warnings
