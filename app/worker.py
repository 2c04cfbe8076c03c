"""Background work in a QThread: inference, opening folders and exports never block the window.

A *job* is a plain function ``job(report: JobReport) -> object`` that runs in a worker thread.
It reports progress and streamed items through ``report`` and checks ``report.cancel`` (a
``threading.Event``) between steps; :class:`JobRunner` turns all of that into Qt signals delivered
in the GUI thread.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from brainseg_core.errors import BrainSegError, Cancelled

log = logging.getLogger(__name__)


class _Emitter(QObject):
    item = Signal(object)
    progress = Signal(int, int)


@dataclass
class JobReport:
    """What a running job uses to talk to the GUI.

    Attributes:
        cancel: set when the user cancels; pass it to core functions as ``cancel=``.
    """

    _emitter: _Emitter
    cancel: threading.Event = field(default_factory=threading.Event)

    def item(self, obj: object) -> None:
        """Stream one result (e.g. a ``SliceResult``) to the GUI."""
        self._emitter.item.emit(obj)

    def progress(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` steps (the core's ``progress`` callback signature)."""
        self._emitter.progress.emit(int(done), int(total))


Job = Callable[[JobReport], object]


class _Worker(QObject):
    done = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()

    def __init__(self, job: Job, report: JobReport) -> None:
        super().__init__()
        self._job = job
        self._report = report

    @Slot()
    def run(self) -> None:
        try:
            result = self._job(self._report)
        except Cancelled:
            self.cancelled.emit()
        except BrainSegError as exc:
            self.failed.emit(str(exc), "")
        except Exception as exc:  # a bug: keep the app alive, show and log it
            details = traceback.format_exc()
            log.error("background job failed:\n%s", details)
            self.failed.emit(f"{type(exc).__name__}: {exc}", details)
        else:
            if self._report.cancel.is_set():
                self.cancelled.emit()
            else:
                self.done.emit(result)


class JobRunner(QObject):
    """Runs one job at a time in its own QThread and relays its signals to the GUI thread.

    Signals:
        started: a job started.
        item: an object streamed by the job.
        progress: ``(done, total)``.
        finished: the job's return value (not emitted when it failed or was cancelled).
        failed: ``(message, details)``; details holds a traceback for unexpected errors.
        cancelled: the job stopped because :meth:`cancel` was called.
        stopped: the thread has ended, whatever the outcome (emitted last).
    """

    started = Signal()
    item = Signal(object)
    progress = Signal(int, int)
    finished = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    stopped = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: _Worker | None = None
        self._report: JobReport | None = None
        self.tag: object = None

    @property
    def running(self) -> bool:
        """True while a job's thread is alive."""
        return self._thread is not None

    @property
    def cancelling(self) -> bool:
        """True from :meth:`cancel` until the cancelled job's thread ends."""
        return self._report is not None and self._report.cancel.is_set()

    def start(self, job: Job, tag: object = None) -> None:
        """Start ``job`` in a new worker thread.

        Args:
            job: the function to run; it receives a :class:`JobReport`.
            tag: any value describing the job (kept in :attr:`tag` until the next start).

        Raises:
            RuntimeError: if a job is already running (cancel and :meth:`wait` first).
        """
        if self.running:
            raise RuntimeError("a job is already running; cancel it and wait before starting another")
        emitter = _Emitter()
        report = JobReport(emitter)
        worker = _Worker(job, report)
        thread = QThread(self)
        worker.moveToThread(thread)
        emitter.moveToThread(thread)
        emitter.item.connect(self._on_item)
        emitter.progress.connect(self._on_progress)
        worker.done.connect(self._on_done)
        worker.failed.connect(self._on_failed)
        worker.cancelled.connect(self._on_cancelled)
        for sig in (worker.done, worker.failed, worker.cancelled):
            # Direct: quit from the worker thread itself, so wait() in the GUI thread cannot deadlock.
            sig.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.started.connect(worker.run)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker, self._report, self.tag = thread, worker, report, tag
        self._emitter: _Emitter | None = emitter
        thread.start()
        self.started.emit()

    def cancel(self) -> None:
        """Ask the running job to stop at its next check (no effect when idle)."""
        if self._report is not None:
            self._report.cancel.set()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until the thread ends (used when the window closes).

        Returns:
            True when no thread is left running.
        """
        thread = self._thread
        if thread is None:
            return True
        ok = thread.wait(timeout_ms)
        if ok:
            self._cleanup()
        return ok

    @Slot(object)
    def _on_item(self, obj: object) -> None:
        if self._report is not None and not self._report.cancel.is_set():
            self.item.emit(obj)

    @Slot(int, int)
    def _on_progress(self, done: int, total: int) -> None:
        self.progress.emit(done, total)

    @Slot(object)
    def _on_done(self, result: object) -> None:
        self.finished.emit(result)

    @Slot(str, str)
    def _on_failed(self, message: str, details: str) -> None:
        self.failed.emit(message, details)

    @Slot()
    def _on_cancelled(self) -> None:
        self.cancelled.emit()

    @Slot()
    def _on_thread_finished(self) -> None:
        if self._thread is not None:
            self._cleanup()
            self.stopped.emit()

    def _cleanup(self) -> None:
        thread, worker, emitter = self._thread, self._worker, getattr(self, "_emitter", None)
        self._thread = self._worker = self._report = None
        self._emitter = None
        for obj in (worker, emitter):
            if obj is not None:
                obj.deleteLater()
        if thread is not None:
            thread.deleteLater()
