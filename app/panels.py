"""The side panels: display and overlay controls, thresholds, and the results of the analysis."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap, QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QFormLayout,
    QFrame,
    QGraphicsItem,
    QGridLayout,
    QGroupBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from brainseg_app.session import PatientRecord, PatientState
from brainseg_app.slice_view import CHANNEL_NAMES
from brainseg_app.viewer_model import DEFAULT_GT_COLOUR, DEFAULT_PRED_COLOUR, WINDOW_PRESETS, OverlayStyle
from brainseg_core import metrics
from brainseg_core.compute import DEVICES
from brainseg_core.io import Volume
from brainseg_core.results import MaskSource, SliceResult
from brainseg_core.review import ReviewReason
from brainseg_core.spacing import Spacing
from brainseg_core.thorough import describe_run
from brainseg_core.thresholds import Thresholds

#: Threshold slider positions per unit of probability (0.001 steps: tuned gates can be ~0.01).
STEPS = 1000
#: Lines of text the "This slice" box keeps room for: slice, probability, gate, area, two review
#: reasons, ground truth and Dice.
SLICE_TEXT_LINES = 8
#: Height of the probability-across-slices plot, in pixels.
PLOT_HEIGHT = 260


class SliceText(QPlainTextEdit):
    """Read-only, selectable text of :data:`SLICE_TEXT_LINES` lines' height (more when the text
    needs more), whose new text repaints only itself.

    A word-wrapped ``QLabel`` asks its parent's layout to recompute on every ``setText``, and the
    layout then repaints the whole results panel: about 4 ms of every slice switch on this CPU
    (``bench/gui.py``). This box changes its height, and so the layout, only when the number of
    lines it needs goes past the room it has.
    """

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.viewport().setAutoFillBackground(False)
        self.setStyleSheet("QPlainTextEdit { background: transparent; }")
        self.document().setDocumentMargin(0)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self._fit(SLICE_TEXT_LINES)
        self.setText(text)

    def text(self) -> str:
        """The text shown."""
        return self.toPlainText()

    def setText(self, text: str) -> None:
        """Show ``text``, growing the box when it needs more than :data:`SLICE_TEXT_LINES` lines."""
        if text == self.toPlainText():
            return
        self.setPlainText(text)
        self._fit(max(SLICE_TEXT_LINES, self._lines()))

    def resizeEvent(self, event: QResizeEvent) -> None:
        """Re-fit the height when a new width wraps the text into more or fewer lines."""
        super().resizeEvent(event)
        self._fit(max(SLICE_TEXT_LINES, self._lines()))

    def _lines(self) -> int:
        """Lines the text takes at the current width, wrapped lines included."""
        doc = self.document()
        block = doc.begin()
        lines = 0
        while block.isValid():
            layout = block.layout()
            lines += max(1, layout.lineCount() if layout is not None else 1)
            block = block.next()
        return lines

    def _fit(self, lines: int) -> None:
        height = lines * self.fontMetrics().lineSpacing() + 2 * self.frameWidth() + 4
        if self.height() != height or self.minimumHeight() != height:
            self.setFixedHeight(height)


def _swatch(colour: QColor) -> QIcon:
    pm = QPixmap(16, 16)
    pm.fill(colour)
    return QIcon(pm)


class ColourButton(QPushButton):
    """A button showing a colour; clicking it opens a colour dialog.

    Signals:
        colourChanged: the new colour.
    """

    colourChanged = Signal(QColor)

    def __init__(self, text: str, colour: QColor, tooltip: str, parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setToolTip(tooltip)
        self._colour = QColor(colour)
        self.setIcon(_swatch(self._colour))
        self.clicked.connect(self._choose)

    def colour(self) -> QColor:
        """The current colour."""
        return QColor(self._colour)

    def set_colour(self, colour: QColor) -> None:
        """Set the colour (emits :attr:`colourChanged` when it differs)."""
        colour = QColor(colour)
        if colour == self._colour:
            return
        self._colour = colour
        self.setIcon(_swatch(colour))
        self.colourChanged.emit(QColor(colour))

    def _choose(self) -> None:
        colour = QColorDialog.getColor(self._colour, self, self.toolTip().split(".")[0])
        if colour.isValid():
            self.set_colour(colour)


def _slider(lo: int, hi: int, value: int, tooltip: str) -> QSlider:
    s = QSlider(Qt.Orientation.Horizontal)
    s.setRange(lo, hi)
    s.setValue(value)
    s.setToolTip(tooltip)
    return s


class ControlsPanel(QWidget):
    """Channel, window/level, overlay style, thresholds and the analysis controls."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)

        # Display ---------------------------------------------------------------------------------
        display = QGroupBox("Display")
        form = QGridLayout(display)
        self.channel = QComboBox()
        self.channel.addItems(list(CHANNEL_NAMES))
        self.channel.setCurrentIndex(1)  # FLAIR: where low-grade gliomas show best
        self.channel.setToolTip("Which MR sequence to show, or all three as an RGB composite (keys 1-4)")
        self.auto_window = QPushButton("Auto W/L")
        self.auto_window.setToolTip("Window/level to the volume's foreground intensity range (A)")
        self.reset_window = QPushButton("Reset W/L")
        self.reset_window.setToolTip(
            "Full 0-255 range, the images as stored (Shift+A). Right-drag on the image "
            "to adjust: horizontal = width, vertical = level"
        )
        self.window_preset = QComboBox()
        self.window_preset.addItems(list(WINDOW_PRESETS))
        self.window_preset.setToolTip(
            "Window/level presets from the foreground intensities of this patient's shown channel; "
            "each patient and channel keeps its own window"
        )
        self.fit = QPushButton("Fit")
        self.fit.setToolTip("Fit the slice in the view (F)")
        self.one_to_one = QPushButton("1:1")
        self.one_to_one.setToolTip("One image pixel per screen pixel (Ctrl+1)")
        form.addWidget(QLabel("Channel"), 0, 0)
        form.addWidget(self.channel, 0, 1, 1, 3)
        form.addWidget(self.auto_window, 1, 0, 1, 2)
        form.addWidget(self.reset_window, 1, 2, 1, 2)
        form.addWidget(QLabel("W/L preset"), 2, 0)
        form.addWidget(self.window_preset, 2, 1, 1, 3)
        form.addWidget(self.fit, 3, 0, 1, 2)
        form.addWidget(self.one_to_one, 3, 2, 1, 2)
        layout.addWidget(display)

        # Overlay ---------------------------------------------------------------------------------
        overlay = QGroupBox("Overlay")
        grid = QGridLayout(overlay)
        self.show_overlay = QCheckBox("Prediction")
        self.show_overlay.setChecked(True)
        self.show_overlay.setToolTip(
            "Show or hide the predicted mask (O); the ground truth has its own box (G)"
        )
        self.fill = QCheckBox("Fill")
        self.fill.setChecked(True)
        self.fill.setToolTip("Paint the inside of the masks")
        self.opacity = _slider(0, 100, 40, "Opacity of the mask fill, 0-100 %")
        self.opacity_label = QLabel("40 %")
        self.opacity_label.setMinimumWidth(40)
        self.contour = QCheckBox("Outline")
        self.contour.setChecked(True)
        self.contour.setToolTip("Draw the outline of the masks (C)")
        self.contour_width = QSpinBox()
        self.contour_width.setRange(1, 6)
        self.contour_width.setValue(2)
        self.contour_width.setSuffix(" px")
        self.contour_width.setToolTip("Outline width in screen pixels")
        self.pred_colour = ColourButton(
            "Prediction", QColor(DEFAULT_PRED_COLOUR), "Colour of the predicted mask"
        )
        self.show_gt = QCheckBox("Ground truth")
        self.show_gt.setChecked(True)
        self.show_gt.setToolTip("Show the folder's own _mask files, when it has them (G)")
        self.gt_colour = ColourButton(
            "Ground truth", QColor(DEFAULT_GT_COLOUR), "Colour of the ground-truth mask"
        )
        grid.addWidget(self.show_overlay, 0, 0, 1, 2)
        grid.addWidget(self.show_gt, 0, 2, 1, 2)
        grid.addWidget(self.fill, 1, 0)
        grid.addWidget(self.opacity, 1, 1, 1, 2)
        grid.addWidget(self.opacity_label, 1, 3)
        grid.addWidget(self.contour, 2, 0)
        grid.addWidget(self.contour_width, 2, 1)
        grid.addWidget(self.pred_colour, 3, 0, 1, 2)
        grid.addWidget(self.gt_colour, 3, 2, 1, 2)
        layout.addWidget(overlay)
        self.opacity.valueChanged.connect(lambda v: self.opacity_label.setText(f"{v} %"))

        # Thresholds ------------------------------------------------------------------------------
        thr = QGroupBox("Thresholds")
        tgrid = QGridLayout(thr)
        self.gate = _slider(
            0,
            STEPS,
            STEPS // 2,
            "Classifier gate: slices whose tumour probability reaches it are segmented (and, with the "
            "model's gate reach, their neighbouring slices)",
        )
        self.gate_label = QLabel("0.500")
        self.mask_threshold = _slider(
            1, STEPS - 1, STEPS // 2, "Mask threshold: pixels whose probability reaches it belong to the mask"
        )
        for s in (self.gate, self.mask_threshold):
            s.setPageStep(STEPS // 20)
        self.mask_label = QLabel("0.500")
        self.largest_component = QCheckBox("Largest 3-D region only")
        self.largest_component.setToolTip(
            "Keep only one connected tumour region across slices: the largest (the dataset authors' "
            "post-processing) or, where the model card chose it, the most confident (the largest sum "
            "of p⁴). Hides the other regions: each slice that loses outline is put in the review "
            "queue and what was set aside is drawn dotted."
        )
        self.faint_edges = QCheckBox("Faint tumour edges")
        self.faint_edges.setToolTip(
            "Also outline a tumour's faint first and last slices: on a slice without outline, the pixels "
            "whose probability is low but that connect in 3-D to the outline next to it (each such "
            "slice is put in the review queue)"
        )
        self.default_thresholds = QPushButton("Model defaults")
        self.default_thresholds.setToolTip("Use the thresholds stored in the model cards")
        tgrid.addWidget(QLabel("Slice gate"), 0, 0)
        tgrid.addWidget(self.gate, 0, 1)
        tgrid.addWidget(self.gate_label, 0, 2)
        tgrid.addWidget(QLabel("Mask"), 1, 0)
        tgrid.addWidget(self.mask_threshold, 1, 1)
        tgrid.addWidget(self.mask_label, 1, 2)
        tgrid.addWidget(self.largest_component, 2, 0, 1, 3)
        tgrid.addWidget(self.faint_edges, 3, 0, 1, 3)
        tgrid.addWidget(self.default_thresholds, 4, 0, 1, 3)
        self.gate.valueChanged.connect(lambda v: self.gate_label.setText(f"{v / STEPS:.3f}"))
        self.mask_threshold.valueChanged.connect(lambda v: self.mask_label.setText(f"{v / STEPS:.3f}"))
        layout.addWidget(thr)

        # Analysis --------------------------------------------------------------------------------
        run = QGroupBox("Analysis")
        rform = QFormLayout(run)
        self.run = QPushButton("Run analysis")
        self.run.setToolTip("Run the classifier and the segmenter on this patient (Ctrl+R)")
        self.auto_run = QCheckBox("Analyse on open")
        self.auto_run.setChecked(True)
        self.auto_run.setToolTip("Start the analysis as soon as a patient is opened")
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.device.setToolTip("Where the networks run: auto picks the GPU when there is one")
        rform.addRow(self.run)
        rform.addRow(self.auto_run)
        rform.addRow("Device", self.device)
        layout.addWidget(run)
        layout.addStretch(1)

    def show_overlay_style(self, style: OverlayStyle) -> None:
        """Show ``style`` in the overlay controls (without emitting their signals)."""
        widgets = (
            self.show_overlay,
            self.fill,
            self.contour,
            self.opacity,
            self.contour_width,
            self.pred_colour,
            self.gt_colour,
            self.show_gt,
        )
        for w in widgets:
            w.blockSignals(True)
        self.show_overlay.setChecked(style.visible)
        self.fill.setChecked(style.fill)
        self.contour.setChecked(style.contour)
        self.opacity.setValue(round(style.opacity * 100))
        self.opacity_label.setText(f"{round(style.opacity * 100)} %")
        self.contour_width.setValue(style.contour_width)
        self.pred_colour.set_colour(QColor(style.pred_colour))
        self.gt_colour.set_colour(QColor(style.gt_colour))
        self.show_gt.setChecked(style.gt_visible)
        for w in widgets:
            w.blockSignals(False)

    def show_thresholds(self, thresholds: Thresholds, *, gate_enabled: bool) -> None:
        """Show ``thresholds`` on the sliders and labels (without emitting the sliders' signals).

        Args:
            thresholds: what to show.
            gate_enabled: whether the gate applies (there is a classifier).
        """
        boxes = (self.gate, self.mask_threshold, self.largest_component, self.faint_edges)
        for w in boxes:
            w.blockSignals(True)
        self.gate.setValue(round(thresholds.gate * STEPS))
        self.mask_threshold.setValue(round(thresholds.mask * STEPS))
        self.gate_label.setText(f"{thresholds.gate:.3f}")
        self.mask_label.setText(f"{thresholds.mask:.3f}")
        self.largest_component.setChecked(thresholds.largest_component)
        words = thresholds.region_rule.describe()
        self.largest_component.setText(words[0].upper() + words[1:])
        self.faint_edges.setChecked(thresholds.edge > 0)
        for w in boxes:
            w.blockSignals(False)
        self.gate.setEnabled(gate_enabled)


def _gate_text(result: SliceResult, gate: float | None) -> str:
    """What the classifier said about a slice, in plain words."""
    if gate is None:
        return "No slice classifier: every slice is segmented"
    probability = result.tumour_probability
    if probability >= gate:
        return f"Tumour probability {probability:.3f}\npassed the slice gate ({gate:.3g}), segmented"
    if result.passed_by_neighbour(gate):
        return (
            f"Tumour probability {probability:.3f}\npassed the slice gate ({gate:.3g}) through a "
            f"neighbouring slice ({result.neighbour_probability:.3f}), segmented"
        )
    return f"Tumour probability {probability:.3f}\nbelow the slice gate ({gate:.3g}), not segmented"


def _fmt(value: float | None, spec: str = ".2f", none: str = "—") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, spec)


class ResultsPanel(QWidget):
    """Tumour probability per slice, the current slice's numbers, the patient summary and models.

    Signals:
        sliceClicked: a slice index picked on the plot.
        gateDragged: the threshold line was dragged to a new gate value.
    """

    sliceClicked = Signal(int)
    gateDragged = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.plot = pg.PlotWidget()
        self.plot.setToolTip(
            "Tumour probability of every slice (red: mask found; triangle: below the gate but passed "
            "through a neighbouring slice; orange ring: to review; yellow diamond: mask edited by you; "
            "green squares: ground-truth tumour). Click a point to show that slice; drag the dashed "
            "line to change the classifier gate."
        )
        # A fixed height: the text boxes below change with every slice, and a plot that took up
        # the slack would jump in height (and be redrawn in full) as the reader steps through.
        self.plot.setFixedHeight(PLOT_HEIGHT)
        self.plot.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        pi = self.plot.getPlotItem()
        pi.setLabel("bottom", "slice")
        pi.setLabel("left", "P(tumour)")
        pi.setYRange(-0.08, 1.1, padding=0)
        pi.setMouseEnabled(x=False, y=False)
        pi.hideButtons()
        pi.setMenuEnabled(False)
        pi.showGrid(x=False, y=True, alpha=0.2)
        self.curve = pg.PlotDataItem(pen=pg.mkPen((160, 160, 160), width=1))
        self.scatter = pg.ScatterPlotItem(size=8, hoverable=True, tip=None)
        # Slices to review: an orange ring around their point; edited slices: a yellow diamond.
        self.review_marks = pg.ScatterPlotItem(size=15, brush=None, pen=pg.mkPen(255, 149, 0, width=2))
        self.edited_marks = pg.ScatterPlotItem(size=8, symbol="d", brush=pg.mkBrush(255, 214, 10), pen=None)
        self.gt_marks = pg.ScatterPlotItem(size=6, symbol="s", brush=pg.mkBrush(52, 199, 89), pen=None)
        self.gate_line = pg.InfiniteLine(
            pos=0.5, angle=0, movable=True, pen=pg.mkPen((255, 200, 0), width=1, style=Qt.PenStyle.DashLine)
        )
        # Labelled: a gate kept for high recall sits near 0, where the dashed line alone is lost
        # against the axis. (A TextItem of its own: InfiniteLine's label crashes PySide6 here.)
        self.gate_label = pg.TextItem(color=(255, 200, 0), anchor=(1, 1))
        self.gate_line.setBounds((0.0, 1.0))
        self.gate_line.setHoverPen(pg.mkPen((255, 230, 120), width=2))
        self.current_line = pg.InfiniteLine(
            pos=1, angle=90, movable=False, pen=pg.mkPen((42, 130, 218), width=2)
        )
        for item in (
            self.curve,
            self.gt_marks,
            self.review_marks,
            self.edited_marks,
            self.scatter,
            self.gate_line,
            self.current_line,
        ):
            pi.addItem(item)
        pi.addItem(self.gate_label, ignoreBounds=True)
        # The current-slice line moves on every switch and the plot repaints the strips it left and
        # entered: every item under them paints again (all the points, the axes with their grid).
        # As device pixmaps, redrawn only when their data or the view change, they are blitted:
        # about 0.6-1.0 ms of each switch's 10-13 ms here (runs/prof_plot.py). (The curve's
        # PlotDataItem draws nothing itself: its line is the child item that paints.)
        self._points = (self.gt_marks, self.review_marks, self.edited_marks, self.scatter)
        for item in (self.curve.curve, *self._points, pi.getAxis("left"), pi.getAxis("bottom")):
            item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self._screen_watched = False
        self.gate_line.sigPositionChanged.connect(self._place_gate_label)
        # the label's size in data units follows the plot's size in pixels
        pi.getViewBox().sigResized.connect(self._place_gate_label)
        self.scatter.sigClicked.connect(self._on_points_clicked)
        self.gate_line.sigPositionChangeFinished.connect(
            lambda line: self.gateDragged.emit(float(line.value()))
        )
        layout.addWidget(self.plot)

        self.slice_box = QGroupBox("This slice")
        # Room for the usual lines (SLICE_TEXT_LINES), so that stepping through slices whose text
        # is a line or two longer does not move the boxes below (nor repaint them).
        self.slice_label = SliceText("—")
        self.reviewed = QPushButton("Mark reviewed")
        self.reviewed.setCheckable(True)
        self.reviewed.setToolTip(
            "You have looked at this slice: it leaves the review queue (M). Click again to put it back."
        )
        sv = QVBoxLayout(self.slice_box)
        sv.addWidget(self.slice_label)
        sv.addWidget(self.reviewed)
        layout.addWidget(self.slice_box)

        self.patient_box = QGroupBox("Patient")
        pv = QVBoxLayout(self.patient_box)
        self.summary_label = QLabel("No analysis yet")
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.spacing = QPushButton("Pixel spacing…")
        self.spacing.setToolTip(
            "Enter the pixel spacing and slice thickness (TIFFs carry none) to get the tumour volume in mL; "
            "remembered for the whole dataset"
        )
        pv.addWidget(self.summary_label)
        pv.addWidget(self.spacing)
        layout.addWidget(self.patient_box)

        self.models_box = QGroupBox("Models")
        mv = QVBoxLayout(self.models_box)
        self.models_label = QLabel("No models loaded")
        self.models_label.setWordWrap(True)
        self.models_label.setTextFormat(Qt.TextFormat.RichText)
        self.models_label.setToolTip("The active classifier and segmenter (Model menu to change them)")
        mv.addWidget(self.models_label)
        self.model_cards = QPushButton("Model cards…")
        self.model_cards.setToolTip("Training data, validation metrics and thresholds of the active models")
        mv.addWidget(self.model_cards)
        layout.addWidget(self.models_box)
        layout.addStretch(1)
        self._n = 0
        self._points_xy = np.zeros((0, 2))

    # -- plot ------------------------------------------------------------------------------------
    def set_probabilities(
        self,
        probs: list[float | None],
        found: list[bool],
        gt: list[bool] | None,
        gate: float,
        *,
        review: Sequence[int] = (),
        edited: Sequence[int] = (),
        by_neighbour: Sequence[int] = (),
    ) -> None:
        """Redraw the plot.

        Args:
            probs: tumour probability per slice (None where not analysed yet).
            found: whether each slice's final mask is non-empty.
            gt: ground-truth tumour per slice, or None when the folder has no masks.
            gate: the classifier gate (threshold line).
            review: the slices still to review (ringed).
            edited: the slices whose mask the reader edited (a diamond at the top).
            by_neighbour: the slices below the gate that passed it through a neighbouring slice
                (a triangle instead of a dot).
        """
        self._n = len(probs)
        idx = [i for i, p in enumerate(probs) if p is not None]
        xs = np.array([i + 1 for i in idx], float)
        ys = np.array([probs[i] for i in idx], float)
        self.curve.setData(xs, ys)
        brushes = [pg.mkBrush(255, 59, 48) if found[i] else pg.mkBrush(150, 150, 150) for i in idx]
        lifted = set(by_neighbour)
        symbols = ["t1" if i in lifted else "o" for i in idx]
        self.scatter.setData(x=xs, y=ys, brush=brushes, symbol=symbols, pen=None, data=idx)
        ringed = [i for i in review if i < self._n and probs[i] is not None]
        self.review_marks.setData(x=[i + 1 for i in ringed], y=[probs[i] for i in ringed])
        self.edited_marks.setData(x=[i + 1 for i in edited], y=[1.07] * len(edited))
        if gt is not None:
            gx = np.array([i + 1 for i, t in enumerate(gt) if t], float)
            self.gt_marks.setData(x=gx, y=np.full(gx.shape, -0.04))
        else:
            self.gt_marks.setData(x=[], y=[])
        marks = [(x, y) for x, y in zip(xs, ys, strict=True)]
        marks += [(i + 1, 1.07) for i in edited]
        marks += [(i + 1, -0.04) for i, t in enumerate(gt or ()) if t]
        self._points_xy = np.array(marks, float).reshape(-1, 2)
        self.gate_line.blockSignals(True)
        self.gate_line.setValue(gate)
        self.gate_line.blockSignals(False)
        if self._n:
            self.plot.getPlotItem().setXRange(0.5, self._n + 0.5, padding=0)
        self._place_gate_label()

    def showEvent(self, event: QShowEvent) -> None:
        """Follow the window's screen: see :meth:`_resample_points`."""
        super().showEvent(event)
        handle = self.window().windowHandle()
        if not self._screen_watched and handle is not None:
            self._screen_watched = True
            handle.screenChanged.connect(lambda _screen: self._resample_points())
            self._resample_points()

    def _resample_points(self) -> None:
        """Let the point items paint once uncached, on the plot itself.

        pyqtgraph sizes a scatter item's symbols for the screen's pixel ratio only when the item
        paints on a widget, and a cached item paints into a pixmap: on a screen whose ratio differs
        from the primary one (a 2x monitor beside a 1x one) the points would stay blurred.
        """
        for item in self._points:
            item.setCacheMode(QGraphicsItem.CacheMode.NoCache)
            item.update()

        def cache_again() -> None:
            for item in self._points:
                item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

        QTimer.singleShot(250, self, cache_again)

    def _place_gate_label(self, *_: object) -> None:
        """Label the gate line at whichever end of it, above or below, covers the fewest marks
        (probability points, edited diamonds, ground-truth squares), in the order right above,
        right below, left above, left below among equals; sized at the plot's current pixel size
        (placed again when the plot is resized)."""
        gate = float(self.gate_line.value())
        self.gate_label.setText(f"gate {gate:.3g}")
        right, left = (self._n + 0.45, 0.55) if self._n else (1.0, 0.0)
        width_px, height_px = self.gate_label.boundingRect().width(), self.gate_label.boundingRect().height()
        px, py = self.plot.getPlotItem().getViewBox().viewPixelSize()
        w, h = width_px * px, height_px * py
        top = 1.1 - h  # the label must stay inside the view
        spots = [  # (x, y, anchor, the data box it covers)
            (right, gate, (1, 1), (right - w, right, gate, gate + h)),
            (right, gate, (1, 0), (right - w, right, gate - h, gate)),
            (left, gate, (0, 1), (left, left + w, gate, gate + h)),
            (left, gate, (0, 0), (left, left + w, gate - h, gate)),
        ]
        xy = self._points_xy

        def covered(box: tuple[float, float, float, float]) -> int:
            x0, x1, y0, y1 = box
            inside = (xy[:, 0] >= x0 - 0.5) & (xy[:, 0] <= x1 + 0.5) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
            return int(np.count_nonzero(inside))

        fits = [s for s in spots if s[3][2] >= -0.08 and s[3][2] <= top] or spots[:1]
        x, y, anchor, _box = min(fits, key=lambda s: covered(s[3]))  # the first of equals: right, above
        self.gate_label.setAnchor(anchor)
        self.gate_label.setPos(x, y)

    def set_current(self, index: int) -> None:
        """Move the current-slice marker."""
        self.current_line.setValue(index + 1)

    # -- numbers ---------------------------------------------------------------------------------
    def show_slice(
        self,
        volume: Volume | None,
        result: SliceResult | None,
        index: int,
        gate: float | None,
        *,
        reasons: tuple[ReviewReason, ...] = (),
        reviewed: bool = False,
        aside_px: int = 0,
        spacing: Spacing | None = None,
    ) -> None:
        """The displayed slice's numbers: probability, area, whose mask, review reasons, the
        outline set aside, ground truth and Dice, and whether the reader marked it reviewed.

        Args:
            volume: the displayed volume (None: nothing is shown).
            result: the slice's displayed result (None: not analysed yet).
            index: the slice.
            gate: the slice gate it is shown with, None when no classifier ran.
            reasons: why the slice deserves a second look (:mod:`brainseg_core.review`).
            reviewed: the reader marked it reviewed.
            aside_px: pixels of the outline the one-region option set aside (drawn dotted).
            spacing: the voxel size the areas are shown with (mm² of the set-aside outline).
        """
        self.reviewed.blockSignals(True)
        self.reviewed.setChecked(reviewed)
        self.reviewed.setText("Reviewed ✓" if reviewed else "Mark reviewed")
        self.reviewed.setEnabled(volume is not None and result is not None)
        self.reviewed.blockSignals(False)
        if volume is None:
            self.slice_label.setText("—")
            return
        lines = [f"Slice {index + 1} of {volume.n_slices}  (file #{volume.slice_numbers[index]})"]
        if result is None:
            lines.append("Not analysed yet")
        else:
            lines.append(_gate_text(result, gate))
            area = f"{result.area_px} px"
            if result.area_mm2 is not None:
                area += f" = {result.area_mm2:.1f} mm²"
            reader = result.source is MaskSource.READER
            lines.append(f"Tumour area {area}" + ("  (your edited mask)" if reader else ""))
            edited = " (before your edit)" if reader else ""
            lines += [f"⚠ Review{edited}: {r.describe()}" for r in reasons]
            if aside_px:
                mm2 = f" = {spacing.area_mm2(aside_px):.1f} mm²" if spacing is not None else ""
                lines.append(
                    f"Dotted: {aside_px} px{mm2} outside the kept region, not counted "
                    "(K keeps it here, Shift+K on all its slices)"
                )
        if volume.masks is not None:
            truth = volume.masks[index]
            lines.append(f"Ground truth {int(truth.sum())} px")
            if result is not None:
                d = metrics.dice(result.mask, truth, empty=math.nan)
                lines.append(f"Dice {_fmt(d, '.3f', '— (both empty)')}")
        self.slice_label.setText("\n".join(lines))

    def show_summary(self, rec: PatientRecord | None, volume: Volume | None) -> None:
        """The displayed patient's summary: tumour slices, volume, Dice, review list, settings.

        Args:
            rec: the displayed patient (None: no patient open).
            volume: its volume when read (for the ground truth).
        """
        notes = _reading_notes(volume)
        self.summary_label.setToolTip("\n".join(volume.warnings) if volume is not None else "")
        if rec is None:
            self.summary_label.setText("No patient open")
            return
        if rec.shown is None or not rec.shown.slices:
            state = rec.state.value if rec.state is not PatientState.NEW else "Not analysed yet"
            self.summary_label.setText("<br>".join([f"<b>{rec.patient_id}</b>", state, *notes]))
            return
        r = rec.shown
        n = rec.n_slices or len(r.slices)
        partial = "" if rec.complete else f" (so far: {len(r.slices)} of {n} slices analysed)"
        lines = [f"<b>{rec.patient_id}</b>{partial}", f"Tumour on <b>{r.tumour_slices}</b> of {n} slices"]
        if r.volume_ml is not None:
            lines.append(f"Volume <b>{r.volume_ml:.2f} mL</b> ({r.volume_voxels:,} voxels)")
        else:
            lines.append(f"Volume <b>{r.volume_voxels:,} voxels</b> (enter the pixel spacing for mL)")
        if volume is not None and volume.masks is not None and rec.complete:
            pred = np.stack([s.mask for s in r.slices])
            d = metrics.dice(pred, volume.masks, empty=math.nan)
            truth = int(volume.masks.sum())
            lines.append(f"Dice vs ground truth <b>{_fmt(d, '.3f')}</b> (ground truth {truth:,} voxels)")
        review = [i + 1 for i in rec.review_queue()]
        if review:
            listed = ", ".join(str(i) for i in review[:8]) + (" …" if len(review) > 8 else "")
            lines.append(f"⚠ <b>{len(review)}</b> slice(s) to review (R): {listed}")
        edited = rec.edits.edited
        if edited:
            lines.append(f"✎ Your mask on <b>{len(edited)}</b> slice(s)")
        t = r.thresholds
        largest = f" · {t.describe_region()}" if t.largest_component else ""
        largest += f" · faint edges ≥ {t.edge:g}" if t.edge else ""
        gate = t.describe_gate() if r.classifier is not None else f"{t.gate:.3g}"
        lines.append(f"Gate {gate} · mask {t.mask:.3g} · min area {t.min_area_px} px" + largest)
        mode = describe_run(r.flip_tta, r.ensemble)
        lines.append(f"Ran on {r.device}" + (f" · thorough: {mode}" if mode else ""))
        self.summary_label.setText("<br>".join(lines + notes))

    def _on_points_clicked(self, _item: object, points: list, _ev: object = None) -> None:
        if len(points):
            self.sliceClicked.emit(int(points[0].data()))

    def click_slice(self, index: int) -> None:
        """Act as if the point of slice ``index`` was clicked (keyboard and tests)."""
        self.sliceClicked.emit(index)


def _reading_notes(volume: Volume | None, shown: int = 3) -> list[str]:
    """What the reader should know about how the files were read (a sequence replaced by FLAIR,
    resampled, a series left out, ignored masks), as HTML lines; the full text is the tooltip."""
    if volume is None or not volume.warnings:
        return []
    short = []
    for w in volume.warnings[:shown]:
        where, sep, what = w.partition(": ")
        line = f"{Path(where).name}{sep}{what}" if sep and "/" in where else w  # file names, not paths
        short.append(html.escape(line if len(line) <= 200 else line[:199] + "…"))
    more = f" (+{len(volume.warnings) - shown} more, hover for all)" if len(volume.warnings) > shown else ""
    return [f"⚠ <b>{len(volume.warnings)}</b> note(s) on reading the files{more}:", *short]
