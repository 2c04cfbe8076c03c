"""BrainSeg core: data I/O, models, model bundles, inference, export and training.

This package is pure Python + numpy + torch. It never imports Qt (``tests/test_architecture.py``
enforces it); the viewer in ``brainseg_app`` depends on it, never the reverse.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("brainseg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = ["__version__"]
