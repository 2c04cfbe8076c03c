"""Model > Improve the models with my corrections…: the dialog runs the fine-tuning in a separate process,
shows its progress and the comparison, and adopts (installs, activates) or discards the candidate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from brainseg_app.finetune_dialog import RunState, work_root
from brainseg_core.finetune import FinetuneSettings, fine_tune
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
    assert "tiny-seg" in dialog.intro.text()
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

    messages.answer = QMessageBox.StandardButton.Yes  # if the random candidate scores lower
    qtbot.mouseClick(dialog.adopt_button, Qt.MouseButton.LeftButton)
    active = active_bundle("segmenter")
    assert active is not None and active.card.name == result.candidate_scores.name
    assert active.card.training["fine_tune"]["parent"]["name"] == "tiny-seg"
    assert w.segmenter is not None and w.segmenter.card.name == active.card.name  # reloaded
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

    # a finished run's candidate, shown and discarded
    result = fine_tune(
        tiny_bundles / "tiny-seg.json",
        corrections,
        work_root() / "run",
        settings=FinetuneSettings(epochs=1, batch_size=4, device="cpu"),
    )
    dialog.show_result(result)
    assert dialog.discard_button.isVisible()
    qtbot.mouseClick(dialog.discard_button, Qt.MouseButton.LeftButton)
    assert not result.out.exists() and "discarded" in dialog.status.text()
    assert active_bundle("segmenter").card.name == "tiny-seg"  # type: ignore[union-attr]


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
    dialog.close()
    assert not result.out.exists()
