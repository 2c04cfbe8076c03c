"""The viewer with its networks in a model process: a process that dies is replaced, a chosen
bundle that does not load gives way to the defaults."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from brainseg_app.session import PatientState
from tests.support import save_tiny_bundle

pytestmark = pytest.mark.usefixtures("_no_shipped_models", "messages")


def _analysed(w) -> bool:
    return w.current is not None and w.current.state is PatientState.DONE and not w.is_busy()


def test_a_model_process_that_died_is_replaced_on_the_next_run(fixture_patient, tiny_bundles, qtbot) -> None:
    from brainseg_app.window import MainWindow
    from brainseg_core.engine import ProcessEngine

    engine = ProcessEngine()
    w = MainWindow(engine=engine)
    qtbot.addWidget(w)
    w.show()
    try:
        assert w.open_path(fixture_patient)
        qtbot.waitUntil(lambda: _analysed(w), timeout=30_000)
        os.kill(engine.pid, signal.SIGKILL)
        qtbot.waitUntil(lambda: not engine.alive, timeout=5_000)
        w.run_current()  # the user runs it again: a new model process does it
        qtbot.waitUntil(lambda: _analysed(w), timeout=30_000)
        assert w.current.state is PatientState.DONE and w.current.error in (None, "")
        assert w.analyser._engine is not engine and w.analyser._engine.alive
    finally:
        w.close()
        engine.close()


def test_a_chosen_bundle_whose_network_does_not_load_gives_way_to_the_defaults(
    make_window, fixture_patient, tiny_bundles, messages, tmp_path: Path, qtbot
) -> None:
    # its card and SHA-256 are fine (so the file is taken), its tensors do not fit the card
    wrong = save_tiny_bundle(tmp_path, "segmenter", input_size=64, seed=0, name="wrong")
    wrong.write_text(wrong.read_text().replace('"base_filters": 4', '"base_filters": 8'))
    w = make_window(auto_run=False)
    assert w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.volume is not None, timeout=10_000)
    assert w.load_bundle_file(wrong)
    messages.shown.clear()
    w.run_current()
    qtbot.waitUntil(lambda: _analysed(w), timeout=30_000)
    assert [t for t, _, _ in messages.shown] == ["Model not loaded"]
    assert "you chose" in messages.shown[0][1] and "wrong.safetensors" in messages.shown[0][1]
    assert w.segmenter.path == tiny_bundles / "tiny-seg.json" and w.settings.segmenter_path is None
    assert w.current.base.segmenter.name == "tiny-seg"


def test_a_model_process_that_dies_while_loading_keeps_the_models(
    make_window, fixture_patient, tiny_bundles, messages, qtbot
) -> None:
    from brainseg_core.engine import EngineError

    class Dying:  # an engine whose process dies as the networks load
        alive = True

        def pipeline(self, *args, **kwargs):
            self.alive = False
            raise EngineError("the model process was killed (signal 9), perhaps for lack of memory")

    w = make_window(auto_run=False)
    chosen = str(tiny_bundles / "tiny-seg.json")
    w.settings.segmenter_path = chosen  # a model the user chose earlier
    w.analyser._engine = Dying()
    assert w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.volume is not None, timeout=10_000)
    w.run_current()
    qtbot.waitUntil(lambda: not w.is_busy() and bool(messages.shown), timeout=20_000)
    assert [t for t, _, _ in messages.shown] == ["Cannot run the models"]
    assert w.settings.segmenter_path == chosen  # not the models' fault: the choice is kept
    messages.shown.clear()
    w.run_current()  # the next run starts a new model process, with the same models
    qtbot.waitUntil(lambda: _analysed(w), timeout=30_000)
    assert w.current.base.segmenter.name == "tiny-seg" and not messages.shown
    assert w.settings.segmenter_path == chosen


def test_without_a_model_process_the_networks_run_in_the_viewer(
    make_window, fixture_patient, tiny_bundles, monkeypatch, qtbot
) -> None:
    import brainseg_core.engine

    def refused(*args, **kwargs):
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(brainseg_core.engine, "ProcessEngine", refused)
    w = make_window()
    w.analyser._engine = None  # as a window made without one
    assert w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: _analysed(w), timeout=30_000)
    assert isinstance(w.analyser._engine, brainseg_core.engine.LocalEngine)
    assert w.current.base.segmenter.name == "tiny-seg"
