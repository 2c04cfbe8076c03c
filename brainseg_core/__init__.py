"""BrainSeg core: data I/O, models, model bundles, inference, export and training.

This package is pure Python + numpy + torch. It never imports Qt (``tests/test_architecture.py``
enforces it); the viewer in ``brainseg_app`` depends on it, never the reverse.
"""

#: The one place the version is written: pyproject.toml reads it from here
#: (``[tool.setuptools.dynamic]``), and a frozen build, which has no package metadata, imports it.
__version__ = "0.1.0"

__all__ = ["__version__"]
