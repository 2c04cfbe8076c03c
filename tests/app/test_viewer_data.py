"""Viewer around the data: export, datasets, broken inputs, models, crash hook, run_viewer."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PySide6.QtWidgets import QApplication, QDialog, QMessageBox

from brainseg_app import dialogs
from brainseg_app.session import PatientState
from brainseg_core.spacing import Spacing

# Every test here: no shipped models (only those it installs) and message boxes captured.
pytestmark = pytest.mark.usefixtures("_no_shipped_models", "messages")


def _analysed(w) -> bool:
    return w.current is not None and w.current.state is PatientState.DONE and not w.is_busy()


def _export(qtbot, dlg, dest: Path, formats: set[str]) -> list[Path]:
    dlg.destination.setText(str(dest))
    for key, box in dlg.format_boxes.items():
        box.setChecked(key in formats)
    with qtbot.waitSignals([dlg.exported, dlg.runner.stopped], timeout=20_000):
        assert dlg.start_export()
    return dlg.written


def test_export_dialog_writes_the_chosen_files_and_asks_before_replacing(
    make_window, fixture_patient, scripted_models, qtbot, messages, tmp_path
) -> None:
    w = make_window(scripted_models)
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: _analysed(w), timeout=20_000)
    rec, pid = w.current, w.current.patient_id
    dlg = w.export_dialog()
    assert dlg is not None and dlg.isVisible()
    out = tmp_path / "exports"
    written = _export(qtbot, dlg, out, {"tif", "stack", "png", "csv"})
    folder = out / pid
    assert set(written) <= set(folder.iterdir()) and all(p.is_file() for p in written)
    numbers = w.volume.slice_numbers
    reasons = rec.review_reasons()  # what the viewer lists for review
    for i, n in enumerate(numbers):
        mask = tifffile.imread(folder / f"{pid}_{n}_mask.tif")
        assert np.array_equal(mask > 0, rec.shown.slices[i].mask)
        s = rec.shown.slices[i]  # key images: the slices with tumour or a review reason
        assert (folder / f"{pid}_{n}_overlay.png").is_file() == (s.area_px > 0 or bool(reasons[i]))
    assert tifffile.imread(folder / f"{pid}_mask_stack.tif").shape == (len(numbers), 256, 256)
    report = (folder / f"{pid}_report.csv").read_text().splitlines()
    assert len(report) == 1 + len(numbers)
    sidecar = json.loads((folder / "brainseg_export.json").read_text())
    assert json.dumps(sidecar).count("tiny-seg") >= 1
    assert sidecar["picture_window"] == list(w.view.width_level)  # the pictures look as viewed
    assert w.settings.export_dir == str(out)

    # An existing export is replaced only after asking.
    messages.answer = QMessageBox.StandardButton.No
    before = (folder / f"{pid}_report.csv").stat().st_mtime_ns
    assert not dlg.start_export()
    assert messages.questions and "Replace" in messages.questions[-1]
    assert (folder / f"{pid}_report.csv").stat().st_mtime_ns == before
    messages.answer = QMessageBox.StandardButton.Yes
    written = _export(qtbot, dlg, out, {"csv"})
    assert {p.name for p in written} >= {f"{pid}_report.csv"}
    assert not (folder / f"{pid}_1_mask.tif").exists()  # the export folder was replaced as a whole

    # Never into the patient's own folder.
    dlg.destination.setText(str(fixture_patient.parent))
    assert not dlg.start_export() and "holding the source images" in dlg.status.text()
    dlg.close()
    assert messages.shown == []


def test_dataset_root_browser_analyse_all_and_export_all(
    make_window, lgg_fixture_root, scripted_models, qtbot, messages, tmp_path
) -> None:
    w = make_window(scripted_models, auto_run=False)
    assert w.open_path(lgg_fixture_root)
    rows = w.browser.row_texts()
    assert len(rows) == 2 and all(r[1] == "Not analysed" and r[2] == "" for r in rows)
    qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)

    # Export all offers to analyse the others first; accepting queues them, then opens the dialog.
    messages.answer = QMessageBox.StandardButton.Yes
    assert w.export_all_dialog() is None and messages.questions
    qtbot.waitUntil(lambda: not w.is_busy() and bool(w.exporter.dialogs), timeout=20_000)
    assert all(r.state is PatientState.DONE for r in w.records.values())
    assert all(r[1] == "Analysed" and r[2].isdigit() for r in w.browser.row_texts())
    dlg = w.exporter.dialogs[-1]
    assert len(dlg.records) == 2
    written = _export(qtbot, dlg, tmp_path / "all", {"csv"})
    assert {p.parent.name for p in written} == {r.patient_id for r in w.records.values()}
    dlg.close()

    # Switching patients shows stored results without re-running anything.
    second = sorted(w.records)[1]
    base = w.records[second].base
    w.open_patient(second)
    qtbot.waitUntil(lambda: w.volume is not None and w.current.path == second, timeout=20_000)
    assert w.current.base is base and not w.analysis.running
    assert w.results.scatter.data.size == w.n_slices
    # its review reasons, counted for the list before its ground truth was read, now include it
    from brainseg_core.review import ReviewReason, review_reasons

    rec2 = w.current
    assert rec2.truth is not None
    assert rec2.review_reasons() == review_reasons(rec2.shown, truth=rec2.truth)
    assert any(ReviewReason.DISAGREES_WITH_TRUTH in r for r in rec2.review_reasons())
    # an analysed patient opens on its largest outline, as a patient analysed on opening does
    first = sorted(w.records)[0]
    w.open_patient(first)
    qtbot.waitUntil(lambda: w.volume is not None and w.current.path == first, timeout=20_000)
    areas = [s.area_px for s in w.current.shown.slices]
    assert max(areas) > 0 and w.index == areas.index(max(areas)) != w.n_slices // 2


def test_broken_inputs_give_messages_not_crashes(
    make_window, fixture_patient, messages, tmp_path, qtbot
) -> None:
    w = make_window(auto_run=False)
    assert not w.open_path(tmp_path / "missing")
    assert "does not exist" in messages.texts()

    patient = tmp_path / fixture_patient.name
    patient.mkdir()
    for f in sorted(fixture_patient.glob("*_1*.tif"))[:5]:
        shutil.copy(f, patient)
    broken = sorted(patient.glob("*_1?.tif"))[0]
    broken.write_bytes(b"this is not a TIFF")
    messages.shown.clear()
    assert w.open_path(patient)
    qtbot.waitUntil(lambda: w.volume is not None and bool(messages.shown), timeout=20_000)
    title, text, details = messages.shown[-1]
    assert title == "Some slices were skipped" and broken.name in details and "1 slice file" in text
    images = [p for p in patient.glob("*.tif") if not p.name.endswith("_mask.tif")]
    assert w.n_slices == len(images) - 1

    empty = tmp_path / "TCGA_XX_0000_20000101"
    empty.mkdir()
    (empty / "TCGA_XX_0000_20000101_1.tif").write_bytes(b"junk")
    messages.shown.clear()
    if w.open_path(empty):
        qtbot.waitUntil(lambda: bool(messages.shown), timeout=20_000)
    assert "not a readable TIFF" in messages.texts() and "TCGA_XX_0000_20000101_1.tif" in messages.texts()
    assert w.volume is None


def test_models_from_the_registry_menu_fallbacks(
    make_window, fixture_patient, tiny_bundles, messages, tmp_path, qtbot
) -> None:
    w = make_window()  # no models given: resolved from the user model folder like an install
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: _analysed(w), timeout=20_000)
    assert w.current.base.segmenter.name == "tiny-seg"
    assert "tiny-seg" in w.results.models_label.text() and "tiny-cls" in w.results.models_label.text()

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    messages.shown.clear()
    assert not w.load_bundle_file(bad)
    assert messages.shown[-1][0] == "Model not loaded" and "bad.json" in messages.shown[-1][1]
    assert w.segmenter.card.name == "tiny-seg" and w.current.state is PatientState.DONE

    assert w.load_bundle_file(tiny_bundles / "tiny-seg.json")  # loading re-runs the open patient
    assert w.settings.segmenter_path == str(tiny_bundles / "tiny-seg.json")
    qtbot.waitUntil(lambda: _analysed(w), timeout=20_000)

    # A remembered bundle that no longer loads falls back to the default with a message.
    w.close()
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_bundles.glob("tiny-seg.*"):
        shutil.copy(f, broken / f.name)
    (broken / "tiny-seg.safetensors").write_bytes(b"corrupted")
    w2 = make_window(auto_run=False)
    w2.settings.segmenter_path = str(broken / "tiny-seg.json")
    messages.shown.clear()
    assert w2.ensure_models()
    assert [t for t, _, _ in messages.shown] == ["Model not loaded"]
    assert "tiny-seg" in messages.shown[0][1] and "default" in messages.shown[0][1]
    assert w2.segmenter.path == tiny_bundles / "tiny-seg.json" and w2.settings.segmenter_path is None

    # With no model installed at all: the first analysis explains it in a dialog, later opens only
    # note it in the status bar, and Run explains it again.
    shutil.rmtree(tiny_bundles)
    w3 = make_window()
    messages.shown.clear()
    w3.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w3.volume is not None and w3._models_loaded and not w3.is_busy(), timeout=20_000)
    assert [t for t, _, _ in messages.shown] == ["No model"] and "brainseg-train" in messages.shown[0][1]
    assert w3.current.state is PatientState.NEW
    w3.open_path(fixture_patient.parent)
    qtbot.waitUntil(lambda: w3.volume is not None and not w3.is_busy(), timeout=20_000)
    assert len(messages.shown) == 1 and "No segmentation model" in w3.statusBar().currentMessage()
    w3.run_current()
    assert [t for t, _, _ in messages.shown] == ["No model", "No model"]
    w4 = make_window(auto_run=False)
    assert not w4.ensure_models()
    assert messages.shown[-1][0] == "No model" and "brainseg-train" in messages.shown[-1][1]


def test_models_dialog_and_about(make_window, scripted_models, monkeypatch, messages) -> None:
    shown = []
    monkeypatch.setattr(QDialog, "exec", lambda self: shown.append(self) or 0)
    w = make_window(scripted_models, auto_run=False)
    w.show_models()
    html = shown[-1].text.toHtml()
    assert "tiny-cls" in html and "tiny-seg" in html and "mask_probability" in html
    w.show_shortcuts()
    assert type(shown[-1]).__name__ == "ShortcutsDialog"
    about = []
    import brainseg_app.about as about_module

    closed: list = []

    class Shown:  # what show_about returns: a dialog whose "finished" the window listens to
        finished = types.SimpleNamespace(connect=closed.append)

    monkeypatch.setattr(about_module, "show_about", lambda parent, *a, **k: about.append(parent) or Shown())
    w.show_about()
    assert about == [w] and len(closed) == 1  # focus goes back to the slice view when it closes


def test_spacing_per_patient_or_dataset_gives_volumes_in_ml(
    make_window, lgg_fixture_root, scripted_models, qtbot
) -> None:
    w = make_window(scripted_models)
    w.open_path(lgg_fixture_root)
    qtbot.waitUntil(lambda: _analysed(w), timeout=20_000)
    first, second = sorted(w.records)
    assert "enter the pixel spacing" in w.results.summary_label.text()
    w.set_spacing(Spacing(0.9, 0.9, 3.0), whole_dataset=True)  # every patient of the dataset
    w.set_spacing(Spacing(0.5, 0.5, 2.0))  # this patient only: wins over the dataset's
    voxels = w.current.shown.volume_voxels
    assert w.current.shown.volume_ml == pytest.approx(voxels * 0.5 * 0.5 * 2.0 / 1000)
    assert "mL" in w.results.summary_label.text()
    assert w.volume.spacing == Spacing(0.5, 0.5, 2.0)  # the displayed volume as well
    shown = w.current.slice_shown(w.index)
    assert shown.area_mm2 == pytest.approx(shown.area_px * 0.25)
    assert w.model.spacing_for(w.records[second]) == Spacing(0.9, 0.9, 3.0)
    assert w.settings.spacing(first) == Spacing(0.5, 0.5, 2.0)
    assert w.settings.spacing(lgg_fixture_root) == Spacing(0.9, 0.9, 3.0)
    w.close()
    # remembered: a new window applies both
    w2 = make_window(scripted_models, auto_run=False)
    w2.open_path(lgg_fixture_root)
    qtbot.waitUntil(lambda: w2.volume is not None, timeout=20_000)
    assert w2.volume.spacing == Spacing(0.5, 0.5, 2.0)
    assert w2.model.spacing_for(w2.records[second]) == Spacing(0.9, 0.9, 3.0)
    w2.set_spacing(None)  # forget this patient's own: the dataset's applies again
    assert w2.volume.spacing == Spacing(0.9, 0.9, 3.0) and w2.settings.spacing(first) is None
    dlg = dialogs.SpacingDialog(Spacing(0.5, 0.5, 2.0), "P1", lgg_fixture_root, w2)
    assert dlg.value() == Spacing(0.5, 0.5, 2.0) and not dlg.whole_dataset.isChecked()
    dlg._clear()
    assert dlg.value() is None


def test_excepthook_shows_and_logs_instead_of_crashing(monkeypatch, messages, caplog) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    dialogs.install_excepthook(lambda: None, Path("/tmp/brainseg.log"))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        with caplog.at_level(logging.ERROR):
            sys.excepthook(*sys.exc_info())
    title, text, details = messages.shown[-1]
    assert title == "Unexpected error" and "RuntimeError: boom" in text and "Traceback" in details
    assert "boom" in caplog.text


def test_run_viewer_opens_the_path_in_a_dark_window(monkeypatch, fixture_patient, qtbot) -> None:
    from brainseg_app.window import MainWindow, run_viewer

    seen: dict = {}

    def exec_(app: QApplication) -> int:  # stands in for the event loop: look, then quit
        windows = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        assert len(windows) == 1
        w = windows[0]
        w.settings.auto_run = False
        qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)
        seen["path"] = w.current.path
        seen["lightness"] = app.palette().window().color().lightness()
        seen["hook"] = sys.excepthook
        w.close()
        return 3

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(QApplication, "exec", exec_)
    handlers = list(logging.getLogger().handlers)
    try:
        assert run_viewer(fixture_patient) == 3
    finally:
        for h in logging.getLogger().handlers:
            if h not in handlers:
                logging.getLogger().removeHandler(h)
                h.close()
    assert seen["path"] == fixture_patient and seen["lightness"] < 80
    assert seen["hook"] is not sys.__excepthook__  # the crash dialog was installed while running
    assert not [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]


def test_dropping_a_folder_opens_it(make_window, fixture_patient, qtbot) -> None:
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    w = make_window(auto_run=False)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(fixture_patient))])
    event = QDropEvent(
        QPointF(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    w.dropEvent(event)
    qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)
    assert w.current.path == fixture_patient


def _ship_tiny_models_and_damage_a_user_bundle(tiny_bundle_dir: Path) -> tuple[Path, Path]:
    """Tiny bundles as the shipped ones, plus a truncated newer segmenter in the user folder."""
    import os

    shipped = Path(os.environ["BRAINSEG_RESOURCES"]) / "models"
    for f in tiny_bundle_dir.iterdir():
        shutil.copy(f, shipped / f.name)
    user = Path(os.environ["BRAINSEG_USER_DATA"]) / "models"
    user.mkdir(parents=True, exist_ok=True)
    card = json.loads((shipped / "tiny-seg.json").read_text())
    card.update(name="my-seg", weights_file="my-seg.safetensors")
    (user / "my-seg.json").write_text(json.dumps(card))
    (user / "my-seg.safetensors").write_bytes((shipped / "tiny-seg.safetensors").read_bytes()[:1000])
    return shipped, user


def test_a_broken_chosen_bundle_falls_back_past_a_damaged_user_bundle(_tiny_bundle_dir, tmp_path) -> None:
    from brainseg_app.analysis import _resolve_models

    shipped, _ = _ship_tiny_models_and_damage_a_user_bundle(_tiny_bundle_dir)
    missing = tmp_path / "gone.json"
    cls, seg, warning = _resolve_models(None, str(missing))
    assert seg.path == shipped / "tiny-seg.json" and cls.path == shipped / "tiny-cls.json"
    assert "could not be loaded" in warning and "gone.json" in warning


def test_a_damaged_user_bundle_falls_back_to_the_shipped_models(
    make_window, fixture_patient, _tiny_bundle_dir, messages, qtbot
) -> None:
    shipped, _ = _ship_tiny_models_and_damage_a_user_bundle(_tiny_bundle_dir)

    w = make_window()  # no models given: resolved like an install, the user's bundle first
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.volume is not None and w._models_loaded and not w.is_busy(), timeout=20_000)
    assert w.segmenter is not None and w.segmenter.path == shipped / "tiny-seg.json"
    assert w.classifier is not None and w.classifier.path == shipped / "tiny-cls.json"
    assert w.current.state is PatientState.DONE
    assert [t for t, _, _ in messages.shown] == ["Model not loaded"]
    assert "my-seg.safetensors" in messages.shown[0][1]


def test_export_writes_the_results_it_started_with_when_the_models_change(
    make_window, lgg_fixture_root, scripted_models, qtbot, messages, tmp_path, monkeypatch
) -> None:
    import threading

    import brainseg_core.export as export_module

    w = make_window(scripted_models, auto_run=False)
    assert w.open_path(lgg_fixture_root)
    qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)
    w.analyse_all()
    qtbot.waitUntil(
        lambda: all(r.state is PatientState.DONE for r in w.records.values()) and not w.is_busy(),
        timeout=20_000,
    )
    expected = {r.patient_id: r.n_slices for r in w.records.values()}

    started, go = threading.Event(), threading.Event()
    export_results = export_module.export_results

    def gated(*args, **kwargs):
        started.set()
        assert go.wait(10)
        return export_results(*args, **kwargs)

    monkeypatch.setattr(export_module, "export_results", gated)
    dlg = w.export_all_dialog()
    assert dlg is not None and len(dlg.records) == 2
    dlg.destination.setText(str(tmp_path / "out"))
    for key, box in dlg.format_boxes.items():
        box.setChecked(key == "csv")
    with qtbot.waitSignal(dlg.runner.stopped, timeout=20_000):
        assert dlg.start_export()
        qtbot.waitUntil(started.is_set, timeout=20_000)
        w.set_models(*scripted_models)  # like "Use default models": every result is reset
        # (auto-run off: the displayed patient's saved analysis by these models is shown again)
        assert all(r.shown is None for r in w.records.values() if r is not w.current)
        go.set()
    assert messages.shown == [] and "Wrote" in dlg.status.text()
    assert {p.parent.name for p in dlg.written} == set(expected)
    for pid, n_slices in expected.items():
        rows = (tmp_path / "out" / pid / f"{pid}_report.csv").read_text().splitlines()
        assert len(rows) == 1 + n_slices
    assert not dlg.start_export() and "no results any more" in dlg.status.text()
    dlg.close()


def test_a_failed_load_of_a_patient_already_left_marks_it_without_a_dialog(
    make_window, fixture_patient, messages, tmp_path, qtbot
) -> None:
    good = tmp_path / fixture_patient.name
    shutil.copytree(fixture_patient, good)
    broken = tmp_path / "TCGA_ZZ_0000_20000101"
    broken.mkdir()
    for k in (1, 2):
        (broken / f"{broken.name}_{k}.tif").write_bytes(b"junk")
    w = make_window(auto_run=False)
    assert w.open_path(tmp_path)
    qtbot.waitUntil(lambda: w.volume is not None and not w.is_busy(), timeout=20_000)
    assert w.current.path == good
    w.open_patient(broken)
    w.open_patient(good)  # before the broken one's read has failed
    qtbot.waitUntil(
        lambda: w.volume is not None and w.current.path == good and not w.loader.running, timeout=20_000
    )
    assert messages.shown == []
    assert w.records[broken].state is PatientState.FAILED and "not a readable TIFF" in w.records[broken].error
    assert dict((r[0], r[1]) for r in w.browser.row_texts())[broken.name] == "Failed"

    w.open_patient(broken)  # still shown: the dialog explains it
    qtbot.waitUntil(lambda: bool(messages.shown), timeout=20_000)
    assert messages.shown[-1][0] == "Cannot open patient"
