"""Locate the files shipped in ``resources/`` (models, sample patient, icons).

One function serves every way BrainSeg runs: from a source checkout or editable install, from a
wheel (``pip install .`` installs the folder as the data-only package ``brainseg_resources``), and
from a frozen one-folder build (PyInstaller puts data under ``sys._MEIPASS``).
``BRAINSEG_RESOURCES`` overrides all of them (used by tests and by packagers who relocate the data).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def resources_root() -> Path:
    """The ``resources`` folder for this installation.

    Returns:
        Path of the folder holding ``models/``, ``sample/`` and ``icons/``.
    """
    env = os.environ.get("BRAINSEG_RESOURCES")
    if env:
        return Path(env)
    frozen = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and frozen:
        return Path(frozen) / "resources"
    source = Path(__file__).resolve().parent.parent / "resources"
    if (source / "models").is_dir():
        return source
    spec = importlib.util.find_spec("brainseg_resources")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return source


def resource_path(*parts: str) -> Path:
    """Path of a shipped resource, e.g. ``resource_path("models")``.

    Args:
        *parts: path components below ``resources/``.

    Returns:
        The joined path (not checked for existence).
    """
    return resources_root().joinpath(*parts)
