"""Viewer test fixtures: message boxes captured instead of shown, tiny and scripted models, windows.

The window tests take ``_no_shipped_models`` and ``messages`` for every test with
``pytestmark = pytest.mark.usefixtures("_no_shipped_models", "messages")``; the other tests here
(self-test, desktop entry, about box) see the real shipped resources.

Two kinds of models:

- ``tiny_bundles``: real random-weight bundles written by the root ``tiny_bundle`` fixture (resunet
  base_filters=4 depth=2, plain_cnn width=4) and installed into the test's user model folder, so
  the viewer finds them through ``brainseg_core.registry`` exactly as it finds installed models.
- ``scripted_models``: the same cards with the deterministic networks of ``tests.support``: the
  segmenter outputs a disc of known radius in the middle of every slice it runs on, the classifier
  a tumour probability that rises with the slice's mean intensity. Overlay tests can then assert
  what is drawn.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from brainseg_core.bundle import ModelBundle, load_bundle
from tests.support import DiscSegmenter, MeanClassifier


@dataclasses.dataclass
class Messages:
    """Every message box the code under test tried to show."""

    shown: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (title, text, details)
    questions: list[str] = dataclasses.field(default_factory=list)
    answer: QMessageBox.StandardButton = QMessageBox.StandardButton.No

    def texts(self) -> str:
        return "\n".join(f"{t}: {x}\n{d}" for t, x, d in self.shown)


@pytest.fixture
def _no_shipped_models(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resources without shipped models, so tests see only the models they install themselves."""
    resources = tmp_path_factory.mktemp("resources")
    (resources / "models").mkdir()
    monkeypatch.setenv("BRAINSEG_RESOURCES", str(resources))


@pytest.fixture
def messages(monkeypatch: pytest.MonkeyPatch) -> Messages:
    """Capture QMessageBox instead of blocking on a modal dialog; questions get ``answer``."""
    box = Messages()

    def exec_(self: QMessageBox) -> int:
        box.shown.append((self.windowTitle(), self.text(), self.detailedText()))
        return int(QMessageBox.StandardButton.Ok.value)

    def question(_parent, title, text, *args, **kwargs):
        box.questions.append(f"{title}: {text}")
        return box.answer

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    monkeypatch.setattr(QMessageBox, "about", staticmethod(lambda *a: box.shown.append(("about", "", ""))))
    return box


@pytest.fixture(scope="session")
def _tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Callable[..., Path]) -> Path:
    out = tmp_path_factory.mktemp("tiny_bundles")
    tiny_bundle(out, "segmenter", input_size=64, seed=0)
    tiny_bundle(out, "classifier", input_size=64)
    return out


@pytest.fixture
def tiny_bundles(_tiny_bundle_dir: Path) -> Path:
    """Random-weight bundles installed in this test's user model folder; returns that folder."""
    dest = Path(os.environ["BRAINSEG_USER_DATA"]) / "models"
    shutil.copytree(_tiny_bundle_dir, dest, dirs_exist_ok=True)
    return dest


@pytest.fixture
def scripted_models(_tiny_bundle_dir: Path) -> tuple[ModelBundle, ModelBundle]:
    """(classifier, segmenter) bundles with the scripted networks of ``tests.support``."""
    cls = load_bundle(_tiny_bundle_dir / "tiny-cls.json")
    seg = load_bundle(_tiny_bundle_dir / "tiny-seg.json")
    return dataclasses.replace(cls, model=MeanClassifier()), dataclasses.replace(seg, model=DiscSegmenter())


@pytest.fixture(scope="session")
def model_process() -> Iterator[object]:
    """One model process (``ProcessEngine``) shared by the window tests that load models from files
    (starting one costs a torch import)."""
    from brainseg_core.engine import ProcessEngine

    engine = ProcessEngine()
    yield engine
    engine.close()


@pytest.fixture
def make_window(qtbot, model_process) -> Iterator[Callable[..., object]]:
    """Factory of shown main windows (closed at the end of the test).

    Windows given in-memory ``models`` (the scripted networks) run them in the test's process
    (``LocalEngine``); the others load their models from files in the shared model process, as
    the viewer does.
    """
    from brainseg_app.window import MainWindow
    from brainseg_core.engine import LocalEngine

    windows: list[MainWindow] = []

    def make(models: tuple[ModelBundle, ModelBundle] | None = None, *, auto_run: bool = True) -> MainWindow:
        w = MainWindow(engine=model_process if models is None else LocalEngine())
        w.settings.auto_run = auto_run
        w.controls.auto_run.setChecked(auto_run)
        qtbot.addWidget(w)
        w.resize(1200, 800)
        w.show()
        if models is not None:
            w.set_models(*models)
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()


@pytest.fixture
def flair_series_pick(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Answers the DICOM series dialog: set ``[0]`` to a SeriesInstanceUID to choose it as FLAIR
    (OK), or leave it None to cancel (the guessed series stay)."""
    from PySide6.QtWidgets import QDialog

    from brainseg_app import dialogs

    pick: list[str | None] = [None]

    def exec_(dlg: dialogs.SeriesDialog) -> int:
        if pick[0] is None:
            return int(QDialog.DialogCode.Rejected.value)
        flair = dlg.combos[next(s for s in dlg.combos if s.value == "flair")]
        flair.setCurrentIndex(flair.findData(pick[0]))
        return int(QDialog.DialogCode.Accepted.value)

    monkeypatch.setattr(dialogs.SeriesDialog, "exec", exec_)
    return pick
