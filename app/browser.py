"""The patient browser: every patient of the opened folder with its analysis state."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from brainseg_app.session import PatientRecord, PatientState

_STATE_COLOURS = {
    PatientState.NEW: QColor(170, 170, 170),
    PatientState.QUEUED: QColor(200, 200, 120),
    PatientState.RUNNING: QColor(90, 170, 255),
    PatientState.DONE: QColor(120, 210, 120),
    PatientState.CANCELLED: QColor(230, 170, 80),
    PatientState.FAILED: QColor(255, 100, 90),
}


class PatientBrowser(QWidget):
    """List of patients under the opened path.

    Signals:
        patientActivated: the patient folder or stack the user picked.
        analyseAllRequested: "Analyse all" was pressed.
        exportAllRequested: "Export all…" was pressed.
    """

    patientActivated = Signal(Path)
    analyseAllRequested = Signal()
    exportAllRequested = Signal()

    COLUMNS = ("Patient", "State", "Tumour", "Review")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.root_label = QLabel("No folder open")
        self.root_label.setWordWrap(True)
        self.root_label.setToolTip("The opened patient folder or dataset root")
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(list(self.COLUMNS))
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # ids differ at the end
        self.tree.setSortingEnabled(True)
        self.tree.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.headerItem().setToolTip(2, "Slices with a predicted tumour under the current thresholds")
        self.tree.headerItem().setToolTip(
            3, "Slices still to review (R steps through them): marked neither reviewed nor edited"
        )
        self.tree.setToolTip("Patients in the opened folder; click one to show it")
        self.tree.itemActivated.connect(self._on_item)
        self.tree.itemClicked.connect(self._on_item)
        buttons = QHBoxLayout()
        self.analyse_all = QPushButton("Analyse all")
        self.analyse_all.setToolTip("Queue every patient not analysed yet")
        self.export_all = QPushButton("Export all…")
        self.export_all.setToolTip("Export the results of every analysed patient")
        buttons.addWidget(self.analyse_all)
        buttons.addWidget(self.export_all)
        self.analyse_all.clicked.connect(self.analyseAllRequested)
        self.export_all.clicked.connect(self.exportAllRequested)
        layout.addWidget(self.root_label)
        layout.addWidget(self.tree, 1)
        layout.addLayout(buttons)
        self._items: dict[Path, QTreeWidgetItem] = {}

    def set_patients(self, root: Path | None, records: list[PatientRecord]) -> None:
        """Fill the list (``root`` is shown above it)."""
        self.tree.clear()
        self._items.clear()
        self.root_label.setText(str(root) if root is not None else "No folder open")
        self.tree.setSortingEnabled(False)
        for rec in records:
            item = QTreeWidgetItem([rec.patient_id, "", "", ""])
            item.setData(0, Qt.ItemDataRole.UserRole, str(rec.path))
            item.setToolTip(0, str(rec.path))
            self.tree.addTopLevelItem(item)
            self._items[rec.path] = item
            self.update_record(rec)
        self.tree.setSortingEnabled(True)

    def update_record(self, rec: PatientRecord) -> None:
        """Refresh one patient's row."""
        item = self._items.get(rec.path)
        if item is None:
            return
        state = rec.state.value
        if rec.state is PatientState.RUNNING and rec.n_slices:
            state = f"{state} {len(rec.raw)}/{rec.n_slices}"
        item.setText(1, state)
        item.setForeground(1, QBrush(_STATE_COLOURS[rec.state]))
        item.setToolTip(1, rec.error or state)
        count = rec.tumour_slices()
        item.setText(2, "" if count is None else str(count))
        item.setData(2, Qt.ItemDataRole.UserRole, -1 if count is None else count)
        # Not counted while slices stream in: the queue reads every slice (some reasons compare it
        # with its neighbours), and recounting it for each streamed slice made a long volume's
        # analysis cost the window time quadratic in its slices. A run that stopped half-way
        # (cancelled, failed) shows the count of what it analysed.
        streaming = rec.state is PatientState.RUNNING and not rec.complete
        queue = rec.review_queue() if rec.shown is not None and rec.shown.slices and not streaming else None
        item.setText(3, "" if queue is None else str(len(queue)))
        item.setForeground(3, QBrush(QColor(255, 149, 0) if queue else QColor(170, 170, 170)))
        item.setToolTip(
            3, "" if not queue else "To review: slices " + ", ".join(str(i + 1) for i in queue[:12])
        )

    def set_current(self, path: Path | None) -> None:
        """Highlight the displayed patient."""
        item = self._items.get(path) if path is not None else None
        self.tree.blockSignals(True)
        if item is not None:
            self.tree.setCurrentItem(item)
        else:
            self.tree.clearSelection()
        self.tree.blockSignals(False)

    def row_texts(self) -> list[tuple[str, str, str]]:
        """Patient, state and tumour count of every row in display order (tests, accessibility)."""
        return [(r[0], r[1], r[2]) for r in self.rows()]

    def rows(self) -> list[tuple[str, ...]]:
        """Texts of every column of every row in display order (see :attr:`COLUMNS`)."""
        out = []
        for i in range(self.tree.topLevelItemCount()):
            it = self.tree.topLevelItem(i)
            if it is not None:
                out.append(tuple(it.text(c) for c in range(len(self.COLUMNS))))
        return out

    def _on_item(self, item: QTreeWidgetItem, _column: int = 0) -> None:
        self.patientActivated.emit(Path(item.data(0, Qt.ItemDataRole.UserRole)))
