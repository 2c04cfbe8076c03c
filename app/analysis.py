"""The viewer's analysis controller: which models, on which device, which patient next.

:class:`AnalysisController` owns the active model bundles, the inference pipeline built from them,
the queue of patients waiting to be analysed (or to have slices segmented that a lowered gate now
admits) and the :class:`~brainseg_app.worker.JobRunner` that runs them off the GUI thread. It
reads the window's session (patients, displayed patient, thresholds) through the small
:class:`Session` protocol and tells the window what happened through signals; its only widget is
the parent of its message boxes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QWidget

from brainseg_app import dialogs
from brainseg_app.session import (
    PatientRecord,
    PatientState,
    Rethresholded,
    read_volume,
    record_thresholds,
    with_entered_spacing,
)
from brainseg_app.settings import Settings
from brainseg_app.worker import Job, JobRunner
from brainseg_core.errors import BrainSegError, BundleError, ThoroughModeError
from brainseg_core.io import PatientFormat, Volume
from brainseg_core.progress import ProgressFn
from brainseg_core.results import PatientResult, SliceResult
from brainseg_core.thorough import run_mode

if TYPE_CHECKING:
    from brainseg_core.engine import AnalysisPipeline, BundleFile, Engine
    from brainseg_core.registry import BundleInfo
    from brainseg_core.result_store import ReaderWork, ResultStore, StoredResult
    from brainseg_core.spacing import Spacing
    from brainseg_core.thresholds import Thresholds


log = logging.getLogger(__name__)


def _resolve_models(
    classifier: str | None, segmenter: str | None
) -> tuple[BundleInfo | None, BundleInfo, str | None]:
    """The models to use: the remembered bundles, else the defaults (with a warning saying why).

    The defaults are the newest user bundles, else the shipped ones; when a user bundle's card or
    weights are damaged, the shipped ones are used (with a warning naming the bad file). Only the
    cards and the weights' SHA-256 are read: the networks load in the model process.

    Raises:
        BrainSegError: when not even a default segmenter can be found.
    """
    from brainseg_core.registry import resolve_cards

    try:
        cls, seg = resolve_cards(classifier=classifier, segmenter=segmenter)
        return cls, seg, None
    except BrainSegError as exc:
        if not (classifier or segmenter):
            cls, seg = _shipped_models(exc)
            return cls, seg, _fallback_text(exc, chosen=False)
        try:
            cls, seg = resolve_cards()
        except BrainSegError as default_exc:  # a damaged user bundle too: use the shipped ones
            cls, seg = _shipped_models(default_exc)
        return cls, seg, _fallback_text(exc, chosen=True)


def _fallback_text(error: BrainSegError, *, chosen: bool) -> str:
    """Why other models than the ones asked for are in use: ``chosen`` ones (a file the user
    picked) give way to the defaults, a damaged installed one to the shipped ones."""
    if chosen:
        return f"The model you chose could not be loaded, so BrainSeg uses the default models.\n\n{error}"
    return (
        "A model in your models folder could not be loaded, so BrainSeg uses the models "
        f"shipped with it.\n\n{error}"
    )


#: The titles of :func:`_build_pipeline`'s warnings.
DEVICE_FELL_BACK = "Device not available"
THOROUGH_FELL_BACK = "Thorough mode not available"


def _fall_back(
    engine: Engine, device: str, thorough: bool, error: BundleError, *, chosen: bool
) -> tuple[BundleInfo | None, BundleInfo, AnalysisPipeline, list[tuple[str, str]], str]:
    """The first models that load in ``engine`` after the ones asked for failed with ``error``:
    the defaults (when the failed ones were ``chosen`` by hand), then the shipped ones.

    Returns:
        The classifier, segmenter, pipeline, :func:`_build_pipeline`'s warnings and the message
        that says why.

    Raises:
        BrainSegError: when the shipped models do not load either.
    """
    from brainseg_core.registry import resolve_cards

    if chosen:
        try:
            cls, seg = resolve_cards()
            pipeline, warnings = _build_pipeline(engine, cls, seg, device, thorough=thorough)
            return cls, seg, pipeline, warnings, _fallback_text(error, chosen=True)
        except BundleError as exc:
            error = exc  # the defaults do not load either: the shipped ones, saying why
    cls, seg = _shipped_models(error)
    pipeline, warnings = _build_pipeline(engine, cls, seg, device, thorough=thorough)
    return cls, seg, pipeline, warnings, _fallback_text(error, chosen=False)


def _shipped_models(error: BrainSegError) -> tuple[BundleInfo | None, BundleInfo]:
    """The newest shipped classifier and segmenter, used when a user bundle fails to load.

    Raises:
        BrainSegError: ``error`` when no segmenter is shipped.
    """
    from brainseg_core.registry import list_bundles

    shipped = [i for i in list_bundles() if i.source == "shipped"]

    def newest(kind: str) -> BundleInfo | None:
        return next((i for i in shipped if i.card.kind == kind), None)

    seg = newest("segmenter")
    if seg is None:
        raise error
    return newest("classifier"), seg


def _build_pipeline(
    engine: Engine,
    classifier: BundleFile | None,
    segmenter: BundleFile,
    device: str,
    *,
    thorough: bool = False,
) -> tuple[AnalysisPipeline, list[tuple[str, str]]]:
    """A pipeline on ``device``, or on the best available one if that fails; in thorough mode, or
    without it if the segmenter's ensemble cannot run (a member missing or replaced: the models
    themselves are sound, so they are not given up for others).

    It streams results as the engine's default batch (on the CPU a forward pass's worth: progress
    moves slice by slice and Cancel acts within a fraction of a second).

    Returns:
        The pipeline and the warnings, ``(title, text)``: :data:`DEVICE_FELL_BACK` when it runs on
        another device, :data:`THOROUGH_FELL_BACK` when it runs without thorough mode.

    Raises:
        BundleError: a model does not load.
    """
    warnings: list[tuple[str, str]] = []

    def build(dev: str) -> AnalysisPipeline:
        nonlocal thorough
        try:
            return engine.pipeline(classifier, segmenter, device=dev, thorough=thorough)
        except ThoroughModeError as exc:
            thorough = False
            warnings.append(
                (
                    THOROUGH_FELL_BACK,
                    f"{exc}\n\nBrainSeg runs the models without thorough mode; turn it on again "
                    "(Analysis > Thorough) once the bundle is back.",
                )
            )
            return engine.pipeline(classifier, segmenter, device=dev, thorough=False)

    try:
        return build(device), warnings
    except (ValueError, RuntimeError) as exc:
        if device == "auto":
            raise
        pipeline = build("auto")
        text = f"{exc}\n\nBrainSeg runs the models on {pipeline.device} instead."
        warnings.append((DEVICE_FELL_BACK, text))
        return pipeline, warnings


def _reset_meanwhile(rec: PatientRecord) -> bool:
    """Whether ``rec``'s results were cleared (:meth:`PatientRecord.reset`: the models changed)
    while its job ran: its state then stays as the reset left it (a job sets an analysed
    patient's state, or RUNNING, and a reset sets NEW), not "analysed" with nothing to show."""
    return rec.state is PatientState.NEW and rec.base is None


def _save(store: ResultStore, volume: Volume, result: PatientResult) -> None:
    """Keep a finished analysis; a failure to save is logged, never fatal to the analysis."""
    try:
        store.save(volume, result)
    except (OSError, ValueError) as exc:
        log.warning("%s: the analysis was not saved: %s", volume.source, exc)


@dataclass(frozen=True)
class Started:
    """What an analysis job yields first: the patient's result so far (no slices yet, or a saved
    analysis that is used as it is), its number of slices, the reader's saved work on it (edited
    masks, reviewed slices; None when there is none) and, for a patient read by the job, the voxel
    size its files give (None: they give none, or the patient is on display)."""

    result: PatientResult
    n_slices: int
    format: PatientFormat
    work: ReaderWork | None = None
    file_spacing: Spacing | None = None


@dataclass(frozen=True)
class _Prepared:
    """What the prepare job hands back: the models (when loaded now), the pipeline, warnings."""

    loaded_now: bool
    classifier: BundleFile | None
    segmenter: BundleFile
    pipeline: AnalysisPipeline
    warnings: list[tuple[str, str]]


class Session(Protocol):
    """What the controller reads from the viewer's state (:class:`~brainseg_app.viewer_model.ViewerModel`)."""

    records: dict[Path, PatientRecord]
    current: PatientRecord | None
    volume: Volume | None
    thresholds: Thresholds
    model_input_size: int | None

    def spacing_for(self, rec: PatientRecord) -> Spacing | None:
        """The voxel size to use for ``rec``'s volumes."""
        ...

    def shown_thresholds(self, rec: PatientRecord) -> Thresholds:
        """The thresholds ``rec`` is shown with."""
        ...

    def apply(self, rec: PatientRecord, *, ready: Rethresholded | None = None) -> None:
        """Recompute what ``rec`` shows (``ready``: the same computed by the job, if it still applies)."""
        ...


class AnalysisController(QObject):
    """Runs the classifier and segmenter on the window's patients, one job at a time.

    Jobs are ``("prepare", None)`` (load the models and build the pipeline on the chosen device),
    ``("analyse", record)`` (stream a patient's slice results) and ``("segment", record)`` (segment
    the slices a lowered gate now admits); :attr:`runner`'s ``tag`` holds the running one.

    The networks run in ``engine``; by default a :class:`~brainseg_core.engine.ProcessEngine`
    (started on first need, and again if it stopped), so that neither importing torch nor running
    the networks ever holds the window's interpreter lock.

    Args:
        session: the window's patients, displayed patient and thresholds.
        settings: model paths, device and auto-run settings (read and written).
        parent: the window: owner of this object and parent of its message boxes.
        store: where finished analyses are kept (default: the user data folder's).
        engine: where the networks run (default: a model process of this controller's own).

    Signals:
        recordChanged: a patient's state or results changed (``PatientRecord``).
        message: status-bar text and how long to show it in ms (0: until replaced).
        jobStarted: a job started: progress-bar format and whether Cancel applies.
        progress: ``(done, total)`` of the running job.
        idle: nothing runs or waits any more.
        stateChanged: what can be run or cancelled changed.
        modelsChanged: the classifier or segmenter was replaced (the pipeline is dropped).
        patientStarted: a patient's analysis began (its results were cleared).
        sliceAnalysed: ``(record, index)``: one more slice result arrived.
        patientFinished: ``(record, kind)``: an "analyse" or "segment" job completed.
        patientCancelled: a patient's job was cancelled.
        exportRequested: a batch started by "export all" has finished.
        deviceFellBack: the chosen device failed; the models run on this one (``"auto"``).
        thoroughFellBack: thorough mode could not run (its ensemble is incomplete); the models run
            without it and the setting is off.
    """

    recordChanged = Signal(object)
    message = Signal(str, int)
    jobStarted = Signal(str, bool)
    progress = Signal(int, int)
    idle = Signal()
    stateChanged = Signal()
    modelsChanged = Signal()
    patientStarted = Signal(object)
    sliceAnalysed = Signal(object, int)
    patientFinished = Signal(object, str)
    patientCancelled = Signal(object)
    exportRequested = Signal()
    deviceFellBack = Signal(str)
    thoroughFellBack = Signal()

    def __init__(
        self,
        session: Session,
        settings: Settings,
        parent: QWidget,
        *,
        store: ResultStore | None = None,
        engine: Engine | None = None,
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.settings = settings
        self._dialog_parent = parent
        self._engine = engine
        self._own_engine = engine is None
        self.classifier: BundleFile | None = None
        self.segmenter: BundleFile | None = None
        self.models_loaded = False
        self.pipeline: AnalysisPipeline | None = None
        self.queue: list[tuple[str, Path]] = []
        self.export_after_batch = False
        self._batch = False
        self._pipeline_stale = False
        self._rerun: set[Path] = set()  # patients the user asked to analyse again
        self._store = store
        self.runner = JobRunner(self)
        r = self.runner
        r.item.connect(self._on_item)
        r.progress.connect(self.progress)
        r.finished.connect(self._on_finished)
        r.failed.connect(self._on_failed)
        r.cancelled.connect(self._on_cancelled)
        r.stopped.connect(self._pump)

    def saved_analysis(self, volume: Volume) -> StoredResult | None:
        """The saved analysis of ``volume`` (see :mod:`brainseg_core.result_store`), with
        ``current`` telling whether the active models, run as now, made it; None without models."""
        seg, cls = self.segmenter, self.classifier
        if seg is None:
            return None
        flip_tta, ensemble = run_mode(seg.card, self.settings.thorough)
        return self.store.load(
            volume,
            segmenter=seg.card.ref,
            classifier=None if cls is None else cls.card.ref,
            flip_tta=flip_tta,
            ensemble=ensemble,
        )

    @property
    def store(self) -> ResultStore:
        """Saved analyses (``<user data>/results``): every finished analysis is kept there.

        Made on first use, so that opening the window does not load the model code.
        """
        if self._store is None:
            from brainseg_core.result_store import ResultStore

            self._store = ResultStore.default()
        return self._store

    @property
    def engine(self) -> Engine:
        """Where the networks run: a new model process when the last one stopped, or this
        process when none can start (the window then shares its core with the networks)."""
        from brainseg_core.engine import LocalEngine, ProcessEngine

        engine = self._engine
        if engine is None or not engine.alive:
            if engine is not None:
                log.warning("the model process stopped; starting a new one")
                self.close()
            try:
                engine = ProcessEngine()
            except OSError as exc:  # no process to be had (limits, a locked-down system)
                log.warning("no model process (%s); the networks run in the viewer's process", exc)
                engine = LocalEngine()
            self._engine = engine
            self._own_engine = True
        return engine

    def close(self) -> None:
        """Stop the model process this controller started (one given to it stays)."""
        if self._own_engine and self._engine is not None:
            self._engine.close()

    @property
    def active(self) -> bool:
        """True while a job runs or patients wait."""
        return self.runner.running or bool(self.queue)

    # ==========================================================================================
    # Models
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
        if self.models_loaded:
            return self.segmenter is not None
        s = self.settings
        self.models_loaded = True
        try:
            cls, seg, warning = _resolve_models(s.classifier_path, s.segmenter_path)
        except BrainSegError as exc:
            s.classifier_path = s.segmenter_path = None
            self._no_models(str(exc), quiet)
            self.models_replaced()
        else:
            self._use_models(cls, seg, warning)
        return self.segmenter is not None

    def set_models(self, classifier: BundleFile | None, segmenter: BundleFile) -> None:
        """Use already loaded bundles (no signal: the caller resets the results)."""
        self.classifier, self.segmenter = classifier, segmenter
        self.models_loaded = True

    def use_default_models(self) -> None:
        """Forget bundles loaded by hand and load the default models."""
        self.settings.classifier_path = self.settings.segmenter_path = None
        self.settings.classifier_threshold = self.settings.mask_threshold = None
        self.models_loaded = False
        self.ensure_models()

    def load_bundle_file(self, path: Path) -> bool:
        """Use the bundle at ``path`` as the classifier or segmenter (by its card's kind).

        Returns:
            True when it loaded; otherwise the active models stay and a message says why.
        """
        from brainseg_core.registry import open_bundle

        self.ensure_models(quiet=True)
        try:
            bundle = open_bundle(path)
        except BrainSegError as exc:
            dialogs.notify(
                self._dialog_parent,
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
        return True

    def models_replaced(self) -> None:
        """Drop the pipeline built for the previous models and emit :attr:`modelsChanged`."""
        self.pipeline = None
        self.modelsChanged.emit()

    def device_changed(self) -> None:
        """Move the models to the device setting for the next job (the running one keeps its own)."""
        if self.runner.running:
            self._pipeline_stale = True
        else:
            self.pipeline = None

    def _use_models(self, classifier: BundleFile | None, segmenter: BundleFile, warning: str | None) -> None:
        if warning:
            self.settings.classifier_path = self.settings.segmenter_path = None
            dialogs.notify(self._dialog_parent, "warning", "Model not loaded", warning)
        self.classifier, self.segmenter = classifier, segmenter
        self.models_replaced()

    def _no_models(self, message: str, quiet: bool) -> None:
        self.classifier = self.segmenter = None
        if quiet:
            self.message.emit("No segmentation model installed (Model > Load model bundle…)", 8000)
        else:
            dialogs.notify(
                self._dialog_parent,
                "error",
                "No model",
                f"BrainSeg has no segmentation model to run:\n\n{message}",
            )

    # ==========================================================================================
    # The queue
    # ==========================================================================================
    def analyse_all(self) -> None:
        """Queue every patient that has no complete analysis."""
        records = self.session.records.values()
        # A patient whose run is being cancelled is not running any more: queue it again.
        busy = {PatientState.DONE} if self.runner.cancelling else {PatientState.DONE, PatientState.RUNNING}
        todo = [r for r in records if r.state not in busy]
        if not todo:
            self.message.emit("Every patient is analysed", 3000)
            return
        self._batch = True
        for rec in todo:
            self.request_analysis(rec, front=False)

    def request_analysis(self, rec: PatientRecord, *, front: bool, explicit: bool = False) -> None:
        """Queue ``rec`` for analysis (first in line with ``front``) and start when possible.

        Args:
            rec: the patient.
            front: put it before the patients already waiting.
            explicit: the user asked for it: the networks run even when a saved analysis of these
                models exists (otherwise it is used), and a missing model is reported in a dialog.
        """
        if self.models_loaded and self.segmenter is None:
            self._no_models("install or load a segmentation model bundle first", quiet=not explicit)
            return
        self.queue = [t for t in self.queue if t[1] != rec.path]
        task = ("analyse", rec.path)
        if explicit:
            self._rerun.add(rec.path)
        if front:
            self.queue.insert(0, task)
        else:
            self.queue.append(task)
        if rec.state is not PatientState.RUNNING or self.runner.cancelling:
            rec.state = PatientState.QUEUED
        self.recordChanged.emit(rec)
        self._pump()

    def prepare(self) -> None:
        """Load the models and put them on the device in the background (called at start-up)."""
        if not self.runner.running and self.pipeline is None:
            self._start_prepare()

    def schedule_missing_segmentations(self) -> None:
        """Segment the displayed patient's slices that the current gate admits but were skipped."""
        session = self.session
        rec = session.current
        if rec is None or session.volume is None or rec.state is not PatientState.DONE:
            return
        if not rec.missing(session.thresholds) or self.segmenter is None:
            return
        task = ("segment", rec.path)
        if self.runner.running and self.runner.tag == ("segment", rec) and not self.runner.cancelling:
            return  # re-checked when it finishes (one being cancelled, by leaving the patient: queued again)
        if task not in self.queue:
            self.queue.insert(0, task)
        self._pump()

    def patient_opened(self, rec: PatientRecord) -> None:
        """The window now shows ``rec``: it is analysed next.

        During "Analyse all" a queued ``rec`` moves to the front of the queue; otherwise a
        single-patient run of another one stops (``rec`` comes first).
        """
        task = ("analyse", rec.path)
        if self._batch:
            if task in self.queue:
                self.queue.remove(task)
                self.queue.insert(0, task)
            return
        kind, running = cast(tuple[str, PatientRecord | None], self.runner.tag or ("", None))
        if self.runner.running and kind != "prepare" and running is not rec:
            self.runner.cancel()

    def stopping(self, rec: PatientRecord) -> bool:
        """Whether ``rec``'s job is being cancelled (it still reads "Analysing" until it stops)."""
        if not self.runner.cancelling:
            return False
        _, running = cast(tuple[str, PatientRecord | None], self.runner.tag or ("", None))
        return running is rec

    def cancel(self) -> None:
        """Stop the running job and forget the queued ones."""
        if not self.active:
            return
        self.export_after_batch = False
        self._unqueue_all()
        self._batch = False
        self.runner.cancel()
        self.message.emit("Cancelling …", 0)

    @property
    def batch_running(self) -> bool:
        """Whether "Analyse all" is under way (its patients queued or running)."""
        return self._batch

    def stop_patients(self) -> None:
        """Forget the queue and cancel a running patient job, quietly (other patients or series
        are to be read); the models go on loading."""
        self._unqueue_all()
        self._batch = False
        self.export_after_batch = False
        if self.runner.running and self.runner.tag != ("prepare", None):
            self.runner.cancel()

    def stop_all(self) -> None:
        """:meth:`stop_patients`, and stop loading the models too (they are being replaced)."""
        self.stop_patients()
        if self.runner.running:
            self.runner.cancel()

    def _unqueue_all(self) -> None:
        """Forget the waiting patients: each reads as it did before it was queued."""
        for _, path in self.queue:
            rec = self.session.records.get(path)
            if rec is not None and rec.state is PatientState.QUEUED:
                rec.state = PatientState.NEW if rec.base is None else PatientState.CANCELLED
                self.recordChanged.emit(rec)
        self.queue.clear()

    def _task_valid(self, task: tuple[str, Path]) -> bool:
        kind, path = task
        rec = self.session.records.get(path)
        if rec is None:
            return False
        return kind != "segment" or (rec.base is not None and bool(rec.missing(self.session.thresholds)))

    def _pump(self) -> None:
        if self.runner.running:
            return
        while self.queue and not self._task_valid(self.queue[0]):
            self.queue.pop(0)
        if self.queue:
            if self._pipeline_stale or (self._engine is not None and not self._engine.alive):
                self.pipeline = None  # built for another device, or in a model process that stopped
                self._pipeline_stale = False
            if self.pipeline is None:
                self._start_prepare()
            else:
                kind, path = self.queue.pop(0)
                self._start_task(kind, self.session.records[path])
            return
        self._batch = False
        self.idle.emit()
        if self.export_after_batch:
            self.export_after_batch = False
            QTimer.singleShot(0, self.exportRequested.emit)

    # ==========================================================================================
    # Jobs
    # ==========================================================================================
    def _start_prepare(self) -> None:
        """Load the models (first time) and build the pipeline on the chosen device, in the worker."""
        need = not self.models_loaded
        paths = (self.settings.classifier_path, self.settings.segmenter_path)
        loaded = (self.classifier, self.segmenter)
        device = self.settings.device
        thorough = self.settings.thorough

        engine = self.engine

        def job(cancel: threading.Event, progress: ProgressFn) -> _Prepared:
            warnings: list[tuple[str, str]] = []
            loaded_now = need
            cls: BundleFile | None
            seg: BundleFile | None
            if need:
                cls, seg, warning = _resolve_models(*paths)
                if warning:
                    warnings.append(("Model not loaded", warning))
            else:
                cls, seg = loaded
            if seg is None:
                raise BundleError(paths[1] or "models", "no segmentation model is loaded")
            try:
                pipeline, built = _build_pipeline(engine, cls, seg, device, thorough=thorough)
            except BundleError as exc:  # a network did not load: the defaults, then the shipped ones
                if all(getattr(b, "source", None) == "shipped" for b in (cls, seg) if b is not None):
                    raise
                chosen = any(getattr(b, "source", None) == "file" for b in (cls, seg) if b is not None)
                cls, seg, pipeline, built, why = _fall_back(engine, device, thorough, exc, chosen=chosen)
                loaded_now = True
                warnings.append(("Model not loaded", why))
            return _Prepared(loaded_now, cls, seg, pipeline, warnings + built)

        self.runner.start(job, tag=("prepare", None))
        self.jobStarted.emit("", bool(self.queue))
        self.message.emit("Loading the models …" if need else f"Preparing the models on {device} …", 0)

    def _on_prepared(self, result: object) -> None:
        assert isinstance(result, _Prepared)
        need, cls, seg, pipeline, warnings = (
            result.loaded_now,
            result.classifier,
            result.segmenter,
            result.pipeline,
            result.warnings,
        )
        if need:
            self.models_loaded = True
            model_warning = next((text for title, text in warnings if title == "Model not loaded"), None)
            self._use_models(cls, seg, model_warning)
        self.pipeline = pipeline
        for title, text in warnings:
            if title == DEVICE_FELL_BACK:
                self.settings.device = "auto"
                self.deviceFellBack.emit("auto")
            elif title == THOROUGH_FELL_BACK:
                self.settings.thorough = False
                self.thoroughFellBack.emit()
            else:
                continue
            dialogs.notify(self._dialog_parent, "warning", title, text)
        self.message.emit(f"Models ready on {pipeline.device}", 3000)

    def _on_prepare_failed(self, message: str, details: str) -> None:
        engine_stopped = self._engine is not None and not self._engine.alive
        if not self.models_loaded and not engine_stopped:  # the models are at fault: forget them
            self.models_loaded = True
            self.settings.classifier_path = self.settings.segmenter_path = None
            self.classifier = self.segmenter = None
            self.models_replaced()
        waiting = bool(self.queue)
        self._unqueue_all()
        if engine_stopped:  # not the models' fault: they stay, and the next run starts a new process
            dialogs.notify(self._dialog_parent, "error", "Cannot run the models", message, details)
        elif self.segmenter is None:
            self._no_models(message, quiet=not waiting)
        elif waiting:
            dialogs.notify(self._dialog_parent, "error", "Cannot run the models", message, details)

    def _start_task(self, kind: str, rec: PatientRecord) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        session = self.session
        volume = session.volume if rec is session.current else None
        spacing = session.spacing_for(rec)
        path, series = rec.path, rec.series
        store = self.store
        viewer_thresholds, input_size = session.thresholds, session.model_input_size

        def read() -> tuple[Volume, Spacing | None]:
            """The volume to run (with the entered spacing unless its files give one), and the
            spacing its files give, for a patient not on display (None: known already)."""
            if volume is not None:
                return volume, None
            as_read = read_volume(path, None, series)
            return with_entered_spacing(as_read, spacing), as_read.spacing

        def settle(result: PatientResult, vol: Volume) -> Rethresholded:
            # what the record will show once the job ends, computed here and not on the GUI thread
            t = record_thresholds(viewer_thresholds, result, input_size, done=True)
            return Rethresholded.compute(result, t, vol.spacing)

        if kind == "analyse":
            run = pipeline.replace(thresholds=session.thresholds)

            # A saved analysis by these models is used as it is, unless the user asked for a new run.
            reuse_saved = rec.path not in self._rerun
            self._rerun.discard(rec.path)
            loaded_work = rec.work_loaded  # a patient analysed unopened brings its saved edits along

            def analyse(
                cancel: threading.Event, progress: ProgressFn
            ) -> Generator[Started | SliceResult, None, Rethresholded]:
                vol, file_spacing = read()
                work = None if loaded_work else store.load_reader_work(vol)
                empty = run.empty_result(vol)
                saved = (
                    store.load(
                        vol,
                        segmenter=empty.segmenter,
                        classifier=empty.classifier,
                        flip_tta=empty.flip_tta,
                        ensemble=empty.ensemble,
                    )
                    if reuse_saved
                    else None  # a new run was asked for: the saved one is not even read
                )
                if saved is not None and saved.current:
                    yield Started(saved.result, vol.n_slices, vol.format, work, file_spacing)
                    return settle(saved.result, vol)
                yield Started(empty, vol.n_slices, vol.format, work, file_spacing)
                slices = []
                for s in run.run(vol, progress=progress, cancel=cancel):
                    slices.append(s)
                    yield s
                whole = dataclasses.replace(empty, slices=slices)
                _save(store, vol, whole)
                return settle(whole, vol)

            job: Job = analyse

            rec.state = PatientState.RUNNING
            verb = "Analysing"
        else:
            base = rec.base
            assert base is not None
            indices = rec.missing(session.thresholds)

            def segment(cancel: threading.Event, progress: ProgressFn) -> Rethresholded:
                vol, _ = read()
                done = pipeline.segment_slices(vol, base, indices, progress=progress, cancel=cancel)
                _save(store, vol, done)
                return settle(done, vol)

            job = segment

            verb = f"Segmenting {len(indices)} more slice(s) of"
        self.runner.start(job, tag=(kind, rec))
        self.recordChanged.emit(rec)
        self.jobStarted.emit(f"{rec.patient_id}: %p%", True)
        self.message.emit(f"{verb} {rec.patient_id} on {pipeline.device} …", 0)
        self.stateChanged.emit()

    # ==========================================================================================
    # Results streamed back from the worker
    # ==========================================================================================
    def _on_item(self, obj: object) -> None:
        _, rec = cast(tuple[str, PatientRecord], self.runner.tag)
        session = self.session
        if isinstance(obj, Started):
            if not rec.work_loaded:  # looked up by the job: the patient was analysed unopened
                if obj.work is not None:
                    rec.use_reader_work(obj.work.masks, obj.work.reviewed)
                rec.work_loaded = True
            if obj.file_spacing is not None:
                rec.file_spacing = obj.file_spacing
            rec.start(obj.result, obj.n_slices, obj.format)
            self.recordChanged.emit(rec)
            self.patientStarted.emit(rec)
            return
        assert isinstance(obj, SliceResult)
        shown = rec.add(obj, session.shown_thresholds(rec), session.spacing_for(rec))
        self.recordChanged.emit(rec)
        self.sliceAnalysed.emit(rec, shown.index)

    def _on_finished(self, result: object) -> None:
        kind, rec = cast(tuple[str, PatientRecord], self.runner.tag)
        if kind == "prepare":
            self._on_prepared(result)
            return
        assert isinstance(result, Rethresholded)
        if kind == "segment":
            rec.base = result.base
        rec.state = PatientState.DONE
        self.session.apply(rec, ready=result)
        self.recordChanged.emit(rec)
        self.patientFinished.emit(rec, kind)
        self.stateChanged.emit()

    def _on_failed(self, message: str, details: str) -> None:
        kind, rec = cast(tuple[str, PatientRecord], self.runner.tag)
        if kind == "prepare":
            self._on_prepare_failed(message, details)
            return
        if _reset_meanwhile(rec):  # the models changed while it ran: its results are gone anyway
            self.message.emit(f"{rec.patient_id}: the previous models' run failed ({message})", 8000)
            return
        rec.state = PatientState.FAILED if kind == "analyse" else PatientState.DONE
        rec.error = message
        self.recordChanged.emit(rec)
        if rec is self.session.current or not self._batch:
            dialogs.notify(
                self._dialog_parent,
                "error",
                "Analysis failed",
                f"The analysis of {rec.patient_id} failed:\n\n{message}",
                details,
            )
        else:
            self.message.emit(f"{rec.patient_id}: analysis failed ({message})", 8000)

    def _on_cancelled(self) -> None:
        kind, rec = cast(tuple[str, PatientRecord], self.runner.tag)
        if kind == "prepare":
            return
        if _reset_meanwhile(rec):
            pass  # the models changed while it ran: not analysed by the active ones
        elif kind != "analyse":
            rec.state = PatientState.DONE
        elif ("analyse", rec.path) not in self.queue:  # else queued again while it was stopping
            rec.state = PatientState.CANCELLED
        self.recordChanged.emit(rec)
        self.patientCancelled.emit(rec)
        self.message.emit(f"{rec.patient_id}: analysis cancelled", 5000)
