"""The BrainSeg main window and :func:`run_viewer`, the viewer's entry point.

Layout: the patient browser and the display/overlay/threshold controls on the left, the slice
view in the centre (slice slider and thumbnail strip under it), the results on the right
(probability plot, slice and patient numbers, active models), progress and Cancel in the status
bar. The window reads patients in a worker thread (:mod:`brainseg_app.worker`) and shows them;
the commands, menus and toolbar come from :mod:`brainseg_app.actions`; the models and the queue
of analyses belong to :class:`brainseg_app.analysis.AnalysisController`, whose results stream in
slice by slice.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shiboken6
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QIcon
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from brainseg_app import actions, dialogs
from brainseg_app.analysis import AnalysisController
from brainseg_app.browser import PatientBrowser
from brainseg_app.exporting import Exporter
from brainseg_app.opening import PatientOpener
from brainseg_app.panels import STEPS, ControlsPanel, ResultsPanel
from brainseg_app.reader_work import ReaderWorkKeeper
from brainseg_app.session import PatientRecord, PatientState
from brainseg_app.settings import Settings, config_dir
from brainseg_app.slice_view import SliceView
from brainseg_app.theme import apply_dark_theme
from brainseg_app.thumbnails import ThumbnailStrip
from brainseg_app.viewer_model import EditTool, OverlayStyle, ViewerModel
from brainseg_core.edits import EditKind
from brainseg_core.errors import DataError
from brainseg_core.io import PatientFormat, Volume, find_patients
from brainseg_core.resources import resource_path
from brainseg_core.results import MaskSource
from brainseg_core.spacing import Spacing
from brainseg_core.thorough import describe_run, run_mode
from brainseg_core.thresholds import Thresholds

if TYPE_CHECKING:
    from brainseg_app.finetune_dialog import ImproveModelsDialog
    from brainseg_core.engine import BundleFile, Engine

log = logging.getLogger(__name__)


def _scrolled(widget: QWidget) -> QScrollArea:
    """``widget`` in a frameless scroll area that resizes it."""
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setWidget(widget)
    scroll.setFrameShape(QScrollArea.Shape.NoFrame)
    return scroll


class MainWindow(QMainWindow):
    """The viewer window.

    Args:
        settings: persistent settings (default: the user's INI file, see :mod:`.settings`).
        engine: where the networks run (default: a model process of the window's own, started
            when the models are first needed; see :mod:`brainseg_core.engine`).

    Attributes:
        model: what the viewer shows (:class:`~brainseg_app.viewer_model.ViewerModel`); the
            window binds its widgets to it.
        analyser: the models, the queue of analyses and their worker
            (:class:`~brainseg_app.analysis.AnalysisController`).
        analysis: the analyser's job runner (``analysis.running``, ``analysis.item``, ...).
        loader: the job runner that reads the displayed patient.
    """

    def __init__(self, settings: Settings | None = None, *, engine: Engine | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.setWindowTitle("BrainSeg")
        self.setAcceptDrops(True)
        icon = resource_path("icons", "brainseg-256.png")
        if icon.is_file():
            self.setWindowIcon(QIcon(str(icon)))

        self.model = ViewerModel(overlay=self.settings.overlay_style())
        self._quit_confirmed = False
        self._navigated = False
        self._series_asked: set[Path] = set()  # DICOM studies whose series were shown this session

        self.opener = PatientOpener(self.model, self)
        self.loader = self.opener.runner
        self.analyser = AnalysisController(self.model, self.settings, self, engine=engine)
        self.analysis = self.analyser.runner
        self.exporter = Exporter(self.model, self.settings, self.analyser, self)
        self.reader_work = ReaderWorkKeeper(self.model, self.settings, self.analyser, self)

        self._build_central()
        self._build_docks()
        self._build_status_bar()
        self.brush_spin: QSpinBox  # made with the edit toolbar
        self.actions_by_name = actions.build_actions(self)
        self.recent_menu, self.device_menu = actions.build_menus_and_toolbar(self, self.actions_by_name)
        self._restore_settings()
        self._connect()
        self._plot_timer = self._timer(60, self._refresh_results)
        # while the displayed patient's results stream in: the plot and numbers at most every 250
        # ms, however fast slices come (each refresh costs 2-6 ms that a slice switch may meet)
        self._stream_timer = self._timer(250, self._refresh_results)
        self._stream_timer.setTimerType(Qt.TimerType.PreciseTimer)  # a coarse one may fire 5 % early
        self._threshold_timer = self._timer(300, self._thresholds_settled)
        self._moved: set[str] = set()  # the sliders moved since the thresholds last settled
        self.model.set_thresholds(self._initial_thresholds())
        self._show_thresholds(self.model.thresholds)
        self._update_enabled()
        self.view.setFocus()

    def _modal(self, dialog: QDialog) -> int:
        """Run a modal dialog; the keyboard then belongs to the slice view again (not the list)."""
        try:
            return dialog.exec()
        finally:
            self.view.setFocus()

    def _timer(self, interval_ms: int, slot: Callable[[], None]) -> QTimer:
        """A single-shot timer calling ``slot``; each start() restarts it."""
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(interval_ms)
        timer.timeout.connect(slot)
        return timer

    @property
    def classifier(self) -> BundleFile | None:
        """The active classifier (None: every slice is segmented)."""
        return self.analyser.classifier

    @property
    def segmenter(self) -> BundleFile | None:
        """The active segmenter (None until the models are loaded, or none installed)."""
        return self.analyser.segmenter

    # The viewer's state lives in :attr:`model`; these read it.
    @property
    def records(self) -> dict[Path, PatientRecord]:
        """The opened patients, by path."""
        return self.model.records

    @property
    def current(self) -> PatientRecord | None:
        """The displayed patient."""
        return self.model.current

    @property
    def volume(self) -> Volume | None:
        """The displayed patient's volume (None while it is read)."""
        return self.model.volume

    @property
    def index(self) -> int:
        """The displayed slice."""
        return self.model.index

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds every patient is shown with."""
        return self.model.thresholds

    # ==========================================================================================
    # Construction
    # ==========================================================================================
    def _build_central(self) -> None:
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        self.view = SliceView()
        self.view.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        layout.addWidget(self.view, 1)
        row = QHBoxLayout()
        self.prev_button = QToolButton()
        self.prev_button.setArrowType(Qt.ArrowType.LeftArrow)
        self.prev_button.setToolTip("Previous slice (Left / Up arrow, mouse wheel)")
        self.next_button = QToolButton()
        self.next_button.setArrowType(Qt.ArrowType.RightArrow)
        self.next_button.setToolTip("Next slice (Right / Down arrow, mouse wheel)")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip("Slice (Home / End: first / last, Page Up / Down: 5 slices)")
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.slider.setRange(0, 0)
        self.slice_label = QLabel("— / —")
        self.slice_label.setMinimumWidth(70)
        self.slice_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.slice_label.setToolTip("Current slice / number of slices")
        row.addWidget(self.prev_button)
        row.addWidget(self.slider, 1)
        row.addWidget(self.next_button)
        row.addWidget(self.slice_label)
        layout.addLayout(row)
        self.thumbnails = ThumbnailStrip()
        layout.addWidget(self.thumbnails)
        self.setCentralWidget(central)

    def _build_docks(self) -> None:
        left, right = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
        self.browser = PatientBrowser()
        self.browser_dock = self._add_dock("Patients", "patients_dock", self.browser, left)
        self.controls = ControlsPanel()
        self.controls_dock = self._add_dock("Display", "controls_dock", _scrolled(self.controls), left)
        self.results = ResultsPanel()
        results = _scrolled(self.results)
        # The scroll bar stays, so the panel's width (and the plot's) does not change when a slice's
        # text grows past the panel's height.
        results.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.results_dock = self._add_dock("Results", "results_dock", results, right)
        self.resizeDocks([self.browser_dock, self.results_dock], [365, 330], Qt.Orientation.Horizontal)
        self.resizeDocks([self.browser_dock, self.controls_dock], [190, 600], Qt.Orientation.Vertical)

    def _add_dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        """Add a dock holding ``widget``; ``name`` is its object name (saved window state uses it)."""
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.cursor_label = QLabel("")
        self.cursor_label.setToolTip("Pixel under the mouse: position and value(s)")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.progress.setToolTip("Analysis progress")
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running analysis (Esc); results so far are kept")
        self.cancel_button.setVisible(False)
        bar.addPermanentWidget(self.cursor_label)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)

    def _restore_settings(self) -> None:
        s = self.settings
        c = self.controls
        c.show_overlay_style(self.model.overlay)
        c.auto_run.setChecked(s.auto_run)
        c.device.setCurrentText(s.device)
        self.actions_by_name["auto_run"].setChecked(s.auto_run)
        self.actions_by_name["thorough"].setChecked(s.thorough)
        self._sync_device_menu(s.device)
        self._show_overlay(self.model.overlay)
        if s.geometry is not None:
            self.restoreGeometry(s.geometry)
        else:
            self.resize(1400, 900)
        if s.window_state is not None:
            self.restoreState(s.window_state)
        self._rebuild_recent()

    def _connect(self) -> None:
        c, v = self.controls, self.view
        v.sliceStepRequested.connect(self.step)
        v.cursorInfo.connect(self.cursor_label.setText)
        self.slider.valueChanged.connect(self.set_slice)
        self.prev_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.thumbnails.sliceClicked.connect(self.set_slice)
        self.results.sliceClicked.connect(self.set_slice)
        self.results.gateDragged.connect(lambda g: c.gate.setValue(round(g * STEPS)))
        self.results.spacing.clicked.connect(self.spacing_dialog)
        self.results.model_cards.clicked.connect(self.show_models)
        self.browser.patientActivated.connect(self.open_patient)
        self.browser.analyseAllRequested.connect(self.analyse_all)
        self.browser.exportAllRequested.connect(self.export_all_dialog)

        c.channel.currentIndexChanged.connect(self._on_channel)
        c.auto_window.clicked.connect(v.auto_window)
        c.reset_window.clicked.connect(v.reset_window)
        c.window_preset.textActivated.connect(self.model.apply_preset)
        v.windowChanged.connect(self.model.set_window)
        c.fit.clicked.connect(v.fit)
        c.one_to_one.clicked.connect(v.one_to_one)
        m = self.model
        c.show_overlay.toggled.connect(lambda on: m.set_overlay(visible=on))
        c.fill.toggled.connect(lambda on: m.set_overlay(fill=on))
        c.contour.toggled.connect(lambda on: m.set_overlay(contour=on))
        c.opacity.valueChanged.connect(lambda v: m.set_overlay(opacity=v / 100.0))
        c.contour_width.valueChanged.connect(lambda v: m.set_overlay(contour_width=v))
        c.pred_colour.colourChanged.connect(lambda col: m.set_overlay(pred_colour=col.name()))
        c.gt_colour.colourChanged.connect(lambda col: m.set_overlay(gt_colour=col.name()))
        c.show_gt.toggled.connect(lambda on: m.set_overlay(gt_visible=on))
        c.gate.valueChanged.connect(lambda v: self._set_thresholds(gate=v / STEPS))
        c.mask_threshold.valueChanged.connect(lambda v: self._set_thresholds(mask=v / STEPS))
        c.default_thresholds.clicked.connect(self.use_model_thresholds)
        c.largest_component.toggled.connect(self.set_largest_component)
        c.faint_edges.toggled.connect(self.set_faint_edges)
        m.events.overlay.connect(self._on_overlay_changed)
        m.events.window.connect(lambda wl: self.view.set_window(*wl))
        m.events.volume.connect(self._show_volume)
        m.events.slice.connect(self._show_slice)
        m.events.thresholds.connect(self._show_thresholds)
        m.events.results.connect(self.browser.update_record)
        m.events.tool.connect(self._on_tool)
        m.events.brush.connect(self._on_brush)
        m.events.edits.connect(self._on_edited)
        m.events.review.connect(self._on_review_marked)
        v.paintRequested.connect(self._on_paint)
        v.strokeFinished.connect(self._on_stroke_finished)
        v.regionPicked.connect(lambda row, col: self.edit(EditKind.DELETE_REGION, (row, col)))
        self.results.reviewed.toggled.connect(lambda on: self.model.set_reviewed(self.index, on))
        c.run.clicked.connect(self.run_current)
        c.auto_run.toggled.connect(self.set_auto_run)
        c.device.currentTextChanged.connect(self._on_device)
        self.cancel_button.clicked.connect(self.cancel_analysis)

        self.opener.loaded.connect(self._on_volume_loaded)
        self.opener.failed.connect(self._on_volume_failed)
        an = self.analyser
        an.recordChanged.connect(self.browser.update_record)
        an.message.connect(self.statusBar().showMessage)
        an.jobStarted.connect(self._on_job_started)
        an.progress.connect(self._on_analysis_progress)
        an.idle.connect(self._on_analysis_idle)
        an.stateChanged.connect(self._update_enabled)
        an.modelsChanged.connect(self._after_models_changed)
        an.patientStarted.connect(self._on_patient_started)
        an.sliceAnalysed.connect(self._on_slice_analysed)
        an.patientFinished.connect(self._on_patient_finished)
        an.patientCancelled.connect(self._on_patient_cancelled)
        self.analysis.stopped.connect(self._restore_if_waiting)  # after the analyser's next start
        an.exportRequested.connect(self.export_all_dialog)
        an.deviceFellBack.connect(self.controls.device.setCurrentText)
        an.thoroughFellBack.connect(self._thorough_fell_back)

    # ==========================================================================================
    # Opening patients
    # ==========================================================================================
    def open_patient_dialog(self) -> None:
        """Ask for a patient folder and open it."""
        folder = QFileDialog.getExistingDirectory(self, "Open patient folder", self._start_dir())
        if folder:
            self.open_path(Path(folder))

    def open_dataset_dialog(self) -> None:
        """Ask for a dataset root and list its patients."""
        folder = QFileDialog.getExistingDirectory(self, "Open dataset root", self._start_dir())
        if folder:
            self.open_path(Path(folder))

    def open_file_dialog(self) -> None:
        """Ask for a patient's file (NIfTI, TIFF stack, DICOM) and open it."""
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open file",
            self._start_dir(),
            "Scans (*.nii *.nii.gz *.tif *.tiff *.dcm DICOMDIR);;NIfTI (*.nii *.nii.gz);;"
            "TIFF stacks (*.tif *.tiff);;DICOM (*.dcm DICOMDIR);;All files (*)",
        )
        if path:
            self.open_path(Path(path))

    def open_sample(self) -> None:
        """Open the sample patient shipped in ``resources/sample``."""
        self.open_path(resource_path("sample"), remember=False)

    def _start_dir(self) -> str:
        recent = self.settings.recent
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def open_path(self, path: Path, *, remember: bool = True) -> bool:
        """Open a patient (folder or file, any supported format) or a dataset root.

        Args:
            path: what to open.
            remember: add it to File > Open recent.

        Returns:
            True when at least one patient was found (the first one is then being opened).
        """
        path = Path(path).expanduser().absolute()
        try:
            patients = find_patients(path)
        except DataError as exc:
            dialogs.notify(self, "error", "Cannot open", f"BrainSeg could not open this:\n\n{exc}")
            return False
        except OSError as exc:
            dialogs.notify(self, "error", "Cannot open", f"{path}: {exc.strerror or exc}")
            return False
        if not patients:
            dialogs.notify(
                self,
                "error",
                "No patients found",
                f"{path} holds no patient: expected a folder of <patient>_<n>.tif slices, a multi-page "
                "TIFF, NIfTI files (<id>_flair.nii.gz, ...), a DICOM study, or a folder of such patients.",
            )
            return False
        if remember:
            self.settings.add_recent(path)
            self._rebuild_recent()
        self.analyser.stop_patients()
        entered = {p: s for p in patients if (s := self.settings.spacing(p)) is not None}
        series = {p: c for p in patients if (c := self.settings.series_choice(p)) is not None}
        self.model.set_patients(
            path,
            patients,
            spacing=self.settings.spacing(patients[0].parent),
            patient_spacing=entered,
            series=series,
        )
        self.browser.set_patients(path, list(self.records.values()))
        self.open_patient(patients[0])
        return True

    def open_patient(self, path: Path) -> None:
        """Show one patient of the opened folder (reads it in the background)."""
        path = Path(path)
        rec = self.records.get(path)
        if rec is None:
            return
        self.view.setFocus()  # arrow keys page through the slices, not the patient list
        if rec is self.current and (self.volume is not None or self.loader.running):
            return
        self.save_reader_work()
        self.analyser.patient_opened(rec)
        self.model.show_patient(rec)
        self.browser.set_current(path)
        self.view.set_volume(None)
        self.thumbnails.set_volume(None)
        self._set_slider(0, 0)
        self.setWindowTitle(rec.patient_id)  # Qt appends the display name "BrainSeg"
        self.statusBar().showMessage(f"Opening {rec.patient_id} …")
        self.opener.read(rec)
        self._update_enabled()

    def _on_volume_loaded(self, rec: PatientRecord, volume: Volume) -> None:
        self.reader_work.restore(rec, volume)
        self.model.set_volume(volume)
        self._navigated = False
        self._refresh_results()
        self.statusBar().showMessage(
            f"{rec.patient_id}: {volume.n_slices} slices"
            + (", with ground-truth masks" if volume.has_masks else ""),
            5000,
        )
        self._update_enabled()
        if volume.skipped:
            lines = "\n".join(f"{s.path.name}: {s.reason}" for s in volume.skipped)
            dialogs.notify(
                self,
                "warning",
                "Some slices were skipped",
                f"{len(volume.skipped)} slice file(s) of {rec.patient_id} could not be used and are not "
                f"shown (see details). The other {volume.n_slices} slices are.",
                details=lines,
            )
        if self._confirm_series_once(rec, volume):
            return  # read again with the series the reader chose
        if rec.state is PatientState.DONE:  # analysed before it was opened (or left and reopened)
            self._jump_to_largest()
            self.analyser.schedule_missing_segmentations()
        elif self.settings.auto_run and (
            rec.state in (PatientState.NEW, PatientState.CANCELLED)
            or self.analyser.stopping(rec)  # left, which cancelled its run, and opened again
        ):
            self.analyser.request_analysis(rec, front=True)  # uses a saved analysis when there is one
        elif rec.state in (PatientState.NEW, PatientState.CANCELLED):
            self._restore_saved(rec, volume)

    def _confirm_series_once(self, rec: PatientRecord, volume: Volume) -> bool:
        """On a DICOM study's first opening, let the reader confirm the guessed series.

        Returns:
            True when the reader chose other series (the patient is then read again).
        """
        if volume.format is not PatientFormat.DICOM or rec.series is not None:
            return False
        if rec.path in self._series_asked:
            return False
        self._series_asked.add(rec.path)
        return self.series_dialog()

    def series_dialog(self) -> bool:
        """Choose which series of the displayed DICOM study feed the models (remembered).

        Returns:
            True when the choice changed: the patient is read and analysed again.
        """
        from brainseg_core.io.dicom import series_plan

        rec = self.current
        if rec is None:
            return False
        try:
            series, picked = series_plan(rec.path, choose=rec.series)
        except DataError as exc:
            dialogs.notify(self, "error", "DICOM series", str(exc))
            return False
        dlg = dialogs.SeriesDialog(rec.path, series, picked, self)
        if not self._modal(dlg):
            return False
        chosen = dlg.value()
        self.settings.set_series_choice(rec.path, chosen)
        before = {seq.value: info.series_uid for seq, info in picked.items()}
        rec.series = chosen
        if chosen == before:
            return False
        an = self.analyser
        batch, export = an.batch_running, an.export_after_batch
        an.stop_patients()
        self.save_reader_work()  # the edits and marks belong to the series they were made on
        rec.forget_reader_work()
        rec.reset()
        self.browser.update_record(rec)
        if batch:  # "Analyse all" goes on, this patient with the chosen series
            an.analyse_all()
            an.export_after_batch = export
        self.model.show_patient(rec)
        self.view.set_volume(None)
        self.statusBar().showMessage(f"Reading {rec.patient_id} with the chosen series …")
        self.opener.read(rec)
        return True

    def _restore_saved(self, rec: PatientRecord, volume: Volume) -> None:
        """Show the saved analysis of ``rec`` (no network runs), or say that it is stale."""
        saved = self.analyser.saved_analysis(volume)
        if saved is None:
            return
        if saved.stale:
            self.statusBar().showMessage(
                f"{rec.patient_id}: the analysis saved on {saved.saved[:10]} was made {saved.stale}; "
                "run the analysis to update it",
                10000,
            )
            return
        rec.start(saved.result, volume.n_slices, volume.format)
        rec.state = PatientState.DONE
        self.model.apply(rec)
        self._update_masks()
        self._refresh_results()
        self._jump_to_largest()
        self.statusBar().showMessage(f"{rec.patient_id}: analysis saved on {saved.saved[:10]} restored", 8000)

    def _on_volume_failed(self, rec: PatientRecord, message: str, details: str, displayed: bool) -> None:
        rec.error = message
        rec.state = PatientState.FAILED
        self.browser.update_record(rec)
        if not displayed:  # the user moved on meanwhile: no dialog about a patient no longer shown
            self.statusBar().showMessage(f"Could not open {rec.patient_id}: {message}", 8000)
            return
        self.statusBar().showMessage("Could not open the patient", 5000)
        dialogs.notify(
            self,
            "error",
            "Cannot open patient",
            f"BrainSeg could not read this patient:\n\n{message}",
            details,
        )
        self._update_enabled()

    def _rebuild_recent(self) -> None:
        actions.fill_recent_menu(self.recent_menu, self.settings.recent, self.open_path, self._clear_recent)

    def _clear_recent(self) -> None:
        self.settings.clear_recent()
        self._rebuild_recent()

    # ==========================================================================================
    # Navigation and display
    # ==========================================================================================
    @property
    def n_slices(self) -> int:
        """Slices of the displayed volume (0 when none)."""
        return self.model.n_slices

    def set_slice(self, index: int) -> None:
        """Show slice ``index`` (clamped to the volume)."""
        if self.model.set_slice(index):
            self._navigated = True

    def _show_volume(self, volume: Volume | None) -> None:
        rec = self.current
        if volume is None or rec is None:
            return
        geometry = volume.geometry
        self.view.set_volume(
            volume.images,
            rec.patient_id,
            edge_labels=None if geometry is None else geometry.edge_labels,
            pixel_mm=None if volume.spacing is None else volume.spacing.pixel_mm,
        )
        self.view.set_window(*self.model.window())  # this patient's own (auto on first view)
        self.thumbnails.set_volume(volume.images, self.model.truth_flags())
        self._set_slider(0, volume.n_slices - 1)

    def _on_channel(self, channel: int) -> None:
        self.view.set_channel(channel)
        self.model.set_channel(channel)

    def _show_slice(self, index: int) -> None:
        self.view.show_slice(index)
        self._update_masks()
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self.slice_label.setText(f"{index + 1} / {self.n_slices}")
        self.thumbnails.set_current(index)
        self.results.set_current(index)
        self._update_slice_info()

    def step(self, delta: int) -> None:
        """Move ``delta`` slices forward (negative: back)."""
        self.set_slice(self.index + delta)

    def jump_tumour(self, direction: int) -> None:
        """Go to the next (1) or previous (-1) slice with a predicted tumour."""
        rec = self.current
        found = self.model.next_tumour(direction)
        if found is not None:
            self.set_slice(found)
            return
        what = "after" if direction > 0 else "before"
        msg = "No analysis yet" if rec is None or rec.shown is None else f"No tumour slice {what} this one"
        self.statusBar().showMessage(msg, 3000)

    def _set_slider(self, lo: int, hi: int) -> None:
        self.slider.blockSignals(True)
        self.slider.setRange(lo, hi)
        self.slider.setPageStep(actions.PAGE_STEP)
        self.slider.blockSignals(False)
        if hi == 0 and self.volume is None:
            self.slice_label.setText("— / —")

    def _update_masks(self) -> None:
        if self.volume is None:
            self._enable_keep_set_aside(False)
            return
        rec = self.current
        s = rec.slice_shown(self.index) if rec is not None else None
        pred = s.mask if s is not None and s.area_px > 0 else None
        gt = self.volume.masks[self.index] if self.volume.masks is not None else None
        aside = self.model.set_aside_outline()
        self._enable_keep_set_aside(aside is not None)
        self.view.set_masks(pred, gt, reader=s is not None and s.source is MaskSource.READER, aside=aside)

    def _on_overlay_changed(self, style: OverlayStyle) -> None:
        self.settings.set_overlay_style(style)
        self._show_overlay(style)

    def _show_overlay(self, style: OverlayStyle) -> None:
        self.controls.show_overlay_style(style)
        a = self.actions_by_name
        for name, on in (
            ("toggle_overlay", style.visible),
            ("toggle_gt", style.gt_visible),
            ("toggle_contour", style.contour),
            ("toggle_fill", style.fill),
        ):
            a[name].blockSignals(True)
            a[name].setChecked(on)
            a[name].blockSignals(False)
        self.view.set_overlay_style(style)

    # ==========================================================================================
    # Models and thresholds
    # ==========================================================================================
    def _after_models_changed(self) -> None:
        """Show the new models and take their thresholds (unless the user set some)."""
        self.model.model_input_size = None if self.segmenter is None else int(self.segmenter.card.input_size)
        self._update_models_label()
        self._keep_moved_thresholds()
        self.model.set_thresholds(self._initial_thresholds())
        self._show_thresholds(self.model.thresholds)
        self._apply_thresholds_everywhere()
        self._restore_if_waiting()

    def _restore_if_waiting(self) -> None:
        """With auto-run off, show the displayed patient's saved analysis by the active models when
        it has no results and no job runs: one opened while the models loaded, or whose results
        were cleared by a model change (called again whenever a job stops)."""
        rec, volume = self.current, self.volume
        if rec is None or volume is None or self.settings.auto_run or self.analysis.running:
            return
        if rec.base is None and rec.state in (PatientState.NEW, PatientState.CANCELLED):
            self._restore_saved(rec, volume)

    def _initial_thresholds(self) -> Thresholds:
        """The model cards' thresholds with those the user chose (remembered in the settings)."""
        s = self.settings

        def probability(value: float | None) -> float | None:
            return None if value is None else min(max(value, 0.0), 1.0)

        return ViewerModel.card_thresholds(
            self.classifier.card if self.classifier is not None else None,
            self.segmenter.card if self.segmenter is not None else None,
            gate=probability(s.classifier_threshold),
            mask=probability(s.mask_threshold),
            largest_component=s.largest_component,
            faint_edges=s.faint_edges,
            thorough=s.thorough,
        )

    def _show_thresholds(self, thresholds: Thresholds) -> None:
        self.controls.show_thresholds(thresholds, gate_enabled=self.classifier is not None)

    def _update_models_label(self) -> None:
        from brainseg_core.model_card import bundle_summary

        parts = []
        for title, b in (("Classifier", self.classifier), ("Segmenter", self.segmenter)):
            if b is None:
                text = "none (every slice is segmented)" if title == "Classifier" else "none installed"
            else:
                text = bundle_summary(b.card)
                if title == "Segmenter" and self.settings.thorough:
                    extra = [describe_run(*run_mode(b.card, True))]
                    dice = b.card.thorough.get("metrics", {}).get("dice_patient_mean")
                    extra += [f"dice_patient_mean {dice:.3f}"] if isinstance(dice, float) else []
                    text += f"<br><i>Thorough</i>: {' | '.join(extra)}"
            parts.append(f"<b>{title}</b>: {text}")
        self.results.models_label.setText("<br>".join(parts))

    def _set_thresholds(self, *, gate: float | None = None, mask: float | None = None) -> None:
        """A slider moved: the displayed patient follows at once, the others once it settles."""
        t = self.thresholds
        self.model.set_thresholds(
            t.replace(
                gate=t.gate if gate is None else gate, mask=t.mask if mask is None else max(mask, 0.001)
            )
        )
        self._moved |= {name for name, value in (("gate", gate), ("mask", mask)) if value is not None}
        self._update_masks()
        self._refresh_results()
        self._threshold_timer.start()

    def _keep_moved_thresholds(self) -> None:
        """Save the thresholds the user moved since they last settled as the user's (only those:
        the other keeps following the mode's card), before the cards' thresholds are read again."""
        self._threshold_timer.stop()
        if "gate" in self._moved:
            self.settings.classifier_threshold = self.thresholds.gate
        if "mask" in self._moved:
            self.settings.mask_threshold = self.thresholds.mask
        self._moved.clear()

    def _thresholds_settled(self) -> None:
        self._keep_moved_thresholds()
        self._apply_thresholds_everywhere()
        self.analyser.schedule_missing_segmentations()

    def _apply_thresholds_everywhere(self) -> None:
        self.model.apply_all()
        self._update_masks()
        self._refresh_results()

    def set_largest_component(self, on: bool) -> None:
        """Show only one 3-D region of each analysed patient, the largest or the most confident (the
        thresholds' region rule), or every region again."""
        self.settings.largest_component = bool(on)
        self.model.update_thresholds(largest_component=bool(on))
        self._apply_thresholds_everywhere()

    def set_faint_edges(self, on: bool) -> None:
        """Outline tumours' faint edge slices (or not) in every analysed patient."""
        self.settings.faint_edges = bool(on)
        self.model.update_thresholds(edge=self._initial_thresholds().edge)
        self._apply_thresholds_everywhere()

    def use_model_thresholds(self) -> None:
        """Return the thresholds to the values in the model cards."""
        self._threshold_timer.stop()  # a slider still settling does not override them again
        self._moved.clear()
        self.settings.classifier_threshold = None
        self.settings.mask_threshold = None
        self.settings.largest_component = None
        self.settings.faint_edges = None
        self.model.set_thresholds(self._initial_thresholds())
        self._apply_thresholds_everywhere()
        self.analyser.schedule_missing_segmentations()

    def load_bundle_dialog(self) -> None:
        """Ask for a model bundle file and use it."""
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Load model bundle",
            self.settings.classifier_path or str(Path.home()),
            "BrainSeg model bundles (*.json *.safetensors)",
        )
        if path:
            self.load_bundle_file(Path(path))

    @property
    def _models_loaded(self) -> bool:
        return self.analyser.models_loaded

    def ensure_models(self, *, quiet: bool = False) -> bool:
        """Load the models now if not done yet (see :meth:`AnalysisController.ensure_models`).

        Returns:
            True when a segmenter is available.
        """
        return self.analyser.ensure_models(quiet=quiet)

    def load_bundle_file(self, path: Path) -> bool:
        """Use the bundle at ``path`` as the classifier or segmenter (by its card's kind).

        Returns:
            True when it loaded; otherwise the active models stay and a message says why.
        """
        if not self.analyser.load_bundle_file(path):
            return False
        self._models_changed()
        return True

    def set_models(self, classifier: BundleFile | None, segmenter: BundleFile) -> None:
        """Use these bundles as the active models.

        Args:
            classifier: a classifier (a registry ``BundleInfo`` or a loaded ``ModelBundle``), or
                None to segment every slice.
            segmenter: a segmenter, likewise. A model process loads them from their files; a
                :class:`~brainseg_core.engine.LocalEngine` uses loaded ones as they are.
        """
        self.analyser.set_models(classifier, segmenter)
        self._models_changed()

    def use_default_models(self) -> None:
        """Forget bundles loaded by hand and installed choices: use the shipped models."""
        from brainseg_core.registry import use_default_models

        use_default_models()
        self.reload_models()

    def reload_models(self) -> None:
        """Forget bundles loaded by hand and load the active models of the registry again."""
        self.analyser.use_default_models()
        self._models_changed()

    def manage_models(self) -> None:
        """The Manage models dialog; the models are reloaded whenever it changes the choice."""
        dialog = dialogs.ManageModelsDialog(self)
        dialog.changed.connect(self.reload_models)
        self._modal(dialog)

    def improve_models(self) -> None:
        """Model > Improve the models with my corrections… (see :mod:`brainseg_app.finetune_dialog`)."""
        dialog = self.improve_models_dialog()
        if dialog is not None:
            self._modal(dialog)

    def improve_models_dialog(self) -> ImproveModelsDialog | None:
        """The fine-tuning dialog for the active segmenter (and classifier), not yet shown.

        Returns:
            The dialog, or None (with a message) when no segmenter is available.
        """
        from brainseg_app.finetune_dialog import ImproveModelsDialog

        if not self.ensure_models() or self.segmenter is None:
            dialogs.notify(
                self,
                "info",
                "No segmenter",
                "There is no segmenter to improve; install one first (Model > Manage models…).",
            )
            return None
        seg, cls = self.segmenter, self.classifier
        dialog = ImproveModelsDialog(
            seg.path,
            seg.card.name,
            classifier=None if cls is None else cls.path,
            classifier_name=None if cls is None else cls.card.name,
            corrections=self.settings.corrections_dir,
            original_data=self.settings.original_data_dir,
            device=self.settings.device,
            parent=self,
        )
        dialog.folders_chosen.connect(self._remember_finetune_folders)
        dialog.adopted.connect(lambda _paths: self.reload_models())
        return dialog

    def _remember_finetune_folders(self, corrections: str, original: str) -> None:
        self.settings.corrections_dir = corrections
        self.settings.original_data_dir = original or None

    def _models_changed(self) -> None:
        an = self.analyser
        batch, export = an.batch_running, an.export_after_batch
        an.stop_all()
        for rec in self.records.values():
            rec.reset()
            self.browser.update_record(rec)
        self.statusBar().showMessage("Models changed; earlier results were cleared", 5000)
        an.models_replaced()  # a saved analysis by the new models may be restored: it says so
        self._update_masks()
        self._refresh_results()
        if batch:  # "Analyse all" goes on with the new models, from the first patient again
            an.analyse_all()
            an.export_after_batch = export
        if self.current is not None and self.volume is not None and (batch or self.settings.auto_run):
            an.request_analysis(self.current, front=True)

    def show_models(self) -> None:
        """Show the active models' cards."""
        self.ensure_models()
        self._modal(dialogs.ModelsDialog(self.classifier, self.segmenter, self))

    def _on_device(self, device: str) -> None:
        if device == self.settings.device and self.analyser.pipeline is not None:
            return
        self.settings.device = device
        self._sync_device_menu(device)
        self.analyser.device_changed()

    def _sync_device_menu(self, device: str) -> None:
        for act in self.device_menu.actions():
            act.setChecked(act.text() == device)

    def set_thorough(self, on: bool) -> None:
        """Turn the segmenter's thorough mode (:mod:`brainseg_core.thorough`: its ensemble, with the
        ensemble's thresholds) on or off. Earlier results are cleared: the shown patient is
        analysed again with auto-run on (a saved analysis of the mode is restored), and during
        Analyse all every patient is."""
        if on == self.settings.thorough:
            return
        self._keep_moved_thresholds()  # before the thresholds follow the other mode's card
        self.settings.thorough = on
        self.actions_by_name["thorough"].setChecked(on)
        self._models_changed()  # its modelsChanged takes the mode's thresholds and label

    def _thorough_fell_back(self) -> None:
        """Thorough mode could not run (the analyser said why and turned the setting off): show it
        off, with the segmenter's own thresholds, and set aside the thorough analyses on show (a
        saved one restored before the networks were asked to run): the shown patient is analysed
        again (with auto-run on)."""
        self.actions_by_name["thorough"].setChecked(False)  # the setting is off already: no re-run
        thorough = [r for r in self.records.values() if r.base is not None and r.base.thorough]
        for rec in thorough:
            rec.reset()
            self.browser.update_record(rec)
        self._after_models_changed()  # the same models, the plain mode's thresholds and label
        if self.current in thorough and self.volume is not None and self.settings.auto_run:
            self.analyser.request_analysis(self.current, front=True)

    def set_auto_run(self, on: bool) -> None:
        """Start (or not) the analysis of each patient as soon as it is opened."""
        self.settings.auto_run = on
        for w in (self.controls.auto_run, self.actions_by_name["auto_run"]):
            w.blockSignals(True)
            w.setChecked(on)
            w.blockSignals(False)

    # ==========================================================================================
    # Running the analysis (the work itself is the analyser's)
    # ==========================================================================================
    def run_current(self) -> None:
        """Analyse the displayed patient (again)."""
        rec = self.current
        if rec is None or self.volume is None:
            self.statusBar().showMessage("Open a patient first", 3000)
            return
        if self.analysis.running and self.analysis.tag == ("analyse", rec) and not self.analysis.cancelling:
            return
        self.analyser.request_analysis(rec, front=True, explicit=True)

    def analyse_all(self) -> None:
        """Queue every patient that has no complete analysis."""
        self.analyser.analyse_all()

    def prepare(self) -> None:
        """Load the models and put them on the device in the background (called at start-up)."""
        self.analyser.prepare()

    def cancel_analysis(self) -> None:
        """Stop the running analysis and forget the queued ones."""
        self.analyser.cancel()

    def is_busy(self) -> bool:
        """True while a patient is being read or analysed."""
        return self.analyser.active or self.loader.running

    def _on_job_started(self, progress_format: str, cancellable: bool) -> None:
        self.progress.setRange(0, 0)
        self.progress.setFormat(progress_format)
        self.progress.setVisible(True)
        self.cancel_button.setVisible(cancellable)

    def _on_analysis_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _on_analysis_idle(self) -> None:
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        # A message about work in progress must not outlive the work.
        if self.statusBar().currentMessage().endswith(("…", "...")):
            self.statusBar().clearMessage()
        self._update_enabled()

    def _on_patient_started(self, rec: PatientRecord) -> None:
        if rec is self.current:
            self.thumbnails.set_predicted([False] * self.n_slices)
            self._update_masks()
            self._plot_timer.start()

    def _on_slice_analysed(self, rec: PatientRecord, index: int) -> None:
        if rec is self.current:
            if index == self.index:
                self._update_masks()
            if not self._stream_timer.isActive():
                self._stream_timer.start()

    def _on_patient_finished(self, rec: PatientRecord, kind: str) -> None:
        if rec is self.current:
            self._stream_timer.stop()  # refreshed below, complete
            self._update_masks()
            self._refresh_results()
            if kind == "analyse" and not self._navigated:
                self._jump_to_largest()
            n = rec.tumour_slices() or 0
            kept = len(rec.edits.edited)
            note = f"; your mask kept on {kept} edited slice(s)" if kept else ""
            review = len(rec.review_queue())
            note += f"; {review} slice(s) to review (R)" if review else ""
            self.statusBar().showMessage(
                f"{rec.patient_id}: tumour on {n} of {rec.n_slices} slices{note}", 8000
            )
            if rec.missing(self.thresholds):
                self.analyser.schedule_missing_segmentations()

    def _jump_to_largest(self) -> None:
        rec = self.current
        if rec is None or rec.shown is None:
            return
        areas = [s.area_px for s in rec.shown.slices]
        if areas and max(areas) > 0:
            self.set_slice(int(np.argmax(areas)))
            self._navigated = False

    def _on_patient_cancelled(self, rec: PatientRecord) -> None:
        if rec is self.current:
            self._stream_timer.stop()  # refreshed now
            self._refresh_results()

    # ==========================================================================================
    # Results
    # ==========================================================================================
    def spacing_for(self, rec: PatientRecord) -> Spacing | None:
        """The voxel size of ``rec`` (:meth:`ViewerModel.spacing_for`: its files' own once read, else
        the one entered for the patient, else the dataset's)."""
        return self.model.spacing_for(rec)

    def _dataset_key(self, patient: Path | None = None) -> Path | None:
        p = patient or (self.current.path if self.current else None)
        return p.parent if p is not None else None

    def spacing_dialog(self) -> None:
        """Enter the displayed patient's pixel spacing, or its dataset's (both remembered)."""
        key, rec = self._dataset_key(), self.current
        if key is None or rec is None:
            self.statusBar().showMessage("Open a patient first", 3000)
            return
        dlg = dialogs.SpacingDialog(self.model.spacing_for(rec), rec.patient_id, key, self)
        if self._modal(dlg):
            self.set_spacing(dlg.value(), whole_dataset=dlg.whole_dataset.isChecked())

    def set_spacing(self, spacing: Spacing | None, *, whole_dataset: bool = False) -> None:
        """Use and remember a voxel size for the displayed patient, or for its whole dataset.

        Args:
            spacing: the voxel size; None forgets the one entered.
            whole_dataset: for every patient of the dataset (a patient's own value still wins).
        """
        key, rec = self._dataset_key(), self.current
        if key is None or rec is None:
            return
        if whole_dataset:
            self.settings.set_spacing(key, spacing)
            self.model.set_dataset_spacing(spacing)
        else:
            self.settings.set_spacing(rec.path, spacing)
            self.model.set_patient_spacing(rec.path, spacing)
        self._update_masks()
        self._refresh_results()

    def _refresh_results(self) -> None:
        rec = self.current
        n = self.n_slices
        probs: list[float | None] = [None] * n
        by_neighbour: list[int] = []
        gate = self.thresholds.gate
        if rec is not None and rec.shown is not None:
            for s in rec.shown.slices:
                if s.index < n:
                    probs[s.index] = s.tumour_probability
                    if s.passed_by_neighbour(gate):
                        by_neighbour.append(s.index)
        found = self.model.tumour_flags()
        queue = self.model.review_queue()
        edited = [] if rec is None else [i for i in rec.edits.edited if i < n]
        self.results.set_probabilities(
            probs,
            found,
            self.model.truth_flags(),
            gate,
            review=queue,
            edited=edited,
            by_neighbour=by_neighbour,
        )
        self.results.set_current(self.index)
        self.thumbnails.set_predicted(found)
        self.thumbnails.set_marks([i in queue for i in range(n)], [i in edited for i in range(n)])
        self._update_slice_info()
        self._update_summary()

    def _update_slice_info(self) -> None:
        rec = self.current
        volume = self.volume
        if volume is None or rec is None:
            self.results.show_slice(None, None, 0, None)
            return
        classified = (
            rec.shown.classifier is not None if rec.shown is not None else self.classifier is not None
        )
        gate = self.thresholds.gate if classified else None
        self.results.show_slice(
            volume,
            rec.slice_shown(self.index),
            self.index,
            gate,
            reasons=rec.reasons_for(self.index),
            reviewed=self.index in rec.reviewed,
            aside_px=int(aside.sum()) if (aside := self.model.set_aside_outline()) is not None else 0,
            spacing=rec.shown.spacing if rec.shown is not None else None,
        )

    def _update_summary(self) -> None:
        self.results.show_summary(self.current, self.volume)

    # ==========================================================================================
    # Review queue
    # ==========================================================================================
    def jump_review(self, direction: int) -> None:
        """Go to the next (1) or previous (-1) slice still to review, round the patient's ends."""
        rec = self.current
        found = self.model.next_review(direction)
        partial = ""  # of a patient not analysed to its end: the queue holds the slices analysed
        if rec is not None and not rec.complete:
            running = rec.state in (PatientState.RUNNING, PatientState.QUEUED)
            partial = "the analysis is still running" if running else "the analysis was stopped"
        if rec is not None and found is not None:
            reasons = "; ".join(r.describe() for r in rec.reasons_for(found))
            left = len(self.model.review_queue())
            if found == self.index:
                head = "This is the only slice left to review"
            else:
                wrapped = found < self.index if direction > 0 else found > self.index
                where = ("from the first" if direction > 0 else "from the last") if wrapped else ""
                head = f"To review ({left} left{', ' + where if where else ''})"
                self.set_slice(found)
            note = f" [{partial}: only its analysed slices]" if partial else ""
            self.statusBar().showMessage(f"{head}{note}: {reasons}", 6000)
            return
        if rec is None or rec.shown is None:
            msg = "No analysis yet"
        else:
            msg = (
                f"Nothing to review so far ({partial})"
                if partial
                else "Nothing left to review on this patient"
            )
        self.statusBar().showMessage(msg, 3000)

    def toggle_reviewed(self) -> None:
        """Mark the displayed slice reviewed (it leaves the queue), or put it back."""
        if self.current is None or self.current.slice_shown(self.index) is None:
            self.statusBar().showMessage("Nothing analysed to review on this slice", 3000)
            return
        on = self.model.toggle_reviewed()
        left = len(self.model.review_queue())
        state = "reviewed" if on else "back in the review queue"
        self.statusBar().showMessage(f"Slice {self.index + 1} {state}; {left} slice(s) left to review", 4000)

    def _on_review_marked(self, rec: PatientRecord) -> None:
        self.reader_work.changed(rec)
        self._refresh_results()

    # ==========================================================================================
    # Mask editing
    # ==========================================================================================
    def use_tool(self, tool: EditTool, on: bool = True) -> None:
        """Edit with ``tool`` (on), or stop editing with it (off: the mouse pans again)."""
        if on:
            self.model.set_tool(tool)
        elif self.model.tool is tool:
            self.model.set_tool(None)

    def stop_editing(self) -> None:
        """Leave edit mode: the left button pans again."""
        self.model.set_tool(None)

    def change_brush(self, delta: int) -> None:
        """Make the brush ``delta`` pixels larger (negative: smaller)."""
        self.model.set_brush_radius(self.model.brush_radius + delta)

    def edit(self, kind: EditKind, point: tuple[int, int] | None = None) -> None:
        """Fill holes, delete the region at ``point``, keep the set-aside outline (on this slice, or
        with its 3-D region on all its slices), clear or revert the displayed slice."""
        if self._not_editable():
            return
        if not self.model.edit(kind, point):
            why = {
                EditKind.FILL_HOLES: "no hole to fill",
                EditKind.DELETE_REGION: "no region under the click",
                EditKind.ADD_REGION: "the one-region option set no outline aside on this slice",
                EditKind.ADD_REGION_3D: "the one-region option set no outline aside on this slice",
                EditKind.CLEAR: "the slice is empty already",
                EditKind.REVERT: "this slice shows the model's mask already",
            }.get(kind, "nothing changed")
            self.statusBar().showMessage(f"{kind.describe().capitalize()}: {why}", 3000)

    def undo(self) -> None:
        """Undo the displayed patient's last edit (shows the slice it changed)."""
        rec = self.current
        kind = None if rec is None else rec.edits.next_undo()
        if self.model.undo() is None:
            self.statusBar().showMessage("Nothing to undo", 2000)
        elif kind is not None:
            self.statusBar().showMessage(f"Undone: {kind.describe()}", 3000)

    def redo(self) -> None:
        """Redo the displayed patient's last undone edit."""
        rec = self.current
        kind = None if rec is None else rec.edits.next_redo()
        if self.model.redo() is None:
            self.statusBar().showMessage("Nothing to redo", 2000)
        elif kind is not None:
            self.statusBar().showMessage(f"Redone: {kind.describe()}", 3000)

    def _not_editable(self) -> bool:
        rec = self.current
        if rec is None or rec.slice_shown(self.index) is None:
            self.statusBar().showMessage("Let the analysis reach this slice before editing its mask", 4000)
            return True
        return False

    def _on_paint(self, row: int, col: int, continues: bool) -> None:
        if not continues and self._not_editable():
            return
        self.model.paint(row, col, continues=continues)

    def _on_stroke_finished(self) -> None:
        self.model.end_stroke()
        self._refresh_results()

    def _on_tool(self, tool: EditTool | None) -> None:
        self.view.set_edit_tool(tool)
        for t, name in (
            (EditTool.BRUSH, "tool_brush"),
            (EditTool.ERASER, "tool_eraser"),
            (EditTool.DELETE_REGION, "tool_region"),
        ):
            act = self.actions_by_name[name]
            act.blockSignals(True)
            act.setChecked(t is tool)
            act.blockSignals(False)
        if tool is None:
            self.statusBar().showMessage("Edit mode off: the left button pans", 3000)
        elif tool is EditTool.DELETE_REGION:
            self.statusBar().showMessage("Delete region: click a region of the mask to remove it", 5000)
        else:
            self.statusBar().showMessage(
                f"{tool.label} (radius {self.model.brush_radius} px, [ and ] change it): "
                "left-drag on the slice; press the key again to stop editing",
                5000,
            )

    def _on_brush(self, radius: int) -> None:
        self.view.set_brush_radius(radius)
        spin = self.brush_spin
        spin.blockSignals(True)
        spin.setValue(radius)
        spin.blockSignals(False)

    def _on_edited(self, change: tuple[PatientRecord, int]) -> None:
        rec, _index = change
        if rec is not self.current:
            return
        self._update_masks()
        self._plot_timer.start()  # the plot, thumbnails and numbers follow once the mouse rests
        self._update_edit_actions()
        self.reader_work.changed(rec)

    def _update_edit_actions(self) -> None:
        rec = self.current
        a = self.actions_by_name
        a["undo"].setEnabled(rec is not None and rec.edits.can_undo)
        a["redo"].setEnabled(rec is not None and rec.edits.can_redo)
        self._enable_keep_set_aside(self.volume is not None and self.model.set_aside_outline() is not None)

    def _enable_keep_set_aside(self, on: bool) -> None:
        """K and Shift+K work when the displayed slice has a dotted (set-aside) outline."""
        for name in ("keep_set_aside", "keep_set_aside_all"):
            self.actions_by_name[name].setEnabled(on)

    def save_reader_work(self) -> None:
        """Save the displayed patient's edits and reviewed slices now (see :class:`ReaderWorkKeeper`)."""
        self.reader_work.save()

    def save_corrections_dialog(self) -> list[Path]:
        """Write the corrected patients as training data (see :class:`ReaderWorkKeeper`)."""
        return self.reader_work.save_corrections_dialog()

    def save_corrections(self, folder: Path, *, overwrite: bool = True) -> list[Path]:
        """Write the corrected patients into ``folder`` (see :class:`ReaderWorkKeeper`)."""
        return self.reader_work.save_corrections(folder, overwrite=overwrite)

    # ==========================================================================================
    # Export (the work is the exporter's)
    # ==========================================================================================
    def export_dialog(self) -> dialogs.ExportDialog | None:
        """Export the displayed patient's results (see :meth:`Exporter.export_current`)."""
        return self.exporter.export_current()

    def export_all_dialog(self) -> dialogs.ExportDialog | None:
        """Export every analysed patient (see :meth:`Exporter.export_all`)."""
        return self.exporter.export_all()

    # ==========================================================================================
    # Help
    # ==========================================================================================
    def shortcut_rows(self) -> list[tuple[str, str]]:
        """``(keys, description)`` of every shortcut, then the mouse bindings."""
        return actions.shortcut_rows(self.actions_by_name.values())

    def show_shortcuts(self) -> None:
        """Show the shortcuts dialog."""
        self._modal(dialogs.ShortcutsDialog(self.shortcut_rows(), self))

    def show_about(self) -> None:
        """Show "About BrainSeg" (from :mod:`brainseg_app.about` when installed)."""
        try:
            from brainseg_app import about
        except ImportError:
            import brainseg_core

            QMessageBox.about(
                self,
                "About BrainSeg",
                f"BrainSeg {brainseg_core.__version__}\nBrain-MRI tumour second reader.",
            )
            return
        dlg = about.show_about(
            self, cards=[b.card for b in (self.classifier, self.segmenter) if b is not None]
        )
        dlg.finished.connect(lambda _result: self.view.setFocus())

    # ==========================================================================================
    # Window state
    # ==========================================================================================
    def _update_enabled(self) -> None:
        has_volume = self.volume is not None
        rec = self.current
        a = self.actions_by_name
        a["run"].setEnabled(has_volume)
        self.controls.run.setEnabled(has_volume)
        a["cancel"].setEnabled(self.analyser.active)
        a["export"].setEnabled(rec is not None and rec.complete)
        a["export_all"].setEnabled(len(self.records) > 0)
        a["analyse_all"].setEnabled(len(self.records) > 1)
        # scans with geometry (NIfTI, DICOM) carry their voxel size: nothing to enter
        can_enter = rec is not None and (self.volume is None or self.volume.geometry is None)
        a["spacing"].setEnabled(can_enter)
        a["series"].setEnabled(self.volume is not None and self.volume.format is PatientFormat.DICOM)
        self.results.spacing.setEnabled(can_enter)
        self.results.spacing.setVisible(self.volume is None or self.volume.geometry is None)
        self._update_edit_actions()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        """Accept folders and TIFF files dragged from a file manager."""
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        """Open the first dropped folder or file."""
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_path(paths[0])

    def confirm_quit(self) -> bool:
        """Ask before quitting while patients are being analysed or exported, or while the reader's
        edits cannot be saved; True when it may quit."""
        exporting = sum(1 for dlg in self.exporter.dialogs if dlg.runner.running)
        self.save_reader_work()
        unsaved = self.reader_work.unsaved
        if not self.analyser.active and not exporting and not unsaved:
            return True
        parts = []
        if unsaved:
            parts.append(
                f"Your edits and review marks of {'; '.join(unsaved)} could not be saved: they are "
                "lost if BrainSeg quits now."
            )
        if self.analyser.active:
            waiting = len(self.analyser.queue)
            more = f" and {waiting} more waiting" if waiting else ""
            parts.append(
                f"An analysis is running{more}: it is stopped (finished patients are kept and open "
                "at once next time)."
            )
        if exporting:
            parts.append(
                "An export is being written: it is stopped, and the patient being written is left "
                "as it was (nothing half-written)."
            )
        return dialogs.ask(self, "Quit BrainSeg?", " ".join(parts) + " Quit anyway?")

    def quit(self) -> None:
        """File > Quit: close the window, after asking if an analysis is running."""
        if self.confirm_quit():
            self._quit_confirmed = True
            self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        """Save the settings and stop every worker thread before closing.

        A close the user asked for (the window's close button, File > Quit) while an analysis
        runs asks first; closing from code does not.
        """
        confirmed, self._quit_confirmed = self._quit_confirmed, False
        if event.spontaneous() and not confirmed and not self.confirm_quit():
            event.ignore()
            return
        self.save_reader_work()
        self.settings.geometry = self.saveGeometry()
        self.settings.window_state = self.saveState()
        self.settings.sync()
        self.analyser.queue.clear()
        for dlg in list(self.exporter.dialogs):
            dlg.runner.cancel()
            dlg.runner.wait()
        for runner in (self.analysis, self.loader):
            runner.cancel()
        for runner in (self.analysis, self.loader):
            runner.wait()
        self.analyser.close()
        super().closeEvent(event)


def _setup_logging() -> Path:
    log_file = config_dir() / "brainseg.log"
    root = logging.getLogger()
    if not any(isinstance(h, logging.FileHandler) for h in root.handlers):
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    return log_file


def run_viewer(path: Path | None = None, *, sample: bool = False, engine: Engine | None = None) -> int:
    """Start the viewer: dark theme, the main window, then the event loop.

    Args:
        path: a patient folder, TIFF stack or dataset root to open at once.
        sample: open the shipped sample patient (ignored when ``path`` is given).
        engine: where the networks run (``brainseg`` starts a model process before it imports
            Qt, so that torch loads on the other core while the window builds).

    Returns:
        The application's exit code.
    """
    # The labeller of the viewer's post-processing (largest 3-D region, faint edges) before the
    # window, while the model process imports torch: 0.27 s here. Imported later on a worker thread,
    # it held the GIL while the reader paged through the first slice (switches of 20-40 ms).
    import scipy.ndimage  # noqa: F401

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("BrainSeg")
    app.setOrganizationName("BrainSeg")
    app.setApplicationDisplayName("BrainSeg")
    log_file = _setup_logging()
    apply_dark_theme(app)
    window = MainWindow(engine=engine)
    dialogs.install_excepthook(lambda: window, log_file)
    if not window.windowIcon().isNull():
        app.setWindowIcon(window.windowIcon())
    window.show()
    if path is not None:
        QTimer.singleShot(0, lambda: window.open_path(Path(path)))
    elif sample:
        QTimer.singleShot(0, window.open_sample)
    QTimer.singleShot(0, window.prepare)
    code = app.exec()
    # Destroy the window while Qt is still alive, not in the interpreter's final garbage collection.
    sys.excepthook = sys.__excepthook__
    shiboken6.delete(window)
    gc.collect()
    return int(code)
