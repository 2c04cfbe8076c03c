"""The one preprocessing function shared by training and inference.

The seed notebook normalised its two models differently (``/255`` for the classifier, per-slice
z-score for the ResUNet). BrainSeg uses a single, documented normalisation for both, recorded in
every model card under ``normalization`` and checked when a bundle is loaded:

``volume-zscore-v1``: per patient volume and per channel, take the foreground voxels (value > 0,
i.e. inside the skull-stripped field of view), clip every voxel of the channel to the
[1st, 99th] percentile of the foreground, then subtract the mean and divide by the standard
deviation of the clipped foreground. Background voxels go through the same affine map. A channel
with no foreground (all zero) maps to zeros. Slices are then resized to ``size`` x ``size``
(bilinear, antialiased) when they are not already that size.

Neighbouring slices (2.5-D input): a model card's ``context_slices`` k says the network sees each
slice together with the k slices on either side. :func:`model_input` stacks them along the channel
axis, slice-major from ``i - k`` to ``i + k``, each with the three sequences in
:data:`~brainseg_core.io.volume.CHANNELS` order, so channel ``c`` holds sequence ``c % 3`` of slice
``i - k + c // 3``. Beyond the first and the last slice the edge slice is repeated. ``k = 0`` is the
plain three-channel input.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from brainseg_core.io.volume import CHANNELS

NORMALIZATION_ID = "volume-zscore-v1"

#: Exact description written into model cards (``card["normalization"]``).
NORMALIZATION: dict[str, object] = {
    "id": NORMALIZATION_ID,
    "scope": "per patient volume, per channel",
    "foreground": "voxels > 0",
    "clip_percentiles": [1.0, 99.0],
    "zscore": "mean and std of the clipped foreground",
    "resize": "bilinear, antialiased, to input_size x input_size",
    "input_dtype": "uint8 (16-bit sources are rescaled per volume to 0-255 on load)",
}

_CLIP = (1.0, 99.0)
# Percentiles of a 256x256x~90 volume are exact on a subsample of this many foreground voxels
# to within a grey level, at a fraction of the cost.
_MAX_SAMPLES = 2_000_000


def channel_stats(images: np.ndarray) -> np.ndarray:
    """Per-channel normalisation statistics of one volume.

    Args:
        images: ``(N, H, W, C)`` uint8 (or any real dtype) volume.

    Returns:
        ``(C, 4)`` float64 array of ``(low, high, mean, std)`` per channel.

    Raises:
        ValueError: if ``images`` is not 4-D.
    """
    if images.ndim != 4:
        raise ValueError(f"expected (N, H, W, C) images, got shape {images.shape}")
    stats = np.zeros((images.shape[-1], 4), dtype=np.float64)
    rng = np.random.default_rng(0)
    for c in range(images.shape[-1]):
        fg = images[..., c][images[..., c] > 0]
        if fg.size == 0:
            stats[c] = (0.0, 0.0, 0.0, 1.0)
            continue
        if fg.size > _MAX_SAMPLES:
            fg = rng.choice(fg, _MAX_SAMPLES, replace=False)
        lo, hi = np.percentile(fg, _CLIP)
        clipped = np.clip(fg.astype(np.float64), lo, hi)
        std = float(clipped.std())
        stats[c] = (lo, hi, float(clipped.mean()), std if std > 1e-6 else 1.0)
    return stats


def preprocess_volume(
    images: np.ndarray, *, size: int = 256, stats: np.ndarray | None = None
) -> torch.Tensor:
    """Normalise a volume for the models (see the module docstring for the exact definition).

    Args:
        images: ``(N, H, W, 3)`` uint8 slices of one patient, channels in
            :data:`brainseg_core.io.volume.CHANNELS` order.
        size: model input size; slices are resized to ``size`` x ``size`` if needed.
        stats: precomputed :func:`channel_stats` of the whole volume (lets a caller normalise a
            subset of slices exactly as the whole volume would be).

    Returns:
        ``(N, 3, size, size)`` float32 tensor on the CPU.

    Raises:
        ValueError: on a wrongly shaped input or a non-positive size.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) images, got shape {images.shape}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if stats is None:
        stats = channel_stats(images)
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    st = torch.from_numpy(stats).float()
    lo, hi, mean, std = (st[:, i].view(1, -1, 1, 1) for i in range(4))
    x = (torch.clamp(x, lo, hi) - mean) / std
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()


def input_channels(context: int) -> int:
    """Channels of a network input with ``context`` neighbouring slices on either side."""
    return len(CHANNELS) * (2 * context + 1)


def context_indices(n_slices: int, indices: np.ndarray | list[int] | range, context: int) -> np.ndarray:
    """The slices each of ``indices`` is stacked with (see the module docstring).

    Args:
        n_slices: slices in the volume.
        indices: the centre slices.
        context: neighbours on either side (k >= 0).

    Returns:
        ``(len(indices), 2k + 1)`` int64 slice indices, clamped to the volume.

    Raises:
        ValueError: if ``context`` is negative or an index is outside the volume.
    """
    if context < 0:
        raise ValueError(f"context must be >= 0 slices, got {context}")
    centre = np.asarray(indices, dtype=np.int64).reshape(-1)
    if centre.size and (centre.min() < 0 or centre.max() >= n_slices):
        raise ValueError(f"slice indices must be in [0, {n_slices}), got {centre.min()}..{centre.max()}")
    offsets = np.arange(-context, context + 1, dtype=np.int64)
    return np.clip(centre[:, None] + offsets[None, :], 0, max(0, n_slices - 1))


def stack_context(x: torch.Tensor, neighbours: np.ndarray) -> torch.Tensor:
    """Stack normalised slices with their neighbours along the channel axis.

    Args:
        x: ``(M, C, S, S)`` normalised slices.
        neighbours: ``(N, 2k + 1)`` indices into ``x`` (rows of :func:`context_indices`).

    Returns:
        ``(N, C * (2k + 1), S, S)``, slice-major (module docstring).
    """
    idx = torch.from_numpy(np.ascontiguousarray(neighbours, dtype=np.int64))
    n, width = idx.shape
    return x[idx.reshape(-1)].reshape(n, width * x.shape[1], *x.shape[2:]).contiguous()


def model_input(
    images: np.ndarray,
    indices: np.ndarray | list[int] | range,
    *,
    size: int,
    stats: np.ndarray | None = None,
    context: int = 0,
) -> torch.Tensor:
    """The network input of chosen slices of a volume: normalised, resized, with neighbours.

    Only the slices needed (the chosen ones and their neighbours) are normalised.

    Args:
        images: ``(N, H, W, 3)`` uint8 slices of the whole volume.
        indices: the slices to build inputs for.
        size: model input size.
        stats: :func:`channel_stats` of the whole volume (computed if None).
        context: neighbouring slices on either side (the card's ``context_slices``).

    Returns:
        ``(len(indices), 3 * (2 * context + 1), size, size)`` float32 tensor.

    Raises:
        ValueError: on a wrongly shaped input, a bad size, a negative context or an index outside
            the volume.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) images, got shape {images.shape}")
    neighbours = context_indices(images.shape[0], indices, context)
    if stats is None:
        stats = channel_stats(images)
    if context == 0:
        return preprocess_volume(images[neighbours[:, 0]], size=size, stats=stats)
    needed, inverse = np.unique(neighbours, return_inverse=True)
    x = preprocess_volume(images[needed], size=size, stats=stats)
    return stack_context(x, inverse.reshape(neighbours.shape))


def centre_channels(x: torch.Tensor, context: int, wanted: int) -> torch.Tensor:
    """The channels of a ``context``-slice input that a model with ``wanted`` context takes.

    Args:
        x: ``(N, 3 * (2 * context + 1), S, S)`` input from :func:`model_input`.
        context: the neighbours ``x`` was built with.
        wanted: the neighbours the model takes (<= ``context``).

    Returns:
        ``(N, 3 * (2 * wanted + 1), S, S)`` (``x`` itself when they are equal).

    Raises:
        ValueError: if ``wanted`` is larger than ``context``.
    """
    if wanted > context:
        raise ValueError(f"cannot take {wanted} neighbouring slices from an input built with {context}")
    if wanted == context:
        return x
    per = x.shape[1] // (2 * context + 1)
    return x[:, per * (context - wanted) : per * (context + wanted + 1)]


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``(N, H, W)`` or ``(H, W)`` boolean mask to ``size`` x ``size`` (nearest neighbour)."""
    m = torch.from_numpy(np.ascontiguousarray(mask).astype(np.uint8))
    squeeze = m.ndim == 2
    m = m[None] if squeeze else m
    if m.shape[-2:] != (size, size):
        m = F.interpolate(m[:, None].float(), size=(size, size), mode="nearest")[:, 0]
    out = m.numpy().astype(bool)
    return out[0] if squeeze else out


def resize_prob(prob: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N, h, w)`` probability maps back to the source ``shape`` (bilinear)."""
    if tuple(prob.shape[-2:]) == tuple(shape):
        return prob
    return F.interpolate(prob[:, None].float(), size=shape, mode="bilinear", align_corners=False)[:, 0]
