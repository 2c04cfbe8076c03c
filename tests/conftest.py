"""Fixtures for the whole suite: isolated user folders, the real LGG fixture patients from ../shared,
small generated volumes and tiny bundles (plain helpers are in ``tests/support.py``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.support import make_patient, save_tiny_bundle

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parent.parent
SHARED_LGG = Path(os.environ.get("BRAINSEG_SHARED_LGG", REPO.parent / "shared" / "data" / "lgg"))
FIXTURES = SHARED_LGG / "fixtures" / "kaggle_3m"


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the real user's model folder or settings during tests."""
    monkeypatch.setenv("BRAINSEG_USER_DATA", str(tmp_path_factory.mktemp("userdata")))
    monkeypatch.setenv("BRAINSEG_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Torch on one thread in every test: a trainer epoch stays about a second and results do not depend on
    the machine's core count."""
    torch.set_num_threads(1)


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


@pytest.fixture
def tiny_volume_dir(tmp_path: Path) -> Path:
    """A generated 6-slice 64x64 patient folder with masks (tumour on slices 3 and 4)."""
    return make_patient(tmp_path)


@pytest.fixture
def patient_factory() -> Callable[..., Path]:
    """:func:`tests.support.make_patient` as a fixture."""
    return make_patient


@pytest.fixture(scope="session")
def tiny_bundle() -> Callable[..., Path]:
    """:func:`tests.support.save_tiny_bundle` as a fixture."""
    return save_tiny_bundle
