"""Reading the displayed patient in the background: :class:`PatientOpener`.

The window asks for a patient; the opener reads its volume in a worker (so a large patient never
freezes the window), drops the result when the reader has moved on to another patient meanwhile,
and reads the newest request after a cancelled one. It tells the window what happened through
two signals; the window shows it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from brainseg_app.session import PatientRecord, read_volume
from brainseg_app.viewer_model import ViewerModel
from brainseg_app.worker import JobRunner
from brainseg_core.io import Volume
from brainseg_core.progress import ProgressFn


class PatientOpener(QObject):
    """Reads the patient the viewer displays, one at a time, newest request wins.

    Args:
        model: the viewer's state (which patient is displayed).
        parent: owner.

    Signals:
        loaded: ``(record, volume)``: the displayed patient's volume was read.
        failed: ``(record, message, details, displayed)``: a patient could not be read;
            ``displayed`` says whether it is still the one on screen.
    """

    loaded = Signal(object, object)
    failed = Signal(object, str, str, bool)

    def __init__(self, model: ViewerModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.runner = JobRunner(self)
        self._pending: Path | None = None
        self.runner.finished.connect(self._on_read)
        self.runner.failed.connect(self._on_failed)
        self.runner.stopped.connect(self._on_stopped)

    @property
    def running(self) -> bool:
        """True while a patient is being read."""
        return self.runner.running

    def read(self, rec: PatientRecord) -> None:
        """Read ``rec``'s volume (after the running read, cancelled, if there is one)."""
        if self.runner.running:
            self._pending = rec.path
            self.runner.cancel()
            return
        path, series = rec.path, rec.series

        def job(cancel: threading.Event, progress: ProgressFn) -> Volume:
            return read_volume(path, None, series)

        self.runner.start(job, tag=path)

    def _displayed(self, path: object) -> PatientRecord | None:
        rec = self.model.current
        return rec if rec is not None and rec.path == path and self._pending is None else None

    def _on_read(self, volume: object) -> None:
        assert isinstance(volume, Volume)
        rec = self._displayed(self.runner.tag)
        if rec is not None:  # else the reader moved on to another patient meanwhile
            self.loaded.emit(rec, volume)

    def _on_failed(self, message: str, details: str) -> None:
        rec = self.model.records.get(self.runner.tag)
        if rec is not None:
            self.failed.emit(rec, message, details, self._displayed(rec.path) is rec)

    def _on_stopped(self) -> None:
        if self._pending is not None:
            path, self._pending = self._pending, None
            rec = self.model.current
            if rec is not None and rec.path == path:
                self.read(rec)
