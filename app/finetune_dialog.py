"""Model > Improve the models with my corrections…: fine-tune in another process, compare, adopt or discard.

The fine-tuning runs as ``python -m brainseg_core.cli.finetune … --json --stdin-control`` in a
:class:`QProcess`: the window stays responsive, and a crash of the training (out of memory, a
bug in a library) ends that process, never the viewer. Its stdout is one JSON event a line (stage,
progress, log, then result, cancelled or error); the dialog turns them into a progress bar, a status
line and a log, then shows the candidates beside the current models on the comparison patients: the
segmenter's Dice and slice recall per patient, and (when "Also fine-tune the slice gate" was ticked,
the default whenever a classifier is active) the classifier's recall and specificity at its gate,
its ROC AUC, the tumour slices it misses and the Dice of each pair with the gate.

Cancel writes ``cancel`` to the process's stdin and terminates it (a kill follows if it has not
ended within :data:`KILL_AFTER_MS`); the work folder is then deleted, so nothing is left behind,
and nothing was ever installed: the candidates reach the user's model folder only on **Adopt**
(:func:`brainseg_core.finetune.adopt`, which installs the ticked ones with the registry and makes
them the active models). **Discard**, or closing the dialog with candidates not adopted, deletes them.

Adopt and the registry's no-worse check: the registry compares the cards' own validation metrics,
which come from different patients; here the reader has both models' scores on the same corrected
patients, so adopt installs with ``force`` and the dialog asks first, naming each ticked model that
scores lower on those patients (the segmenter: a lower mean Dice; the gate: a lower ROC AUC or more
tumour slices missed), or when nothing could be held out.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from enum import Enum, auto
from pathlib import Path

from PySide6.QtCore import QProcess, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from brainseg_app.dialogs import ask, notify
from brainseg_core.errors import BrainSegError
from brainseg_core.finetune import (
    Comparison,
    FinetuneResult,
    FinetuneSettings,
    GateScores,
    ModelScores,
    Stage,
)
from brainseg_core.model_kind import ModelKind

log = logging.getLogger(__name__)

#: After Cancel, the process is killed if it has not ended by then.
KILL_AFTER_MS = 8000
_STAGE_TEXT = {
    Stage.PREPARE: "Reading the corrected patients…",
    Stage.TRAIN: "Fine-tuning the segmenter…",
    Stage.TRAIN_CLASSIFIER: "Fine-tuning the slice gate (classifier)…",
    Stage.EVALUATE: "Comparing the candidates with the current models…",
}
_BETTER, _WORSE = QColor("#7ddc8a"), QColor("#ff8a80")


class RunState(Enum):
    """Where the dialog is."""

    READY = auto()
    RUNNING = auto()
    CANCELLING = auto()
    RESULT = auto()
    DONE = auto()


def work_root() -> Path:
    """Where fine-tuning runs keep their candidates until adopted or discarded."""
    from brainseg_core.user_data import user_data_dir

    return user_data_dir() / "finetune"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _compact_table(table: QTableWidget, rows: int) -> None:
    """Fit the table's height to its first rows (8 at most), the first column stretched."""
    table.resizeColumnsToContents()
    table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    height = table.horizontalHeader().height() + sum(table.rowHeight(r) for r in range(min(rows, 8)))
    table.setFixedHeight(height + 2 * table.frameWidth())


def _table(headers: list[str], tips: tuple[str, ...]) -> QTableWidget:
    """A read-only, unselectable table with these column headers and tooltips."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    for c, tip in enumerate(tips):
        header = table.horizontalHeaderItem(c)
        if header is not None:
            header.setToolTip(tip)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
    table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    return table


def _cell(text: str, *, bold: bool = False, numeric: bool = True) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if numeric:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    if bold:
        font = item.font()
        font.setBold(True)
        item.setFont(font)
    return item


def _colour(
    item: QTableWidgetItem, old: float | None, new: float | None, *, higher_is_better: bool = True
) -> None:
    """Green when ``new`` is better than ``old`` by more than 0.005, red when worse."""
    if old is None or new is None or abs(new - old) <= 0.005:
        return
    better = new > old if higher_is_better else new < old
    item.setForeground(QBrush(_BETTER if better else _WORSE))


class ImproveModelsDialog(QDialog):
    """Fine-tune the current segmenter (and classifier) on corrected patients, compare, adopt or discard.

    Args:
        segmenter: the current segmenter's card.
        segmenter_name: its name, for the texts.
        classifier: the current classifier's card (the slice gate), or None when none is active.
        classifier_name: its name, for the texts.
        corrections: the initial corrections folder (the last one Save corrections wrote to).
        original_data: the initial original training data folder (optional).
        device: where to train (``auto``, ``cpu``, ``cuda``, …).
        parent: owner window.

    Signals:
        adopted: the installed cards' paths (a list), once the reader adopted candidates.
        folders_chosen: ``(corrections, original_data)`` when a run starts (to remember them).
    """

    adopted = Signal(list)
    folders_chosen = Signal(str, str)

    def __init__(
        self,
        segmenter: Path,
        segmenter_name: str,
        *,
        classifier: Path | None = None,
        classifier_name: str | None = None,
        corrections: str | None = None,
        original_data: str | None = None,
        device: str = "auto",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.segmenter, self.segmenter_name, self.device = Path(segmenter), segmenter_name, device
        self.classifier = None if classifier is None else Path(classifier)
        self.classifier_name = classifier_name or (self.classifier.stem if self.classifier else "")
        self.state = RunState.READY
        self.candidate: FinetuneResult | None = None
        self.installed: dict[ModelKind, Path] = {}
        self.out: Path | None = None
        self._buffer = b""
        self._stderr = b""
        self._outcome: str | None = None  # "result" | "cancelled" | "error"
        self._error = ""
        self.process: QProcess | None = None
        self.setWindowTitle("Improve the models with my corrections")
        self.setMinimumWidth(720)
        layout = QVBoxLayout(self)

        gate = f" and the slice gate <b>{self.classifier_name}</b>" if self.classifier is not None else ""
        self.intro = intro = QLabel(
            f"Fine-tune the current segmenter <b>{segmenter_name}</b>{gate} on the patients you corrected "
            "(File &gt; Save corrections as training data…), then compare the candidates with the current "
            "models on corrected patients held out of the fine-tuning. Nothing changes until you adopt."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)

        self.form_box = QGroupBox("Fine-tuning")
        form = QFormLayout(self.form_box)
        self.corrections = QLineEdit(corrections or "")
        self.corrections.setPlaceholderText("Folder written by Save corrections as training data")
        self.corrections.textChanged.connect(self._update_buttons)
        form.addRow("Corrected patients", self._with_browse(self.corrections, "Corrected patients"))
        self.original = QLineEdit(original_data or "")
        self.original.setPlaceholderText("Optional: the original training data (LGG layout)")
        self.original.setToolTip(
            "Mixed in so the model does not forget what it knew; a corrected patient replaces its "
            "original copy, and a held-out one never trains"
        )
        self.original.textChanged.connect(self._update_buttons)
        form.addRow("Original training data", self._with_browse(self.original, "Original training data"))
        d = FinetuneSettings()
        self.max_original = QSpinBox()
        self.max_original.setRange(1, 10000)
        self.max_original.setValue(d.max_original_patients or 20)
        self.max_original.setSuffix(" patients at most")
        self.max_original.setToolTip("A seeded draw of the original patients, so an epoch stays short")
        form.addRow("Original patients mixed in", self.max_original)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 200)
        self.epochs.setValue(d.epochs)
        self.epochs.setToolTip("Passes over the training slices; a few are enough to adapt")
        form.addRow("Epochs", self.epochs)
        self.held_out = QDoubleSpinBox()
        self.held_out.setRange(0, 50)
        self.held_out.setDecimals(0)
        self.held_out.setSingleStep(5)
        self.held_out.setSuffix(" % of the corrected patients")
        self.held_out.setValue(100 * d.held_out_share)
        self.held_out.setToolTip(
            "Held out of the fine-tuning to compare the two models honestly (by patient, at least "
            "one; with fewer than 3 corrected patients nothing can be held out)"
        )
        form.addRow("Held out for the comparison", self.held_out)
        self.with_classifier = QCheckBox("Also fine-tune the slice gate (classifier)")
        if self.classifier is not None:
            self.with_classifier.setChecked(True)
            self.with_classifier.setToolTip(
                f"Fine-tune {self.classifier_name} too, on the same patients (the same ones held out), "
                "and compare its recall and specificity at its gate; it keeps its gate threshold"
            )
        else:
            self.with_classifier.setEnabled(False)
            self.with_classifier.setToolTip("No classifier is active: the segmenter runs on every slice")
        form.addRow("", self.with_classifier)
        layout.addWidget(self.form_box)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(500)
        self.log_view.setFixedHeight(90)
        self.log_view.setFont(QFont("monospace", 8))
        self.log_view.setVisible(False)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.log_view)

        self.candidate_box = QGroupBox("Candidates beside the current models")
        rl = QVBoxLayout(self.candidate_box)
        self.scope = QLabel("")
        self.scope.setWordWrap(True)
        rl.addWidget(self.scope)
        self.seg_title = QLabel("")
        rl.addWidget(self.seg_title)
        self.table = _table(
            ["Patient", "Dice current", "Dice candidate", "Slice recall current", "Slice recall candidate"],
            (
                "Corrected patient (the last row: mean over them)",
                "Volume Dice of the current model's masks with your corrections (segmenter on every slice)",
                "Volume Dice of the candidate's masks with your corrections",
                "Share of your tumour slices whose current mask overlaps your outline",
                "Share of your tumour slices whose candidate mask overlaps your outline",
            ),
        )
        rl.addWidget(self.table)
        self.gate_title = QLabel("")
        rl.addWidget(self.gate_title)
        self.gate_table = _table(
            ["Over every slice of these patients", "Current", "Candidate"],
            (
                "Pooled over the slices of the comparison patients, at each classifier's gate",
                "The current classifier (gating the current segmenter)",
                "The classifier candidate (gating the segmenter candidate), at its parent's gate",
            ),
        )
        self.gate_table.horizontalHeader().setMinimumSectionSize(110)  # as wide as the Dice columns
        rl.addWidget(self.gate_table)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        rl.addWidget(self.verdict)
        choose = QHBoxLayout()
        self.adopt_segmenter = QCheckBox("Adopt the segmenter candidate")
        self.adopt_classifier = QCheckBox("Adopt the slice gate candidate")
        for box in (self.adopt_segmenter, self.adopt_classifier):
            box.toggled.connect(self._update_buttons)
            choose.addWidget(box)
        choose.addStretch(1)
        rl.addLayout(choose)
        self.candidate_box.setVisible(False)
        layout.addWidget(self.candidate_box)

        row = QHBoxLayout()
        self.start_button = QPushButton("&Start fine-tuning")
        self.start_button.setToolTip("Fine-tune in a separate process; the viewer stays usable")
        self.cancel_button = QPushButton("&Cancel")
        self.cancel_button.setToolTip("Stop the fine-tuning; nothing is kept")
        self.adopt_button = QPushButton("&Adopt")
        self.adopt_button.setToolTip(
            "Install the ticked candidates in your model folder and use them from now on"
        )
        self.discard_button = QPushButton("&Discard")
        self.discard_button.setToolTip("Delete the candidates; the current models stay")
        self.close_button = QPushButton("Close")
        self.close_button.setToolTip("Close (candidates you have not adopted are discarded)")
        for b, slot in (
            (self.start_button, self.start),
            (self.cancel_button, self.cancel),
            (self.adopt_button, self.adopt),
            (self.discard_button, self.discard),
        ):
            b.clicked.connect(slot)
            row.addWidget(b)
        row.addStretch(1)
        self.close_button.clicked.connect(self.reject)
        row.addWidget(self.close_button)
        layout.addLayout(row)
        self._update_buttons()

    def _with_browse(self, edit: QLineEdit, title: str) -> QWidget:
        box = QWidget()
        h = QHBoxLayout(box)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(edit, 1)
        browse = QPushButton("Browse…")
        browse.setToolTip(f"Choose the folder of the {title.lower()}")

        def choose() -> None:
            folder = QFileDialog.getExistingDirectory(self, title, edit.text() or str(Path.home()))
            if folder:
                edit.setText(folder)

        browse.clicked.connect(choose)
        h.addWidget(browse)
        return box

    def _update_buttons(self) -> None:
        s = self.state
        ready = s in (RunState.READY, RunState.DONE)
        self.form_box.setEnabled(ready)
        self.max_original.setEnabled(ready and bool(self.original.text().strip()))
        self.start_button.setEnabled(ready and bool(self.corrections.text().strip()))
        self.start_button.setText("&Start fine-tuning" if s is not RunState.DONE else "&Start again")
        self.cancel_button.setVisible(s in (RunState.RUNNING, RunState.CANCELLING))
        self.cancel_button.setEnabled(s is RunState.RUNNING)
        self.adopt_button.setVisible(s is RunState.RESULT)
        self.adopt_button.setEnabled(bool(self.chosen_kinds()))
        self.discard_button.setVisible(s is RunState.RESULT)
        self.with_classifier.setEnabled(ready and self.classifier is not None)

    def chosen_kinds(self) -> list[ModelKind]:
        """The candidates ticked for adoption (only those the run produced)."""
        result = self.candidate
        if result is None:
            return []
        ticked = {ModelKind.SEGMENTER: self.adopt_segmenter, ModelKind.CLASSIFIER: self.adopt_classifier}
        return [k for k in result.candidates if ticked[k].isChecked()]

    # -- the run -----------------------------------------------------------------------------------
    def command(self, out: Path) -> list[str]:
        """The fine-tuning's command line (program first).

        From source, ``python -m brainseg_core.cli.finetune``; in the frozen desktop build (no
        ``-m``), the app's own executable with ``--finetune-worker`` (see :mod:`brainseg_app.main`).
        """
        frozen = getattr(sys, "frozen", False)
        worker = ["--finetune-worker"] if frozen else ["-m", "brainseg_core.cli.finetune"]
        args = [
            *worker,
            str(self.segmenter),
            self.corrections.text().strip(),
            "--out",
            str(out),
            "--json",
            "--stdin-control",
            "--epochs",
            str(self.epochs.value()),
            "--held-out",
            f"{self.held_out.value() / 100:.2f}",
            "--device",
            self.device,
            # one core left for the viewer
            "--threads",
            str(max(1, (os.cpu_count() or 2) - 1)),
        ]
        original = self.original.text().strip()
        if original:
            args += ["--original-data", original, "--max-original", str(self.max_original.value())]
        if self.classifier is not None and self.with_classifier.isChecked():
            args += ["--classifier", str(self.classifier)]
        return [sys.executable, *args]

    def start(self) -> bool:
        """Check the folders and start the fine-tuning process.

        Returns:
            True when it started.
        """
        if self.state not in (RunState.READY, RunState.DONE):
            return False
        corrections = Path(self.corrections.text().strip()).expanduser()
        original = self.original.text().strip()
        for label, path in (("corrected patients", corrections), ("original data", Path(original))):
            if (label == "corrected patients" or original) and not path.is_dir():
                self.status.setText(f"{path}: the folder of the {label} does not exist; choose another.")
                return False
        self.folders_chosen.emit(str(corrections), original)
        self.out = work_root() / datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        self.candidate, self.installed, self._outcome, self._error = None, {}, None, ""
        self._buffer = self._stderr = b""
        self.candidate_box.setVisible(False)
        self.log_view.clear()
        self.log_view.setVisible(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.status.setText("Starting the fine-tuning process…")
        self._fit_height()
        program, *args = self.command(self.out)
        proc = QProcess(self)
        proc.setProgram(program)
        proc.setArguments(args)
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_process_error)
        self.process = proc
        self.state = RunState.RUNNING
        self._update_buttons()
        proc.start()
        return True

    def cancel(self) -> None:
        """Stop the run: ``cancel`` on its stdin and a terminate, a kill if it does not end."""
        proc = self.process
        if proc is None or self.state is not RunState.RUNNING:
            return
        self.state = RunState.CANCELLING
        self.status.setText("Cancelling…")
        self._update_buttons()
        proc.write(b"cancel\n")
        proc.terminate()
        QTimer.singleShot(KILL_AFTER_MS, self._kill_if_running)

    def _kill_if_running(self) -> None:
        if self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning:
            self.process.kill()

    def _read_stdout(self) -> None:
        assert self.process is not None
        self._buffer += bytes(self.process.readAllStandardOutput().data())
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._event(line)

    def _read_stderr(self) -> None:
        assert self.process is not None
        self._stderr = (self._stderr + bytes(self.process.readAllStandardError().data()))[-20000:]

    def _event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind = event["event"]
        except (ValueError, KeyError, TypeError):
            self.log_view.appendPlainText(line.decode("utf-8", "replace"))
            return
        if kind == "progress":
            self.progress.setRange(0, max(1, int(event["total"])))
            self.progress.setValue(int(event["done"]))
        elif kind == "stage":
            if self.state is RunState.RUNNING:
                self.status.setText(_STAGE_TEXT.get(Stage(event["stage"]), ""))
        elif kind == "log":
            self.log_view.appendPlainText(str(event.get("message", "")))
        elif kind == "result":
            try:
                self.candidate = FinetuneResult.from_json(event["result"])
                self._outcome = "result"
            except (ValueError, KeyError) as exc:
                self._outcome, self._error = "error", f"unreadable result: {exc}"
        elif kind in ("cancelled", "error"):
            self._outcome, self._error = kind, str(event.get("message", ""))

    def _on_process_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._outcome, self._error = (
                "error",
                f"the fine-tuning process could not start ({sys.executable})",
            )
            self._finish()

    def _on_finished(self, exit_code: int, _status: QProcess.ExitStatus) -> None:
        self._read_stdout()
        if self._buffer.strip():
            self._event(self._buffer)
            self._buffer = b""
        if self._outcome is None:
            if self.state is RunState.CANCELLING:
                self._outcome = "cancelled"
            else:
                tail = self._stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
                self._outcome = "error"
                self._error = f"the fine-tuning process ended (exit code {exit_code}) {tail[0]}".strip()
        self._finish()

    def _finish(self) -> None:
        outcome = self._outcome
        self.progress.setVisible(False)
        if outcome == "result" and self.candidate is not None and self.state is RunState.RUNNING:
            self.state = RunState.RESULT
            self.status.setText(
                f"Done in {self.candidate.wall_s:.0f} s: "
                + (
                    "the candidates are ready. Adopt them (or the ticked one) or discard them."
                    if self.candidate.classifier_candidate is not None
                    else "the candidate is ready. Adopt it or discard it."
                )
            )
            self.show_result(self.candidate)
        else:
            self._remove_work()
            self.state = RunState.DONE
            if outcome == "error":
                self.status.setText(f"Fine-tuning failed: {self._error}")
                details = self._stderr.decode("utf-8", "replace")[-8000:]
                notify(self, "error", "Fine-tuning failed", self._error, details)
            else:
                self.status.setText("Fine-tuning cancelled; nothing was kept or installed.")
        self.process = None
        self._update_buttons()

    def _remove_work(self) -> None:
        from brainseg_core.finetune import discard

        if self.out is not None:
            discard(self.out)

    # -- the result --------------------------------------------------------------------------------
    def show_result(self, result: FinetuneResult) -> None:
        """Show the candidates beside the current models on the comparison patients."""
        self.candidate = result
        self.out = result.out
        cur, cand = result.current, result.candidate_scores
        n = len(result.compared_on)
        if result.comparison is Comparison.HELD_OUT:
            self.scope.setText(
                f"Scored on {_plural(n, 'corrected patient')} held out of the fine-tuning "
                f"(trained on {len(result.trained_on)} corrected"
                + (f" + {result.original_patients} original" if result.original_patients else "")
                + f" patients, {_plural(result.epochs, 'epoch')})."
            )
            self.scope.setStyleSheet("")
        else:
            self.scope.setText(
                f"<b>Not held out:</b> with {_plural(len(result.trained_on), 'corrected patient')} there is "
                "nothing to hold out, so the models are scored on the patients the candidates were trained "
                "on. Their numbers are optimistic; correct 3 or more patients for an honest comparison."
            )
            self.scope.setStyleSheet("color: #ffb74d;")
        self.seg_title.setText(f"<b>Segmenter</b>: {cur.name} → {cand.name}")
        rows = [*result.compared_on, None]
        self.table.setRowCount(len(rows))
        for r, pid in enumerate(rows):
            self._row(r, pid, cur, cand)
        _compact_table(self.table, len(rows))
        gate = result.current_gate, result.candidate_gate
        has_gate = gate[0] is not None and gate[1] is not None
        for w in (self.gate_title, self.gate_table, self.adopt_classifier):
            w.setVisible(has_gate)
        if gate[0] is not None and gate[1] is not None:
            self._gate_rows(gate[0], gate[1])
        self.verdict.setText(self._verdict(result))
        # ticked when the candidate scored no worse: adopting is then the reader's one click
        self.adopt_segmenter.setChecked(result.candidate_is_better)
        self.adopt_classifier.setChecked(has_gate and bool(result.classifier_is_better))
        self.candidate_box.setVisible(True)
        self.log_view.setVisible(False)  # the run's log; the comparison is what matters now
        self.state = RunState.RESULT
        self._update_buttons()
        self._fit_height()

    def _verdict(self, result: FinetuneResult) -> str:
        """One sentence per candidate, then what Adopt does."""
        delta = result.candidate_scores.dice_mean - result.current.dice_mean
        if delta > 0.005:
            texts = [f"The segmenter candidate is better: mean Dice {delta:+.3f}."]
        elif delta < -0.005:
            texts = [
                f"The segmenter candidate is worse: mean Dice {delta:+.3f}; keeping the current one is safer."
            ]
        else:
            texts = ["The two segmenters score the same on these patients."]
        cur, cand = result.current_gate, result.candidate_gate
        if cur is not None and cand is not None:
            missed = cand.fn - cur.fn
            if not result.classifier_is_better:
                why = f"misses {_plural(missed, 'more tumour slice')}" if missed > 0 else "ranks slices worse"
                texts.append(f"The slice gate candidate {why}; keeping the current one is safer.")
            elif missed < 0 or (cand.roc_auc or 0) > (cur.roc_auc or 0) + 0.005:
                texts.append("The slice gate candidate is better.")
            else:
                texts.append("The two slice gates score alike.")
        return (
            " ".join(texts) + " Adopt installs the ticked candidates in your model folder and uses them from "
            "now on; the current models stay installed (Model > Manage models… to go back)."
        )

    def _gate_rows(self, cur: GateScores, cand: GateScores) -> None:
        """The classifier's pooled scores at its gate, and each pair's Dice with the gate."""
        self.gate_title.setText(f"<b>Slice gate</b>: {cur.name} → {cand.name} (gate {cand.threshold:.2f})")
        rows: list[tuple[str, str, str, float | None, float | None, bool]] = [
            (
                "Slice recall at the gate",
                _pct(cur.slice_recall),
                _pct(cand.slice_recall),
                cur.slice_recall,
                cand.slice_recall,
                True,
            ),
            (
                "Specificity at the gate",
                _pct(cur.slice_specificity),
                _pct(cand.slice_specificity),
                cur.slice_specificity,
                cand.slice_specificity,
                True,
            ),
            ("ROC AUC", _num(cur.roc_auc), _num(cand.roc_auc), cur.roc_auc, cand.roc_auc, True),
            (
                f"Tumour slices missed (of {cur.tp + cur.fn})",
                str(cur.fn),
                str(cand.fn),
                float(cur.fn),
                float(cand.fn),
                False,
            ),
            (
                "Mean Dice with the gate (pair)",
                _num(cur.pipeline_dice_mean),
                _num(cand.pipeline_dice_mean),
                cur.pipeline_dice_mean,
                cand.pipeline_dice_mean,
                True,
            ),
        ]
        tips = (
            "Share of your tumour slices whose tumour probability reaches the gate (the others are never "
            "segmented)",
            "Share of your tumour-free slices the gate stops",
            "Threshold-free ranking of tumour over tumour-free slices (n/a with one class only)",
            "Your tumour slices below the gate: never segmented",
            "Volume Dice of the classifier + segmenter pair, as the viewer runs them (current pair vs "
            "candidate pair)",
        )
        self.gate_table.setRowCount(len(rows))
        for r, (label, a, b, old, new, higher) in enumerate(rows):
            name = _cell(label, numeric=False)
            name.setToolTip(tips[r])
            self.gate_table.setItem(r, 0, name)
            self.gate_table.setItem(r, 1, _cell(a))
            item = _cell(b)
            _colour(item, old, new, higher_is_better=higher)
            self.gate_table.setItem(r, 2, item)
        _compact_table(self.gate_table, len(rows))

    def _fit_height(self) -> None:
        """Grow to show every wrapped line (a plain adjustSize ignores the labels' height for width)."""
        layout = self.layout()
        if layout is None:
            return
        layout.activate()
        wanted = layout.totalHeightForWidth(self.width()) if layout.hasHeightForWidth() else -1
        self.resize(self.width(), max(wanted, self.sizeHint().height()))

    def _row(self, r: int, pid: str | None, cur: ModelScores, cand: ModelScores) -> None:
        if pid is None:
            cells = ["Mean", f"{cur.dice_mean:.3f}", f"{cand.dice_mean:.3f}"]
            cells += [_pct(cur.slice_recall), _pct(cand.slice_recall)]
            pair = ((cur.dice_mean, cand.dice_mean), (cur.slice_recall, cand.slice_recall))
        else:
            cells = [pid, f"{cur.dice[pid]:.3f}", f"{cand.dice[pid]:.3f}"]
            cells += [_pct(cur.recall[pid]), _pct(cand.recall[pid])]
            pair = ((cur.dice[pid], cand.dice[pid]), (cur.recall[pid], cand.recall[pid]))
        for c, text in enumerate(cells):
            item = _cell(text, bold=pid is None, numeric=c > 0)
            if c in (2, 4):
                old, new = pair[0] if c == 2 else pair[1]
                _colour(item, old, new)
            self.table.setItem(r, c, item)

    def _doubts(self, result: FinetuneResult, kinds: list[ModelKind]) -> list[str]:
        """Why adopting these candidates may be unwise (empty: nothing to ask)."""
        doubts = []
        if ModelKind.SEGMENTER in kinds and not result.candidate_is_better:
            doubts.append("The segmenter candidate scores a lower mean Dice than the current segmenter.")
        if ModelKind.CLASSIFIER in kinds and result.classifier_is_better is False:
            doubts.append(
                "The slice gate candidate misses more of your tumour slices, or ranks slices worse "
                "(ROC AUC), than the current classifier."
            )
        if result.comparison is not Comparison.HELD_OUT:
            doubts.append(
                "Nothing was held out: the scores come from the patients the candidates were trained on."
            )
        return doubts

    def adopt(self) -> bool:
        """Install the ticked candidates and make them the active models (asking first when one looks worse).

        Returns:
            True when installed.
        """
        from brainseg_core.finetune import adopt

        result = self.candidate
        kinds = self.chosen_kinds()
        if result is None or self.state is not RunState.RESULT or not kinds:
            return False
        doubts = self._doubts(result, kinds)
        if doubts:
            which = "these candidates" if len(kinds) > 1 else "the candidate"
            text = "\n".join(doubts) + f"\n\nAdopt {which} anyway? (Untick one to adopt only the other.)"
            if not ask(self, "Adopt the candidates?" if len(kinds) > 1 else "Adopt the candidate?", text):
                return False
        try:
            self.installed = adopt(result, kinds)
        except BrainSegError as exc:
            notify(self, "error", "Candidate not installed", str(exc))
            return False
        self.state = RunState.DONE
        self.candidate_box.setVisible(False)
        names = {ModelKind.SEGMENTER: result.candidate_scores.name}
        if result.candidate_gate is not None:
            names[ModelKind.CLASSIFIER] = result.candidate_gate.name
        adopted = " and ".join(names[k] for k in kinds)
        verb = "are" if len(kinds) > 1 else "is"
        self.status.setText(f"Adopted: {adopted} {verb} installed in your model folder and now in use.")
        self._update_buttons()
        self.adopted.emit(list(self.installed.values()))
        return True

    def discard(self) -> None:
        """Delete the candidates; the current models stay."""
        if self.state is not RunState.RESULT:
            return
        self._remove_work()
        self.candidate = None
        self.state = RunState.DONE
        self.candidate_box.setVisible(False)
        self.status.setText("Candidates discarded; the current models stay in use.")
        self._update_buttons()

    # -- closing -----------------------------------------------------------------------------------
    def reject(self) -> None:
        """Close: a running fine-tuning is stopped, a candidate not adopted is discarded."""
        self._stop_for_close()
        super().reject()

    def closeEvent(self, event) -> None:
        self._stop_for_close()
        super().closeEvent(event)

    def _stop_for_close(self) -> None:
        proc = self.process
        if proc is not None and proc.state() != QProcess.ProcessState.NotRunning:
            self.cancel()
            if not proc.waitForFinished(KILL_AFTER_MS):
                proc.kill()
                proc.waitForFinished(2000)
        if self.state is RunState.RESULT:
            self.discard()
        elif self.state in (RunState.RUNNING, RunState.CANCELLING):
            self._remove_work()
