"""Model > Improve the models with my corrections…: fine-tune in another process, compare, adopt or discard.

The fine-tuning runs as ``python -m brainseg_core.cli.finetune … --json --stdin-control`` in a
:class:`QProcess`: the window stays responsive, and a crash of the training (out of memory, a
bug in a library) ends that process, never the viewer. Its stdout is one JSON event a line (stage,
progress, log, then result, cancelled or error); the dialog turns them into a progress bar, a status
line and a log, then shows the candidate beside the current segmenter on the comparison patients.

Cancel writes ``cancel`` to the process's stdin and terminates it (a kill follows if it has not
ended within :data:`KILL_AFTER_MS`); the work folder is then deleted, so nothing is left behind,
and nothing was ever installed: the candidate reaches the user's model folder only on **Adopt**
(:func:`brainseg_core.finetune.adopt`, which installs it with the registry and makes it the active
segmenter). **Discard**, or closing the dialog with a candidate not adopted, deletes it.

Adopt and the registry's no-worse check: the registry compares the cards' own validation metrics,
which come from different patients; here the reader has both models' scores on the same corrected
patients, so adopt installs with ``force`` and the dialog asks first when the candidate scores
lower on those patients, or when nothing could be held out.
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
from brainseg_core.finetune import Comparison, FinetuneResult, FinetuneSettings, ModelScores, Stage

log = logging.getLogger(__name__)

#: After Cancel, the process is killed if it has not ended by then.
KILL_AFTER_MS = 8000
_STAGE_TEXT = {
    Stage.PREPARE: "Reading the corrected patients…",
    Stage.TRAIN: "Fine-tuning the segmenter…",
    Stage.EVALUATE: "Comparing the candidate with the current model…",
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


class ImproveModelsDialog(QDialog):
    """Fine-tune the current segmenter on corrected patients, compare, then adopt or discard.

    Args:
        segmenter: the current segmenter's card.
        segmenter_name: its name, for the texts.
        corrections: the initial corrections folder (the last one Save corrections wrote to).
        original_data: the initial original training data folder (optional).
        device: where to train (``auto``, ``cpu``, ``cuda``, …).
        parent: owner window.

    Signals:
        adopted: the installed card's path, once the reader adopted the candidate.
        folders_chosen: ``(corrections, original_data)`` when a run starts (to remember them).
    """

    adopted = Signal(Path)
    folders_chosen = Signal(str, str)

    def __init__(
        self,
        segmenter: Path,
        segmenter_name: str,
        *,
        corrections: str | None = None,
        original_data: str | None = None,
        device: str = "auto",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.segmenter, self.segmenter_name, self.device = Path(segmenter), segmenter_name, device
        self.state = RunState.READY
        self.candidate: FinetuneResult | None = None
        self.installed: Path | None = None
        self.out: Path | None = None
        self._buffer = b""
        self._stderr = b""
        self._outcome: str | None = None  # "result" | "cancelled" | "error"
        self._error = ""
        self.process: QProcess | None = None
        self.setWindowTitle("Improve the models with my corrections")
        self.setMinimumWidth(720)
        layout = QVBoxLayout(self)

        self.intro = intro = QLabel(
            f"Fine-tune the current segmenter <b>{segmenter_name}</b> on the patients you corrected "
            "(File &gt; Save corrections as training data…), then compare it with the current model on "
            "corrected patients held out of the fine-tuning. Nothing changes until you adopt it."
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

        self.candidate_box = QGroupBox("Candidate beside the current model")
        rl = QVBoxLayout(self.candidate_box)
        self.scope = QLabel("")
        self.scope.setWordWrap(True)
        rl.addWidget(self.scope)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(
            ["Patient", "Dice current", "Dice candidate", "Slice recall current", "Slice recall candidate"]
        )
        tips = (
            "Corrected patient (the last row: mean over them)",
            "Volume Dice of the current model's masks with your corrections (segmenter on every slice)",
            "Volume Dice of the candidate's masks with your corrections",
            "Share of your tumour slices whose current mask overlaps your outline",
            "Share of your tumour slices whose candidate mask overlaps your outline",
        )
        for c, tip in enumerate(tips):
            header = self.table.horizontalHeaderItem(c)
            if header is not None:
                header.setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        rl.addWidget(self.table)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        rl.addWidget(self.verdict)
        self.candidate_box.setVisible(False)
        layout.addWidget(self.candidate_box)

        row = QHBoxLayout()
        self.start_button = QPushButton("&Start fine-tuning")
        self.start_button.setToolTip("Fine-tune in a separate process; the viewer stays usable")
        self.cancel_button = QPushButton("&Cancel")
        self.cancel_button.setToolTip("Stop the fine-tuning; nothing is kept")
        self.adopt_button = QPushButton("&Adopt")
        self.adopt_button.setToolTip("Install the candidate in your model folder and use it from now on")
        self.discard_button = QPushButton("&Discard")
        self.discard_button.setToolTip("Delete the candidate; the current model stays")
        self.close_button = QPushButton("Close")
        self.close_button.setToolTip("Close (a candidate you have not adopted is discarded)")
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
        self.discard_button.setVisible(s is RunState.RESULT)

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
        self.candidate, self.installed, self._outcome, self._error = None, None, None, ""
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
                f"Done in {self.candidate.wall_s:.0f} s: the candidate is ready. Adopt it or discard it."
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
        """Show the candidate beside the current model on the comparison patients."""
        self.candidate = result
        self.out = result.out
        cur, cand = result.current, result.candidate_scores
        n = len(result.compared_on)
        if result.comparison is Comparison.HELD_OUT:
            self.scope.setText(
                f"Scored on {n} corrected patient{'s' if n != 1 else ''} held out of the fine-tuning "
                f"(trained on {len(result.trained_on)} corrected"
                + (f" + {result.original_patients} original" if result.original_patients else "")
                + f" patients, {result.epochs} epoch{'s' if result.epochs != 1 else ''})."
            )
            self.scope.setStyleSheet("")
        else:
            self.scope.setText(
                f"<b>Not held out:</b> with {len(result.trained_on)} corrected patient"
                f"{'s' if len(result.trained_on) != 1 else ''} there is nothing to hold out, so both models "
                "are scored on the patients the candidate was trained on. Its numbers are optimistic; "
                "correct more patients (3 or more) for an honest comparison."
            )
            self.scope.setStyleSheet("color: #ffb74d;")
        rows = [*result.compared_on, None]
        self.table.setRowCount(len(rows))
        for r, pid in enumerate(rows):
            self._row(r, pid, cur, cand)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        height = self.table.horizontalHeader().height() + sum(
            self.table.rowHeight(r) for r in range(min(len(rows), 8))
        )
        self.table.setFixedHeight(height + 2 * self.table.frameWidth())
        delta = cand.dice_mean - cur.dice_mean
        if delta > 0.005:
            text = f"The candidate is better: mean Dice {delta:+.3f}."
        elif delta < -0.005:
            text = f"The candidate is worse: mean Dice {delta:+.3f}. Discarding it is the safe choice."
        else:
            text = "The two models score the same on these patients."
        self.verdict.setText(
            f"{text} Adopt installs it as {cand.name} in your model folder and uses it from now on; "
            f"the current model {cur.name} stays installed (Model > Manage models… to go back)."
        )
        self.candidate_box.setVisible(True)
        self.log_view.setVisible(False)  # the run's log; the comparison is what matters now
        self.state = RunState.RESULT
        self._update_buttons()
        self._fit_height()

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
            item = QTableWidgetItem(text)
            if c:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if pid is None:
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            if c in (2, 4):
                old, new = pair[0] if c == 2 else pair[1]
                if old is not None and new is not None and abs(new - old) > 0.005:
                    item.setForeground(QBrush(_BETTER if new > old else _WORSE))
            self.table.setItem(r, c, item)

    def adopt(self) -> bool:
        """Install the candidate and make it the active segmenter (asking first when it looks worse).

        Returns:
            True when installed.
        """
        from brainseg_core.finetune import adopt

        result = self.candidate
        if result is None or self.state is not RunState.RESULT:
            return False
        worse = not result.candidate_is_better
        if result.comparison is not Comparison.HELD_OUT or worse:
            why = (
                "It scores lower than the current model on these patients."
                if worse
                else "Nothing was held out: its scores come from the patients it was trained on."
            )
            if not ask(self, "Adopt the candidate?", f"{why}\n\nAdopt it anyway?"):
                return False
        try:
            self.installed = adopt(result)
        except BrainSegError as exc:
            notify(self, "error", "Candidate not installed", str(exc))
            return False
        self.state = RunState.DONE
        self.candidate_box.setVisible(False)
        self.status.setText(
            f"Adopted: {result.candidate_scores.name} is installed in your model folder and now in use."
        )
        self._update_buttons()
        self.adopted.emit(self.installed)
        return True

    def discard(self) -> None:
        """Delete the candidate; the current model stays."""
        if self.state is not RunState.RESULT:
            return
        self._remove_work()
        self.candidate = None
        self.state = RunState.DONE
        self.candidate_box.setVisible(False)
        self.status.setText("Candidate discarded; the current model stays in use.")
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
