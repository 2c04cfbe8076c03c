"""Tiny random-weight bundle fixtures for the inference tests.

Test modules load this with ``pytest_plugins = ["inference_fixtures"]`` rather than from a
``conftest.py`` here, which would shadow ``tests/conftest.py`` for ``from conftest import ...``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brainseg_core.bundle import ModelBundle, load_bundle, save_bundle
from brainseg_core.models import build_model


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random-weight bundles: resunet base 4 depth 2 (size 32) and plain_cnn width 4."""
    d = tmp_path_factory.mktemp("bundles")
    torch.manual_seed(0)
    save_bundle(
        build_model("resunet", base_filters=4, depth=2),
        d / "seg.json",
        name="tiny-seg",
        kind="segmenter",
        arch="resunet",
        arch_args={"base_filters": 4, "depth": 2},
        input_size=32,
        thresholds={"mask_probability": 0.5, "min_area_px": 0},
        dtype=torch.float32,
    )
    save_bundle(
        build_model("plain_cnn", width=4),
        d / "cls.json",
        name="tiny-cls",
        kind="classifier",
        arch="plain_cnn",
        arch_args={"width": 4},
        input_size=32,
        thresholds={"tumour_probability": 0.6},
        dtype=torch.float32,
    )
    return d


@pytest.fixture
def seg_bundle(bundle_dir: Path) -> ModelBundle:
    """A freshly loaded tiny segmenter bundle (threshold 0.5, min area 0, input 32)."""
    return load_bundle(bundle_dir / "seg.json")


@pytest.fixture
def cls_bundle(bundle_dir: Path) -> ModelBundle:
    """A freshly loaded tiny classifier bundle (card gate 0.6, input 32)."""
    return load_bundle(bundle_dir / "cls.json")
