"""Keeping the reader's work: :class:`ReaderWorkKeeper`.

The reader's edited masks and reviewed slices are saved beside the analysis in the result store
(:meth:`brainseg_core.result_store.ResultStore.save_reader_work`) a moment after the last change,
when another patient is opened and when the window closes; they come back when the patient is
opened again. "Save corrections as training data" writes every corrected patient in the dataset's
own layout (:func:`brainseg_core.export.export_training_data`), never over a source.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QFileDialog, QMainWindow

from brainseg_app import dialogs
from brainseg_app.analysis import AnalysisController
from brainseg_app.session import PatientRecord, read_volume
from brainseg_app.settings import Settings
from brainseg_app.viewer_model import ViewerModel
from brainseg_core.errors import BrainSegError
from brainseg_core.io import Volume

if TYPE_CHECKING:
    from brainseg_core.result_store import ReaderWork

log = logging.getLogger(__name__)

#: Edits are saved this long after the last change (a stroke is many changes).
SAVE_DELAY_MS = 400


@dataclass(frozen=True)
class _Unsaved:
    """The reader's work on one volume, as it was when its save was tried, and why that failed."""

    patient_id: str
    volume: Volume
    work: ReaderWork
    error: str = ""


class ReaderWorkKeeper(QObject):
    """Saves and restores the reader's edits and reviewed slices, and exports corrections.

    Args:
        model: the viewer's state (patients, displayed volume, spacing).
        settings: remembers where corrections were saved.
        analyser: owns the result store.
        window: parent of the dialogs; its status bar shows what happened.
    """

    def __init__(
        self, model: ViewerModel, settings: Settings, analyser: AnalysisController, window: QMainWindow
    ) -> None:
        super().__init__(window)
        self.model = model
        self.settings = settings
        self.analyser = analyser
        self.window = window
        # the displayed patient's changes, saved a moment after the last one
        self._pending: tuple[PatientRecord, Volume] | None = None
        # work whose save failed (a full or read-only disc), as it was then, by the volume it was
        # made on (volume_key): tried again at every save, whichever patient or series is shown
        self._failed: dict[str, _Unsaved] = {}
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(SAVE_DELAY_MS)
        self._timer.timeout.connect(self.save)

    def changed(self, rec: PatientRecord) -> None:
        """``rec``'s edits or reviewed slices changed: save them soon (if it is displayed)."""
        volume = self.model.volume
        if rec is self.model.current and volume is not None:
            self._pending = (rec, volume)
            self._timer.start()

    @property
    def unsaved(self) -> list[str]:
        """The work that could not be saved, as ``"<patient id> (<why>)"``."""
        return [f"{u.patient_id} ({u.error})" for u in self._failed.values()]

    def save(self) -> None:
        """Save the displayed patient's pending changes, and any work whose save failed, now.

        A failed save is reported in the status bar; for a disc error the work is kept as it was
        and tried again at the next save (after any patient's next change, on opening another
        patient or series, on quitting). Work the store refuses (``ValueError``) is only reported.
        """
        from brainseg_core.result_store import ReaderWork, volume_key

        self._timer.stop()
        pending, self._pending = self._pending, None
        todo: list[tuple[str | None, _Unsaved]] = []  # (key in _failed, or None: not in it)
        if pending is not None:
            rec, volume = pending
            if self._failed:  # this newer work on the volume replaces a copy that could not be saved
                self._failed.pop(volume_key(volume), None)
            work = ReaderWork(rec.edits.masks(), frozenset(rec.reviewed))
            todo.append((None, _Unsaved(rec.patient_id, volume, work)))
        todo += list(self._failed.items())
        failed: list[str] = []
        for key, item in todo:
            try:
                self.analyser.store.save_reader_work(item.volume, item.work)
            except OSError as exc:
                log.warning("%s: the reader's work was not saved: %s", item.patient_id, exc)
                self._failed[key or volume_key(item.volume)] = dataclasses.replace(item, error=str(exc))
                failed.append(f"{item.patient_id}: {exc}")
                continue
            except ValueError as exc:  # the store refuses this work: retrying cannot help
                log.error("%s: the reader's work cannot be saved: %s", item.patient_id, exc)
                failed.append(f"{item.patient_id}: {exc}")
            if key is not None:
                del self._failed[key]
        if failed:
            self.window.statusBar().showMessage(
                f"Your edits and review marks could not be saved ({'; '.join(failed)})", 10000
            )

    def restore(self, rec: PatientRecord, volume: Volume) -> None:
        """Take the reader's saved edits and reviewed slices of ``rec`` (once per opened record):
        work on this volume that could not be saved yet, else the saved work."""
        if rec.work_loaded:
            return
        rec.work_loaded = True
        work: ReaderWork | None = None
        if self._failed:
            from brainseg_core.result_store import volume_key

            unsaved = self._failed.get(volume_key(volume))
            work = None if unsaved is None else unsaved.work
        if work is None:
            work = self.analyser.store.load_reader_work(volume)
        if work is not None:
            rec.use_reader_work(work.masks, work.reviewed)

    # -- corrections as training data ------------------------------------------------------------
    def corrected(self) -> list[PatientRecord]:
        """The analysed patients with at least one edited mask."""
        return [r for r in self.model.records.values() if r.edits and r.shown is not None and r.complete]

    def save_corrections_dialog(self) -> list[Path]:
        """Ask for a folder and write every corrected patient there as training data.

        Returns:
            The files written.
        """
        if not self.corrected():
            dialogs.notify(
                self.window,
                "info",
                "No corrections",
                "No analysed patient has an edited mask yet. Edit a mask (B: brush, E: eraser) first.",
            )
            return []
        folder = QFileDialog.getExistingDirectory(
            self.window,
            "Save corrections as training data",
            self.settings.corrections_dir or self.settings.export_dir or str(Path.home()),
        )
        return self.save_corrections(Path(folder)) if folder else []

    def save_corrections(self, folder: Path, *, overwrite: bool = True) -> list[Path]:
        """Write every corrected patient into ``folder`` in the dataset's layout (never a source).

        Args:
            folder: the training-data root (``<patient>/<patient>_<n>.tif`` + ``_mask.tif``).
            overwrite: replace an earlier copy of a patient written there by BrainSeg.

        Returns:
            The files written.
        """
        from brainseg_core.export import export_training_data

        self.save()
        written: list[Path] = []
        problems: list[str] = []
        for rec in self.corrected():
            assert rec.shown is not None  # corrected() keeps analysed patients only
            try:
                volume = (
                    self.model.volume
                    if rec is self.model.current and self.model.volume is not None
                    else read_volume(rec.path, self.model.spacing_for(rec), rec.series)
                )
                written += export_training_data(volume, rec.shown, folder, overwrite=overwrite)
            except BrainSegError as exc:
                problems.append(f"{rec.patient_id}: {exc}")
        if problems:
            dialogs.notify(self.window, "error", "Corrections not saved", "\n\n".join(problems))
        if written:
            self.settings.corrections_dir = str(folder)
            self.window.statusBar().showMessage(
                f"Saved {len(written)} files of corrected patients to {folder}", 8000
            )
        return written
