"""Help > About opens offscreen and carries the licences, the dataset attribution and the disclaimer."""

from __future__ import annotations

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from brainseg_app.about import AboutDialog, show_about
from brainseg_core import __version__

CARD = {
    "name": "lgg-resunet-test",
    "kind": "segmenter",
    "arch": "resunet",
    "input_size": 256,
    "metrics": {"dice": 0.8766, "slices": 12, "note": "ignored", "eval": {"n_patients": 16, "x": 1.5}},
    "weights_sha256": "abcdef0123456789" + "0" * 48,
    "license": "CC BY-NC-SA 4.0",
}


class _Card:
    """Stands in for brainseg_core.model_card.ModelCard (only ``to_dict`` is used)."""

    def to_dict(self) -> dict:
        return {**CARD, "name": "card-object", "kind": "classifier", "arch": "resnet18"}


class _Bundle:
    card = _Card()


def test_about_dialog_contents(qtbot: QtBot) -> None:
    dialog = AboutDialog(None, [CARD, _Bundle()])
    qtbot.addWidget(dialog)
    text = dialog.text.toPlainText()
    assert f"BrainSeg {__version__}" in text
    assert "not a certified medical device" in text
    assert "Buda" in text and "Computers in Biology and Medicine 109 (2019)" in text
    assert "TCGA-LGG" in text and "CC BY-NC-SA 4.0" in text
    for licence in ("LGPLv3", "BSD-3-Clause", "Apache-2.0", "MPL-2.0", "MIT-CMU"):
        assert licence in text
    assert "lgg-resunet-test (segmenter, resunet, 256px), sha256 abcdef012345" in text
    assert "abcdef0123456" not in text  # only the 12-character prefix
    assert "validation: dice 0.877, slices 12 (16 patients)" in text
    assert "ignored" not in text and "1.5" not in text
    assert "card-object (classifier, resnet18" in text
    flags = dialog.text.textInteractionFlags()
    assert flags & Qt.TextInteractionFlag.TextSelectableByMouse
    assert dialog.text.isReadOnly()


def test_show_about_opens_and_closes(qtbot: QtBot) -> None:
    dialog = show_about(None)
    qtbot.waitExposed(dialog)
    assert dialog.isVisible() and dialog.windowTitle() == "About BrainSeg"
    assert "No models loaded." in dialog.text.toPlainText()
    with qtbot.waitSignal(dialog.finished):
        dialog.reject()
    assert not dialog.isVisible()
