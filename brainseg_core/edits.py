"""The reader's corrections of the masks: :class:`MaskEdits`, with undo and redo.

A reader who disagrees with the model paints the mask of a slice: a round brush adds tumour, an
eraser removes it, "fill holes" closes the holes inside an outline
(``scipy.ndimage.binary_fill_holes``), a click removes one connected region (a false positive;
full connectivity, as :func:`~brainseg_core.results.label_components`), "clear" empties the slice
and "revert" gives the slice back to the model. An edited slice keeps the reader's mask from then
on: :func:`apply_edits` puts it over any result of the patient, so moving a threshold or running
the analysis again never replaces it (its :class:`~brainseg_core.results.MaskSource` is
``READER``). Every operation is one undo step (a brush stroke is one step however long it is);
:meth:`MaskEdits.undo` and :meth:`MaskEdits.redo` walk the history of the patient, up to
``max_steps`` steps back.

Masks are ``(H, W)`` bool arrays at the source size; points are ``(row, col)`` pixel indices. The
module is numpy and scipy only (no torch, no Qt).
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from brainseg_core.results import MaskSource, PatientResult, label_components

__all__ = ["MAX_BRUSH_RADIUS", "EditKind", "MaskEdits", "apply_edits"]

#: The largest brush radius in pixels.
MAX_BRUSH_RADIUS = 64


class EditKind(enum.StrEnum):
    """One kind of mask edit (what an undo step undoes)."""

    BRUSH = "brush"
    ERASE = "erase"
    FILL_HOLES = "fill_holes"
    DELETE_REGION = "delete_region"
    ADD_REGION = "add_region"
    ADD_REGION_3D = "add_region_3d"
    CLEAR = "clear"
    REVERT = "revert"

    def describe(self) -> str:
        """A few words for menus and the status bar ("Undo brush stroke")."""
        return {
            EditKind.BRUSH: "brush stroke",
            EditKind.ERASE: "eraser stroke",
            EditKind.FILL_HOLES: "fill holes",
            EditKind.DELETE_REGION: "delete region",
            EditKind.ADD_REGION: "keep the set-aside outline",
            EditKind.ADD_REGION_3D: "keep the set-aside region on all its slices",
            EditKind.CLEAR: "clear slice",
            EditKind.REVERT: "back to the model's mask",
        }[self]


@dataclass(frozen=True)
class _Step:
    """One undoable change of one slice (and of ``others``, for an edit of several slices at once);
    None means "the model's mask" (not edited)."""

    index: int
    kind: EditKind
    before: np.ndarray | None
    after: np.ndarray | None
    open_stroke: bool = False
    others: tuple[tuple[int, np.ndarray | None, np.ndarray], ...] = ()


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy * yy + xx * xx <= r * r + r  # r*r + r: round discs without a lone pixel on each axis


def _stamp(mask: np.ndarray, row: int, col: int, radius: int, value: bool) -> None:
    """Set a disc of ``radius`` around ``(row, col)`` to ``value`` in place (clipped to the mask)."""
    disk = _disk(radius)
    h, w = mask.shape
    r0, c0 = row - radius, col - radius
    top, left = max(r0, 0), max(c0, 0)
    bottom, right = min(row + radius + 1, h), min(col + radius + 1, w)
    if top >= bottom or left >= right:
        return
    sub = disk[top - r0 : bottom - r0, left - c0 : right - c0]
    mask[top:bottom, left:right][sub] = value


def _line(a: tuple[int, int], b: tuple[int, int], spacing: float) -> Iterator[tuple[int, int]]:
    """Points from ``a`` to ``b`` (both included), at most ``spacing`` pixels apart."""
    steps = max(1, int(np.ceil(max(abs(b[0] - a[0]), abs(b[1] - a[1])) / max(spacing, 1.0))))
    for k in range(steps + 1):
        t = k / steps
        yield round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t)


class MaskEdits:
    """One patient's edited masks and the history of its edits.

    Args:
        masks: slices already edited (e.g. read back from a saved analysis): index -> ``(H, W)``
            mask; they start without history.
        max_steps: how many steps :meth:`undo` can go back (older steps are forgotten).

    Raises:
        ValueError: for a mask that is not 2-D, a negative index or ``max_steps`` < 1.
    """

    def __init__(self, masks: Mapping[int, np.ndarray] | None = None, *, max_steps: int = 200) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self._masks: dict[int, np.ndarray] = {}
        for index, mask in (masks or {}).items():
            self._masks[self._index(index)] = self._mask(mask).copy()
        self._undo: deque[_Step] = deque(maxlen=max_steps)
        self._redo: list[_Step] = []

    # -- reading ---------------------------------------------------------------------------------
    @property
    def edited(self) -> list[int]:
        """Indices of the slices that carry the reader's mask, ascending."""
        return sorted(self._masks)

    def is_edited(self, index: int) -> bool:
        """Whether slice ``index`` carries the reader's mask."""
        return index in self._masks

    def mask(self, index: int) -> np.ndarray | None:
        """The reader's mask of slice ``index`` (a copy), None when the slice is not edited."""
        m = self._masks.get(index)
        return None if m is None else m.copy()

    def masks(self) -> dict[int, np.ndarray]:
        """Every edited slice's mask (copies), by index."""
        return {i: m.copy() for i, m in self._masks.items()}

    def __bool__(self) -> bool:
        return bool(self._masks)

    @property
    def can_undo(self) -> bool:
        """Whether there is a step to undo."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """Whether there is an undone step to redo."""
        return bool(self._redo)

    def next_undo(self) -> EditKind | None:
        """What :meth:`undo` would undo, or None."""
        return self._undo[-1].kind if self._undo else None

    def next_redo(self) -> EditKind | None:
        """What :meth:`redo` would redo, or None."""
        return self._redo[-1].kind if self._redo else None

    # -- editing ---------------------------------------------------------------------------------
    def brush(
        self,
        index: int,
        base: np.ndarray,
        point: tuple[int, int],
        radius: int,
        *,
        erase: bool = False,
        continues: bool = False,
        previous: tuple[int, int] | None = None,
    ) -> bool:
        """Paint (or erase) a disc on slice ``index``.

        A stroke is one undo step: the first disc of a drag starts it, the next ones continue it
        (``continues=True`` and the point before, ``previous``, so that a fast drag leaves no gaps).

        Args:
            index: the slice.
            base: the slice's mask as shown now (the model's when the slice is not edited yet).
            point: ``(row, col)`` of the disc's centre (may lie outside the slice).
            radius: disc radius in pixels, 0 (one pixel) to :data:`MAX_BRUSH_RADIUS`.
            erase: remove instead of add.
            continues: the disc continues the last stroke (when that stroke is of this slice and
                kind and nothing was undone since); otherwise a new step starts.
            previous: the last point of the stroke; the discs in between are painted too.

        Returns:
            True when the mask changed (or the stroke goes on).

        Raises:
            ValueError: for a radius out of range or a base that is not 2-D.
        """
        if not 0 <= int(radius) <= MAX_BRUSH_RADIUS:
            raise ValueError(f"the brush radius must be 0-{MAX_BRUSH_RADIUS} px, got {radius}")
        kind = EditKind.ERASE if erase else EditKind.BRUSH
        last = self._undo[-1] if self._undo else None
        stroke = (
            continues and last is not None and last.open_stroke and last.index == index and last.kind is kind
        )
        mask = self._current(index, base)
        points = [point] if previous is None else list(_line(previous, point, max(radius, 1) / 2))
        for row, col in points:
            _stamp(mask, int(row), int(col), int(radius), not erase)
        if stroke:
            assert last is not None
            self._undo[-1] = dataclasses.replace(last, after=mask.copy())
            self._masks[index] = mask
            return True
        return self._record(index, kind, mask, base, open_stroke=True)

    def end_stroke(self) -> None:
        """The mouse was released: the next disc starts a new step."""
        if self._undo and self._undo[-1].open_stroke:
            self._undo[-1] = dataclasses.replace(self._undo[-1], open_stroke=False)

    def fill_holes(self, index: int, base: np.ndarray) -> bool:
        """Close the holes inside the outlines of slice ``index``.

        Returns:
            True when the mask changed.
        """
        from scipy import ndimage  # 0.2 s to import: on first use (the viewer: before its window)

        filled = ndimage.binary_fill_holes(self._current(index, base))
        return self._record(index, EditKind.FILL_HOLES, np.asarray(filled, bool), base)

    def delete_region(self, index: int, base: np.ndarray, point: tuple[int, int]) -> bool:
        """Remove the connected region under ``(row, col)`` (8-connected) from slice ``index``.

        Returns:
            True when there was a region there (and it is gone).
        """
        mask = self._current(index, base)
        row, col = int(point[0]), int(point[1])
        if not (0 <= row < mask.shape[0] and 0 <= col < mask.shape[1]) or not mask[row, col]:
            return False
        labels, _ = label_components(mask)
        mask[labels == labels[row, col]] = False
        return self._record(index, EditKind.DELETE_REGION, mask, base)

    def add_region(self, index: int, base: np.ndarray, region: np.ndarray) -> bool:
        """Add ``region`` to slice ``index``'s mask (e.g. an outline the largest-region step set
        aside, :func:`brainseg_core.results.set_aside`, that the reader keeps).

        Args:
            index: the slice.
            base: the slice's mask as shown now (the model's when the slice is not edited yet).
            region: ``(H, W)`` bool, the pixels to add.

        Returns:
            True when the mask changed (``region`` held pixels the mask did not).

        Raises:
            ValueError: when ``region`` is not the shape of the slice's mask.
        """
        return self._record(index, EditKind.ADD_REGION, self._with_region(index, base, region), base)

    def add_regions(self, regions: Mapping[int, tuple[np.ndarray, np.ndarray]], *, focus: int) -> bool:
        """Add a region to each of several slices as one undo step (e.g. a 3-D region the
        largest-region step set aside, kept on all its slices at once).

        Args:
            regions: slice index -> ``(base, region)``: the slice's mask as shown now (the
                model's when the slice is not edited yet) and the ``(H, W)`` bool pixels to add.
            focus: the slice the reader acts from; :meth:`undo` and :meth:`redo` of the step
                return it (it need not be among the changed slices).

        Returns:
            True when a mask changed.

        Raises:
            ValueError: for a region that is not the shape of its slice's mask, or a negative index.
        """
        changes = []
        for index, (base, region) in regions.items():
            after = self._with_region(index, base, region)
            before = self._masks.get(index)
            if not np.array_equal(base if before is None else before, after):
                changes.append((index, None if before is None else before.copy(), after))
        if not changes:
            return False
        focus = self._index(focus)
        # the focus slice's own change (or an empty one, when it has none) leads the step
        lead: tuple[int, np.ndarray | None, np.ndarray | None] | None
        lead = next((c for c in changes if c[0] == focus), None)
        others = tuple(c for c in changes if c is not lead)
        if lead is None:
            own = self._masks.get(focus)
            lead = (focus, own, own)  # unchanged: undo and redo leave it as it is
        self._push(
            _Step(
                focus,
                EditKind.ADD_REGION_3D,
                None if lead[1] is None else lead[1].copy(),
                None if lead[2] is None else lead[2].copy(),
                others=tuple((i, b, a.copy()) for i, b, a in others),
            )
        )
        for index, _before, after in changes:
            self._masks[index] = after
        return True

    def clear(self, index: int, base: np.ndarray) -> bool:
        """Empty slice ``index`` (the reader says: no tumour here).

        Returns:
            True when the slice was not already the reader's empty mask.
        """
        mask = self._current(index, base)
        changed = bool(mask.any()) or not self.is_edited(index)
        mask[:] = False
        return self._record(index, EditKind.CLEAR, mask, base, force=changed)

    def revert(self, index: int) -> bool:
        """Give slice ``index`` back to the model's mask.

        Returns:
            True when the slice was edited.
        """
        if index not in self._masks:
            return False
        self._push(_Step(index, EditKind.REVERT, self._masks.pop(index), None))
        return True

    # -- history ---------------------------------------------------------------------------------
    def undo(self) -> int | None:
        """Undo the last step.

        Returns:
            The slice it changed (for :meth:`add_regions`, its ``focus``), or None when there was
            nothing to undo.
        """
        if not self._undo:
            return None
        step = dataclasses.replace(self._undo.pop(), open_stroke=False)
        self._set(step.index, step.before)
        for index, before, _after in step.others:
            self._set(index, before)
        self._redo.append(step)
        return step.index

    def redo(self) -> int | None:
        """Redo the last undone step.

        Returns:
            The slice it changed (for :meth:`add_regions`, its ``focus``), or None when there was
            nothing to redo.
        """
        if not self._redo:
            return None
        step = self._redo.pop()
        self._set(step.index, step.after)
        for index, _before, after in step.others:
            self._set(index, after)
        self._undo.append(step)
        return step.index

    # -- internals -------------------------------------------------------------------------------
    @staticmethod
    def _index(index: int) -> int:
        if int(index) < 0:
            raise ValueError(f"a slice index must be >= 0, got {index}")
        return int(index)

    @staticmethod
    def _mask(mask: np.ndarray) -> np.ndarray:
        m = np.asarray(mask)
        if m.ndim != 2:
            raise ValueError(f"a mask must be (H, W), got shape {m.shape}")
        return m.astype(bool, copy=False)

    def _current(self, index: int, base: np.ndarray) -> np.ndarray:
        """A writable copy of what slice ``index`` shows now."""
        self._index(index)
        own = self._masks.get(index)
        if own is not None:
            if own.shape != np.shape(base):
                raise ValueError(f"slice {index}: a {np.shape(base)} base for a {own.shape} edited mask")
            return own.copy()
        return self._mask(base).copy()

    def _with_region(self, index: int, base: np.ndarray, region: np.ndarray) -> np.ndarray:
        """What slice ``index`` shows now with ``region`` added (a new array).

        Raises:
            ValueError: when ``region`` is not the shape of the slice's mask.
        """
        mask = self._current(index, base)
        region = self._mask(region)
        if region.shape != mask.shape:
            raise ValueError(f"slice {index}: a {region.shape} region for a {mask.shape} mask")
        return mask | region

    def _record(
        self,
        index: int,
        kind: EditKind,
        after: np.ndarray,
        base: np.ndarray,
        *,
        open_stroke: bool = False,
        force: bool = False,
    ) -> bool:
        """Make ``after`` slice ``index``'s mask as one step; no step when nothing changes."""
        before = self._masks.get(index)
        shown = base if before is None else before
        if not force and np.array_equal(shown, after):
            return False
        self._push(_Step(index, kind, None if before is None else before.copy(), after.copy(), open_stroke))
        self._masks[index] = after
        return True

    def _push(self, step: _Step) -> None:
        if self._undo and self._undo[-1].open_stroke:
            self._undo[-1] = dataclasses.replace(self._undo[-1], open_stroke=False)
        self._undo.append(step)
        self._redo.clear()

    def _set(self, index: int, mask: np.ndarray | None) -> None:
        if mask is None:
            self._masks.pop(index, None)
        else:
            self._masks[index] = mask.copy()


def apply_edits(result: PatientResult, edits: MaskEdits) -> PatientResult:
    """``result`` with the reader's mask on every edited slice it holds.

    An edited slice gets the reader's mask, its area, ``source=READER`` and no review flag (the
    flag is about the model's mask, which the reader replaced); its probabilities are kept.

    Args:
        result: the patient's result under the current thresholds (possibly partial).
        edits: the patient's edits.

    Returns:
        A new result (``result`` itself when nothing is edited).

    Raises:
        ValueError: when an edited mask does not have the slice's shape.
    """
    if not edits:
        return result
    spacing = result.spacing
    slices = []
    for s in result.slices:
        mask = edits.mask(s.index)
        if mask is None:
            slices.append(s)
            continue
        if mask.shape != s.mask.shape:
            raise ValueError(f"slice {s.index}: edited mask {mask.shape}, slice {s.mask.shape}")
        area = int(np.count_nonzero(mask))
        slices.append(
            dataclasses.replace(
                s,
                mask=mask,
                area_px=area,
                area_mm2=None if spacing is None else spacing.area_mm2(area),
                review=None,
                source=MaskSource.READER,
            )
        )
    return dataclasses.replace(result, slices=slices)
