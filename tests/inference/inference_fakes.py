"""Small random-weight bundles, synthetic volumes and scripted fake networks for inference tests.

The fake networks recognise each slice by the sum of its preprocessed input, so what they output
for a slice does not depend on batching, order or retries: tests can force exact tumour
probabilities and exact mask logits and assert exactly which slices were segmented.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from brainseg_core.io.volume import Volume
from brainseg_core.preprocessing import preprocess_volume
from brainseg_core.spacing import Spacing


def make_volume(
    n: int = 6, size: int = 32, *, seed: int = 0, spacing: tuple[float, float] | None = None, thickness=None
) -> Volume:
    """A random-texture volume whose slices all differ (so fakes can tell them apart)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 3), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    brain = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.45) ** 2
    images[:, brain] = rng.integers(20, 250, size=(n, int(brain.sum()), 3), dtype=np.uint8)
    return Volume(
        patient_id="TCGA_ZZ_0001_20000101",
        source=Path("/nonexistent/TCGA_ZZ_0001_20000101"),
        slice_paths=[Path(f"/nonexistent/s_{i + 1}.tif") for i in range(n)],
        slice_numbers=list(range(1, n + 1)),
        images=images,
        spacing=None if spacing is None else Spacing(*spacing, thickness_mm=thickness),
    )


class _SliceKeyed(nn.Module):
    """Base of the fakes: maps each input slice to its index in the volume via its sum."""

    def __init__(self, volume: Volume, size: int) -> None:
        super().__init__()
        x = preprocess_volume(volume.images, size=size)
        self.register_buffer("keys", x.double().sum(dim=(1, 2, 3)))
        self.seen: list[int] = []  # slice indices run through forward, in call order

    def indices(self, x: torch.Tensor) -> list[int]:
        sums = x.double().sum(dim=(1, 2, 3))
        idx = (sums[:, None] - self.keys[None].to(sums.device)).abs().argmin(dim=1).tolist()
        self.seen.extend(idx)
        return idx


class FakeClassifier(_SliceKeyed):
    """Returns the logit of ``probs[i]`` for slice ``i``."""

    def __init__(self, volume: Volume, probs: list[float], size: int) -> None:
        super().__init__(volume, size)
        p = torch.tensor(probs, dtype=torch.float64).clamp(1e-9, 1 - 1e-9)
        self.register_buffer("logits", torch.log(p / (1 - p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[self.indices(x)].float()[:, None].to(x.device)


class FakeSegmenter(_SliceKeyed):
    """Returns logit +12 on ``masks[i]`` and -12 elsewhere for slice ``i`` (masks at input size)."""

    def __init__(self, volume: Volume, masks: np.ndarray, size: int) -> None:
        super().__init__(volume, size)
        self.register_buffer("maps", torch.from_numpy(np.where(masks, 12.0, -12.0)).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps[self.indices(x)][:, None].to(x.device)
