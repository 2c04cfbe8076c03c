"""Model > Improve the models with my corrections…: the dialog runs the fine-tuning of both models in a
separate process, shows its progress and both comparisons, and adopts (installs, activates) the ticked
candidates, asking first about a worse one, or discards them."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from brainseg_app.finetune_dialog import RunState, work_root
from brainseg_core.finetune import FinetuneSettings, fine_tune
from brainseg_core.model_kind import ModelKind
from brainseg_core.registry import active_bundle
from tests.support import make_patient

pytestmark = pytest.mark.usefixtures("_no_shipped_models", "messages")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def corrections(tmp_path: Path) -> Path:
    root = tmp_path / "corrections"
    for i in range(3):
        make_patient(root, f"TCGA_QT_{i:04d}_20000101", n=6, size=64, tumour_slices=(2, 3), seed=i)
    return root


@pytest.fixture(autouse=True)
def _child_finds_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fine-tuning process imports the BrainSeg under test, wherever it is installed."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    monkeypatch.setenv("PYTHONPATH", path)


def _dialog(make_window, qtbot, corrections: Path):
    w = make_window(auto_run=False)
    w.settings.corrections_dir = str(corrections)  # what Save corrections remembers
    dialog = w.improve_models_dialog()
    assert dialog is not None
    qtbot.addWidget(dialog)
    dialog.epochs.setValue(1)
    dialog.show()
    return w, dialog


def test_start_progress_result_adopt(make_window, qtbot, tiny_bundles, corrections, messages) -> None:
    w, dialog = _dialog(make_window, qtbot, corrections)
    assert dialog.corrections.text() == str(corrections) and not dialog.adopt_button.isVisible()
    assert "tiny-seg" in dialog.intro.text() and "tiny-cls" in dialog.intro.text()
    assert dialog.with_classifier.isChecked() and dialog.with_classifier.isEnabled()  # a classifier is active
    assert dialog.command(Path("out"))[-2:] == ["--classifier", str(tiny_bundles / "tiny-cls.json")]
    seen: list[int] = []
    dialog.progress.valueChanged.connect(seen.append)
    qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    assert dialog.state is RunState.RUNNING and dialog.cancel_button.isVisible()
    assert w.isEnabled()  # the window is not blocked: the work is in another process
    qtbot.waitUntil(lambda: dialog.state is not RunState.RUNNING, timeout=60_000)
    assert dialog.state is RunState.RESULT, dialog.status.text() + messages.texts()
    assert max(seen) > 0
    result = dialog.candidate
    assert result is not None and len(result.held_out) == 1 and len(result.trained_on) == 2
    assert dialog.table.rowCount() == 2 and dialog.table.item(1, 0).text() == "Mean"
    assert dialog.table.item(0, 0).text() == result.held_out[0]
    assert "held out of the fine-tuning" in dialog.scope.text()
    assert dialog.adopt_button.isVisible() and dialog.discard_button.isVisible()
    # the slice gate's numbers beside the segmenter's
    assert result.candidate_gate is not None and dialog.gate_table.isVisible()
    assert dialog.gate_table.rowCount() == 5 and "recall" in dialog.gate_table.item(0, 0).text()
    assert "tiny-cls" in dialog.gate_title.text() and result.candidate_gate.name in dialog.gate_title.text()
    # a candidate comes ticked only when it scored no worse than the current model
    assert dialog.adopt_segmenter.isChecked() == result.candidate_is_better
    assert dialog.adopt_classifier.isChecked() == bool(result.classifier_is_better)
    assert dialog.adopt_classifier.isVisible()
    dialog.adopt_segmenter.setChecked(True)  # the reader adopts both anyway
    dialog.adopt_classifier.setChecked(True)

    messages.answer = QMessageBox.StandardButton.Yes  # if a random candidate scores lower
    qtbot.mouseClick(dialog.adopt_button, Qt.MouseButton.LeftButton)
    active = active_bundle("segmenter")
    assert active is not None and active.card.name == result.candidate_scores.name
    assert active.card.training["fine_tune"]["parent"]["name"] == "tiny-seg"
    gate = active_bundle("classifier")
    assert gate is not None and gate.card.name == result.candidate_gate.name
    assert gate.card.training["fine_tune"]["parent"]["name"] == "tiny-cls"
    assert set(dialog.installed) == {ModelKind.SEGMENTER, ModelKind.CLASSIFIER}
    assert w.segmenter is not None and w.segmenter.card.name == active.card.name  # reloaded
    assert w.classifier is not None and w.classifier.card.name == gate.card.name
    assert not result.out.exists() and "Adopted" in dialog.status.text()
    assert w.settings.corrections_dir == str(corrections)


def test_cancel_leaves_nothing_and_discard_deletes(make_window, qtbot, tiny_bundles, corrections) -> None:
    _, dialog = _dialog(make_window, qtbot, corrections)
    dialog.epochs.setValue(200)
    assert dialog.start()
    out = dialog.out
    qtbot.waitUntil(lambda: dialog.progress.value() > 0, timeout=30_000)
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.state is RunState.DONE, timeout=30_000)
    assert out is not None and not out.exists() and "cancelled" in dialog.status.text()
    assert active_bundle("segmenter").card.name == "tiny-seg"  # type: ignore[union-attr]

    # a finished run's candidates, shown and discarded
    result = fine_tune(
        tiny_bundles / "tiny-seg.json",
        corrections,
        work_root() / "run",
        classifier=tiny_bundles / "tiny-cls.json",
        settings=FinetuneSettings(epochs=1, batch_size=4, device="cpu"),
    )
    dialog.show_result(result)
    assert dialog.discard_button.isVisible()
    qtbot.mouseClick(dialog.discard_button, Qt.MouseButton.LeftButton)
    assert not result.out.exists() and "discarded" in dialog.status.text()
    assert active_bundle("segmenter").card.name == "tiny-seg"  # type: ignore[union-attr]
    assert active_bundle("classifier").card.name == "tiny-cls"  # type: ignore[union-attr]


def test_adopt_asks_per_model_and_installs_only_the_ticked(
    make_window, qtbot, tiny_bundles, corrections, messages
) -> None:
    _, dialog = _dialog(make_window, qtbot, corrections)
    run = fine_tune(
        tiny_bundles / "tiny-seg.json",
        corrections,
        work_root() / "run",
        classifier=tiny_bundles / "tiny-cls.json",
        settings=FinetuneSettings(epochs=1, batch_size=4, device="cpu"),
    )
    cur = run.current_gate
    assert cur is not None and run.candidate_gate is not None
    # a gate candidate that misses one more tumour slice, a segmenter candidate that is better
    worse_gate = dataclasses.replace(run.candidate_gate, tp=max(0, cur.tp - 1), fn=cur.fn + 1)
    better_seg = dataclasses.replace(run.candidate_scores, dice={k: 1.0 for k in run.candidate_scores.dice})
    result = dataclasses.replace(run, candidate_gate=worse_gate, candidate_scores=better_seg)
    dialog.show_result(result)
    assert "misses 1 more tumour slice" in dialog.verdict.text()
    assert "segmenter candidate is better" in dialog.verdict.text()

    # the worse gate comes unticked, the better segmenter ticked; the reader ticks both
    assert dialog.adopt_segmenter.isChecked() and not dialog.adopt_classifier.isChecked()
    dialog.adopt_classifier.setChecked(True)
    messages.answer = QMessageBox.StandardButton.No  # both ticked: asked about the gate only
    assert not dialog.adopt() and result.out.exists()
    assert len(messages.questions) == 1 and "slice gate candidate misses" in messages.questions[0]
    assert "segmenter candidate scores" not in messages.questions[0]
    assert active_bundle("classifier").card.name == "tiny-cls"  # type: ignore[union-attr]

    dialog.adopt_classifier.setChecked(False)  # only the segmenter: nothing to ask
    assert dialog.adopt() and len(messages.questions) == 1
    assert list(dialog.installed) == [ModelKind.SEGMENTER] and not result.out.exists()
    assert active_bundle("segmenter").card.name == result.candidate_scores.name  # type: ignore[union-attr]
    assert active_bundle("classifier").card.name == "tiny-cls"  # type: ignore[union-attr]


def test_closing_with_a_candidate_discards_it(make_window, qtbot, tiny_bundles, corrections) -> None:
    _, dialog = _dialog(make_window, qtbot, corrections)
    result = fine_tune(
        tiny_bundles / "tiny-seg.json",
        corrections,
        work_root() / "run",
        settings=FinetuneSettings(epochs=1, batch_size=4, device="cpu", held_out_share=0.0),
    )
    dialog.show_result(result)
    assert "Not held out" in dialog.scope.text()
    assert not dialog.gate_table.isVisible() and not dialog.adopt_classifier.isVisible()  # segmenter only
    dialog.adopt_segmenter.setChecked(False)
    assert not dialog.adopt_button.isEnabled()  # nothing ticked
    dialog.close()
    assert not result.out.exists()


def test_without_a_classifier_the_gate_cannot_be_ticked(qtbot, tmp_path: Path) -> None:
    from brainseg_app.finetune_dialog import ImproveModelsDialog

    dialog = ImproveModelsDialog(tmp_path / "seg.json", "seg", corrections=str(tmp_path))
    qtbot.addWidget(dialog)
    assert not dialog.with_classifier.isChecked() and not dialog.with_classifier.isEnabled()
    assert "--classifier" not in dialog.command(tmp_path / "out")
    dialog = ImproveModelsDialog(tmp_path / "seg.json", "seg", classifier=tmp_path / "cls.json")
    qtbot.addWidget(dialog)
    dialog.with_classifier.setChecked(False)  # the reader's choice: the segmenter only
    assert "--classifier" not in dialog.command(tmp_path / "out")
