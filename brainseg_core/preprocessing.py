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
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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
