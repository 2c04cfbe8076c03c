"""Settings remembered between runs, stored as an INI file in the user's config folder.

The folder is ``platformdirs.user_config_dir("BrainSeg")`` unless the environment variable
``BRAINSEG_CONFIG_DIR`` names another one (tests always set it). Every key the viewer uses is a
typed property here, so a misspelt key is an attribute error, not a silently lost setting.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import cast

import platformdirs
from PySide6.QtCore import QByteArray, QSettings

from brainseg_app.viewer_model import DEFAULT_GT_COLOUR, DEFAULT_PRED_COLOUR, OverlayStyle
from brainseg_core.compute import DEVICES
from brainseg_core.export import FORMATS
from brainseg_core.spacing import Spacing

#: Most recent folders kept in File > Recent.
MAX_RECENT = 10


def config_dir() -> Path:
    """The folder holding ``brainseg.ini`` and ``brainseg.log`` (created if missing).

    Returns:
        ``$BRAINSEG_CONFIG_DIR`` when set, else the platform's per-user config folder.
    """
    env = os.environ.get("BRAINSEG_CONFIG_DIR")
    path = Path(env) if env else Path(platformdirs.user_config_dir("BrainSeg", "BrainSeg"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _to_bool(value: object, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _to_float(value: object, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default  # nan/inf in a hand-edited file: missing


def _to_int(value: object, default: int) -> int:
    try:
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return default


class Settings:
    """Typed access to the viewer's persistent settings.

    Args:
        path: INI file to use; defaults to ``config_dir() / "brainseg.ini"``.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else config_dir() / "brainseg.ini"
        self._q = QSettings(str(self.path), QSettings.Format.IniFormat)

    def sync(self) -> None:
        """Write pending changes to disk."""
        self._q.sync()

    # -- generic helpers -------------------------------------------------------------------------
    def _get(self, key: str) -> object:
        return self._q.value(key)

    def _set(self, key: str, value: object) -> None:
        self._q.setValue(key, value)

    # -- recent folders --------------------------------------------------------------------------
    @property
    def recent(self) -> list[str]:
        """Recently opened patients, dataset roots and stacks, newest first."""
        value = self._get("recent/paths")
        if value is None:
            return []
        items = [value] if isinstance(value, str) else list(cast(Iterable[object], value))
        return [str(v) for v in items if str(v)]

    def add_recent(self, path: Path | str) -> None:
        """Put ``path`` first in the recent list (deduplicated, at most :data:`MAX_RECENT`)."""
        p = str(Path(path))
        items = [p] + [r for r in self.recent if r != p]
        self._set("recent/paths", items[:MAX_RECENT])

    def clear_recent(self) -> None:
        """Forget every recent path."""
        self._q.remove("recent/paths")

    # -- overlay ---------------------------------------------------------------------------------
    def overlay_style(self) -> OverlayStyle:
        """The remembered overlay style (the prediction is always shown at start)."""
        return OverlayStyle(
            fill=self.fill,
            contour=self.contour,
            opacity=self.opacity / 100.0,
            contour_width=self.contour_width,
            pred_colour=self.pred_colour,
            gt_colour=self.gt_colour,
            gt_visible=self.show_gt,
        )

    def set_overlay_style(self, style: OverlayStyle) -> None:
        """Remember ``style`` (everything but whether the prediction is shown)."""
        self.fill, self.contour = style.fill, style.contour
        self.opacity = round(style.opacity * 100)
        self.contour_width = style.contour_width
        self.pred_colour, self.gt_colour = style.pred_colour, style.gt_colour
        self.show_gt = style.gt_visible

    @property
    def opacity(self) -> int:
        """Fill opacity of the mask overlay in percent (0-100)."""
        return max(0, min(100, _to_int(self._get("overlay/opacity"), 40)))

    @opacity.setter
    def opacity(self, value: int) -> None:
        self._set("overlay/opacity", int(value))

    @property
    def fill(self) -> bool:
        """Whether masks are drawn filled."""
        return _to_bool(self._get("overlay/fill"), True)

    @fill.setter
    def fill(self, value: bool) -> None:
        self._set("overlay/fill", bool(value))

    @property
    def contour(self) -> bool:
        """Whether mask outlines are drawn."""
        return _to_bool(self._get("overlay/contour"), True)

    @contour.setter
    def contour(self, value: bool) -> None:
        self._set("overlay/contour", bool(value))

    @property
    def contour_width(self) -> int:
        """Outline width in screen pixels (1-6)."""
        return max(1, min(6, _to_int(self._get("overlay/contour_width"), 2)))

    @contour_width.setter
    def contour_width(self, value: int) -> None:
        self._set("overlay/contour_width", int(value))

    @property
    def pred_colour(self) -> str:
        """Colour of the predicted mask (``#rrggbb``)."""
        return str(self._get("overlay/pred_colour") or DEFAULT_PRED_COLOUR)

    @pred_colour.setter
    def pred_colour(self, value: str) -> None:
        self._set("overlay/pred_colour", value)

    @property
    def gt_colour(self) -> str:
        """Colour of the ground-truth mask (``#rrggbb``)."""
        return str(self._get("overlay/gt_colour") or DEFAULT_GT_COLOUR)

    @gt_colour.setter
    def gt_colour(self, value: str) -> None:
        self._set("overlay/gt_colour", value)

    @property
    def show_gt(self) -> bool:
        """Whether ground-truth masks are drawn when the folder has them."""
        return _to_bool(self._get("overlay/show_gt"), True)

    @show_gt.setter
    def show_gt(self, value: bool) -> None:
        self._set("overlay/show_gt", bool(value))

    # -- thresholds (None = use the model card's value) ------------------------------------------
    @property
    def classifier_threshold(self) -> float | None:
        """Tumour-probability gate chosen by the user, or None for the model's own."""
        return _to_float(self._get("thresholds/classifier"), None)

    @classifier_threshold.setter
    def classifier_threshold(self, value: float | None) -> None:
        self._set("thresholds/classifier", "" if value is None else float(value))

    @property
    def mask_threshold(self) -> float | None:
        """Mask-probability threshold chosen by the user, or None for the model's own."""
        return _to_float(self._get("thresholds/mask"), None)

    @mask_threshold.setter
    def mask_threshold(self, value: float | None) -> None:
        self._set("thresholds/mask", "" if value is None else float(value))

    # -- running ---------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Compute device for inference: ``auto``, ``cpu``, ``cuda`` or ``mps``."""
        value = str(self._get("run/device") or "auto")
        return value if value in DEVICES else "auto"

    @device.setter
    def device(self, value: str) -> None:
        self._set("run/device", value)

    @property
    def largest_component(self) -> bool | None:
        """Show only one 3-D region of each patient (the one the thresholds' region rule picks); None =
        the segmenter card's setting."""
        value = self._get("thresholds/largest_component")
        return None if value in (None, "") else _to_bool(value, False)

    @largest_component.setter
    def largest_component(self, value: bool | None) -> None:
        self._set("thresholds/largest_component", "" if value is None else bool(value))

    @property
    def faint_edges(self) -> bool | None:
        """Outline tumours' faint edge slices; None = the segmenter card's setting."""
        value = self._get("thresholds/faint_edges")
        return None if value in (None, "") else _to_bool(value, False)

    @faint_edges.setter
    def faint_edges(self, value: bool | None) -> None:
        self._set("thresholds/faint_edges", "" if value is None else bool(value))

    @property
    def auto_run(self) -> bool:
        """Whether opening a patient starts the analysis."""
        return _to_bool(self._get("run/auto_run"), True)

    @auto_run.setter
    def auto_run(self, value: bool) -> None:
        self._set("run/auto_run", bool(value))

    @property
    def thorough(self) -> bool:
        """The segmenter's thorough mode (``--thorough`` in the CLIs; :mod:`brainseg_core.thorough`:
        its card's ensemble at the ensemble's thresholds, else flip TTA; about twice its cost)."""
        return _to_bool(self._get("run/thorough"), False)

    @thorough.setter
    def thorough(self, value: bool) -> None:
        self._set("run/thorough", bool(value))

    @property
    def classifier_path(self) -> str | None:
        """A classifier bundle the user loaded by hand (None = default resolution)."""
        return str(self._get("models/classifier") or "") or None

    @classifier_path.setter
    def classifier_path(self, value: str | None) -> None:
        self._set("models/classifier", value or "")

    @property
    def segmenter_path(self) -> str | None:
        """A segmenter bundle the user loaded by hand (None = default resolution)."""
        return str(self._get("models/segmenter") or "") or None

    @segmenter_path.setter
    def segmenter_path(self, value: str | None) -> None:
        self._set("models/segmenter", value or "")

    @property
    def export_dir(self) -> str | None:
        """The last export destination."""
        return str(self._get("export/dir") or "") or None

    @export_dir.setter
    def export_dir(self, value: str | None) -> None:
        self._set("export/dir", value or "")

    @property
    def corrections_dir(self) -> str | None:
        """The folder Save corrections as training data last wrote to (the fine-tuning's default)."""
        return str(self._get("corrections/dir") or "") or None

    @corrections_dir.setter
    def corrections_dir(self, value: str | None) -> None:
        self._set("corrections/dir", value or "")

    @property
    def original_data_dir(self) -> str | None:
        """The original training data last mixed into a fine-tuning on corrections."""
        return str(self._get("corrections/original_data") or "") or None

    @original_data_dir.setter
    def original_data_dir(self, value: str | None) -> None:
        self._set("corrections/original_data", value or "")

    @property
    def export_formats(self) -> list[str]:
        """Export formats last chosen (subset of ``tif``, ``stack``, ``png``, ``csv``)."""
        value = self._get("export/formats")
        if value is None:
            return ["tif", "png", "csv"]
        items = [value] if isinstance(value, str) else list(cast(Iterable[object], value))
        return [str(v) for v in items if str(v) in FORMATS]

    @export_formats.setter
    def export_formats(self, value: list[str]) -> None:
        self._set("export/formats", list(value))

    # -- window ----------------------------------------------------------------------------------
    @property
    def geometry(self) -> QByteArray | None:
        """Saved main-window geometry."""
        value = self._get("window/geometry")
        return value if isinstance(value, QByteArray) else None

    @geometry.setter
    def geometry(self, value: QByteArray) -> None:
        self._set("window/geometry", value)

    @property
    def window_state(self) -> QByteArray | None:
        """Saved dock and toolbar layout."""
        value = self._get("window/state")
        return value if isinstance(value, QByteArray) else None

    @window_state.setter
    def window_state(self, value: QByteArray) -> None:
        self._set("window/state", value)

    # -- pixel spacing per dataset ---------------------------------------------------------------
    @staticmethod
    def _path_key(group: str, path: Path | str) -> str:
        """The settings key of a per-folder value: ``group/<digest of the resolved path>``."""
        digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:16]
        return f"{group}/{digest}"

    def spacing(self, dataset: Path | str) -> Spacing | None:
        """The voxel size entered for a dataset, or None (also for an unreadable stored value)."""
        value = self._get(self._path_key("spacing", dataset))
        if value is None:
            return None
        parts = [value] if isinstance(value, str) else list(cast(Iterable[object], value))
        try:
            return Spacing.from_sequence([float(cast(str, p)) for p in parts])
        except (TypeError, ValueError):
            return None

    def set_spacing(self, dataset: Path | str, spacing: Spacing | None) -> None:
        """Remember (or with None, forget) the voxel size of a dataset."""
        key = self._path_key("spacing", dataset)
        if spacing is None:
            self._q.remove(key)
        else:
            self._set(key, [f"{v:g}" for v in spacing.to_list() if v is not None])

    # -- DICOM series chosen per study -----------------------------------------------------------
    def series_choice(self, study: Path | str) -> dict[str, str] | None:
        """The series the reader confirmed for a DICOM study (sequence name to series UID), or None."""
        value = self._get(self._path_key("dicom_series", study))
        if not isinstance(value, str) or not value:
            return None
        try:
            data = json.loads(value)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}

    def set_series_choice(self, study: Path | str, choice: Mapping[str, str] | None) -> None:
        """Remember (or with None, forget) which series feed the channels of a DICOM study."""
        key = self._path_key("dicom_series", study)
        if choice is None:
            self._q.remove(key)
        else:
            self._set(key, json.dumps(dict(choice), sort_keys=True))
