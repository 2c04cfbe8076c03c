"""Exception types shared by the whole core.

Every error a user can trigger with their own files derives from :class:`BrainSegError` and carries
a message that names the file and says what is wrong with it, so front ends (CLI, viewer) can show
``str(err)`` as it is, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class BrainSegError(Exception):
    """Base class of all errors raised on purpose by ``brainseg_core``."""


class DataError(BrainSegError):
    """An input file or folder cannot be used.

    Args:
        path: the file or folder at fault.
        problem: what is wrong with it, phrased for the user.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # rebuilt from its own arguments (e.g. sent back from the model process)
        return type(self), (self.path, self.problem)


class BundleError(BrainSegError):
    """A model bundle (safetensors + JSON card) is missing, tampered with or incompatible."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        # rebuilt from its own arguments (e.g. sent back from the model process)
        return type(self), (self.path, self.problem)


class ThoroughModeError(BundleError):
    """A segmenter's thorough mode cannot run: a member of its ensemble is missing, is not the one
    its card names, does not load or reads another input. The segmenter itself is sound, so a
    front end can run it without thorough mode instead of giving up on it."""


class ExportError(BrainSegError):
    """An export cannot be written (destination exists, would overwrite a source, ...)."""


class Cancelled(BrainSegError):
    """Long-running work (inference, export, training) was cancelled by the caller."""
