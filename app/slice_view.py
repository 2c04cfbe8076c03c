"""The central slice view: one MRI slice with the predicted and ground-truth masks on top.

Built on a pyqtgraph ``ViewBox``: the slice is an ``ImageItem`` (grey levels or RGB composite,
window/level applied as display levels), each mask is an RGBA fill ``ImageItem`` plus an outline
drawn as a cosmetic ``QGraphicsPathItem`` along the pixel edges (crisp at every zoom, its width
in screen pixels). Mouse: wheel = slice, Ctrl+wheel = zoom, left/middle drag = pan, right drag =
window (horizontal) / level (vertical). The view does not own the slice index; it asks for slice
changes with :attr:`SliceView.sliceStepRequested` and is told what to show.

Edit mode (:meth:`SliceView.set_edit_tool`): the left button paints, erases or picks a region
instead of panning (an event filter on the view's viewport takes those presses, drags and
releases and reports them in image pixels); a circle of the brush's size follows the mouse. A
slice whose mask is the reader's is outlined with a dashed line and says so in the top-left
corner. An outline the one-region option set aside is drawn dotted and never filled: the
reader sees a second lesion the count leaves out, and can keep it (Edit > Keep the set-aside
outline).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsPathItem, QLabel, QVBoxLayout, QWidget

from brainseg_app.overlay import boundary_segments, mask_rgba
from brainseg_app.viewer_model import EditTool, OverlayStyle
from brainseg_core.display import FULL_WINDOW, auto_window, levels
from brainseg_core.io.volume import CHANNELS

#: Display modes: one grey channel each, then the RGB composite.
CHANNEL_NAMES: tuple[str, ...] = (*CHANNELS, "RGB composite")
RGB = len(CHANNELS)
_WHEEL_STEP = 120  # one notch of a standard mouse wheel
_OUTLINES_KEPT = 128  # outline paths remembered per layer (a patient's slices, both directions)
#: Dash patterns (in pen widths, on / off): the reader's mask dashed, a set-aside outline dotted.
READER_DASH: tuple[float, ...] = (3.0, 2.0)
SET_ASIDE_DASH: tuple[float, ...] = (1.0, 2.0)


def _mask_key(mask: np.ndarray) -> tuple[tuple[int, ...], bytes]:
    """A key for a mask's content (its shape and a digest of its bits): an edited mask gets a new one."""
    return mask.shape, hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()


class _SliceViewBox(pg.ViewBox):
    """ViewBox with radiology mouse bindings (see the module docstring)."""

    sliceStep = Signal(int)
    windowDrag = Signal(float, float)

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self.setMouseMode(pg.ViewBox.PanMode)
        self._wheel_accum = 0

    def wheelEvent(self, ev, axis=None) -> None:
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        ev.accept()
        self._wheel_accum += ev.delta()
        steps = int(self._wheel_accum / _WHEEL_STEP)
        if steps:
            self._wheel_accum -= steps * _WHEEL_STEP
            # Wheel away from the user (positive delta) goes back towards slice 1.
            self.sliceStep.emit(-steps)

    def mouseDragEvent(self, ev, axis=None) -> None:
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            d = ev.screenPos() - ev.lastScreenPos()
            self.windowDrag.emit(float(d.x()), float(d.y()))
            return
        super().mouseDragEvent(ev, axis)


class _MaskLayer:
    """Fill image + outline path of one mask (prediction or ground truth)."""

    def __init__(self, view: pg.ViewBox, z: float) -> None:
        self.fill = pg.ImageItem(axisOrder="row-major")
        self.fill.setZValue(z)
        self.outline = QGraphicsPathItem()
        self.outline.setZValue(z + 10)
        view.addItem(self.fill, ignoreBounds=True)
        view.addItem(self.outline, ignoreBounds=True)
        self.mask: np.ndarray | None = None
        # Outlines by mask content: going back and forth through a patient reuses them.
        self._paths: OrderedDict[tuple[tuple[int, ...], bytes], QPainterPath] = OrderedDict()

    def _outline_path(self, mask: np.ndarray) -> QPainterPath:
        key = _mask_key(mask)
        path = self._paths.get(key)
        if path is None:
            x, y = boundary_segments(mask)
            path = pg.arrayToQPath(x, y, connect="pairs") if x.size else QPainterPath()
            self._paths[key] = path
            if len(self._paths) > _OUTLINES_KEPT:
                self._paths.popitem(last=False)
        else:
            self._paths.move_to_end(key)
        return path

    def update(
        self,
        mask: np.ndarray | None,
        colour: QColor,
        opacity: float,
        width: float,
        *,
        fill: bool,
        outline: bool,
        dash: Sequence[float] | None = None,
    ) -> None:
        self.mask = mask
        has = mask is not None and bool(mask.any())
        if mask is not None and has:
            rgb = (colour.red(), colour.green(), colour.blue())
            # Only the mask's bounding box is filled and drawn: a tumour covers a small part of the
            # slice, and drawing a whole-slice transparent image cost as much as the slice itself.
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            if fill:
                box = mask[r0:r1, c0:c1]
                self.fill.setImage(mask_rgba(box, rgb, opacity), autoLevels=False, levels=(0, 255))
                self.fill.setRect(QRectF(c0, r0, c1 - c0, r1 - r0))
            self.outline.setPath(self._outline_path(mask))
            pen = QPen(colour)
            pen.setCosmetic(True)
            pen.setWidthF(width)
            pen.setJoinStyle(Qt.PenJoinStyle.MiterJoin)
            pen.setCapStyle(Qt.PenCapStyle.SquareCap)
            if dash:  # the reader's mask and a set-aside outline never pass for the model's mask
                pen.setStyle(Qt.PenStyle.CustomDashLine)
                pen.setDashPattern(list(dash))
                pen.setCapStyle(Qt.PenCapStyle.FlatCap)
            self.outline.setPen(pen)
        else:
            self.outline.setPath(QPainterPath())
        self.fill.setVisible(has and fill)
        self.outline.setVisible(has and outline)


class SliceView(QWidget):
    """The slice view widget.

    Signals:
        sliceStepRequested: ``(+/-n)`` from the mouse wheel.
        windowChanged: ``(width, level)`` after any window/level change.
        cursorInfo: text describing the pixel under the mouse ("" when outside the image).
        viewChanged: zoom or pan changed.
        paintRequested: ``(row, col, continues)``: in edit mode with the brush or eraser, the
            left button was pressed (``continues`` False) or dragged on (True) over that pixel.
        strokeFinished: the left button was released after painting.
        regionPicked: ``(row, col)``: in edit mode with the region tool, that pixel was clicked.
    """

    sliceStepRequested = Signal(int)
    windowChanged = Signal(float, float)
    cursorInfo = Signal(str)
    viewChanged = Signal()
    paintRequested = Signal(int, int, bool)
    strokeFinished = Signal()
    regionPicked = Signal(int, int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.graphics = pg.GraphicsView(background=QColor(0, 0, 0))
        self.graphics.setToolTip("")
        self.vb = _SliceViewBox()
        self.graphics.setCentralItem(self.vb)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.image_item.setZValue(0)
        self.vb.addItem(self.image_item)
        self.gt = _MaskLayer(self.vb, 1)
        self.pred = _MaskLayer(self.vb, 2)
        self.aside = _MaskLayer(self.vb, 3)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)

        self._corners = {}
        for name in ("tl", "tr", "bl", "br"):
            label = QLabel(self.graphics)
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            label.setStyleSheet("color: #f0e68c; background: transparent; font-family: monospace;")
            align = Qt.AlignmentFlag.AlignRight if name.endswith("r") else Qt.AlignmentFlag.AlignLeft
            label.setAlignment(align | Qt.AlignmentFlag.AlignTop)
            self._corners[name] = label
        # Orientation labels at the middle of each edge (R/L/A/P), from the scan's geometry.
        self._edges: dict[str, QLabel] = {}
        for name in ("left", "right", "top", "bottom"):
            label = QLabel(self.graphics)
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            label.setStyleSheet("color: #f0e68c; background: transparent; font-weight: bold;")
            self._edges[name] = label

        self.images: np.ndarray | None = None
        self.patient_id = ""
        self.index = 0
        self.channel = 1  # FLAIR, as the channel box
        self.width_level = FULL_WINDOW
        self.overlay_style = OverlayStyle()
        self._pred_mask: np.ndarray | None = None
        self._gt_mask: np.ndarray | None = None
        self._aside_mask: np.ndarray | None = None
        self._reader_mask = False
        self._cursor_scene: QPointF | None = None
        self.edit_tool: EditTool | None = None
        self.brush_radius = 4
        self._painting = False
        self._brush_centre: tuple[int, int] | None = None
        self.brush_cursor = QGraphicsEllipseItem()
        self.brush_cursor.setZValue(50)
        cursor_pen = QPen(QColor(255, 255, 255, 200))
        cursor_pen.setCosmetic(True)
        cursor_pen.setWidthF(1.0)
        self.brush_cursor.setPen(cursor_pen)
        self.brush_cursor.setVisible(False)
        self.vb.addItem(self.brush_cursor, ignoreBounds=True)
        self.graphics.viewport().installEventFilter(self)

        self.vb.sliceStep.connect(self.sliceStepRequested)
        self.vb.windowDrag.connect(self._on_window_drag)
        self.vb.sigRangeChanged.connect(self._on_range_changed)
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)

    # -- content ---------------------------------------------------------------------------------
    def set_volume(
        self,
        images: np.ndarray | None,
        patient_id: str = "",
        *,
        edge_labels: Mapping[str, str] | None = None,
        pixel_mm: tuple[float, float] | None = None,
    ) -> None:
        """Show a new volume (``(N, H, W, 3)`` uint8) from its first slice; None clears the view.

        Args:
            images: the slices, or None to clear.
            patient_id: shown in the top-left corner.
            edge_labels: the anatomical direction at each edge (``left``, ``right``, ``top``,
                ``bottom`` to R/L/A/P...), from the scan's geometry; None when unknown (TIFF).
            pixel_mm: ``(row, col)`` pixel size: non-square pixels are shown at their true shape.
        """
        self.images = images
        self.patient_id = patient_id
        for name, label in self._edges.items():
            label.setText((edge_labels or {}).get(name, "") if images is not None else "")
            label.adjustSize()
        row_mm, col_mm = pixel_mm or (1.0, 1.0)
        self.vb.setAspectLocked(True, ratio=col_mm / row_mm)  # x scale / y scale
        self.index = 0
        self._pred_mask = self._gt_mask = self._aside_mask = None
        if images is None:
            self.image_item.clear()
            self._update_masks()
            self._update_corners()
            return
        self.show_slice(0)
        self.fit()

    def show_slice(self, index: int) -> None:
        """Display slice ``index`` (masks are set separately with :meth:`set_masks`)."""
        if self.images is None:
            return
        self.index = max(0, min(int(index), self.images.shape[0] - 1))
        self._update_image()
        self._update_corners()
        self._refresh_cursor()

    def set_masks(
        self,
        pred: np.ndarray | None,
        gt: np.ndarray | None,
        *,
        reader: bool = False,
        aside: np.ndarray | None = None,
    ) -> None:
        """Masks of the displayed slice: prediction and ground truth, ``(H, W)`` bool or None.

        Args:
            pred: the predicted (or the reader's) mask.
            gt: the ground truth.
            reader: ``pred`` is the reader's edited mask (drawn with a dashed outline).
            aside: the outline the one-region option set aside (drawn dotted in the
                prediction's colour, never filled), or None.
        """
        self._pred_mask = pred
        self._gt_mask = gt
        self._aside_mask = aside
        if reader != self._reader_mask:
            self._reader_mask = reader
            self._update_corners()
        self._update_masks()

    # -- edit mode -------------------------------------------------------------------------------
    def set_edit_tool(self, tool: EditTool | None) -> None:
        """What the left button does: paint, erase or pick a region (None: pan)."""
        self.edit_tool = tool
        self._painting = False
        painting = tool is not None
        cursor = Qt.CursorShape.CrossCursor if painting else Qt.CursorShape.ArrowCursor
        self.graphics.viewport().setCursor(cursor)
        self._update_brush_cursor()

    def set_brush_radius(self, radius: int) -> None:
        """The radius of the brush circle that follows the mouse (pixels)."""
        self.brush_radius = int(radius)
        self._update_brush_cursor()

    def image_pixel(self, pos: QPointF) -> tuple[int, int] | None:
        """``(row, col)`` of the image pixel under viewport position ``pos``, None off the image."""
        if self.images is None:
            return None
        p = self.vb.mapSceneToView(self.graphics.mapToScene(pos.toPoint()))
        row, col = int(np.floor(p.y())), int(np.floor(p.x()))
        h, w = self.images.shape[1:3]
        return (row, col) if 0 <= row < h and 0 <= col < w else None

    def viewport_pos(self, row: float, col: float) -> QPointF:
        """Where the centre of image pixel ``(row, col)`` lies in the viewport (for tests and tools)."""
        scene = self.vb.mapViewToScene(QPointF(col + 0.5, row + 0.5))
        return QPointF(self.graphics.mapFromScene(scene))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """In edit mode, the left button edits instead of panning."""
        if self.edit_tool is None or watched is not self.graphics.viewport():
            return False
        kind = event.type()
        if kind not in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseMove, QEvent.Type.MouseButtonRelease):
            return False
        assert isinstance(event, QMouseEvent)
        pixel = self.image_pixel(event.position())
        if kind == QEvent.Type.MouseMove:
            self._move_brush_cursor(event.position())
            if not self._painting or not event.buttons() & Qt.MouseButton.LeftButton:
                return False
            if pixel is not None:
                self.paintRequested.emit(pixel[0], pixel[1], True)
            return True
        if event.button() != Qt.MouseButton.LeftButton:
            return False
        if kind == QEvent.Type.MouseButtonPress:
            if self.edit_tool is EditTool.DELETE_REGION:
                if pixel is not None:
                    self.regionPicked.emit(*pixel)
                return True
            self._painting = True
            if pixel is not None:
                self.paintRequested.emit(pixel[0], pixel[1], False)
            return True
        if self._painting:
            self._painting = False
            self.strokeFinished.emit()
        return True

    def _move_brush_cursor(self, pos: QPointF) -> None:
        if self.images is None:
            return
        p = self.vb.mapSceneToView(self.graphics.mapToScene(pos.toPoint()))
        self._brush_centre = (int(np.floor(p.y())), int(np.floor(p.x())))
        self._update_brush_cursor()

    def _update_brush_cursor(self) -> None:
        centre = self._brush_centre
        show = self.edit_tool in (EditTool.BRUSH, EditTool.ERASER) and centre is not None
        self.brush_cursor.setVisible(bool(show))
        if show and centre is not None:
            r = self.brush_radius + 0.5
            row, col = centre
            self.brush_cursor.setRect(QRectF(col + 0.5 - r, row + 0.5 - r, 2 * r, 2 * r))

    def set_channel(self, channel: int) -> None:
        """Show one channel in grey (0-2, :data:`CHANNELS` order) or the RGB composite (3)."""
        if not 0 <= channel <= RGB:
            raise ValueError(f"channel must be 0-{RGB}, got {channel}")
        self.channel = channel
        self._update_image()
        self._update_corners()
        self._refresh_cursor()

    def current_image(self) -> np.ndarray | None:
        """The displayed slice's pixels before window/level (grey ``(H, W)`` or ``(H, W, 3)``)."""
        if self.images is None:
            return None
        img = self.images[self.index]
        return img if self.channel == RGB else img[..., self.channel]

    def _update_image(self) -> None:
        img = self.current_image()
        if img is None:
            return
        self.image_item.setImage(img, autoLevels=False, levels=levels(*self.width_level))

    # -- window / level --------------------------------------------------------------------------
    def set_window(self, width: float, level: float) -> None:
        """Set the display window (grey levels); it persists across slices and channels."""
        self.width_level = (max(1.0, float(width)), float(level))
        if self.images is not None:
            self.image_item.setLevels(levels(*self.width_level))
        self._update_corners()
        self.windowChanged.emit(*self.width_level)

    def auto_window(self) -> None:
        """Window to the 1st-99.5th percentile of the volume's foreground in the shown channel(s)."""
        if self.images is None:
            return
        data = self.images if self.channel == RGB else self.images[..., self.channel]
        self.set_window(*auto_window(data))

    def reset_window(self) -> None:
        """Full 8-bit range (the images as stored)."""
        self.set_window(*FULL_WINDOW)

    def _on_window_drag(self, dx: float, dy: float) -> None:
        # Radiology convention: horizontal drag = width, vertical drag = level (down = higher).
        width, level = self.width_level
        self.set_window(width + dx, level + dy)

    # -- overlay style ---------------------------------------------------------------------------
    def set_overlay_style(self, style: OverlayStyle) -> None:
        """Draw the masks in ``style`` and redraw."""
        self.overlay_style = style
        self._update_masks()

    def _update_masks(self) -> None:
        s = self.overlay_style
        for layer, mask, colour in (
            (self.pred, self._pred_mask if s.visible else None, s.pred_colour),
            (self.gt, self._gt_mask if s.gt_visible else None, s.gt_colour),
        ):
            layer.update(
                mask,
                QColor(colour),
                s.opacity,
                s.contour_width,
                fill=s.fill,
                outline=s.contour,
                dash=READER_DASH if layer is self.pred and self._reader_mask else None,
            )
        # an outline only, whatever the style: a fill would read as the model's tumour
        self.aside.update(
            self._aside_mask if s.visible else None,
            QColor(s.pred_colour),
            s.opacity,
            s.contour_width,
            fill=False,
            outline=True,
            dash=SET_ASIDE_DASH,
        )

    # -- zoom ------------------------------------------------------------------------------------
    def fit(self) -> None:
        """Fit the whole slice in the view."""
        if self.images is None:
            return
        h, w = self.images.shape[1:3]
        self.vb.setRange(QRectF(0, 0, w, h), padding=0.02)

    def one_to_one(self) -> None:
        """One image pixel per screen pixel, centred on the current view."""
        if self.images is None:
            return
        rect = self.vb.viewRect()
        centre = rect.center()
        size = self.vb.size()
        w, h = size.width(), size.height()
        self.vb.setRange(
            QRectF(centre.x() - w / 2, centre.y() - h / 2, w, h),
            padding=0,
        )

    def zoom(self, factor: float) -> None:
        """Zoom in (factor > 1) or out (< 1) about the view centre."""
        if self.images is None or factor <= 0:
            return
        self.vb.scaleBy((1 / factor, 1 / factor))

    def zoom_factor(self) -> float:
        """Screen pixels per image pixel."""
        px = self.vb.viewPixelSize()[0]
        return 1.0 / px if px > 0 else 1.0

    def _on_range_changed(self, *_: object) -> None:
        self._update_corners()
        self.viewChanged.emit()

    # -- cursor ----------------------------------------------------------------------------------
    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        self._cursor_scene = QPointF(scene_pos)
        self._refresh_cursor()

    def pixel_info(self, x: float, y: float) -> str:
        """Text for the pixel at image coordinates ``(x, y)``; "" outside the image."""
        if self.images is None:
            return ""
        col, row = int(np.floor(x)), int(np.floor(y))
        h, w = self.images.shape[1:3]
        if not (0 <= row < h and 0 <= col < w):
            return ""
        px = self.images[self.index, row, col]
        if self.channel == RGB:
            value = "  ".join(
                f"{name} {int(v)}" for name, v in zip(("pre", "FLAIR", "post"), px, strict=True)
            )
        else:
            value = f"{CHANNELS[self.channel]} {int(px[self.channel])}"
        tags = []
        if self._pred_mask is not None and self._pred_mask[row, col]:
            tags.append("your mask" if self._reader_mask else "predicted")
        if self._gt_mask is not None and self._gt_mask[row, col]:
            tags.append("ground truth")
        suffix = f"  [{', '.join(tags)}]" if tags else ""
        return f"x {col}  y {row}  {value}{suffix}"

    def _refresh_cursor(self) -> None:
        if self._cursor_scene is None or self.images is None:
            text = ""
        else:
            p = self.vb.mapSceneToView(self._cursor_scene)
            inside = self.vb.sceneBoundingRect().contains(self._cursor_scene)
            text = self.pixel_info(p.x(), p.y()) if inside else ""
        self._corners["bl"].setText(text)
        self._corners["bl"].adjustSize()
        self._place_corners()
        self.cursorInfo.emit(text)

    # -- corner annotations ----------------------------------------------------------------------
    def _update_corners(self) -> None:
        if self.images is None:
            for label in self._corners.values():
                label.setText("")
            return
        n = self.images.shape[0]
        reader = "\nReader's mask (edited)" if self._reader_mask else ""
        self._corners["tl"].setText(f"{self.patient_id}\nSlice {self.index + 1} / {n}{reader}")
        w, lv = self.width_level
        self._corners["tr"].setText(f"{CHANNEL_NAMES[self.channel]}\nW {w:.0f}  L {lv:.0f}")
        self._corners["br"].setText(f"Zoom {self.zoom_factor() * 100:.0f} %")
        for label in self._corners.values():
            label.adjustSize()
        self._place_corners()

    def edge_text(self, edge: str) -> str:
        """The orientation label at an edge (``left``, ``right``, ``top``, ``bottom``)."""
        return self._edges[edge].text()

    def _place_corners(self) -> None:
        m = 6
        gw, gh = self.graphics.width(), self.graphics.height()
        e = self._edges
        e["left"].move(m, (gh - e["left"].height()) // 2)
        e["right"].move(gw - e["right"].width() - m, (gh - e["right"].height()) // 2)
        e["top"].move((gw - e["top"].width()) // 2, m)
        e["bottom"].move((gw - e["bottom"].width()) // 2, gh - e["bottom"].height() - m)
        c = self._corners
        c["tl"].move(m, m)
        c["tr"].move(gw - c["tr"].width() - m, m)
        c["bl"].move(m, gh - c["bl"].height() - m)
        c["br"].move(gw - c["br"].width() - m, gh - c["br"].height() - m)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._place_corners()

    def corner_text(self, corner: str) -> str:
        """Text of a corner annotation (``tl``, ``tr``, ``bl``, ``br``), for tests and screenshots."""
        return self._corners[corner].text()
