"""What reading a NumPy ``.npz`` file that is missing, truncated, damaged or foreign raises.

The out-of-fold files (:mod:`brainseg_core.crossval`, :mod:`brainseg_core.gate_crossval`) and the
viewer's saved analyses (:mod:`brainseg_core.result_store`) are ``.npz`` archives written by this
program; a reader catches :data:`NPZ_READ_ERRORS` to report the file (or ignore a cache entry)
instead of crashing on a disk that lost part of it.
"""

from __future__ import annotations

import zipfile
import zlib

__all__ = ["NPZ_READ_ERRORS"]

#: numpy (a missing key is KeyError, left to the caller: some readers check keys themselves),
#: zipfile (a cut-off or foreign archive) and zlib (a damaged compressed member).
NPZ_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
