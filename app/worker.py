"""Background work off the GUI thread, on superqt's workers: the window never blocks.

A *job* is a function ``job(cancel, progress)`` that runs in a worker thread of superqt
(:func:`superqt.utils.create_worker`): a generator function streams each ``yield`` to the GUI
(a :class:`~brainseg_core.inference.SliceResult` as it is ready, say) and its ``return`` value is
the result; a plain function just returns. ``cancel`` is a :class:`threading.Event` to pass to the
core's ``cancel=`` arguments; ``progress(done, total)`` is the core's progress callback and may be
called from the worker thread. :class:`JobRunner` runs one job at a time and turns superqt's
signals into the few outcomes the viewer acts on: an item, progress, finished, failed (with a
message a reader can act on), cancelled, and stopped.

Jobs run below the window's CPU priority (:func:`run_in_background`): on a two-core machine the
networks would otherwise take the cores the window needs to draw the next slice, and stepping
through slices while a patient is analysed would stutter. A job still gets the whole machine when
the reader is not interacting.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QThread, QThreadPool, Signal, Slot
from superqt.utils import FunctionWorker, GeneratorWorker, create_worker

from brainseg_core.engine import BACKGROUND_NICE
from brainseg_core.errors import BrainSegError, Cancelled
from brainseg_core.progress import ProgressFn

log = logging.getLogger(__name__)

#: A job: ``job(cancel, progress)``, a generator function (yields stream to the GUI, the return
#: value is the result) or a plain function (its return value is the result).
Job = Callable[[threading.Event, ProgressFn], Generator[object, None, object] | object]

#: How much lower than the window's a job's CPU priority is, in nice steps (Linux): the model
#: process's (:data:`brainseg_core.engine.BACKGROUND_NICE`). ``bench/gui.py`` on two cores, when
#: the networks still ran in a job thread, stepping through a finished patient every 50 ms while
#: another patient's slices went through them: slice-switch p95 19.0-19.1 ms ten steps below,
#: 22.2-26.6 ms at the window's priority, 18.1-18.2 ms with nothing running (two launches each).


def run_in_background() -> None:
    """Lower the calling thread's CPU priority below the window's, for good.

    On Linux, where each thread has its own nice value, the thread (and the threads it starts
    later, such as torch's intra-op workers) goes :data:`BACKGROUND_NICE` steps below the main
    thread; elsewhere Qt's low thread priority is used. A failure (a platform without the call) is
    ignored: the job then just runs at normal priority.
    """
    if sys.platform.startswith("linux"):
        main = threading.main_thread().native_id
        if main is None:  # only before the interpreter's main thread has started
            return
        this = threading.get_native_id()
        try:
            target = min(19, os.getpriority(os.PRIO_PROCESS, main) + BACKGROUND_NICE)
            if os.getpriority(os.PRIO_PROCESS, this) < target:
                os.setpriority(os.PRIO_PROCESS, this, target)
        except OSError as exc:
            log.debug("could not lower the worker thread's priority: %s", exc)
        return
    thread = QThread.currentThread()
    if thread is not None:
        thread.setPriority(QThread.Priority.LowPriority)


class _RuntimeErrorInJob(Exception):
    """A job's :class:`RuntimeError`, carried past superqt's generator worker.

    superqt (0.7-0.9) takes a :class:`RuntimeError` out of a generator for a deleted Qt object:
    it warns and returns without emitting ``errored`` or ``finished``, so the job would never end
    (the patient stuck in "Analysing", Cancel dead, no further job). torch raises
    :class:`RuntimeError` for most of its failures, so a generator job re-raises it as this,
    and :class:`JobRunner` unwraps it.
    """

    def __init__(self, error: RuntimeError) -> None:
        super().__init__(str(error))
        self.error = error


def _in_background(job: Job) -> Job:
    """``job``, lowering its worker thread's priority first (a generator function stays one)."""
    if inspect.isgeneratorfunction(job):

        def stream(cancel: threading.Event, progress: ProgressFn) -> Generator[object, None, object]:
            run_in_background()
            try:
                return (yield from job(cancel, progress))
            except RuntimeError as exc:
                raise _RuntimeErrorInJob(exc) from exc

        return stream

    def call(cancel: threading.Event, progress: ProgressFn) -> object:
        run_in_background()
        return job(cancel, progress)

    return call


class JobRunner(QObject):
    """Runs one job at a time in a superqt worker and relays its outcome to the GUI thread.

    Signals:
        started: a job started.
        item: an object the job yielded.
        progress: ``(done, total)``.
        finished: the job's return value (not emitted when it failed or was cancelled).
        failed: ``(message, details)``; details holds a traceback for unexpected errors.
        cancelled: the job stopped because :meth:`cancel` was called.
        stopped: the job has ended, whatever the outcome (emitted last).
    """

    started = Signal()
    item = Signal(object)
    progress = Signal(int, int)
    finished = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    stopped = Signal()
    _progress_from_worker = Signal(int, int)  # emitted in the worker thread, delivered here

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._worker: GeneratorWorker | FunctionWorker | None = None
        self._cancel: threading.Event | None = None
        self.tag: Any = None
        self._outcome_sent = False  # one of finished / failed / cancelled per job
        self._progress_from_worker.connect(self.progress)

    @property
    def running(self) -> bool:
        """True while a job runs (until :attr:`stopped`)."""
        return self._worker is not None

    @property
    def cancelling(self) -> bool:
        """True from :meth:`cancel` until the cancelled job stops."""
        return self._cancel is not None and self._cancel.is_set()

    def start(self, job: Job, tag: object = None) -> None:
        """Start ``job`` in a worker thread.

        Args:
            job: the job (see the module docstring).
            tag: any value describing the job (kept in :attr:`tag` until the next start).

        Raises:
            RuntimeError: if a job is already running (cancel and :meth:`wait` first).
        """
        if self.running:
            raise RuntimeError("a job is already running; cancel it and wait before starting another")
        cancel = threading.Event()
        emit = self._progress_from_worker.emit
        worker = create_worker(_in_background(job), cancel, emit, _start_thread=False, _ignore_errors=True)
        if isinstance(worker, GeneratorWorker):
            worker.yielded.connect(self._on_item)
            worker.aborted.connect(self._on_aborted)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker, self._cancel, self.tag = worker, cancel, tag
        self._outcome_sent = False
        worker.start()
        self.started.emit()

    def cancel(self) -> None:
        """Ask the running job to stop: at its next ``yield``, or at the core's next check."""
        if self._cancel is not None:
            self._cancel.set()
        if isinstance(self._worker, GeneratorWorker):
            self._worker.quit()

    def wait(self, timeout_ms: int = 30_000) -> bool:
        """Block until the job's thread is done (used when the window closes).

        The job's last signals, still queued for the GUI thread, are delivered before this
        returns (an item after :meth:`cancel` is dropped as ever), so none of them can arrive
        later and be taken for another job's.

        Returns:
            True when no job is left running.
        """
        if self._worker is None:
            return True
        if not QThreadPool.globalInstance().waitForDone(timeout_ms):
            return False
        QCoreApplication.sendPostedEvents(self, QEvent.Type.MetaCall)
        self._worker = self._cancel = None
        return True

    # -- superqt's signals, in the GUI thread --------------------------------------------------
    @Slot(object)
    def _on_item(self, obj: object) -> None:
        if not self.cancelling:
            self.item.emit(obj)

    @Slot(object)
    def _on_returned(self, result: object) -> None:
        self._send_outcome(lambda: self.cancelled.emit() if self.cancelling else self.finished.emit(result))

    @Slot(object)
    def _on_errored(self, exc: Exception) -> None:
        if isinstance(exc, _RuntimeErrorInJob):
            exc = exc.error
        if isinstance(exc, Cancelled):
            self._send_outcome(self.cancelled.emit)
        elif isinstance(exc, BrainSegError):
            self._send_outcome(lambda: self.failed.emit(str(exc), ""))
        else:  # a bug: keep the app alive, show and log it
            details = "".join(traceback.format_exception(exc))
            log.error("background job failed:\n%s", details)
            self._send_outcome(lambda: self.failed.emit(f"{type(exc).__name__}: {exc}", details))

    @Slot()
    def _on_aborted(self, _: object = None) -> None:
        self._send_outcome(self.cancelled.emit)

    @Slot()
    def _on_finished(self, _: object = None) -> None:
        if self._worker is None:  # wait() already tidied up
            return
        if not self._outcome_sent:  # quit() before the generator's first step
            self._send_outcome(self.cancelled.emit)
        self._worker = self._cancel = None
        self.stopped.emit()

    def _send_outcome(self, emit: Callable[[], None]) -> None:
        if not self._outcome_sent:
            self._outcome_sent = True
            emit()
