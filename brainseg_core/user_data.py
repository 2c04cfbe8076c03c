"""Where BrainSeg keeps the user's own files (models, saved analyses, the reader's work).

Torch-free, so the viewer finds its saved analyses without loading the model code.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["user_data_dir"]


def user_data_dir() -> Path:
    """The per-user BrainSeg data folder: ``$BRAINSEG_USER_DATA`` or platformdirs' user data dir."""
    env = os.environ.get("BRAINSEG_USER_DATA")
    return Path(env) if env else Path(platformdirs.user_data_dir("BrainSeg", "BrainSeg"))
