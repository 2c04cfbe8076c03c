"""Tiny random-weight bundle fixtures for the inference tests (the fake networks: ``tests/support.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from brainseg_core.bundle import ModelBundle, load_bundle


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Callable[..., Path]) -> Path:
    """Tiny random-weight float32 bundles: resunet base 4 depth 2 (size 32) and plain_cnn width 4."""
    d = tmp_path_factory.mktemp("bundles")
    tiny_bundle(d / "seg.json", "segmenter", seed=0, dtype=torch.float32)
    tiny_bundle(d / "cls.json", "classifier", threshold=0.6, dtype=torch.float32)
    return d


@pytest.fixture
def seg_bundle(bundle_dir: Path) -> ModelBundle:
    """A freshly loaded tiny segmenter bundle (threshold 0.5, min area 0, input 32)."""
    return load_bundle(bundle_dir / "seg.json")


@pytest.fixture
def cls_bundle(bundle_dir: Path) -> ModelBundle:
    """A freshly loaded tiny classifier bundle (card gate 0.6, input 32)."""
    return load_bundle(bundle_dir / "cls.json")
