"""Shared fixtures: the real LGG fixture patients from ../shared and small generated volumes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

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


from collections.abc import Callable  # noqa: E402  (appended section; kept apart from the imports above)


@pytest.fixture
def patient_factory() -> Callable[..., Path]:
    """:func:`make_patient` as a fixture (``from tests.conftest import ...`` fails under plain ``pytest``)."""
    return make_patient
