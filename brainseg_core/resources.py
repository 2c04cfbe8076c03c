"""Locate the files shipped in ``resources/`` (models, sample patient, icons).

One function serves every way BrainSeg runs: from a source checkout or editable install, and from
a frozen one-folder build (PyInstaller puts data under ``sys._MEIPASS``). ``BRAINSEG_RESOURCES``
overrides both (used by tests and by packagers who relocate the data).
"""

from __future__ import annotations

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
    return Path(__file__).resolve().parent.parent / "resources"


def resource_path(*parts: str) -> Path:
    """Path of a shipped resource, e.g. ``resource_path("models")``.

    Args:
        *parts: path components below ``resources/``.

    Returns:
        The joined path (not checked for existence).
    """
    return resources_root().joinpath(*parts)
