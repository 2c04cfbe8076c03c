"""The viewer's state without Qt: :class:`ViewerModel`.

As napari keeps its ``ViewerModel`` apart from the Qt widgets that show it, this module holds
what the viewer shows — the opened patients, the displayed patient and slice, the thresholds, the
voxel size and the overlay style — and announces every change through :class:`Event` objects.
Widgets bind to those events and format their own text; the window only lays them out and wires
them. Nothing here imports Qt, so the state and its rules are tested without a display.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from brainseg_app.session import (
    PatientRecord,
    PatientState,
    Rethresholded,
    record_thresholds,
    with_entered_spacing,
)
from brainseg_core.display import auto_window
from brainseg_core.edits import MAX_BRUSH_RADIUS, EditKind
from brainseg_core.io import Volume
from brainseg_core.results import MaskSource, SliceResult, label_components
from brainseg_core.results import set_aside as outline_set_aside
from brainseg_core.spacing import Spacing
from brainseg_core.thresholds import FAINT_EDGE_PROBABILITY, Thresholds

if TYPE_CHECKING:
    from brainseg_core.model_card import ModelCard

__all__ = [
    "DEFAULT_GT_COLOUR",
    "DEFAULT_PRED_COLOUR",
    "WINDOW_PRESETS",
    "EditTool",
    "Event",
    "OverlayStyle",
    "ViewerModel",
]

T = TypeVar("T")

#: Colour of the predicted mask.
DEFAULT_PRED_COLOUR = "#ff3b30"
#: Colour of the ground-truth mask.
DEFAULT_GT_COLOUR = "#34c759"


#: Window/level presets: name -> foreground percentiles ``(low, high)``, or None for the full
#: 8-bit range. MR intensities have no absolute scale (unlike CT's Hounsfield units), so the
#: presets are percentiles of each volume's foreground in the shown channel.
WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    "Auto (1-99.5 %)": (1.0, 99.5),
    "Soft (0.5-99.9 %)": (0.5, 99.9),
    "Tight (5-95 %)": (5.0, 95.0),
    "Full range (0-255)": None,
}
#: The preset a channel gets the first time it is shown.
DEFAULT_PRESET = "Auto (1-99.5 %)"


#: The brush radius (pixels) the viewer starts with.
DEFAULT_BRUSH_RADIUS = 4


class EditTool(enum.StrEnum):
    """What a left click or drag on the slice does in edit mode (no tool: pan)."""

    BRUSH = "brush"
    ERASER = "eraser"
    DELETE_REGION = "delete_region"

    @property
    def label(self) -> str:
        """A short name for buttons and the status bar."""
        return {
            EditTool.BRUSH: "Brush",
            EditTool.ERASER: "Eraser",
            EditTool.DELETE_REGION: "Delete region",
        }[self]


class Event(Generic[T]):
    """A Qt-free signal: callbacks connected to it get each emitted value, in connection order."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[T], Any]] = []

    def connect(self, callback: Callable[[T], Any]) -> None:
        """Call ``callback(value)`` on every :meth:`emit`."""
        self._callbacks.append(callback)

    def disconnect(self, callback: Callable[[T], Any]) -> None:
        """Stop calling ``callback`` (no error when it was not connected)."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, value: T) -> None:
        """Call every connected callback with ``value``."""
        for callback in list(self._callbacks):
            callback(value)


@dataclass(frozen=True, slots=True)
class OverlayStyle:
    """How masks are drawn over the slice.

    Args:
        visible: draw the predicted mask (the ground truth follows ``gt_visible`` alone).
        fill: fill the mask with its colour.
        contour: draw the mask's outline.
        opacity: opacity of the fill, 0..1.
        contour_width: outline width in screen pixels (1..10).
        pred_colour: colour of the predicted mask (``#rrggbb``).
        gt_colour: colour of the ground-truth mask (``#rrggbb``).
        gt_visible: draw the ground truth when the patient has it.

    Raises:
        ValueError: for an opacity outside [0, 1] or a width outside 1..10.
    """

    visible: bool = True
    fill: bool = True
    contour: bool = True
    opacity: float = 0.4
    contour_width: int = 2
    pred_colour: str = DEFAULT_PRED_COLOUR
    gt_colour: str = DEFAULT_GT_COLOUR
    gt_visible: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.opacity <= 1.0:
            raise ValueError(f"opacity must be within [0, 1], got {self.opacity}")
        if not 1 <= self.contour_width <= 10:
            raise ValueError(f"contour_width must be 1..10 px, got {self.contour_width}")


class ViewerModel:
    """Everything the viewer shows, and the rules that keep it consistent.

    Events (each carries the new value):
        patients: the opened patients changed (the list of records).
        patient: another patient is displayed (its record, or None).
        volume: the displayed patient's volume was read (or None while reading).
        slice: another slice is displayed (its index).
        thresholds: the thresholds changed (:class:`Thresholds`).
        spacing: the dataset's voxel size changed (:class:`Spacing` or None).
        overlay: the overlay style changed (:class:`OverlayStyle`).
        window: the shown channel's window/level changed (``(width, level)``).
        results: a patient's displayed results changed (its record).
        tool: the edit tool changed (:class:`EditTool`, or None: no editing, the mouse pans).
        brush: the brush radius changed (pixels).
        edits: the reader edited a mask of the displayed patient, or undid or redid an edit
            (``(record, slice index)``).
        review: the slices marked reviewed changed (the record).
    """

    def __init__(self, *, overlay: OverlayStyle | None = None) -> None:
        self.records: dict[Path, PatientRecord] = {}
        self.root: Path | None = None
        self.current: PatientRecord | None = None
        self.volume: Volume | None = None
        self._read: Volume | None = None  # the displayed volume as read, before the dataset's spacing
        self.index = 0
        self.thresholds = Thresholds()
        # the segmenter's input size: where the thresholds' min_area_px is counted (None: no model)
        self.model_input_size: int | None = None
        self.dataset_spacing: Spacing | None = None
        self.patient_spacing: dict[Path, Spacing] = {}  # entered for one patient (wins over the dataset's)
        self.overlay = overlay or OverlayStyle()
        self.channel = 1  # FLAIR
        self._windows: dict[tuple[Path, int], tuple[float, float]] = {}
        self.tool: EditTool | None = None
        self.brush_radius = DEFAULT_BRUSH_RADIUS
        self._last_point: tuple[int, int] | None = None
        self._aside_memo: tuple[SliceResult, SliceResult, Thresholds, np.ndarray | None] | None = None
        self.events = _Events()

    # -- patients --------------------------------------------------------------------------------
    def set_patients(
        self,
        root: Path,
        paths: list[Path],
        *,
        spacing: Spacing | None,
        patient_spacing: dict[Path, Spacing] | None = None,
        series: dict[Path, dict[str, str]] | None = None,
    ) -> None:
        """A new folder was opened: its patients, none displayed yet, the voxel sizes entered for
        the dataset and for single patients, and the DICOM series confirmed for some."""
        from brainseg_core.io import patient_id_of

        chosen = series or {}
        self.records = {p: PatientRecord(p, patient_id_of(p), series=chosen.get(p)) for p in paths}
        self.root = root
        self.current = None
        self.volume = self._read = None
        self.index = 0
        self.dataset_spacing = spacing
        self.patient_spacing = dict(patient_spacing or {})
        self.events.patients.emit(list(self.records.values()))

    def show_patient(self, rec: PatientRecord) -> None:
        """Display ``rec`` (its volume is read next, see :meth:`set_volume`)."""
        self.current = rec
        self.volume = self._read = None
        self.index = 0
        self.events.patient.emit(rec)

    def set_volume(self, volume: Volume) -> None:
        """The displayed patient's volume was read: apply the dataset's spacing, show its middle."""
        rec = self.current
        if rec is None:
            raise RuntimeError("show_patient() before set_volume()")
        self._read = volume
        self.volume = self._with_entered_spacing(volume)
        rec.file_spacing = volume.spacing
        rec.truth = volume.masks
        rec.n_slices = volume.n_slices
        rec.format = volume.format
        self.apply(rec)
        self.events.volume.emit(self.volume)
        self.index = -1
        self.set_slice(volume.n_slices // 2)

    @property
    def n_slices(self) -> int:
        """Slices of the displayed volume (0 when none)."""
        return 0 if self.volume is None else self.volume.n_slices

    # -- navigation ------------------------------------------------------------------------------
    def set_slice(self, index: int) -> bool:
        """Display slice ``index``, clamped to the volume.

        Returns:
            True when the displayed slice changed.
        """
        if self.volume is None:
            return False
        index = max(0, min(int(index), self.n_slices - 1))
        if index == self.index:
            return False
        self.index = index
        self.events.slice.emit(index)
        return True

    def step(self, delta: int) -> bool:
        """Move ``delta`` slices (negative: back); see :meth:`set_slice`."""
        return self.set_slice(self.index + delta)

    def tumour_flags(self) -> list[bool]:
        """Per slice of the displayed volume: whether its displayed mask is not empty."""
        flags = [False] * self.n_slices
        rec = self.current
        if rec is not None and rec.shown is not None:
            for s in rec.shown.slices:
                if s.index < len(flags):
                    flags[s.index] = s.area_px > 0
        return flags

    def truth_flags(self) -> list[bool] | None:
        """Per slice: whether its ground truth holds tumour (None without ground truth)."""
        if self.volume is None or self.volume.masks is None:
            return None
        return [bool(m.any()) for m in self.volume.masks]

    def next_tumour(self, direction: int) -> int | None:
        """The next (1) or previous (-1) slice with a displayed tumour, or None."""
        found = self.tumour_flags()
        order = range(self.index + 1, len(found)) if direction > 0 else range(self.index - 1, -1, -1)
        return next((i for i in order if found[i]), None)

    # -- thresholds and voxel size ---------------------------------------------------------------
    @staticmethod
    def card_thresholds(
        classifier: ModelCard | None,
        segmenter: ModelCard | None,
        *,
        gate: float | None = None,
        mask: float | None = None,
        largest_component: bool | None = None,
        faint_edges: bool | None = None,
        thorough: bool = False,
    ) -> Thresholds:
        """The models' thresholds with the user's own choices (None: the card's) on top.

        ``faint_edges`` turns the faint-edge step on (at the card's threshold, else
        :data:`~brainseg_core.thresholds.FAINT_EDGE_PROBABILITY`) or off; ``thorough`` takes the
        segmenter card's thorough-mode thresholds (its ensemble's) where it has them.
        """
        base = (
            Thresholds()
            if segmenter is None
            else Thresholds.from_cards(classifier, segmenter, thorough=thorough)
        )
        edge = None if faint_edges is None else (base.edge or FAINT_EDGE_PROBABILITY) if faint_edges else 0.0
        chosen = {"gate": gate, "mask": mask, "largest_component": largest_component, "edge": edge}
        return base.replace(**{k: v for k, v in chosen.items() if v is not None})

    def set_thresholds(self, thresholds: Thresholds) -> None:
        """Use ``thresholds``: the displayed patient's masks follow at once (no network runs).

        The other patients follow on :meth:`apply_all`, which a viewer calls once a dragged
        slider settles, so dragging stays fluid with many patients open.
        """
        if thresholds == self.thresholds:
            return
        self.thresholds = thresholds
        if self.current is not None:
            self.apply(self.current)
        self.events.thresholds.emit(thresholds)

    def update_thresholds(self, **changes: Any) -> None:
        """:meth:`set_thresholds` with some fields changed (``gate=``, ``mask=``, ...)."""
        self.set_thresholds(self.thresholds.replace(**changes))

    def set_dataset_spacing(self, spacing: Spacing | None) -> None:
        """The voxel size the user gave for the whole opened dataset (patients whose files or
        whose own entry give one keep theirs)."""
        self.dataset_spacing = spacing
        self._spacing_changed(spacing)

    def set_patient_spacing(self, patient: Path, spacing: Spacing | None) -> None:
        """The voxel size the user gave for one patient (None: use the dataset's again)."""
        if spacing is None:
            self.patient_spacing.pop(patient, None)
        else:
            self.patient_spacing[patient] = spacing
        self._spacing_changed(spacing)

    def _spacing_changed(self, spacing: Spacing | None) -> None:
        if self._read is not None:
            self.volume = self._with_entered_spacing(self._read)
        self.apply_all()
        self.events.spacing.emit(spacing)

    def _entered_spacing(self, patient: Path) -> Spacing | None:
        return self.patient_spacing.get(patient, self.dataset_spacing)

    def _with_entered_spacing(self, volume: Volume) -> Volume:
        if self.current is None:
            return volume
        return with_entered_spacing(volume, self._entered_spacing(self.current.path))

    def spacing_for(self, rec: PatientRecord) -> Spacing | None:
        """The voxel size of ``rec``: its files' own when they have one (known once its volume was
        read, displayed or analysed), else the one entered for the patient, else the dataset's."""
        if rec.file_spacing is not None:
            return rec.file_spacing
        return self._entered_spacing(rec.path)

    # -- results ---------------------------------------------------------------------------------
    def shown_thresholds(self, rec: PatientRecord) -> Thresholds:
        """The thresholds applied to ``rec`` (:func:`~brainseg_app.session.record_thresholds`)."""
        return record_thresholds(
            self.thresholds, rec.base, self.model_input_size, done=rec.state is PatientState.DONE
        )

    def apply(self, rec: PatientRecord, *, ready: Rethresholded | None = None) -> None:
        """Recompute what ``rec`` shows for the current thresholds and voxel size (``ready``: the
        same computed in the background, see :meth:`PatientRecord.apply`)."""
        rec.apply(self.shown_thresholds(rec), self.spacing_for(rec), ready=ready)
        self.events.results.emit(rec)

    def apply_all(self) -> None:
        """:meth:`apply` to every opened patient."""
        for rec in self.records.values():
            self.apply(rec)

    # -- review ------------------------------------------------------------------------------------
    def review_queue(self) -> list[int]:
        """The displayed patient's slices still to review (see :meth:`PatientRecord.review_queue`)."""
        return [] if self.current is None else self.current.review_queue()

    def next_review(self, direction: int) -> int | None:
        """The next (1) or previous (-1) slice still to review, round the end of the patient to
        its first (last) one; None when there is none."""
        queue = self.review_queue()
        if not queue:
            return None
        if direction > 0:
            return next((i for i in queue if i > self.index), queue[0])
        return next((i for i in reversed(queue) if i < self.index), queue[-1])

    def set_reviewed(self, index: int, reviewed: bool = True) -> None:
        """Mark slice ``index`` of the displayed patient reviewed (it leaves the queue) or not."""
        rec = self.current
        if rec is None or reviewed == (index in rec.reviewed):
            return
        if reviewed:
            rec.reviewed.add(index)
        else:
            rec.reviewed.discard(index)
        self.events.review.emit(rec)
        self.events.results.emit(rec)

    def toggle_reviewed(self) -> bool:
        """Mark the displayed slice reviewed, or not reviewed again.

        Returns:
            Whether it is reviewed now.
        """
        rec = self.current
        if rec is None:
            return False
        self.set_reviewed(self.index, self.index not in rec.reviewed)
        return self.index in rec.reviewed

    # -- editing -----------------------------------------------------------------------------------
    def set_tool(self, tool: EditTool | None) -> None:
        """Use ``tool`` for the left mouse button on the slice (None: pan, as outside edit mode)."""
        if tool != self.tool:
            self.tool = tool
            self._last_point = None
            self.events.tool.emit(tool)

    def set_brush_radius(self, radius: int) -> None:
        """The brush and eraser radius in pixels, clamped to 0..:data:`MAX_BRUSH_RADIUS`."""
        radius = max(0, min(int(radius), MAX_BRUSH_RADIUS))
        if radius != self.brush_radius:
            self.brush_radius = radius
            self.events.brush.emit(radius)

    def _editable(self) -> tuple[PatientRecord, np.ndarray] | None:
        """The displayed patient and the displayed slice's mask, when that slice can be edited."""
        rec = self.current
        s = None if rec is None else rec.slice_shown(self.index)
        if rec is None or s is None:
            return None
        return rec, s.mask

    def _edited(self, rec: PatientRecord, changed: bool, index: int | None = None) -> bool:
        if changed:
            rec.edits_changed()
            self.events.edits.emit((rec, self.index if index is None else index))
            self.events.results.emit(rec)
        return changed

    def paint(self, row: int, col: int, *, continues: bool = False) -> bool:
        """Paint with the current tool (brush or eraser) at ``(row, col)`` of the displayed slice.

        Args:
            row: pixel row.
            col: pixel column.
            continues: the mouse is dragged on from the last point (the stroke is one undo step).

        Returns:
            True when the slice can be edited (it has been analysed) and the tool paints.
        """
        target = self._editable()
        if target is None or self.tool not in (EditTool.BRUSH, EditTool.ERASER):
            return False
        rec, base = target
        previous = self._last_point if continues else None
        changed = rec.edits.brush(
            self.index,
            base,
            (row, col),
            self.brush_radius,
            erase=self.tool is EditTool.ERASER,
            continues=continues,
            previous=previous,
        )
        self._last_point = (row, col)
        self._edited(rec, changed)
        return True

    def end_stroke(self) -> None:
        """The mouse was released: the next paint starts a new undo step."""
        self._last_point = None
        if self.current is not None:
            self.current.edits.end_stroke()

    def edit(self, kind: EditKind, point: tuple[int, int] | None = None) -> bool:
        """A one-click edit of the displayed slice.

        Args:
            kind: :attr:`EditKind.FILL_HOLES`, :attr:`EditKind.DELETE_REGION` (at ``point``),
                :attr:`EditKind.ADD_REGION` (the outline :meth:`set_aside_outline` gives),
                :attr:`EditKind.ADD_REGION_3D` (the regions :meth:`set_aside_region` gives, on all
                their slices, one undo step),
                :attr:`EditKind.CLEAR` or :attr:`EditKind.REVERT`.
            point: ``(row, col)`` for a region to delete.

        Returns:
            True when the mask changed.

        Raises:
            ValueError: for a brush kind (see :meth:`paint`) or a region without a point.
        """
        target = self._editable()
        if target is None:
            return False
        rec, base = target
        e, i = rec.edits, self.index
        if kind is EditKind.FILL_HOLES:
            changed = e.fill_holes(i, base)
        elif kind is EditKind.DELETE_REGION:
            if point is None:
                raise ValueError("deleting a region needs the point clicked")
            changed = e.delete_region(i, base, point)
        elif kind is EditKind.ADD_REGION:
            aside = self.set_aside_outline()
            changed = aside is not None and e.add_region(i, base, aside)
        elif kind is EditKind.ADD_REGION_3D:
            regions = self.set_aside_region()
            shown = {j: rec.slice_shown(j) for j in regions}
            changed = bool(regions) and e.add_regions(
                {j: (s.mask, regions[j]) for j, s in shown.items() if s is not None}, focus=i
            )
        elif kind is EditKind.CLEAR:
            changed = e.clear(i, base)
        elif kind is EditKind.REVERT:
            changed = e.revert(i)
        else:
            raise ValueError(f"{kind} is painted with paint(), not edit()")
        return self._edited(rec, changed)

    def set_aside_outline(self) -> np.ndarray | None:
        """The displayed slice's outline that the one-3-D-region option set aside and the
        slice's mask does not hold (:func:`~brainseg_core.results.set_aside` of the model's slice,
        less the reader's mask where the reader edited it), None when there is none."""
        rec = self.current
        model = None if rec is None else rec.model_slice(self.index)
        shown = None if rec is None else rec.slice_shown(self.index)
        if rec is None or rec.model_shown is None or model is None or shown is None:
            return None
        thresholds = rec.model_shown.thresholds  # what the displayed masks were made with
        memo = self._aside_memo  # the view and the slice panel both ask, once per slice shown
        if memo is not None and memo[0] is model and memo[1] is shown and memo[2] == thresholds:
            return memo[3]
        aside = outline_set_aside(model, thresholds)
        if aside is not None and shown.source is MaskSource.READER:
            aside = aside & ~shown.mask
            aside = aside if aside.any() else None
        self._aside_memo = (model, shown, thresholds, aside)
        return aside

    def set_aside_region(self) -> dict[int, np.ndarray]:
        """The 3-D regions the displayed slice's dotted outline (:meth:`set_aside_outline`) belongs
        to, for keeping a second lesion on all its slices at once.

        The regions are found on the model's set-aside outlines of every slice (26-connected, as
        the largest-region step labels them), so a slice the reader already kept does not cut a
        region in two.

        Returns:
            By slice index, the region's pixels on the displayed slice and on every slice that
            shows the model's mask (a slice the reader edited keeps the reader's mask: K adds the
            region there); empty when the displayed slice has no dotted outline.
        """
        rec = self.current
        if self.set_aside_outline() is None or rec is None or rec.model_shown is None:
            return {}
        thresholds = rec.model_shown.thresholds
        indices = [s.index for s in rec.model_shown.slices]
        here = indices.index(self.index)
        shape = rec.model_shown.slices[here].mask.shape
        stack = np.zeros((len(indices), *shape), bool)
        for k, s in enumerate(rec.model_shown.slices):
            aside = outline_set_aside(s, thresholds)
            if aside is not None and aside.shape == shape:
                stack[k] = aside
        labels, _ = label_components(stack)
        touched = np.unique(labels[here][stack[here]])
        keep = np.isin(labels, touched[touched > 0])
        regions = {}
        for k, j in enumerate(indices):
            shown = rec.slice_shown(j)
            edited = shown is not None and shown.source is MaskSource.READER
            if keep[k].any() and (j == self.index or not edited):
                regions[j] = keep[k]
        return regions

    def undo(self) -> int | None:
        """Undo the displayed patient's last edit and show the slice it changed (for an edit of
        several slices at once, the slice it was made from).

        Returns:
            That slice, or None when there was nothing to undo.
        """
        return self._history(undo=True)

    def redo(self) -> int | None:
        """Redo the displayed patient's last undone edit and show the slice it changed (for an
        edit of several slices at once, the slice it was made from).

        Returns:
            That slice, or None when there was nothing to redo.
        """
        return self._history(undo=False)

    def _history(self, *, undo: bool) -> int | None:
        rec = self.current
        if rec is None:
            return None
        self._last_point = None
        index = rec.edits.undo() if undo else rec.edits.redo()
        if index is None:
            return None
        self.set_slice(index)
        self._edited(rec, True, index)
        return index

    # -- channel and window/level ----------------------------------------------------------------
    def set_channel(self, channel: int) -> None:
        """Show channel ``channel`` (0-2, or 3 for the RGB composite) with its own window/level."""
        self.channel = channel
        self.events.window.emit(self.window())

    def window(self) -> tuple[float, float]:
        """``(width, level)`` of the displayed patient's shown channel.

        Each patient and channel keeps the window the reader set; the first time a channel is
        shown it gets :data:`DEFAULT_PRESET` (its foreground percentiles), not the raw range.
        """
        key = self._window_key()
        if key is None:
            return 255.0, 127.5
        if key not in self._windows:
            self._windows[key] = self.preset_window(DEFAULT_PRESET)
        return self._windows[key]

    def preset_window(self, preset: str) -> tuple[float, float]:
        """The window of a :data:`WINDOW_PRESETS` entry for the shown channel of this volume.

        Raises:
            KeyError: for an unknown preset name.
        """
        percentiles = WINDOW_PRESETS[preset]
        if percentiles is None or self.volume is None:
            return 255.0, 127.5
        images = self.volume.images
        pixels = images if self.channel == 3 else images[..., self.channel]
        return auto_window(pixels, *percentiles)

    def set_window(self, width: float, level: float) -> None:
        """The reader's window for the shown channel of the displayed patient (kept per both)."""
        key = self._window_key()
        if key is not None and self._windows.get(key) != (width, level):
            self._windows[key] = (width, level)
            self.events.window.emit((width, level))

    def apply_preset(self, preset: str) -> None:
        """Use a :data:`WINDOW_PRESETS` entry for the shown channel."""
        self.set_window(*self.preset_window(preset))

    def window_of(self, patient: Path, channel: int) -> tuple[float, float] | None:
        """The window a patient's channel was last shown with, or None if it never was."""
        return self._windows.get((patient, channel))

    def _window_key(self) -> tuple[Path, int] | None:
        return None if self.current is None or self.volume is None else (self.current.path, self.channel)

    # -- overlay -----------------------------------------------------------------------------------
    def set_overlay(self, **changes: Any) -> None:
        """Change some fields of the overlay style (``opacity=0.5``, ``fill=False``, ...)."""
        style = dataclasses.replace(self.overlay, **changes)
        if style != self.overlay:
            self.overlay = style
            self.events.overlay.emit(style)


class _Events:
    """The :class:`ViewerModel`'s events (see its docstring)."""

    def __init__(self) -> None:
        self.patients: Event[list[PatientRecord]] = Event()
        self.patient: Event[PatientRecord | None] = Event()
        self.volume: Event[Volume | None] = Event()
        self.slice: Event[int] = Event()
        self.thresholds: Event[Thresholds] = Event()
        self.spacing: Event[Spacing | None] = Event()
        self.overlay: Event[OverlayStyle] = Event()
        self.window: Event[tuple[float, float]] = Event()
        self.results: Event[PatientRecord] = Event()
        self.tool: Event[EditTool | None] = Event()
        self.brush: Event[int] = Event()
        self.edits: Event[tuple[PatientRecord, int]] = Event()
        self.review: Event[PatientRecord] = Event()
