"""The viewer's export controller: which patients to export, and the dialogs that do it.

:class:`Exporter` decides what "Export" and "Export all" mean for the opened patients (offering
to analyse the others first), opens :class:`~brainseg_app.dialogs.ExportDialog` with the volumes,
voxel sizes and windows the reader used, and remembers the destination and formats.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QMainWindow

from brainseg_app import dialogs
from brainseg_app.analysis import AnalysisController
from brainseg_app.session import PatientRecord, PatientState, read_volume
from brainseg_app.settings import Settings
from brainseg_app.viewer_model import ViewerModel
from brainseg_core.io import CHANNELS, PatientFormat, Volume

FLAIR = CHANNELS.index("FLAIR")


class Exporter(QObject):
    """Opens export dialogs for the viewer's patients.

    Args:
        model: the viewer's state (patients, volumes, spacing, windows).
        settings: remembered destination and formats.
        analyser: runs "analyse the others first" before an export of every patient.
        window: the main window (parent of the dialogs, status bar for messages).

    Attributes:
        dialogs: the export dialogs open now (the window cancels their work when it closes).
    """

    def __init__(
        self, model: ViewerModel, settings: Settings, analyser: AnalysisController, window: QMainWindow
    ) -> None:
        super().__init__(window)
        self.model = model
        self.settings = settings
        self.analyser = analyser
        self.window = window
        self.dialogs: list[dialogs.ExportDialog] = []

    def export_current(self) -> dialogs.ExportDialog | None:
        """Export the displayed patient's results (a message says why not, when it cannot)."""
        rec = self.model.current
        if rec is None or rec.shown is None or not rec.complete:
            dialogs.notify(
                self.window,
                "info",
                "Nothing to export",
                "Open a patient and let its analysis finish before exporting.",
            )
            return None
        return self.open([rec])

    def export_all(self) -> dialogs.ExportDialog | None:
        """Export every analysed patient; offer to analyse the others first.

        Returns:
            The dialog, or None when nothing can be exported yet or the others are analysed first
            (the dialog then opens when they are done).
        """
        records = self.model.records
        done = [r for r in records.values() if r.state is PatientState.DONE and r.complete]
        rest = [r for r in records.values() if r not in done]
        if (
            rest
            and not self.analyser.runner.running
            and dialogs.ask(
                self.window,
                "Analyse the rest?",
                f"{len(done)} of {len(records)} patients are analysed. Analyse the other {len(rest)} "
                "first and export all of them when that is done?\n\n(No: export the analysed ones now.)",
            )
        ):
            self.analyser.export_after_batch = True
            self.analyser.analyse_all()
            return None
        if not done:
            dialogs.notify(self.window, "info", "Nothing to export", "No patient has been analysed yet.")
            return None
        return self.open(done)

    def open(self, records: list[PatientRecord]) -> dialogs.ExportDialog:
        """Open the export dialog for ``records`` (non-modal; its export runs in the background)."""
        model = self.model
        current, volume = model.current, model.volume
        spacings = {rec.path: model.spacing_for(rec) for rec in records}

        def volume_for(rec: PatientRecord) -> Volume:
            if rec is current and volume is not None:
                return volume
            return read_volume(rec.path, spacings[rec.path], rec.series)

        default = self.settings.export_dir or str(Path.home() / "BrainSeg exports")
        dlg = dialogs.ExportDialog(
            records,
            volume_for,
            window_for=lambda rec: model.window_of(rec.path, FLAIR),
            formats=self.settings.export_formats,
            destination=Path(default) if default else None,
            dicom_input=all(rec.format is PatientFormat.DICOM for rec in records),
            parent=self.window,
        )
        dlg.exported.connect(lambda files: self._on_exported(dlg, files))
        dlg.finished.connect(lambda _r: self.dialogs.remove(dlg) if dlg in self.dialogs else None)
        self.dialogs.append(dlg)
        dlg.show()
        return dlg

    def _on_exported(self, dlg: dialogs.ExportDialog, files: list[Path]) -> None:
        self.settings.export_dir = dlg.destination.text().strip()
        self.settings.export_formats = dlg.formats()
        self.window.statusBar().showMessage(f"Exported {len(files)} files to {dlg.destination.text()}", 8000)
