"""A tiny labelled dataset for the trainer tests: 4 patients x 8 slices of 64 x 64.

Test modules load this with ``pytest_plugins = ["training_fixtures"]`` (a ``conftest.py`` here would
shadow ``tests/conftest.py`` for ``from conftest import ...``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_patient

from brainseg_core.training.loop import TrainConfig


def make_dataset(root: Path, n_patients: int = 4) -> Path:
    """Write ``n_patients`` generated patients (tumour on half the slices) under ``root``."""
    for i in range(n_patients):
        make_patient(root, f"TCGA_XX_{i:04d}_20000101", n=8, size=64, tumour_slices=(2, 3, 4, 5), seed=i)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tinydata"))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


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
