"""Plain helpers shared by the test folders: generated patients and volumes, tiny bundles, fake networks.

Fixtures live in each folder's ``conftest.py``; this module holds only functions and classes that
tests import by name (``from tests.support import make_patient``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch
from torch import nn

from brainseg_core.bundle import save_bundle
from brainseg_core.geometry import Geometry
from brainseg_core.io.volume import Volume
from brainseg_core.models import build_model
from brainseg_core.preprocessing import preprocess_volume
from brainseg_core.spacing import Spacing
from brainseg_core.training.config import TrainConfig

# Generated LGG-layout patients (I/O, export, CLI, training tests).


def make_patient(
    root: Path,
    patient_id: str = "TCGA_XX_0001_20000101",
    n: int = 6,
    size: int = 64,
    tumour_slices: tuple[int, ...] = (2, 3),
    seed: int = 0,
) -> Path:
    """Write a small synthetic patient in the LGG layout: a bright disc 'brain' with a blob 'tumour'.

    Returns:
        The patient folder.
    """
    rng = np.random.default_rng(seed)
    d = root / patient_id
    d.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    brain = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2
    for i in range(1, n + 1):
        img = np.zeros((size, size, 3), np.uint8)
        img[brain] = rng.integers(60, 120, size=(int(brain.sum()), 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        if i - 1 in tumour_slices:
            cy, cx = size // 2 + rng.integers(-4, 5), size // 2 + rng.integers(-4, 5)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < (size * 0.12) ** 2
            img[blob, 1] = 220
            mask[blob] = 255
        tifffile.imwrite(d / f"{patient_id}_{i}.tif", img, photometric="rgb")
        tifffile.imwrite(d / f"{patient_id}_{i}_mask.tif", mask, photometric="minisblack")
    return d


# Tiny random-weight bundles.


def save_tiny_bundle(
    path: Path,
    kind: str,
    *,
    input_size: int = 32,
    threshold: float | None = None,
    seed: int | None = None,
    dtype: torch.dtype = torch.float16,
    name: str | None = None,
) -> Path:
    """Write a tiny random-weight bundle: segmenter resunet base 4 depth 2, classifier plain_cnn width 4.

    Args:
        path: folder or ``NAME.json`` path, as :func:`save_bundle` takes it.
        kind: ``"segmenter"`` or ``"classifier"``.
        input_size: the card's input size.
        threshold: the card's ``mask_probability`` / ``tumour_probability`` (None: 0.5); min area is 0.
        seed: ``torch.manual_seed`` before building the network (None: continue the current RNG).
        dtype: storage dtype of the weights.
        name: the card's name (None: ``tiny-seg`` / ``tiny-cls``).

    Returns:
        The card path.
    """
    p = 0.5 if threshold is None else threshold
    if kind == "segmenter":
        arch, arch_args = "resunet", {"base_filters": 4, "depth": 2}
        thresholds: dict[str, float] = {"mask_probability": p, "min_area_px": 0}
    elif kind == "classifier":
        arch, arch_args, thresholds = "plain_cnn", {"width": 4}, {"tumour_probability": p}
    else:
        raise ValueError(f"kind must be 'segmenter' or 'classifier', not {kind!r}")
    if seed is not None:
        torch.manual_seed(seed)
    return save_bundle(
        build_model(arch, **arch_args),
        path,
        name=name or ("tiny-seg" if kind == "segmenter" else "tiny-cls"),
        kind=kind,
        arch=arch,
        arch_args=arch_args,
        input_size=input_size,
        thresholds=thresholds,
        dtype=dtype,
    )


# Inference fakes. They recognise each slice by the sum of its preprocessed input, so what they output
# for a slice does not depend on batching, order or retries: tests can force exact tumour
# probabilities and exact mask logits and assert exactly which slices were segmented.


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


# Scripted networks for the viewer tests: the segmenter outputs a disc of known radius in the middle
# of every slice, the classifier a tumour probability that rises with the slice's mean intensity.

DISC_RADIUS = 0.2  # of the slice width


class DiscSegmenter(nn.Module):
    """Logits +20 inside a centred disc of radius ``DISC_RADIUS`` x width, -20 outside."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        disc = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < (DISC_RADIUS * w) ** 2
        logits = torch.where(disc, 20.0, -20.0).to(x.dtype)
        return logits.expand(n, 1, h, w).contiguous() + 0 * x[:, :1]


class DiscAndSpotSegmenter(DiscSegmenter):
    """The centred disc plus a small separate square spot near the top-left corner."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x).clone()
        h, w = x.shape[-2:]
        logits[:, :, h // 16 : h // 8, w // 16 : w // 8] = 20.0
        return logits


class MeanClassifier(nn.Module):
    """Tumour logit proportional to the slice's mean normalised intensity (varies across slices)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (4.0 * x.mean(dim=(1, 2, 3))).reshape(-1, 1)


# The trainer tests' tiny dataset and configuration.


def make_dataset(root: Path, n_patients: int = 4) -> Path:
    """Write ``n_patients`` generated patients (tumour on half the slices) under ``root``."""
    for i in range(n_patients):
        make_patient(root, f"TCGA_XX_{i:04d}_20000101", n=8, size=64, tumour_slices=(2, 3, 4, 5), seed=i)
    return root


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    """A segmenter run that takes about a second per epoch on one CPU thread."""
    base = dict(
        kind="segmenter",
        data=data,
        out=out,
        width=4,
        depth=2,
        epochs=2,
        batch_size=4,
        image_size=64,
        val_patients=0.25,
        lr=3e-3,
    )
    base.update(kw)
    return TrainConfig(**base)


# NIfTI patients with known, non-trivial geometry, built from a volume (the format tests).


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


# Voxel-to-world matrices (RAS mm, without translation) of the stored arrays.
AFFINES = {
    # LAS storage (FSL's radiological default) with anisotropic voxels
    "las-aniso": np.diag([-0.9, 0.95, 5.0]),
    # sagittal slices: i runs anterior->posterior, j superior->inferior, k right->left
    "sagittal-flipped": np.array([[0, 0, -5.0], [-0.9, 0, 0], [0, -0.95, 0]]),
    # axial, tilted 12 degrees about the left-right axis and 5 about the vertical one
    "oblique": _rotation(0, 12) @ _rotation(2, 5) @ np.diag([0.9, 0.9, 5.0]),
}


def geometry_for(display_shape: tuple[int, int, int], matrix: np.ndarray) -> Geometry:
    """A geometry with this matrix (and a fixed offset) whose display grid has ``display_shape``."""
    import itertools

    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = [12.5, -30.0, 4.0]
    for shape in itertools.permutations(display_shape):
        g = Geometry(affine, shape)
        if g.display_shape == display_shape:
            return g
    raise AssertionError("no storage shape gives the display shape")


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Save ``data`` as a NIfTI file with this voxel-to-world matrix (nibabel's defaults otherwise)."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def write_nifti_patient(
    folder: Path, volume: Volume, geometry: Geometry, *, names: tuple[str, ...] = ("t1", "flair", "t1ce")
) -> Path:
    """Write a volume's channels as BraTS-named NIfTI files stored on ``geometry``, plus ``_seg``."""
    folder.mkdir(parents=True)
    pid = folder.name
    for c, name in enumerate(names):
        write_nifti(
            folder / f"{pid}_{name}.nii.gz", geometry.to_source(volume.images[..., c]), geometry.source_affine
        )
    assert volume.masks is not None
    labels = geometry.to_source(volume.masks.astype(np.uint8) * 2)  # BraTS-like label value
    write_nifti(folder / f"{pid}_seg.nii.gz", labels, geometry.source_affine)
    return folder
