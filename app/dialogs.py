"""Dialogs: messages, export, pixel spacing, keyboard shortcuts, model cards, and the crash hook.

Every message the viewer shows goes through :func:`notify` / :func:`ask`, so errors look the same
everywhere and tests can capture them by patching ``QMessageBox``.
"""

from __future__ import annotations

import html
import json
import logging
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from brainseg_app.session import PatientRecord
from brainseg_app.worker import JobRunner
from brainseg_core.errors import ExportError
from brainseg_core.export import ExportFormat, check_export_folder
from brainseg_core.io import Volume
from brainseg_core.io.sequences import MODEL_SEQUENCES
from brainseg_core.io.sequences import Sequence as MRSequence
from brainseg_core.progress import ProgressFn
from brainseg_core.spacing import Spacing

if TYPE_CHECKING:  # the DICOM reader loads only when a study is opened
    from brainseg_core.io.dicom import SeriesInfo

log = logging.getLogger(__name__)

_ICONS = {
    "info": QMessageBox.Icon.Information,
    "warning": QMessageBox.Icon.Warning,
    "error": QMessageBox.Icon.Critical,
}


def notify(parent: QWidget | None, level: str, title: str, text: str, details: str = "") -> None:
    """Show a message box (modal) and log it.

    Args:
        parent: owner window.
        level: ``"info"``, ``"warning"`` or ``"error"``.
        title: window title.
        text: the message, phrased for the user.
        details: optional longer text (e.g. a traceback or the list of skipped files).
    """
    log.log(logging.ERROR if level == "error" else logging.INFO, "%s: %s", title, text)
    box = QMessageBox(parent)
    box.setIcon(_ICONS.get(level, QMessageBox.Icon.Information))
    box.setWindowTitle(title)
    box.setText(text)
    if details:
        box.setDetailedText(details)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.exec()


def ask(parent: QWidget | None, title: str, text: str) -> bool:
    """Ask a yes/no question.

    Returns:
        True when the user answered Yes.
    """
    answer = QMessageBox.question(
        parent,
        title,
        text,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


# ------------------------------------------------------------------------------------------------
# Crash hook


_in_hook = False


def install_excepthook(parent: Callable[[], QWidget | None], log_file: Path | None = None) -> None:
    """Show unexpected exceptions in a dialog and log them, instead of letting the app die.

    Args:
        parent: returns the window to attach dialogs to (may return None).
        log_file: shown to the user as where the full traceback was written.
    """

    def hook(etype: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        global _in_hook
        if issubclass(etype, KeyboardInterrupt):
            sys.__excepthook__(etype, value, tb)
            return
        text = "".join(traceback.format_exception(etype, value, tb))
        log.error("Unhandled exception:\n%s", text)
        if _in_hook:  # an error while showing the error: do not recurse
            return
        _in_hook = True
        try:
            where = f" The details were written to {log_file}." if log_file else ""
            notify(
                parent(),
                "error",
                "Unexpected error",
                f"{etype.__name__}: {value}\n\nBrainSeg keeps running, but the last action may not have "
                f"finished.{where}",
                details=text,
            )
        except Exception:  # never let the hook itself crash the app
            log.exception("could not show the error dialog")
        finally:
            _in_hook = False

    sys.excepthook = hook


# ------------------------------------------------------------------------------------------------
# Pixel spacing


class SpacingDialog(QDialog):
    """Enter the pixel spacing and slice thickness of a patient or its dataset (TIFFs carry none).

    Args:
        spacing: the voxel size in use, if any.
        patient: the patient's id.
        dataset: the folder holding the patient.
        parent: owner window.
    """

    def __init__(self, spacing: Spacing | None, patient: str, dataset: Path, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Pixel spacing")
        self.cleared = False
        layout = QVBoxLayout(self)
        info = QLabel(
            f"TIFF slices carry no physical size. Enter the voxel size of {patient}'s scans to get "
            "tumour areas in mm² and volumes in mL. It is remembered, and written into exports."
        )
        info.setWordWrap(True)
        layout.addWidget(info)
        form = QFormLayout()
        self.row = self._spin("Pixel spacing between rows (mm)")
        self.col = self._spin("Pixel spacing between columns (mm)")
        self.thickness = self._spin("Distance between slices (mm)", maximum=20.0)
        row, col = spacing.pixel_mm if spacing else (1.0, 1.0)
        thick = spacing.thickness_mm if spacing and spacing.thickness_mm else 1.0
        self.row.setValue(row)
        self.col.setValue(col)
        self.thickness.setValue(thick)
        form.addRow("Row spacing", self.row)
        form.addRow("Column spacing", self.col)
        form.addRow("Slice thickness", self.thickness)
        layout.addLayout(form)
        self.whole_dataset = QCheckBox(f"Use it for every patient in {dataset.name or dataset}")
        self.whole_dataset.setToolTip(
            "Otherwise it applies to this patient only; a patient's own value wins over the dataset's"
        )
        layout.addWidget(self.whole_dataset)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        clear = buttons.addButton("Forget", QDialogButtonBox.ButtonRole.ResetRole)
        clear.setToolTip("Forget the spacing (of this patient, or of the dataset when ticked below)")
        clear.clicked.connect(self._clear)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    @staticmethod
    def _spin(tip: str, maximum: float = 10.0) -> QDoubleSpinBox:
        s = QDoubleSpinBox()
        s.setRange(0.01, maximum)
        s.setDecimals(3)
        s.setSingleStep(0.1)
        s.setSuffix(" mm")
        s.setToolTip(tip)
        return s

    def _clear(self) -> None:
        self.cleared = True
        self.accept()

    def value(self) -> Spacing | None:
        """The entered voxel size, None when the user chose Forget."""
        if self.cleared:
            return None
        return Spacing(self.row.value(), self.col.value(), self.thickness.value())


# ------------------------------------------------------------------------------------------------
# DICOM series


class SeriesDialog(QDialog):
    """Confirm which series of a DICOM study feed the models' channels (guessed from the headers).

    Args:
        study: the study folder.
        series: every series of the study (:func:`brainseg_core.io.dicom.series_plan`).
        picked: the series in use per sequence (the guesses, or an earlier choice).
        parent: owner window.
    """

    def __init__(
        self,
        study: Path,
        series: Sequence[SeriesInfo],
        picked: Mapping[MRSequence, SeriesInfo],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("DICOM series")
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)
        info = QLabel(
            f"BrainSeg guessed the sequences of <b>{html.escape(study.name)}</b> from the series "
            "descriptions. Check them: the models read pre-contrast T1, FLAIR and post-contrast T1. "
            "A missing pre- or post-contrast series is replaced by FLAIR."
        )
        info.setWordWrap(True)
        layout.addWidget(info)
        form = QFormLayout()
        usable = [s for s in series if s.problem is None]
        self.combos: dict[MRSequence, QComboBox] = {}
        for seq in MODEL_SEQUENCES:
            box = QComboBox()
            if seq is not MRSequence.FLAIR:
                box.addItem("none (use FLAIR)", "")
            for s in usable:
                guess = f", looks like {s.sequence.label}" if s.sequence is not None else ""
                box.addItem(f"{s.name} ({s.n_instances} images{guess})", s.series_uid)
            chosen = picked.get(seq)
            index = box.findData(chosen.series_uid if chosen is not None else "")
            box.setCurrentIndex(max(index, 0))
            box.setToolTip(f"The series read as {seq.label}")
            form.addRow(seq.label, box)
            self.combos[seq] = box
        layout.addLayout(form)
        left_out = [s for s in series if s.problem is not None]
        if left_out:
            note = QLabel("Not usable: " + "; ".join(html.escape(f"{s.name}: {s.problem}") for s in left_out))
            note.setWordWrap(True)
            layout.addWidget(note)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Use these series")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def value(self) -> dict[str, str]:
        """The chosen series: sequence name (``pre``, ``flair``, ``post``) to SeriesInstanceUID;
        a sequence left to FLAIR is absent."""
        return {seq.value: uid for seq, box in self.combos.items() if (uid := box.currentData())}


# ------------------------------------------------------------------------------------------------
# Shortcuts and model cards


class ShortcutsDialog(QDialog):
    """A table of every keyboard shortcut and mouse binding."""

    def __init__(self, rows: Sequence[tuple[str, str]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.resize(520, 620)
        layout = QVBoxLayout(self)
        self.table = QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["Keys / mouse", "Action"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for r, (keys, action) in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(keys))
            self.table.setItem(r, 1, QTableWidgetItem(action))
        self.table.resizeColumnToContents(0)
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


def _value_text(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        if len(value) > 8:
            return f"({len(value)} entries)"
        return ", ".join(f"{k} {_value_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        if len(value) > 8:
            return f"({len(value)} items)"
        return ", ".join(_value_text(v) for v in value)
    return str(value)


def _dict_table(data: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}&nbsp;&nbsp;</td><td>{html.escape(_value_text(v))}</td></tr>"
        for k, v in data.items()
    )
    return f"<table>{rows}</table>"


def input_text(card: object) -> str:
    """What the network reads, e.g. ``"256 px; pre-contrast, FLAIR, post-contrast of each slice and
    1 neighbouring slice on either side"``."""
    size = getattr(card, "input_size", "?")
    channels = ", ".join(getattr(card, "channel_order", []))
    k = int(getattr(card, "context_slices", 0))
    if k == 0:
        return f"{size} px; {channels} of each slice"
    return f"{size} px; {channels} of each slice and {k} neighbouring slice{'s' * (k > 1)} on either side"


def card_html(title: str, bundle: object | None) -> str:
    """HTML description of a loaded model bundle (or of its absence)."""
    if bundle is None:
        return f"<h3>{html.escape(title)}</h3><p>None: every slice is segmented.</p>"
    card = bundle.card  # type: ignore[attr-defined]
    rows = [
        ("Name", card.name),
        ("Architecture", f"{card.arch} {json.dumps(card.arch_args)}"),
        ("Input", input_text(card)),
        ("Thresholds", ", ".join(f"{k} {v}" for k, v in card.thresholds.items())),
        ("Created", card.created),
        ("Software", card.software_version),
        ("File", str(bundle.path)),  # type: ignore[attr-defined]
        ("SHA-256", card.weights_sha256[:16] + "…"),
        ("License", card.license or "—"),
    ]
    out = [f"<h3>{html.escape(title)}</h3><table>"]
    out += [f"<tr><td><b>{html.escape(k)}</b>&nbsp;</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows]
    out.append("</table>")
    thorough = getattr(card, "thorough", {})
    members = ", ".join(f"{m['name']} ({m['weights_sha256'][:12]}…)" for m in thorough.get("ensemble", []))
    ensemble = {
        "averaged with": members,
        "flip TTA": thorough.get("flip_tta", False),
        "thresholds": thorough.get("thresholds", {}),
        **thorough.get("metrics", {}),
    }
    sections = (
        ("Validation metrics", card.metrics),
        ("Thorough mode: the ensemble's cross-validation", ensemble if thorough else {}),
        ("Training", card.training),
    )
    for section, data in sections:
        if data:
            out.append(f"<p><b>{html.escape(section)}</b></p>{_dict_table(data)}")
    if card.notes:
        out.append(f"<p>{html.escape(card.notes)}</p>")
    return "".join(out)


class ModelsDialog(QDialog):
    """The active classifier and segmenter with their model cards."""

    def __init__(self, classifier: object | None, segmenter: object | None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Active models")
        self.resize(640, 680)
        layout = QVBoxLayout(self)
        self.text = QTextBrowser()
        body = card_html("Classifier", classifier)
        body += (
            card_html("Segmenter", segmenter)
            if segmenter is not None
            else "<h3>Segmenter</h3><p>None loaded</p>"
        )
        self.text.setHtml(body)
        layout.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


class ManageModelsDialog(QDialog):
    """Every installed and shipped bundle, with the ``brainseg-models`` actions as buttons.

    Use (pin) a bundle, remove an installed one, install one from a file (with the same
    no-worse-than-active check as ``brainseg-models install``, overridable after a warning), or go
    back to the shipped models. The active bundle of each kind is marked.

    Signals:
        changed: the active models may have changed (the window reloads them).
    """

    changed = Signal()
    COLUMNS = ("", "Kind", "Name", "Source", "Validation metric", "Created")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Manage models")
        self.resize(860, 360)
        layout = QVBoxLayout(self)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        layout.addWidget(self.table)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        row = QHBoxLayout()
        self.use_button = QPushButton("&Use selected")
        self.remove_button = QPushButton("&Remove selected")
        self.install_button = QPushButton("&Install from file…")
        self.default_button = QPushButton("Use &shipped models")
        for b, slot in (
            (self.use_button, self.use_selected),
            (self.remove_button, self.remove_selected),
            (self.install_button, self.install_dialog),
            (self.default_button, self.use_shipped),
        ):
            b.clicked.connect(slot)
            row.addWidget(b)
        row.addStretch(1)
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        row.addWidget(close)
        layout.addLayout(row)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the model folders."""
        from brainseg_core.errors import BundleError
        from brainseg_core.model_card import key_metric_text
        from brainseg_core.registry import active_bundle, list_bundles

        problems: list[str] = []
        active = set()
        for kind in ("segmenter", "classifier"):
            try:
                info = active_bundle(kind)
            except BundleError as exc:
                problems.append(str(exc))
                info = None
            if info is not None:
                active.add(info.path)
        self._infos = list_bundles(on_error=lambda exc: problems.append(str(exc)))
        self.table.setRowCount(len(self._infos))
        for r, info in enumerate(self._infos):
            metric = key_metric_text(info.card)
            cells = (
                "●" if info.path in active else "",
                info.card.kind,
                info.card.name,
                info.source,
                metric,
                info.card.created[:10],
            )
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(str(info.path))
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.note.setText(
            "● = in use. Metrics come from each model's own validation patients; compare models on the "
            "same data with brainseg-eval." + ("\n" + "\n".join(problems) if problems else "")
        )
        self._update_buttons()

    def selected(self) -> object | None:
        """The selected bundle's :class:`~brainseg_core.registry.BundleInfo`, or None."""
        rows = {i.row() for i in self.table.selectedIndexes()}
        return self._infos[rows.pop()] if len(rows) == 1 else None

    def _update_buttons(self) -> None:
        info = self.selected()
        self.use_button.setEnabled(info is not None)
        self.remove_button.setEnabled(info is not None and info.source == "user")  # type: ignore[attr-defined]

    def _done(self) -> None:
        self.refresh()
        self.changed.emit()

    def use_selected(self) -> None:
        """Pin the selected bundle for its kind."""
        from brainseg_core.registry import pin_bundle

        info = self.selected()
        if info is not None:
            pin_bundle(info.card.name)  # type: ignore[attr-defined]
            self._done()

    def remove_selected(self) -> None:
        """Delete the selected installed bundle after asking."""
        from brainseg_core.errors import BundleError
        from brainseg_core.registry import remove_bundle

        info = self.selected()
        if info is None:
            return
        name = info.card.name  # type: ignore[attr-defined]
        answer = QMessageBox.question(self, "Remove model", f"Delete the installed model {name} from disk?")
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            remove_bundle(name)
        except BundleError as exc:
            QMessageBox.warning(self, "Remove model", str(exc))
        self._done()

    def install_dialog(self) -> None:
        """Ask for a bundle file and install it."""
        path, _ = QFileDialog.getOpenFileName(
            self, "Install model bundle", str(Path.home()), "BrainSeg model bundles (*.json *.safetensors)"
        )
        if path:
            self.install(Path(path))

    def install(self, path: Path, *, ask: Callable[[str], bool] | None = None) -> bool:
        """Install ``path``; when it looks worse than the active model, ``ask`` whether to force.

        Returns:
            True when installed.
        """
        from brainseg_core.errors import BundleError
        from brainseg_core.registry import InstallRefused, install_bundle

        def ask_box(text: str) -> bool:
            answer = QMessageBox.question(self, "Install model", f"{text}\n\nInstall it anyway?")
            return answer == QMessageBox.StandardButton.Yes

        try:
            try:
                install_bundle(path, overwrite=True)
            except InstallRefused as exc:
                if not (ask or ask_box)(exc.problem):
                    return False
                install_bundle(path, overwrite=True, force=True)
        except BundleError as exc:
            QMessageBox.warning(self, "Install model", str(exc))
            return False
        self._done()
        return True

    def use_shipped(self) -> None:
        """Use the models shipped with BrainSeg for both kinds."""
        from brainseg_core.registry import use_default_models

        use_default_models()
        self._done()


# ------------------------------------------------------------------------------------------------
# Export


class ExportDialog(QDialog):
    """Choose formats and a destination, then export with progress (in a worker thread).

    Args:
        records: the analysed patients to export.
        volume_for: returns the :class:`~brainseg_core.io.Volume` of a record; called in the
            worker thread (may read from disk).
        window_for: the FLAIR window ``(width, level)`` the reader used for a record, or None
            (the pictures then use the volume's automatic window).
        formats: formats ticked initially.
        destination: initial destination folder.
        dicom_input: every patient was read from DICOM (a DICOM SEG references its source series,
            so the format is offered only then).
        parent: owner window.

    Signals:
        exported: the list of written files, when an export completes.
    """

    exported = Signal(list)

    def __init__(
        self,
        records: Sequence[PatientRecord],
        volume_for: Callable[[PatientRecord], Volume],
        *,
        window_for: Callable[[PatientRecord], tuple[float, float] | None] = lambda rec: None,
        formats: Sequence[str] = ("tif", "png", "csv"),
        destination: Path | None = None,
        dicom_input: bool = False,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.records = list(records)
        self._volume_for = volume_for
        self._window_for = window_for
        self.written: list[Path] = []
        n = len(self.records)
        self.setWindowTitle("Export results")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        what = self.records[0].patient_id if n == 1 else f"{n} analysed patients"
        self.summary = QLabel(f"Export the predicted masks of {what}.")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)

        box = QGroupBox("Formats")
        bl = QVBoxLayout(box)
        self.format_boxes: dict[str, QCheckBox] = {}
        for fmt in ExportFormat:
            cb = QCheckBox(fmt.label)
            cb.setToolTip(fmt.description)
            cb.setChecked(fmt.value in formats)
            if fmt is ExportFormat.DICOM_SEG and not dicom_input:
                cb.setChecked(False)
                cb.setEnabled(False)
                cb.setToolTip(f"{fmt.description}. Not for patients read from TIFF or NIfTI files.")
            cb.toggled.connect(self._update_buttons)
            bl.addWidget(cb)
            self.format_boxes[fmt.value] = cb
        layout.addWidget(box)

        dest = QHBoxLayout()
        self.destination = QLineEdit(str(destination) if destination else "")
        self.destination.setPlaceholderText("Folder to write into (one sub-folder per patient)")
        self.destination.setToolTip(
            "Results go to DESTINATION/<patient id>/; source images are never touched"
        )
        self.destination.textChanged.connect(self._update_buttons)
        browse = QPushButton("Browse…")
        browse.setToolTip("Choose the destination folder")
        browse.clicked.connect(self._browse)
        dest.addWidget(QLabel("Destination"))
        dest.addWidget(self.destination, 1)
        dest.addWidget(browse)
        layout.addLayout(dest)

        self.progress = QProgressBar()
        self.progress.setToolTip("Export progress")
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

        self.buttons = QDialogButtonBox()
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.export_button.setToolTip("Write the chosen files")
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.close_button.setToolTip("Close (cancels a running export)")
        self.export_button.clicked.connect(self.start_export)
        self.close_button.clicked.connect(self.reject)
        layout.addWidget(self.buttons)

        self.runner = JobRunner(self)
        self.runner.progress.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)
        self.runner.cancelled.connect(self._on_cancelled)
        self.runner.stopped.connect(self._update_buttons)
        self._update_buttons()

    # -- choices ---------------------------------------------------------------------------------
    def formats(self) -> list[str]:
        """The ticked format keys."""
        return [k for k, cb in self.format_boxes.items() if cb.isChecked()]

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export destination", self.destination.text())
        if folder:
            self.destination.setText(folder)

    def _update_buttons(self) -> None:
        running = self.runner.running
        self.export_button.setEnabled(
            not running and bool(self.formats()) and bool(self.destination.text().strip())
        )
        self.close_button.setText("Cancel" if running else "Close")

    # -- export ----------------------------------------------------------------------------------
    def start_export(self) -> bool:
        """Check the choices, ask before replacing earlier exports, and start the export.

        Returns:
            True when the export started.
        """
        if self.runner.running:
            return False
        # Snapshot the results here, in the GUI thread: changing the models meanwhile resets them.
        gone = [rec.patient_id for rec in self.records if rec.shown is None]
        if gone:
            self.status.setText(
                f"{', '.join(gone)} has no results any more (the models changed); close and export again."
            )
            return False
        formats = self.formats()
        text = self.destination.text().strip()
        if not formats or not text:
            self.status.setText("Choose at least one format and a destination folder.")
            return False
        dest = Path(text).expanduser()
        try:
            for r in self.records:  # the core's own check; replacing earlier exports is asked next
                check_export_folder(r.patient_id, r.path, dest, overwrite=True)
        except ExportError as exc:
            self.status.setText(str(exc))
            return False
        existing = [r.patient_id for r in self.records if (dest / r.patient_id).exists()]
        overwrite = False
        if existing:
            names = ", ".join(existing[:5]) + (" …" if len(existing) > 5 else "")
            if not ask(
                self,
                "Replace export?",
                f"{dest} already holds results for {len(existing)} patient(s) ({names}).\n"
                "Replace them? Source images are never touched.",
            ):
                self.status.setText("Export not started: nothing was replaced.")
                return False
            overwrite = True
        volume_for = self._volume_for
        items = [(rec, rec.shown, self._window_for(rec)) for rec in self.records if rec.shown is not None]

        def job(cancel: threading.Event, progress: ProgressFn) -> list[Path]:
            from brainseg_core.export import export_results

            written: list[Path] = []
            total = len(items)
            for k, (rec, shown, window) in enumerate(items):
                if cancel.is_set():
                    break
                volume = volume_for(rec)

                def one(done: int, n: int, k: int = k) -> None:
                    progress(k * 1000 + int(1000 * done / max(n, 1)), total * 1000)

                written += export_results(
                    volume,
                    shown,
                    dest,
                    formats=tuple(formats),
                    overwrite=overwrite,
                    window=window,
                    progress=one,
                    cancel=cancel,
                )
            return written

        self.written = []
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"Exporting to {dest} …")
        self.runner.start(job)
        self._update_buttons()
        return True

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _on_finished(self, written: object) -> None:
        self.written = list(written)  # type: ignore[call-overload]
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        folders = sorted({p.parent for p in self.written})
        where = str(folders[0]) if len(folders) == 1 else f"{len(folders)} folders"
        self.status.setText(f"Wrote {len(self.written)} files to {where}.")
        self.exported.emit(self.written)

    def _on_failed(self, message: str, details: str) -> None:
        self.progress.setVisible(False)
        self.status.setText(f"Export failed: {message}")
        notify(self, "error", "Export failed", message, details)

    def _on_cancelled(self) -> None:
        self.progress.setVisible(False)
        self.status.setText("Export cancelled; files already written are complete, none is half-written.")

    def reject(self) -> None:
        """Close, or cancel the export first when one is running."""
        if self.runner.running:
            self.runner.cancel()
            return
        super().reject()

    def closeEvent(self, event) -> None:
        if self.runner.running:
            self.runner.cancel()
            self.runner.wait()
        super().closeEvent(event)
