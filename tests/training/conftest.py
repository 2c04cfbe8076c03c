"""The trainer tests' tiny labelled dataset: 4 patients x 8 slices of 64 x 64 (``tests.support``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import make_dataset


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tinydata"))
