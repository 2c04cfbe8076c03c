"""Shared fixtures: the real LGG fixture patients from ../shared and small generated volumes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from brainseg_core.bundle import save_bundle
from brainseg_core.models import build_model

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parent.parent
SHARED_LGG = Path(os.environ.get("BRAINSEG_SHARED_LGG", REPO.parent / "shared" / "data" / "lgg"))
FIXTURES = SHARED_LGG / "fixtures" / "kaggle_3m"


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the real user's model folder or settings during tests."""
    monkeypatch.setenv("BRAINSEG_USER_DATA", str(tmp_path_factory.mktemp("userdata")))
    monkeypatch.setenv("BRAINSEG_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(scope="session")
def lgg_fixture_root() -> Path:
    """The dataset root holding the two published fixture patients (kaggle_3m layout)."""
    if not FIXTURES.is_dir():
        pytest.fail(f"LGG fixtures not found at {FIXTURES}; tests need ../shared/data/lgg")
    return FIXTURES


@pytest.fixture(scope="session")
def fixture_patient(lgg_fixture_root: Path) -> Path:
    """The first fixture patient folder (20 slices, some with tumour)."""
    return sorted(p for p in lgg_fixture_root.iterdir() if p.is_dir())[0]


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


@pytest.fixture
def tiny_volume_dir(tmp_path: Path) -> Path:
    """A generated 6-slice 64x64 patient folder with masks (tumour on slices 3 and 4)."""
    return make_patient(tmp_path)


@pytest.fixture
def patient_factory() -> Callable[..., Path]:
    """:func:`make_patient` as a fixture (``from tests.conftest import ...`` fails under plain ``pytest``)."""
    return make_patient


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


@pytest.fixture(scope="session")
def tiny_bundle() -> Callable[..., Path]:
    """:func:`save_tiny_bundle` as a fixture (subfolders cannot always ``from conftest import`` it)."""
    return save_tiny_bundle
