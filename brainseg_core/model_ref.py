"""Which model made a result: :class:`ModelRef` (free of torch, like the results that carry it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelRef"]


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which model produced a result: its name and the SHA-256 of its weights.

    Results, exports and evaluation reports carry this, so a mask can be traced to the exact
    weights that made it.
    """

    name: str
    sha256: str

    def to_json(self) -> dict[str, str]:
        """``{"name", "sha256"}``."""
        return {"name": self.name, "sha256": self.sha256}
