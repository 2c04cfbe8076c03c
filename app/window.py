"""The BrainSeg main window and :func:`run_viewer`, the viewer's entry point.

Layout: the patient browser and the display/overlay/threshold controls on the left, the slice
view in the centre (slice slider and thumbnail strip under it), the results on the right
(probability plot, slice and patient numbers, active models), progress and Cancel in the status
bar. Networks and file reading run in worker threads (:mod:`brainseg_app.worker`); results stream
in slice by slice.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import shiboken6
from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QColor, QDragEnterEvent, QDropEvent, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
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
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from brainseg_app import dialogs
from brainseg_app.browser import PatientBrowser
from brainseg_app.panels import STEPS, ControlsPanel, ResultsPanel, _fmt
from brainseg_app.session import PatientRecord, PatientState, Spacing, Thresholds, patient_id_of
from brainseg_app.settings import Settings, config_dir
from brainseg_app.slice_view import CHANNEL_NAMES, SliceView
from brainseg_app.theme import apply_dark_theme
from brainseg_app.thumbnails import ThumbnailStrip
from brainseg_app.worker import JobReport, JobRunner
from brainseg_core import metrics
from brainseg_core.errors import BrainSegError, BundleError, DataError
from brainseg_core.io import Volume, find_patients, open_volume
from brainseg_core.resources import resource_path

log = logging.getLogger(__name__)

PAGE_STEP = 5
_MOUSE_HELP: tuple[tuple[str, str], ...] = (
    ("Mouse wheel", "Previous / next slice"),
    ("Ctrl + mouse wheel", "Zoom about the cursor"),
    ("Left or middle drag", "Pan"),
    ("Right drag", "Window (horizontal) / level (vertical)"),
    ("Click on the plot", "Show that slice"),
    ("Drag the dashed plot line", "Change the classifier gate"),
)


def _models_info(classifier: object | None, segmenter: object) -> dict:
    def info(b: object | None) -> dict | None:
        if b is None:
            return None
        return {"name": b.card.name, "sha256": b.card.weights_sha256}  # type: ignore[attr-defined]

    return {"classifier": info(classifier), "segmenter": info(segmenter)}


def _resolve_models(
    classifier: str | None, segmenter: str | None
) -> tuple[object | None, object, str | None]:
    """The models to use: the remembered bundles, else the defaults (with a warning saying why).

    Raises:
        BrainSegError: when not even a default segmenter can be loaded.
    """
    from brainseg_core.registry import resolve_models

    try:
        cls, seg = resolve_models(classifier=classifier, segmenter=segmenter)
        return cls, seg, None
    except BrainSegError as exc:
        if not (classifier or segmenter):
            raise
        cls, seg = resolve_models()
        return (
            cls,
            seg,
            f"The model you chose could not be loaded, so BrainSeg uses the default models.\n\n{exc}",
        )


def _build_pipeline(classifier: object | None, segmenter: object, device: str) -> tuple[object, str | None]:
    """A pipeline on ``device``, or on the best available one (with a warning) if that fails."""
    from brainseg_core.inference import Pipeline

    try:
        return Pipeline(classifier, segmenter, device=device), None  # type: ignore[arg-type]
    except (ValueError, RuntimeError) as exc:
        if device == "auto":
            raise
        pipeline = Pipeline(classifier, segmenter, device="auto")  # type: ignore[arg-type]
        return pipeline, f"{exc}\n\nBrainSeg runs the models on {pipeline.device} instead."


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
    """

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings()
        self.setWindowTitle("BrainSeg")
        self.setAcceptDrops(True)
        icon = resource_path("icons", "brainseg-256.png")
        if icon.is_file():
            self.setWindowIcon(QIcon(str(icon)))

        self.records: dict[Path, PatientRecord] = {}
        self.root: Path | None = None
        self.current: PatientRecord | None = None
        self.volume: Volume | None = None
        self.index = 0
        self.spacing: Spacing | None = None
        self.classifier: object | None = None
        self.segmenter: object | None = None
        self._models_loaded = False
        self.pipeline: object | None = None
        self.queue: list[tuple[str, Path]] = []
        self._batch = False
        self._user_cancelled = False
        self._navigated = False
        self._export_after_batch = False
        self._pending_open: Path | None = None
        self._pipeline_stale = False
        self._export_dialogs: list[dialogs.ExportDialog] = []
        self.actions_by_name: dict[str, QAction] = {}

        self.loader = JobRunner(self)
        self.analysis = JobRunner(self)

        self._build_central()
        self._build_docks()
        self._build_status_bar()
        self._build_actions()
        self._build_menus_and_toolbar()
        self._restore_settings()
        self._connect()
        self._plot_timer = QTimer(self, singleShot=True, interval=60, timeout=self._refresh_results)
        self._threshold_timer = QTimer(self, singleShot=True, interval=300, timeout=self._thresholds_settled)
        self.thresholds = self._initial_thresholds()
        self._show_thresholds()
        self._update_enabled()
        self.view.setFocus()

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
        self.results_dock = self._add_dock("Results", "results_dock", _scrolled(self.results), right)
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

    def _act(
        self,
        name: str,
        text: str,
        slot: Callable[..., object],
        shortcut: str | QKeySequence.StandardKey | list[str] | None = None,
        tip: str = "",
        *,
        checkable: bool = False,
        icon: QStyle.StandardPixmap | None = None,
    ) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            if isinstance(shortcut, list):
                action.setShortcuts([QKeySequence(s) for s in shortcut])
            else:
                action.setShortcut(QKeySequence(shortcut))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setToolTip(tip or text.replace("…", "").replace("&", ""))
        action.setStatusTip(action.toolTip())
        action.setCheckable(checkable)
        if icon is not None:
            action.setIcon(self.style().standardIcon(icon))
        if checkable:
            action.toggled.connect(slot)
        else:
            action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)
        self.actions_by_name[name] = action
        return action

    def _build_actions(self) -> None:
        sp = QStyle.StandardPixmap
        a = self._act
        a(
            "open_patient",
            "Open &patient folder…",
            self.open_patient_dialog,
            QKeySequence.StandardKey.Open,
            "Open one patient's folder of slice TIFFs",
            icon=sp.SP_DirOpenIcon,
        )
        a(
            "open_dataset",
            "Open &dataset root…",
            self.open_dataset_dialog,
            "Ctrl+Shift+O",
            "Open a folder of patients (e.g. kaggle_3m) in the patient browser",
            icon=sp.SP_DirIcon,
        )
        a(
            "open_stack",
            "Open TIFF &stack…",
            self.open_stack_dialog,
            "Ctrl+Alt+O",
            "Open a multi-page TIFF holding one patient's slices",
        )
        a(
            "open_sample",
            "Open sa&mple patient",
            self.open_sample,
            None,
            "Open the patient shipped with BrainSeg",
        )
        a(
            "export",
            "&Export…",
            self.export_dialog,
            "Ctrl+E",
            "Export masks, overlays and a report of this patient",
            icon=sp.SP_DialogSaveButton,
        )
        a(
            "export_all",
            "Export &all analysed…",
            self.export_all_dialog,
            "Ctrl+Shift+E",
            "Export the results of every analysed patient of the dataset",
        )
        a("quit", "&Quit", self.close, QKeySequence.StandardKey.Quit, "Quit BrainSeg")

        a(
            "run",
            "&Run analysis",
            self.run_current,
            "Ctrl+R",
            "Run the classifier and segmenter on this patient",
            icon=sp.SP_MediaPlay,
        )
        a(
            "cancel",
            "&Cancel analysis",
            self.cancel_analysis,
            "Esc",
            "Stop the running analysis (results so far are kept)",
            icon=sp.SP_MediaStop,
        )
        a(
            "analyse_all",
            "Analyse &all patients",
            self.analyse_all,
            None,
            "Queue every patient of the dataset that is not analysed yet",
        )
        a(
            "spacing",
            "Pixel &spacing…",
            self.spacing_dialog,
            None,
            "Enter the voxel size (TIFFs carry none) to get volumes in mL",
        )
        a(
            "auto_run",
            "Analyse on &open",
            self._set_auto_run,
            None,
            "Start the analysis as soon as a patient is opened",
            checkable=True,
        )

        a(
            "active_models",
            "&Active models…",
            self.show_models,
            None,
            "Show the model cards of the active models",
        )
        a(
            "load_bundle",
            "&Load model bundle…",
            self.load_bundle_dialog,
            None,
            "Use a classifier or segmenter bundle (NAME.json + NAME.safetensors) from a file",
        )
        a(
            "default_models",
            "Use &default models",
            self.use_default_models,
            None,
            "Return to the installed default models",
        )

        a("prev_slice", "Previous slice", lambda: self.step(-1), ["Left", "Up"], "Previous slice")
        a("next_slice", "Next slice", lambda: self.step(1), ["Right", "Down"], "Next slice")
        a("page_up", "Back 5 slices", lambda: self.step(-PAGE_STEP), "PgUp", f"Back {PAGE_STEP} slices")
        a(
            "page_down",
            "Forward 5 slices",
            lambda: self.step(PAGE_STEP),
            "PgDown",
            f"Forward {PAGE_STEP} slices",
        )
        a("first_slice", "First slice", lambda: self.set_slice(0), "Home", "First slice")
        a("last_slice", "Last slice", lambda: self.set_slice(10**9), "End", "Last slice")
        a(
            "next_tumour",
            "Next tumour slice",
            lambda: self.jump_tumour(1),
            "N",
            "Next slice with a predicted tumour",
            icon=sp.SP_MediaSeekForward,
        )
        a(
            "prev_tumour",
            "Previous tumour slice",
            lambda: self.jump_tumour(-1),
            ["P", "Shift+N"],
            "Previous slice with a predicted tumour",
            icon=sp.SP_MediaSeekBackward,
        )

        for i, name in enumerate(CHANNEL_NAMES):
            a(
                f"channel_{i}",
                name,
                lambda i=i: self.controls.channel.setCurrentIndex(i),
                str(i + 1),
                f"Show {name}",
            )
        a(
            "toggle_overlay",
            "Show &masks",
            self.controls.show_overlay.setChecked,
            "O",
            "Show or hide the mask overlays",
            checkable=True,
        )
        a(
            "toggle_gt",
            "Show &ground truth",
            self.controls.show_gt.setChecked,
            "G",
            "Show or hide the ground-truth masks",
            checkable=True,
        )
        a(
            "toggle_contour",
            "Mask &outline",
            self.controls.contour.setChecked,
            "C",
            "Draw mask outlines",
            checkable=True,
        )
        a(
            "toggle_fill",
            "Mask &fill",
            self.controls.fill.setChecked,
            "Shift+F",
            "Paint the inside of the masks",
            checkable=True,
        )
        a(
            "auto_window",
            "&Auto window/level",
            self.view.auto_window,
            "A",
            "Window to the volume's intensity range",
        )
        a("reset_window", "&Reset window/level", self.view.reset_window, "R", "Full 0-255 range")
        a("fit", "&Fit to window", self.view.fit, ["F", "Ctrl+0"], "Fit the slice in the view")
        a(
            "one_to_one",
            "Actual size (1:1)",
            self.view.one_to_one,
            "Ctrl+1",
            "One image pixel per screen pixel",
        )
        a(
            "zoom_in",
            "Zoom &in",
            lambda: self.view.zoom(1.25),
            ["Ctrl++", "Ctrl+=", "+"],
            "Zoom in",
            icon=None,
        )
        a("zoom_out", "Zoom &out", lambda: self.view.zoom(0.8), ["Ctrl+-", "-"], "Zoom out")
        a("shortcuts", "&Keyboard shortcuts", self.show_shortcuts, ["F1", "?"], "List every shortcut")
        a("about", "&About BrainSeg", self.show_about, None, "Version, licences and credits")

    def _build_menus_and_toolbar(self) -> None:
        acts = self.actions_by_name
        mb = self.menuBar()
        file = mb.addMenu("&File")
        for name in ("open_patient", "open_dataset", "open_stack", "open_sample"):
            file.addAction(acts[name])
        self.recent_menu = file.addMenu("Open &recent")
        self.recent_menu.setToolTipsVisible(True)
        file.addSeparator()
        file.addAction(acts["export"])
        file.addAction(acts["export_all"])
        file.addSeparator()
        file.addAction(acts["quit"])

        view = mb.addMenu("&View")
        for i in range(len(CHANNEL_NAMES)):
            view.addAction(acts[f"channel_{i}"])
        view.addSeparator()
        for name in ("toggle_overlay", "toggle_fill", "toggle_contour", "toggle_gt"):
            view.addAction(acts[name])
        view.addSeparator()
        for name in ("auto_window", "reset_window", "fit", "one_to_one", "zoom_in", "zoom_out"):
            view.addAction(acts[name])
        view.addSeparator()
        panels = view.addMenu("Panels")
        for dock in (self.browser_dock, self.controls_dock, self.results_dock):
            panels.addAction(dock.toggleViewAction())

        nav = mb.addMenu("&Navigate")
        for name in (
            "prev_slice",
            "next_slice",
            "page_up",
            "page_down",
            "first_slice",
            "last_slice",
            "prev_tumour",
            "next_tumour",
        ):
            nav.addAction(acts[name])

        analysis = mb.addMenu("&Analysis")
        for name in ("run", "cancel", "analyse_all"):
            analysis.addAction(acts[name])
        analysis.addSeparator()
        analysis.addAction(acts["auto_run"])
        self.device_menu = analysis.addMenu("&Device")
        for dev in ("auto", "cpu", "cuda", "mps"):
            act = self.device_menu.addAction(dev)
            act.setCheckable(True)
            act.setToolTip(f"Run the networks on {dev}")
            act.triggered.connect(lambda _c=False, d=dev: self.controls.device.setCurrentText(d))
        analysis.addAction(acts["spacing"])

        model = mb.addMenu("&Model")
        for name in ("active_models", "load_bundle", "default_models"):
            model.addAction(acts[name])

        help_menu = mb.addMenu("&Help")
        help_menu.addAction(acts["shortcuts"])
        help_menu.addAction(acts["about"])
        for menu in (file, view, nav, analysis, model, help_menu):
            menu.setToolTipsVisible(True)

        tb = self.addToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.setIconSize(QSize(18, 18))
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        short = {
            "open_patient": "Patient",
            "open_dataset": "Dataset",
            "run": "Run",
            "cancel": "Cancel",
            "export": "Export",
            "prev_tumour": "Prev. tumour",
            "next_tumour": "Next tumour",
            "fit": "Fit",
            "one_to_one": "1:1",
            "zoom_in": "Zoom +",
            "zoom_out": "Zoom −",
            "toggle_overlay": "Masks",
        }
        groups = (
            ("open_patient", "open_dataset"),
            ("run", "cancel", "export"),
            ("prev_tumour", "next_tumour"),
            ("fit", "one_to_one", "zoom_in", "zoom_out"),
            ("toggle_overlay",),
        )
        for group in groups:
            for name in group:
                acts[name].setIconText(short[name])
                tb.addAction(acts[name])
            tb.addSeparator()

    def _restore_settings(self) -> None:
        s = self.settings
        c = self.controls
        c.opacity.setValue(s.opacity)
        c.fill.setChecked(s.fill)
        c.contour.setChecked(s.contour)
        c.contour_width.setValue(s.contour_width)
        c.pred_colour.set_colour(QColor(s.pred_colour))
        c.gt_colour.set_colour(QColor(s.gt_colour))
        c.show_gt.setChecked(s.show_gt)
        c.auto_run.setChecked(s.auto_run)
        c.device.setCurrentText(s.device)
        self.actions_by_name["auto_run"].setChecked(s.auto_run)
        self.actions_by_name["toggle_overlay"].setChecked(True)
        self.actions_by_name["toggle_gt"].setChecked(s.show_gt)
        self.actions_by_name["toggle_contour"].setChecked(s.contour)
        self.actions_by_name["toggle_fill"].setChecked(s.fill)
        self._sync_device_menu(s.device)
        self.view.set_overlay_style(
            fill=s.fill,
            contour=s.contour,
            opacity=s.opacity / 100.0,
            contour_width=s.contour_width,
            pred_colour=QColor(s.pred_colour),
            gt_colour=QColor(s.gt_colour),
            gt_visible=s.show_gt,
        )
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

        c.channel.currentIndexChanged.connect(v.set_channel)
        c.auto_window.clicked.connect(v.auto_window)
        c.reset_window.clicked.connect(v.reset_window)
        c.fit.clicked.connect(v.fit)
        c.one_to_one.clicked.connect(v.one_to_one)
        c.show_overlay.toggled.connect(self._on_overlay_visible)
        c.fill.toggled.connect(self._on_fill)
        c.contour.toggled.connect(self._on_contour)
        c.opacity.valueChanged.connect(self._on_opacity)
        c.contour_width.valueChanged.connect(self._on_contour_width)
        c.pred_colour.colourChanged.connect(self._on_pred_colour)
        c.gt_colour.colourChanged.connect(self._on_gt_colour)
        c.show_gt.toggled.connect(self._on_show_gt)
        c.gate.valueChanged.connect(lambda v: self._set_thresholds(gate=v / STEPS))
        c.mask_threshold.valueChanged.connect(lambda v: self._set_thresholds(mask=v / STEPS))
        c.default_thresholds.clicked.connect(self.use_model_thresholds)
        c.largest_component.toggled.connect(self.set_largest_component)
        c.run.clicked.connect(self.run_current)
        c.auto_run.toggled.connect(self._set_auto_run)
        c.device.currentTextChanged.connect(self._on_device)
        self.cancel_button.clicked.connect(self.cancel_analysis)

        self.loader.finished.connect(self._on_volume_loaded)
        self.loader.failed.connect(self._on_volume_failed)
        self.loader.stopped.connect(self._on_loader_stopped)
        self.analysis.item.connect(self._on_analysis_item)
        self.analysis.progress.connect(self._on_analysis_progress)
        self.analysis.finished.connect(self._on_analysis_finished)
        self.analysis.failed.connect(self._on_analysis_failed)
        self.analysis.cancelled.connect(self._on_analysis_cancelled)
        self.analysis.stopped.connect(self._on_analysis_stopped)

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

    def open_stack_dialog(self) -> None:
        """Ask for a multi-page TIFF and open it."""
        path, _ = QFileDialog.getOpenFileName(
            self, "Open TIFF stack", self._start_dir(), "TIFF stacks (*.tif *.tiff);;All files (*)"
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
        """Open a patient folder, a TIFF stack or a dataset root.

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
                "TIFF, or a folder of such patients.",
            )
            return False
        if remember:
            self.settings.add_recent(path)
            self._rebuild_recent()
        self._stop_all_analysis()
        self.records = {p: PatientRecord(p, patient_id_of(p)) for p in patients}
        self.root = path
        self.spacing = self._stored_spacing(patients[0])
        self.browser.set_patients(path, list(self.records.values()))
        self.current = None
        self.volume = None
        self.open_patient(patients[0])
        return True

    def open_patient(self, path: Path) -> None:
        """Show one patient of the opened folder (reads it in the background)."""
        path = Path(path)
        rec = self.records.get(path)
        if rec is None:
            return
        if rec is self.current and (self.volume is not None or self.loader.running):
            return
        if not self._batch and self.analysis.running and self.analysis.tag[1] is not rec:
            # A single-patient run of the patient we leave: stop it, the new one comes first.
            self.analysis.cancel()
        self.current = rec
        self.volume = None
        self.browser.set_current(path)
        self.view.set_volume(None)
        self.thumbnails.set_volume(None)
        self._set_slider(0, 0)
        self.setWindowTitle(rec.patient_id)  # Qt appends the display name "BrainSeg"
        self.statusBar().showMessage(f"Opening {rec.patient_id} …")
        if self.loader.running:
            self._pending_open = path
            self.loader.cancel()
            return
        self._start_load(path)
        self._update_enabled()

    def _start_load(self, path: Path) -> None:
        spacing = self.spacing

        def job(report: JobReport) -> Volume:
            return self._read_volume(path, spacing)

        self.loader.start(job, tag=path)

    @staticmethod
    def _read_volume(path: Path, spacing: Spacing | None) -> Volume:
        volume = open_volume(path)
        if volume.pixel_spacing_mm is None and spacing is not None:
            volume.pixel_spacing_mm = spacing.pixel_mm
            volume.slice_thickness_mm = spacing.thickness_mm
        return volume

    def _on_loader_stopped(self) -> None:
        if self._pending_open is not None:
            path, self._pending_open = self._pending_open, None
            if self.current is not None and self.current.path == path:
                self._start_load(path)

    def _on_volume_loaded(self, volume: object) -> None:
        assert isinstance(volume, Volume)
        rec = self.current
        if rec is None or self.loader.tag != rec.path or self._pending_open is not None:
            return  # the user moved on to another patient meanwhile
        self.volume = volume
        rec.n_slices = volume.n_slices
        self.view.set_volume(volume.images, rec.patient_id)
        gt = self._gt_flags()
        self.thumbnails.set_volume(volume.images, gt)
        self._set_slider(0, volume.n_slices - 1)
        self._navigated = False
        rec.apply(self.thresholds, self._spacing_for(rec))
        self.set_slice(volume.n_slices // 2)
        self._refresh_results()
        self.browser.update_record(rec)
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
        if rec.state is PatientState.DONE:
            self._schedule_missing_segmentations()
        elif self.settings.auto_run and rec.state in (PatientState.NEW, PatientState.CANCELLED):
            self.request_analysis(rec, front=True)

    def _on_volume_failed(self, message: str, details: str) -> None:
        rec = self.current
        if rec is not None and self.loader.tag == rec.path:
            rec.error = message
            rec.state = PatientState.FAILED
            self.browser.update_record(rec)
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
        self.recent_menu.clear()
        recent = self.settings.recent
        for p in recent:
            act = self.recent_menu.addAction(p)
            act.setToolTip(f"Open {p}")
            act.triggered.connect(lambda _c=False, p=p: self.open_path(Path(p)))
        if recent:
            self.recent_menu.addSeparator()
            clear = self.recent_menu.addAction("Clear list")
            clear.setToolTip("Forget the recent folders")
            clear.triggered.connect(lambda: (self.settings.clear_recent(), self._rebuild_recent()))
        self.recent_menu.setEnabled(bool(recent))

    # ==========================================================================================
    # Navigation and display
    # ==========================================================================================
    @property
    def n_slices(self) -> int:
        """Slices of the displayed volume (0 when none)."""
        return 0 if self.volume is None else self.volume.n_slices

    def set_slice(self, index: int) -> None:
        """Show slice ``index`` (clamped to the volume)."""
        if self.volume is None:
            return
        index = max(0, min(int(index), self.n_slices - 1))
        if index != self.index:
            self._navigated = True
        self.index = index
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
        found = self._found_flags()
        order = range(self.index + 1, len(found)) if direction > 0 else range(self.index - 1, -1, -1)
        for i in order:
            if found[i]:
                self.set_slice(i)
                return
        what = "after" if direction > 0 else "before"
        msg = "No analysis yet" if rec is None or rec.shown is None else f"No tumour slice {what} this one"
        self.statusBar().showMessage(msg, 3000)

    def _set_slider(self, lo: int, hi: int) -> None:
        self.slider.blockSignals(True)
        self.slider.setRange(lo, hi)
        self.slider.setPageStep(PAGE_STEP)
        self.slider.blockSignals(False)
        if hi == 0 and self.volume is None:
            self.slice_label.setText("— / —")

    def _found_flags(self) -> list[bool]:
        flags = [False] * self.n_slices
        rec = self.current
        if rec is not None and rec.shown is not None:
            for s in rec.shown.slices:
                if s.index < len(flags):
                    flags[s.index] = s.area_px > 0
        return flags

    def _gt_flags(self) -> list[bool] | None:
        if self.volume is None or self.volume.masks is None:
            return None
        return [bool(m.any()) for m in self.volume.masks]

    def _update_masks(self) -> None:
        if self.volume is None:
            return
        rec = self.current
        s = rec.slice_shown(self.index) if rec is not None else None
        pred = s.mask if s is not None and s.area_px > 0 else None
        gt = self.volume.masks[self.index] if self.volume.masks is not None else None
        self.view.set_masks(pred, gt)

    def _on_overlay_visible(self, on: bool) -> None:
        self.actions_by_name["toggle_overlay"].setChecked(on)
        self.view.set_overlay_style(visible=on)

    def _on_fill(self, on: bool) -> None:
        self.actions_by_name["toggle_fill"].setChecked(on)
        self.settings.fill = on
        self.view.set_overlay_style(fill=on)

    def _on_contour(self, on: bool) -> None:
        self.actions_by_name["toggle_contour"].setChecked(on)
        self.settings.contour = on
        self.view.set_overlay_style(contour=on)

    def _on_opacity(self, value: int) -> None:
        self.settings.opacity = value
        self.view.set_overlay_style(opacity=value / 100.0)

    def _on_contour_width(self, value: int) -> None:
        self.settings.contour_width = value
        self.view.set_overlay_style(contour_width=value)

    def _on_pred_colour(self, colour: QColor) -> None:
        self.settings.pred_colour = colour.name()
        self.view.set_overlay_style(pred_colour=colour)

    def _on_gt_colour(self, colour: QColor) -> None:
        self.settings.gt_colour = colour.name()
        self.view.set_overlay_style(gt_colour=colour)

    def _on_show_gt(self, on: bool) -> None:
        self.actions_by_name["toggle_gt"].setChecked(on)
        self.settings.show_gt = on
        self.view.set_overlay_style(gt_visible=on)

    # ==========================================================================================
    # Models and thresholds
    # ==========================================================================================
    def ensure_models(self, *, quiet: bool = False) -> bool:
        """Load the models now if not done yet (remembered bundles, else the default ones).

        The analysis loads them in the background by itself; menus that need the models at once
        call this.

        Args:
            quiet: report a missing model in the status bar instead of a dialog.

        Returns:
            True when a segmenter is available.
        """
        if self._models_loaded:
            return self.segmenter is not None
        s = self.settings
        self._models_loaded = True
        try:
            cls, seg, warning = _resolve_models(s.classifier_path, s.segmenter_path)
        except BrainSegError as exc:
            s.classifier_path = s.segmenter_path = None
            self._no_models(str(exc), quiet)
            self._after_models_changed()
        else:
            self._use_models(cls, seg, warning)
        return self.segmenter is not None

    def _use_models(self, classifier: object | None, segmenter: object, warning: str | None) -> None:
        if warning:
            self.settings.classifier_path = self.settings.segmenter_path = None
            dialogs.notify(self, "warning", "Model not loaded", warning)
        self.classifier, self.segmenter = classifier, segmenter
        self._after_models_changed()

    def _no_models(self, message: str, quiet: bool) -> None:
        self.classifier = self.segmenter = None
        if quiet:
            self.statusBar().showMessage("No segmentation model installed (Model > Load model bundle…)", 8000)
        else:
            dialogs.notify(
                self, "error", "No model", f"BrainSeg has no segmentation model to run:\n\n{message}"
            )

    def _after_models_changed(self) -> None:
        self.pipeline = None
        self._update_models_label()
        if self.settings.classifier_threshold is None or self.settings.mask_threshold is None:
            self.thresholds = self._initial_thresholds()
        else:
            self.thresholds = dataclasses.replace(self.thresholds, min_area_px=self._card_min_area())
        self._show_thresholds()

    def _card_min_area(self) -> int:
        if self.segmenter is None:
            return 0
        return int(self.segmenter.card.thresholds.get("min_area_px", 0))  # type: ignore[attr-defined]

    def _initial_thresholds(self) -> Thresholds:
        s = self.settings
        gate = s.classifier_threshold
        if gate is None:
            gate = 0.5
            if self.classifier is not None:
                gate = float(self.classifier.card.thresholds.get("tumour_probability", 0.5))  # type: ignore[attr-defined]
        mask = s.mask_threshold
        if mask is None:
            mask = 0.5
            if self.segmenter is not None:
                mask = float(self.segmenter.card.thresholds.get("mask_probability", 0.5))  # type: ignore[attr-defined]
        largest = s.largest_component
        if largest is None:
            largest = self.segmenter is not None and bool(
                self.segmenter.card.thresholds.get("largest_component", False)  # type: ignore[attr-defined]
            )
        return Thresholds(min(max(gate, 0.0), 1.0), min(max(mask, 0.0), 1.0), self._card_min_area(), largest)

    def _show_thresholds(self) -> None:
        c = self.controls
        for w in (c.gate, c.mask_threshold):
            w.blockSignals(True)
        c.set_thresholds(self.thresholds.gate, self.thresholds.mask)
        c.gate_label.setText(f"{self.thresholds.gate:.3f}")
        c.mask_label.setText(f"{self.thresholds.mask:.3f}")
        c.largest_component.blockSignals(True)
        c.largest_component.setChecked(self.thresholds.largest_component)
        c.largest_component.blockSignals(False)
        for w in (c.gate, c.mask_threshold):
            w.blockSignals(False)
        c.gate.setEnabled(self.classifier is not None)
        self._apply_thresholds_everywhere()

    def _update_models_label(self) -> None:
        from brainseg_core.bundle import bundle_summary

        parts = []
        for title, b in (("Classifier", self.classifier), ("Segmenter", self.segmenter)):
            if b is None:
                text = "none (every slice is segmented)" if title == "Classifier" else "none installed"
            else:
                text = bundle_summary(b.card)  # type: ignore[attr-defined]
            parts.append(f"<b>{title}</b>: {text}")
        self.results.models_label.setText("<br>".join(parts))

    def _set_thresholds(self, *, gate: float | None = None, mask: float | None = None) -> None:
        t = self.thresholds
        self.thresholds = dataclasses.replace(
            t, gate=t.gate if gate is None else gate, mask=t.mask if mask is None else max(mask, 0.001)
        )
        rec = self.current
        if rec is not None:
            rec.apply(self.thresholds, self._spacing_for(rec))
            self._update_masks()
            self._refresh_results()
        self._threshold_timer.start()

    def _thresholds_settled(self) -> None:
        self.settings.classifier_threshold = self.thresholds.gate
        self.settings.mask_threshold = self.thresholds.mask
        self._apply_thresholds_everywhere()
        self._schedule_missing_segmentations()

    def _apply_thresholds_everywhere(self) -> None:
        for rec in self.records.values():
            rec.apply(self.thresholds, self._spacing_for(rec))
            self.browser.update_record(rec)
        self._update_masks()
        self._refresh_results()

    def set_largest_component(self, on: bool) -> None:
        """Show only each analysed patient's largest 3-D region (or every region again)."""
        self.settings.largest_component = bool(on)
        self.thresholds = dataclasses.replace(self.thresholds, largest_component=bool(on))
        self._apply_thresholds_everywhere()

    def use_model_thresholds(self) -> None:
        """Return the thresholds to the values in the model cards."""
        self.settings.classifier_threshold = None
        self.settings.mask_threshold = None
        self.settings.largest_component = None
        self.thresholds = self._initial_thresholds()
        self._show_thresholds()
        self._schedule_missing_segmentations()

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

    def load_bundle_file(self, path: Path) -> bool:
        """Use the bundle at ``path`` as the classifier or segmenter (by its card's kind).

        Returns:
            True when it loaded; otherwise the active models stay and a message says why.
        """
        from brainseg_core.bundle import load_bundle

        self.ensure_models(quiet=True)
        try:
            bundle = load_bundle(path)
        except BrainSegError as exc:
            dialogs.notify(
                self,
                "error",
                "Model not loaded",
                f"This model could not be loaded; the active models stay in use.\n\n{exc}",
            )
            return False
        if bundle.card.kind == "classifier":
            self.classifier = bundle
            self.settings.classifier_path = str(bundle.path)
        else:
            self.segmenter = bundle
            self.settings.segmenter_path = str(bundle.path)
        self.settings.classifier_threshold = self.settings.mask_threshold = None
        self._models_changed()
        return True

    def set_models(self, classifier: object | None, segmenter: object) -> None:
        """Use already loaded bundles (e.g. chosen on the command line) as the active models.

        Args:
            classifier: a classifier ``ModelBundle``, or None to segment every slice.
            segmenter: a segmenter ``ModelBundle``.
        """
        self.classifier, self.segmenter = classifier, segmenter
        self._models_loaded = True
        self._models_changed()

    def use_default_models(self) -> None:
        """Forget bundles loaded by hand and use the default models."""
        self.settings.classifier_path = self.settings.segmenter_path = None
        self.settings.classifier_threshold = self.settings.mask_threshold = None
        self._models_loaded = False
        self.ensure_models()
        self._models_changed()

    def _models_changed(self) -> None:
        self._stop_all_analysis()
        for rec in self.records.values():
            rec.reset()
            self.browser.update_record(rec)
        self._after_models_changed()
        self._update_masks()
        self._refresh_results()
        self.statusBar().showMessage("Models changed; earlier results were cleared", 5000)
        if self.current is not None and self.volume is not None and self.settings.auto_run:
            self.request_analysis(self.current, front=True)

    def show_models(self) -> None:
        """Show the active models' cards."""
        self.ensure_models()
        dialogs.ModelsDialog(self.classifier, self.segmenter, self).exec()

    def _on_device(self, device: str) -> None:
        if device == self.settings.device and self.pipeline is not None:
            return
        self.settings.device = device
        self._sync_device_menu(device)
        if self.analysis.running:
            self._pipeline_stale = True  # the running job keeps its pipeline; the next one moves
        else:
            self.pipeline = None

    def _sync_device_menu(self, device: str) -> None:
        for act in self.device_menu.actions():
            act.setChecked(act.text() == device)

    def _set_auto_run(self, on: bool) -> None:
        self.settings.auto_run = on
        for w in (self.controls.auto_run, self.actions_by_name["auto_run"]):
            w.blockSignals(True)
            w.setChecked(on)
            w.blockSignals(False)

    # ==========================================================================================
    # Running the analysis
    # ==========================================================================================
    def run_current(self) -> None:
        """Analyse the displayed patient (again)."""
        rec = self.current
        if rec is None or self.volume is None:
            self.statusBar().showMessage("Open a patient first", 3000)
            return
        if self.analysis.running and self.analysis.tag == ("analyse", rec):
            return
        self.request_analysis(rec, front=True, explicit=True)

    def analyse_all(self) -> None:
        """Queue every patient that has no complete analysis."""
        todo = [r for r in self.records.values() if r.state not in (PatientState.DONE, PatientState.RUNNING)]
        if not todo:
            self.statusBar().showMessage("Every patient is analysed", 3000)
            return
        self._batch = True
        for rec in todo:
            self.request_analysis(rec, front=False)

    def request_analysis(self, rec: PatientRecord, *, front: bool, explicit: bool = False) -> None:
        """Queue ``rec`` for analysis (first in line with ``front``) and start when possible.

        Args:
            rec: the patient.
            front: put it before the patients already waiting.
            explicit: the user asked for it (a missing model is then reported in a dialog).
        """
        if self._models_loaded and self.segmenter is None:
            self._no_models("install or load a segmentation model bundle first", quiet=not explicit)
            return
        self.queue = [t for t in self.queue if t[1] != rec.path]
        task = ("analyse", rec.path)
        if front:
            self.queue.insert(0, task)
        else:
            self.queue.append(task)
        if rec.state is not PatientState.RUNNING:
            rec.state = PatientState.QUEUED
        self.browser.update_record(rec)
        self._pump()

    def prepare(self) -> None:
        """Load the models and put them on the device in the background (called at start-up)."""
        if not self.analysis.running and self.pipeline is None:
            self._start_prepare()

    def _schedule_missing_segmentations(self) -> None:
        rec = self.current
        if rec is None or self.volume is None or rec.state is not PatientState.DONE:
            return
        if not rec.missing(self.thresholds) or self.segmenter is None:
            return
        task = ("segment", rec.path)
        if self.analysis.running and self.analysis.tag == ("segment", rec):
            return  # re-checked when it finishes
        if task not in self.queue:
            self.queue.insert(0, task)
        self._pump()

    def _task_valid(self, task: tuple[str, Path]) -> bool:
        kind, path = task
        rec = self.records.get(path)
        if rec is None:
            return False
        return kind != "segment" or (rec.base is not None and bool(rec.missing(self.thresholds)))

    def _pump(self) -> None:
        if self.analysis.running:
            return
        while self.queue and not self._task_valid(self.queue[0]):
            self.queue.pop(0)
        if self.queue:
            if self._pipeline_stale:
                self.pipeline = None
                self._pipeline_stale = False
            if self.pipeline is None:
                self._start_prepare()
            else:
                kind, path = self.queue.pop(0)
                self._start_task(kind, self.records[path])
            return
        self._batch = False
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self._update_enabled()
        if self._export_after_batch:
            self._export_after_batch = False
            QTimer.singleShot(0, self.export_all_dialog)

    def _start_prepare(self) -> None:
        """Load the models (first time) and build the pipeline on the chosen device, in the worker."""
        need = not self._models_loaded
        paths = (self.settings.classifier_path, self.settings.segmenter_path)
        loaded = (self.classifier, self.segmenter)
        device = self.settings.device

        def job(report: JobReport) -> object:
            warnings: list[tuple[str, str]] = []
            if need:
                cls, seg, warning = _resolve_models(*paths)
                if warning:
                    warnings.append(("Model not loaded", warning))
            else:
                cls, seg = loaded
            if seg is None:
                raise BundleError(paths[1] or "models", "no segmentation model is loaded")
            pipeline, warning = _build_pipeline(cls, seg, device)
            if warning:
                warnings.append(("Device not available", warning))
            return need, cls, seg, pipeline, warnings

        self.analysis.start(job, tag=("prepare", None))
        self.progress.setRange(0, 0)
        self.progress.setFormat("")
        self.progress.setVisible(True)
        self.cancel_button.setVisible(bool(self.queue))
        self.statusBar().showMessage(
            "Loading the models …" if need else f"Preparing the models on {device} …"
        )

    def _on_prepared(self, result: object) -> None:
        need, cls, seg, pipeline, warnings = result  # type: ignore[misc]
        if need:
            self._models_loaded = True
            model_warning = next((text for title, text in warnings if title == "Model not loaded"), None)
            self._use_models(cls, seg, model_warning)
        self.pipeline = pipeline
        for title, text in warnings:
            if title == "Device not available":
                self.settings.device = "auto"
                self.controls.device.setCurrentText("auto")
                dialogs.notify(self, "warning", title, text)
        self.statusBar().showMessage(f"Models ready on {pipeline.device}", 3000)  # type: ignore[attr-defined]

    def _on_prepare_failed(self, message: str, details: str) -> None:
        if not self._models_loaded:
            self._models_loaded = True
            self.settings.classifier_path = self.settings.segmenter_path = None
            self.classifier = self.segmenter = None
            self._after_models_changed()
        waiting = bool(self.queue)
        for _, path in self.queue:
            rec = self.records.get(path)
            if rec is not None and rec.state is PatientState.QUEUED:
                rec.state = PatientState.NEW
                self.browser.update_record(rec)
        self.queue.clear()
        if self.segmenter is None:
            self._no_models(message, quiet=not waiting)
        elif waiting:
            dialogs.notify(self, "error", "Cannot run the models", message, details)

    def _start_task(self, kind: str, rec: PatientRecord) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        volume = self.volume if rec is self.current else None
        spacing = self._spacing_for(rec)
        path = rec.path
        read = self._read_volume
        if kind == "analyse":
            t = self.thresholds
            pipeline.classifier_threshold = t.gate  # type: ignore[attr-defined]
            pipeline.mask_threshold = t.mask  # type: ignore[attr-defined]

            def job(report: JobReport) -> object:
                vol = volume if volume is not None else read(path, spacing)
                report.item(("start", rec, vol.n_slices))
                for s in pipeline.run(vol, progress=report.progress, cancel=report.cancel):  # type: ignore[attr-defined]
                    report.item(("slice", rec, s))
                return None

            rec.state = PatientState.RUNNING
            verb = "Analysing"
        else:
            base = rec.base
            indices = rec.missing(self.thresholds)

            def job(report: JobReport) -> object:
                vol = volume if volume is not None else read(path, spacing)
                return pipeline.segment_slices(  # type: ignore[attr-defined]
                    vol, base, indices, progress=report.progress, cancel=report.cancel
                )

            verb = f"Segmenting {len(indices)} more slice(s) of"
        self._user_cancelled = False
        self.analysis.start(job, tag=(kind, rec))
        self.browser.update_record(rec)
        self.progress.setRange(0, 0)
        self.progress.setFormat(f"{rec.patient_id}: %p%")
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.statusBar().showMessage(f"{verb} {rec.patient_id} on {pipeline.device} …")  # type: ignore[attr-defined]
        self._update_enabled()

    def _on_analysis_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _on_analysis_item(self, obj: object) -> None:
        kind, rec, payload = obj  # type: ignore[misc]
        if kind == "start":
            p = self.pipeline
            rec.start(
                int(payload),
                models=_models_info(self.classifier, self.segmenter),
                device=str(p.device) if p is not None else "cpu",  # type: ignore[attr-defined]
                pipeline_thresholds=Thresholds(
                    p.classifier_threshold,
                    p.mask_threshold,
                    p.min_area_px,  # type: ignore[attr-defined]
                ),
            )
            self.browser.update_record(rec)
            if rec is self.current:
                self.thumbnails.set_predicted([False] * self.n_slices)
                self._update_masks()
                self._plot_timer.start()
            return
        shown = rec.add(payload, self.thresholds, self._spacing_for(rec))
        self.browser.update_record(rec)
        if rec is self.current:
            if shown.index == self.index:
                self._update_masks()
            self._plot_timer.start()

    def _on_analysis_finished(self, result: object) -> None:
        kind, rec = self.analysis.tag  # type: ignore[misc]
        if kind == "prepare":
            self._on_prepared(result)
            return
        if kind == "segment":
            rec.base = result  # type: ignore[assignment]
        rec.state = PatientState.DONE
        rec.apply(self.thresholds, self._spacing_for(rec))
        self.browser.update_record(rec)
        if rec is self.current:
            self._update_masks()
            self._refresh_results()
            if kind == "analyse" and not self._navigated:
                self._jump_to_largest()
            n = rec.tumour_slices() or 0
            self.statusBar().showMessage(f"{rec.patient_id}: tumour on {n} of {rec.n_slices} slices", 8000)
            if rec.missing(self.thresholds):
                self._schedule_missing_segmentations()
        self._update_enabled()

    def _jump_to_largest(self) -> None:
        rec = self.current
        if rec is None or rec.shown is None:
            return
        areas = [s.area_px for s in rec.shown.slices]
        if areas and max(areas) > 0:
            self.set_slice(int(np.argmax(areas)))
            self._navigated = False

    def _on_analysis_failed(self, message: str, details: str) -> None:
        kind, rec = self.analysis.tag  # type: ignore[misc]
        if kind == "prepare":
            self._on_prepare_failed(message, details)
            return
        rec.state = PatientState.FAILED if kind == "analyse" else PatientState.DONE
        rec.error = message
        self.browser.update_record(rec)
        if rec is self.current or not self._batch:
            dialogs.notify(
                self,
                "error",
                "Analysis failed",
                f"The analysis of {rec.patient_id} failed:\n\n{message}",
                details,
            )
        else:
            self.statusBar().showMessage(f"{rec.patient_id}: analysis failed ({message})", 8000)

    def _on_analysis_cancelled(self) -> None:
        kind, rec = self.analysis.tag  # type: ignore[misc]
        if kind == "prepare":
            return
        rec.state = PatientState.CANCELLED if kind == "analyse" else PatientState.DONE
        self.browser.update_record(rec)
        if rec is self.current:
            self._refresh_results()
        self.statusBar().showMessage(f"{rec.patient_id}: analysis cancelled", 5000)

    def _on_analysis_stopped(self) -> None:
        self._pump()

    def cancel_analysis(self) -> None:
        """Stop the running analysis and forget the queued ones."""
        if not self.analysis.running and not self.queue:
            return
        self._user_cancelled = True
        self._export_after_batch = False
        for _, path in self.queue:
            rec = self.records.get(path)
            if rec is not None and rec.state is PatientState.QUEUED:
                rec.state = PatientState.NEW if rec.base is None else PatientState.CANCELLED
                self.browser.update_record(rec)
        self.queue.clear()
        self._batch = False
        self.analysis.cancel()
        self.statusBar().showMessage("Cancelling …")

    def _stop_all_analysis(self) -> None:
        self.queue.clear()
        self._batch = False
        self._export_after_batch = False
        if self.analysis.running:
            self.analysis.cancel()

    def is_busy(self) -> bool:
        """True while a patient is being read or analysed."""
        return self.analysis.running or self.loader.running or bool(self.queue)

    # ==========================================================================================
    # Results
    # ==========================================================================================
    def _spacing_for(self, rec: PatientRecord) -> Spacing | None:
        if rec is self.current and self.volume is not None and self.volume.pixel_spacing_mm is not None:
            return Spacing(self.volume.pixel_spacing_mm, self.volume.slice_thickness_mm)
        return self.spacing

    def _dataset_key(self, patient: Path | None = None) -> Path | None:
        p = patient or (self.current.path if self.current else None)
        return p.parent if p is not None else None

    def _stored_spacing(self, patient: Path) -> Spacing | None:
        value = self.settings.spacing(patient.parent)
        return None if value is None else Spacing((value[0], value[1]), value[2])

    def spacing_dialog(self) -> None:
        """Enter the dataset's pixel spacing (remembered per dataset)."""
        key = self._dataset_key()
        if key is None:
            self.statusBar().showMessage("Open a patient first", 3000)
            return
        current = self.settings.spacing(key)
        dlg = dialogs.SpacingDialog(current, key, self)
        if dlg.exec():
            self.set_spacing(dlg.value())

    def set_spacing(self, value: tuple[float, float, float] | None) -> None:
        """Use (and remember for this dataset) a voxel size ``(row_mm, col_mm, thickness_mm)``."""
        key = self._dataset_key()
        if key is None:
            return
        self.settings.set_spacing(key, value)
        self.spacing = None if value is None else Spacing((value[0], value[1]), value[2])
        if self.volume is not None:
            self.volume.pixel_spacing_mm = None if value is None else (value[0], value[1])
            self.volume.slice_thickness_mm = None if value is None else value[2]
        self._apply_thresholds_everywhere()

    def _refresh_results(self) -> None:
        rec = self.current
        n = self.n_slices
        probs: list[float | None] = [None] * n
        if rec is not None and rec.shown is not None:
            for s in rec.shown.slices:
                if s.index < n:
                    probs[s.index] = s.tumour_probability
        found = self._found_flags()
        self.results.set_probabilities(probs, found, self._gt_flags(), self.thresholds.gate)
        self.results.set_current(self.index)
        self.thumbnails.set_predicted(found)
        self._update_slice_info()
        self._update_summary()

    def _update_slice_info(self) -> None:
        rec = self.current
        if self.volume is None or rec is None:
            self.results.slice_label.setText("—")
            return
        i = self.index
        lines = [f"Slice {i + 1} of {self.n_slices}  (file #{self.volume.slice_numbers[i]})"]
        s = rec.slice_shown(i)
        if s is None:
            lines.append("Not analysed yet")
        else:
            gate = "above" if s.tumour_probability >= self.thresholds.gate else "below"
            lines.append(f"Tumour probability {s.tumour_probability:.3f} ({gate} the gate)")
            area = f"{s.area_px} px"
            if s.area_mm2 is not None:
                area += f" = {s.area_mm2:.1f} mm²"
            lines.append(f"Tumour area {area}")
        if self.volume.masks is not None:
            gt = self.volume.masks[i]
            lines.append(f"Ground truth {int(gt.sum())} px")
            if s is not None:
                d = metrics.dice(s.mask, gt, empty=math.nan)
                lines.append(f"Dice {_fmt(d, '.3f', '— (both empty)')}")
        self.results.slice_label.setText("\n".join(lines))

    def _update_summary(self) -> None:
        rec = self.current
        if rec is None:
            self.results.summary_label.setText("No patient open")
            return
        if rec.shown is None or not rec.shown.slices:
            state = rec.state.value if rec.state is not PatientState.NEW else "Not analysed yet"
            self.results.summary_label.setText(f"{rec.patient_id}\n{state}")
            return
        r = rec.shown
        n = rec.n_slices or len(r.slices)
        partial = "" if rec.complete else f" (so far: {len(r.slices)} of {n} slices analysed)"
        lines = [f"<b>{rec.patient_id}</b>{partial}", f"Tumour on <b>{r.tumour_slices}</b> of {n} slices"]
        if r.volume_ml is not None:
            lines.append(f"Volume <b>{r.volume_ml:.2f} mL</b> ({r.volume_voxels:,} voxels)")
        else:
            lines.append(f"Volume <b>{r.volume_voxels:,} voxels</b> (enter the pixel spacing for mL)")
        if self.volume is not None and self.volume.masks is not None and rec.complete:
            pred = np.stack([s.mask for s in r.slices])
            gt_vox = int(self.volume.masks.sum())
            d = metrics.dice(pred, self.volume.masks, empty=math.nan)
            lines.append(f"Dice vs ground truth <b>{_fmt(d, '.3f')}</b> (ground truth {gt_vox:,} voxels)")
        lines.append(
            f"Gate {r.classifier_threshold:.3g} · mask {r.mask_threshold:.3g} · min area {r.min_area_px} px"
        )
        lines.append(f"Ran on {r.device}")
        self.results.summary_label.setText("<br>".join(lines))

    # ==========================================================================================
    # Export
    # ==========================================================================================
    def export_dialog(self) -> dialogs.ExportDialog | None:
        """Export the displayed patient's results."""
        rec = self.current
        if rec is None or rec.shown is None or not rec.complete:
            dialogs.notify(
                self,
                "info",
                "Nothing to export",
                "Open a patient and let its analysis finish before exporting.",
            )
            return None
        return self._open_export([rec])

    def export_all_dialog(self) -> dialogs.ExportDialog | None:
        """Export every analysed patient; offer to analyse the others first."""
        done = [r for r in self.records.values() if r.state is PatientState.DONE and r.complete]
        rest = [r for r in self.records.values() if r not in done]
        if (
            rest
            and not self.analysis.running
            and dialogs.ask(
                self,
                "Analyse the rest?",
                f"{len(done)} of {len(self.records)} patients are analysed. Analyse the other {len(rest)} "
                "first and export all of them when that is done?\n\n(No: export the analysed ones now.)",
            )
        ):
            self._export_after_batch = True
            self.analyse_all()
            return None
        if not done:
            dialogs.notify(self, "info", "Nothing to export", "No patient has been analysed yet.")
            return None
        return self._open_export(done)

    def _open_export(self, records: list[PatientRecord]) -> dialogs.ExportDialog:
        current, volume, spacing, read = self.current, self.volume, self.spacing, self._read_volume

        def volume_for(rec: PatientRecord) -> Volume:
            if rec is current and volume is not None:
                return volume
            return read(rec.path, spacing)

        default = self.settings.export_dir or str(Path.home() / "BrainSeg exports")
        dlg = dialogs.ExportDialog(
            records,
            volume_for,
            formats=self.settings.export_formats,
            destination=Path(default) if default else None,
            parent=self,
        )
        dlg.exported.connect(lambda files: self._on_exported(dlg, files))
        dlg.finished.connect(
            lambda _r: self._export_dialogs.remove(dlg) if dlg in self._export_dialogs else None
        )
        self._export_dialogs.append(dlg)
        dlg.show()
        return dlg

    def _on_exported(self, dlg: dialogs.ExportDialog, files: list) -> None:
        self.settings.export_dir = dlg.destination.text().strip()
        self.settings.export_formats = dlg.formats()
        self.statusBar().showMessage(f"Exported {len(files)} files to {dlg.destination.text()}", 8000)

    # ==========================================================================================
    # Help
    # ==========================================================================================
    def shortcut_rows(self) -> list[tuple[str, str]]:
        """``(keys, description)`` of every shortcut, then the mouse bindings."""
        rows = []
        for act in self.actions_by_name.values():
            keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in act.shortcuts()]
            if keys:
                rows.append((", ".join(keys), act.toolTip()))
        return rows + list(_MOUSE_HELP)

    def show_shortcuts(self) -> None:
        """Show the shortcuts dialog."""
        dialogs.ShortcutsDialog(self.shortcut_rows(), self).exec()

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
        about.show_about(self, cards=[b.card for b in (self.classifier, self.segmenter) if b is not None])

    # ==========================================================================================
    # Window state
    # ==========================================================================================
    def _update_enabled(self) -> None:
        has_volume = self.volume is not None
        rec = self.current
        a = self.actions_by_name
        a["run"].setEnabled(has_volume)
        self.controls.run.setEnabled(has_volume)
        a["cancel"].setEnabled(self.analysis.running or bool(self.queue))
        a["export"].setEnabled(rec is not None and rec.complete)
        a["export_all"].setEnabled(len(self.records) > 0)
        a["analyse_all"].setEnabled(len(self.records) > 1)
        a["spacing"].setEnabled(rec is not None)
        self.results.spacing.setEnabled(rec is not None)

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

    def closeEvent(self, event: QCloseEvent) -> None:
        """Save the settings and stop every worker thread before closing."""
        self.settings.geometry = self.saveGeometry()
        self.settings.window_state = self.saveState()
        self.settings.sync()
        self.queue.clear()
        for dlg in list(self._export_dialogs):
            dlg.runner.cancel()
            dlg.runner.wait()
        for runner in (self.analysis, self.loader):
            runner.cancel()
        for runner in (self.analysis, self.loader):
            runner.wait()
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


def run_viewer(path: Path | None = None, *, sample: bool = False) -> int:
    """Start the viewer: dark theme, the main window, then the event loop.

    Args:
        path: a patient folder, TIFF stack or dataset root to open at once.
        sample: open the shipped sample patient (ignored when ``path`` is given).

    Returns:
        The application's exit code.
    """
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("BrainSeg")
    app.setOrganizationName("BrainSeg")
    app.setApplicationDisplayName("BrainSeg")
    log_file = _setup_logging()
    apply_dark_theme(app)
    window = MainWindow()
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
