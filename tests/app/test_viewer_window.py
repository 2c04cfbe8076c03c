"""The main window end to end: open, analyse in the worker, overlay, navigate, threshold, cancel."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt, QThreadPool
from PySide6.QtGui import QColor, QWheelEvent
from PySide6.QtWidgets import QApplication, QColorDialog, QMessageBox

from brainseg_app.session import PatientState
from brainseg_core.inference import SliceResult, label_components
from tests.support import DISC_RADIUS, DiscAndSpotSegmenter, DiscSegmenter, MeanClassifier

# Every test here: no shipped models (only those it installs) and message boxes captured.
pytestmark = pytest.mark.usefixtures("_no_shipped_models", "messages")

N_FIXTURE = 20


def _analysed(w) -> bool:
    return w.current is not None and w.current.state is PatientState.DONE and not w.is_busy()


def _open_and_analyse(qtbot, w, path: Path) -> None:
    assert w.open_path(path)
    qtbot.waitUntil(lambda: _analysed(w), timeout=20_000)


def _reddish(w) -> int:
    """How much red the rendered slice view shows beyond grey: the sum of red minus green (>20)."""
    QApplication.processEvents()
    img = w.view.grab().toImage().convertToFormat(img_format())
    a = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)
    r, g = a[..., 0].astype(int), a[..., 1].astype(int)
    excess = r - g
    return int(excess[excess > 20].sum())


def img_format():
    from PySide6.QtGui import QImage

    return QImage.Format.Format_RGBA8888


def test_open_runs_the_analysis_in_the_worker_and_draws_the_mask(
    make_window, fixture_patient, scripted_models, messages, qtbot
) -> None:
    w = make_window(scripted_models)
    _open_and_analyse(qtbot, w, fixture_patient)
    rec = w.current
    assert rec.complete and rec.n_slices == N_FIXTURE
    gated = [s.index for s in rec.base.slices if s.tumour_probability >= 0.5]
    assert 0 < len(gated) < N_FIXTURE  # the classifier gate really selects slices
    assert rec.tumour_slices() == len(gated)
    assert w.browser.row_texts() == [(rec.patient_id, "Analysed", str(len(gated)))]
    assert w.thumbnails.predicted() == [i in gated for i in range(N_FIXTURE)]

    # The disc the scripted segmenter draws: radius DISC_RADIUS of the width, at source size.
    w.set_slice(gated[0])
    area = rec.slice_shown(gated[0]).area_px
    assert area == pytest.approx(np.pi * (DISC_RADIUS * 256) ** 2, rel=0.05)
    pred = w.view.pred
    assert pred.fill.isVisible() and pred.outline.isVisible()
    alpha = pred.fill.image[..., 3]
    assert int((alpha > 0).sum()) == area and alpha.max() == round(0.4 * 255)
    # the fill image covers the mask's bounding box, placed where the mask is
    rows, cols = np.nonzero(rec.slice_shown(gated[0]).mask)
    box = pred.fill.mapRectToParent(pred.fill.boundingRect())
    assert box.getRect() == (cols.min(), rows.min(), np.ptp(cols) + 1, np.ptp(rows) + 1)
    assert not pred.outline.path().isEmpty()
    assert "Dice vs ground truth" in w.results.summary_label.text()
    assert messages.shown == []


def test_overlay_controls_change_what_is_drawn(make_window, fixture_patient, scripted_models, qtbot) -> None:
    w = make_window(scripted_models)
    _open_and_analyse(qtbot, w, fixture_patient)
    c = w.controls
    c.channel.setCurrentIndex(1)  # FLAIR in grey: red pixels can only come from the overlay
    c.show_gt.setChecked(False)
    w.set_slice(0)
    w.jump_tumour(1)
    assert w.current.slice_shown(w.index).area_px > 0
    w.view.fit()
    base = _reddish(w)
    assert base > 500 * 100

    c.opacity.setValue(100)
    assert w.view.pred.fill.image[..., 3].max() == 255
    assert _reddish(w) > base
    c.opacity.setValue(0)
    assert w.view.pred.fill.image[..., 3].max() == 0
    outline_only = _reddish(w)
    assert 0 < outline_only < base
    c.contour.setChecked(False)
    assert not w.view.pred.outline.isVisible() and _reddish(w) == 0
    c.contour.setChecked(True)
    c.opacity.setValue(60)
    c.fill.setChecked(False)
    assert not w.view.pred.fill.isVisible() and w.view.pred.outline.isVisible()
    c.fill.setChecked(True)

    shown = _reddish(w)
    qtbot_key(w, Qt.Key.Key_O)  # hide the prediction: exactly what its checkbox says
    assert not c.show_overlay.isChecked() and _reddish(w) == 0
    qtbot_key(w, Qt.Key.Key_G)  # the ground truth follows its own switch, whatever O says
    assert c.show_gt.isChecked() and w.view.gt.mask is not None and _reddish(w) == 0
    qtbot_key(w, Qt.Key.Key_G)
    assert not c.show_gt.isChecked() and w.view.gt.mask is None
    qtbot_key(w, Qt.Key.Key_O)
    assert _reddish(w) == shown

    c.contour_width.setValue(5)
    assert w.view.pred.outline.pen().widthF() == 5

    # Ground truth in its own colour, with its own toggle.
    gt_slice = int(np.argmax(w.volume.masks.sum(axis=(1, 2))))
    w.set_slice(gt_slice)
    c.show_gt.setChecked(True)
    gt = w.view.gt
    assert gt.fill.isVisible()
    assert tuple(gt.fill.image[gt.fill.image[..., 3] > 0][0, :3]) == (52, 199, 89)
    qtbot_key(w, Qt.Key.Key_G)
    assert not gt.fill.isVisible() and not gt.outline.isVisible()


def qtbot_key(w, key: Qt.Key, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    from PySide6.QtTest import QTest

    w.view.setFocus()
    QTest.keyClick(w.view, key, modifier)
    QApplication.processEvents()


def _wheel(w, dy: int, modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    vp = w.view.graphics.viewport()
    pos = QPointF(vp.width() / 2, vp.height() / 2)
    ev = QWheelEvent(
        pos,
        QPointF(vp.mapToGlobal(pos.toPoint())),
        QPoint(0, 0),
        QPoint(0, dy),
        Qt.MouseButton.NoButton,
        modifiers,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(vp, ev)
    QApplication.processEvents()


def test_navigation_keys_wheel_slider_and_thumbnails(make_window, fixture_patient, qtbot) -> None:
    w = make_window(auto_run=False)
    assert w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)
    assert w.index == N_FIXTURE // 2 and w.current.state is PatientState.NEW  # auto-run off
    steps = [
        (Qt.Key.Key_Right, 11),
        (Qt.Key.Key_Left, 10),
        (Qt.Key.Key_Down, 11),
        (Qt.Key.Key_Up, 10),
        (Qt.Key.Key_PageDown, 15),
        (Qt.Key.Key_PageUp, 10),
        (Qt.Key.Key_End, N_FIXTURE - 1),
        (Qt.Key.Key_Right, N_FIXTURE - 1),  # clamped
        (Qt.Key.Key_Home, 0),
    ]
    for key, expected in steps:
        qtbot_key(w, key)
        assert w.index == expected, key
    assert w.view.corner_text("tl").endswith(f"Slice 1 / {N_FIXTURE}")
    _wheel(w, -120)  # wheel towards the user: next slice
    _wheel(w, -120)
    assert w.index == 2
    _wheel(w, 120)
    assert w.index == 1
    zoom = w.view.zoom_factor()
    _wheel(w, 120, Qt.KeyboardModifier.ControlModifier)  # Ctrl+wheel zooms, slice unchanged
    assert w.index == 1 and w.view.zoom_factor() > zoom * 1.05
    w.view.fit()
    w.slider.setValue(7)
    assert w.index == 7 and w.slice_label.text() == f"8 / {N_FIXTURE}"
    rect = w.thumbnails.visualItemRect(w.thumbnails.item(3))
    qtbot.mouseClick(w.thumbnails.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert w.index == 3
    w.results.click_slice(12)
    assert w.index == 12
    px = w.volume.images[12, 40, 30]
    assert w.view.pixel_info(30.5, 40.5) == f"x 30  y 40  FLAIR {px[1]}"  # FLAIR is the default channel
    w.controls.channel.setCurrentIndex(3)
    assert w.view.pixel_info(30.5, 40.5) == f"x 30  y 40  pre {px[0]}  FLAIR {px[1]}  post {px[2]}"
    assert w.view.pixel_info(-1, 5) == ""


def test_window_level_by_right_drag_persists_across_slices(make_window, fixture_patient, qtbot) -> None:
    w = make_window(auto_run=False)
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)
    vp = w.view.graphics.viewport()
    start = QPoint(vp.width() // 2, vp.height() // 2)
    qtbot.mousePress(vp, Qt.MouseButton.RightButton, pos=start)
    for k in range(1, 11):
        qtbot.mouseMove(vp, start + QPoint(-6 * k, 3 * k))
    qtbot.mouseRelease(vp, Qt.MouseButton.RightButton, pos=start + QPoint(-60, 30))
    width, level = w.view.width_level
    assert width < 255 and level > 127.5  # left = narrower window, down = higher level
    lo, hi = w.view.image_item.levels
    assert hi - lo == pytest.approx(width)
    w.step(3)
    assert w.view.width_level == (width, level)
    assert tuple(w.view.image_item.levels) == (lo, hi)
    w.controls.channel.setCurrentIndex(2)  # another sequence keeps its own window
    assert w.view.width_level != (width, level)
    w.controls.channel.setCurrentIndex(1)
    assert w.view.width_level == (width, level)
    w.controls.auto_window.click()
    assert w.view.width_level != (width, level)
    w.controls.reset_window.click()
    assert w.view.width_level == (255.0, 127.5)


def test_thresholds_rethreshold_instantly_and_segment_newly_gated_slices(
    make_window, fixture_patient, scripted_models, monkeypatch, qtbot
) -> None:
    calls = {"seg": 0, "cls": 0}
    seg_forward, cls_forward = DiscSegmenter.forward, MeanClassifier.forward

    def seg(self, x):
        calls["seg"] += len(x)
        return seg_forward(self, x)

    def cls(self, x):
        calls["cls"] += len(x)
        return cls_forward(self, x)

    monkeypatch.setattr(DiscSegmenter, "forward", seg)
    monkeypatch.setattr(MeanClassifier, "forward", cls)
    w = make_window(scripted_models)
    _open_and_analyse(qtbot, w, fixture_patient)
    rec = w.current
    n_gated = rec.tumour_slices()
    assert calls == {"seg": n_gated, "cls": N_FIXTURE}

    w.controls.gate.setValue(1000)  # nothing passes: no network runs, masks vanish at once
    assert rec.tumour_slices() == 0 and w.view.pred.mask is None
    assert w.results.gate_label.toPlainText() == "gate 1"  # the plot's gate line says where it is
    assert w.results.gate_label.pos().y() == w.results.gate_line.value() == 1.0
    assert calls == {"seg": n_gated, "cls": N_FIXTURE}
    w.controls.gate.setValue(500)
    assert rec.tumour_slices() == n_gated
    w.set_slice(next(s.index for s in rec.shown.slices if s.area_px))
    area = rec.slice_shown(w.index).area_px
    w.controls.mask_threshold.setValue(990)  # edge pixels of the resized disc drop out
    assert 0 < rec.slice_shown(w.index).area_px < area
    assert calls == {"seg": n_gated, "cls": N_FIXTURE}

    w.controls.gate.setValue(0)  # slices never segmented now pass: the segmenter runs on them
    assert rec.missing(w.thresholds)
    qtbot.waitUntil(lambda: not w.is_busy() and not rec.missing(w.thresholds), timeout=20_000)
    assert calls == {"seg": N_FIXTURE, "cls": N_FIXTURE}
    assert rec.tumour_slices() == N_FIXTURE
    assert w.settings.classifier_threshold == 0.0  # remembered


def _slow(monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
    forward = DiscSegmenter.forward

    def slow(self, x):
        time.sleep(delay)
        return forward(self, x)

    monkeypatch.setattr(DiscSegmenter, "forward", slow)


def test_cancel_stops_the_run_and_keeps_partial_results(
    make_window, fixture_patient, scripted_models, monkeypatch, qtbot
) -> None:
    _slow(monkeypatch, 0.3)
    w = make_window(scripted_models)
    w.controls.gate.setValue(0)  # segment every slice, streamed a few at a time
    w.analysis.item.connect(lambda obj: isinstance(obj, SliceResult) and w.cancel_button.click())
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.current.state is PatientState.CANCELLED and not w.is_busy(), timeout=20_000)
    assert 0 < len(w.current.raw) < N_FIXTURE
    assert not w.progress.isVisible() and not w.cancel_button.isVisible()
    assert "cancelled" in w.statusBar().currentMessage()


def test_closing_during_a_run_stops_the_worker(
    make_window, fixture_patient, scripted_models, monkeypatch, qtbot
) -> None:
    _slow(monkeypatch, 0.3)
    w = make_window(scripted_models)
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.analysis.running, timeout=20_000)
    t0 = time.monotonic()
    w.close()
    assert time.monotonic() - t0 < 5
    assert not w.analysis.running and QThreadPool.globalInstance().activeThreadCount() == 0


def test_settings_are_remembered_between_windows(make_window, monkeypatch) -> None:
    monkeypatch.setattr(QColorDialog, "getColor", staticmethod(lambda *a, **k: QColor("#2060ff")))
    w = make_window(auto_run=False)
    w.controls.opacity.setValue(75)
    w.controls.contour_width.setValue(4)
    w.controls.contour.setChecked(False)
    w.controls.pred_colour.click()
    w.controls.device.setCurrentText("cpu")
    assert QColor(w.view.overlay_style.pred_colour) == QColor("#2060ff")
    w.close()
    w2 = make_window(auto_run=False)
    c = w2.controls
    assert (c.opacity.value(), c.contour_width.value(), c.contour.isChecked()) == (75, 4, False)
    assert c.pred_colour.colour() == QColor("#2060ff") and c.device.currentText() == "cpu"
    style = w2.view.overlay_style
    assert style.opacity == 0.75 and QColor(style.pred_colour) == QColor("#2060ff") and not style.contour
    assert not c.auto_run.isChecked()


def test_every_control_has_a_tooltip_and_shortcuts_are_listed(make_window) -> None:
    from PySide6.QtWidgets import QAbstractButton, QAbstractSlider, QComboBox, QScrollBar, QSpinBox

    from brainseg_app.dialogs import ShortcutsDialog

    w = make_window(auto_run=False)
    missing = []
    for cls in (QAbstractButton, QAbstractSlider, QComboBox, QSpinBox):
        for widget in w.findChildren(cls):
            if isinstance(widget, QScrollBar) or widget.objectName().startswith("qt_"):
                continue
            if type(widget).__name__ == "QToolButton" and widget.defaultAction() is not None:
                continue  # tool bar buttons show their action's tooltip
            if not widget.toolTip():
                missing.append(f"{type(widget).__name__} {widget.text() if hasattr(widget, 'text') else ''}")
    assert [m for m in missing if "QToolBarExtension" not in m] == []
    rows = dict((a, k) for k, a in w.shortcut_rows())
    assert rows["Next slice with a predicted tumour"] == "N"
    assert rows["Show or hide the predicted mask (the ground truth follows its own switch, G)"] == "O"
    assert "Right drag" in dict(w.shortcut_rows())
    dlg = ShortcutsDialog(w.shortcut_rows(), w)
    assert dlg.table.rowCount() == len(w.shortcut_rows())


def test_largest_region_option_filters_the_shown_masks_and_is_remembered(
    make_window, fixture_patient, scripted_models, qtbot
) -> None:
    cls, seg = scripted_models
    w = make_window((cls, dataclasses.replace(seg, model=DiscAndSpotSegmenter())))
    _open_and_analyse(qtbot, w, fixture_patient)
    rec = w.current
    masks = np.stack([s.mask for s in rec.shown.slices])
    labels, n = label_components(masks)
    assert n >= 2  # the disc and the spot
    largest = int(np.bincount(labels.ravel())[1:].max())
    w.controls.largest_component.setChecked(True)
    assert w.settings.largest_component is True and rec.shown.thresholds.largest_component
    assert rec.shown.volume_voxels == largest
    assert label_components(np.stack([s.mask for s in rec.shown.slices]))[1] == 1
    w.controls.largest_component.setChecked(False)
    assert rec.shown.volume_voxels == int(masks.sum())


def test_the_finished_analysis_is_post_processed_by_the_job_not_on_the_gui_thread(
    make_window, fixture_patient, scripted_models, qtbot, monkeypatch
) -> None:
    import threading

    import brainseg_core.results as results_module
    from brainseg_core.results import rethreshold
    from brainseg_core.spacing import Spacing

    calls: dict[str, int] = {"gui": 0, "job": 0}
    keep_largest = results_module.keep_largest

    def watched(*args, **kwargs):  # the largest-region step, wherever it is computed
        calls["gui" if threading.current_thread() is threading.main_thread() else "job"] += 1
        return keep_largest(*args, **kwargs)

    monkeypatch.setattr(results_module, "keep_largest", watched)
    cls, seg = scripted_models
    w = make_window((cls, dataclasses.replace(seg, model=DiscAndSpotSegmenter())))
    w.controls.largest_component.setChecked(True)
    _open_and_analyse(qtbot, w, fixture_patient)
    rec = w.current
    assert calls["gui"] == 0 and calls["job"] > 0  # the 3-D steps ran in the job
    expected = rethreshold(rec.base.with_spacing(w.spacing_for(rec)), w.model.shown_thresholds(rec))
    assert rec.shown.thresholds.largest_component
    assert [s.area_px for s in rec.shown.slices] == [s.area_px for s in expected.slices]
    assert rec.shown.volume_voxels == expected.volume_voxels
    assert label_components(np.stack([s.mask for s in rec.shown.slices]))[1] == 1
    # nothing changed: showing the same thresholds again computes nothing
    calls["gui"] = 0
    w.model.apply(rec)
    assert calls["gui"] == 0

    def change_while_running(change) -> None:
        """Run the patient again, calling ``change`` as its first slice arrives."""

        def once(record, index) -> None:
            w.analyser.sliceAnalysed.disconnect(once)
            change()

        w.analyser.sliceAnalysed.connect(once)
        w.run_current()
        qtbot.waitUntil(lambda: _analysed(w), timeout=20_000)

    # The thresholds moved while the job ran: what the job computed no longer applies, and the
    # window computes it again for the thresholds shown.
    change_while_running(lambda: w.controls.largest_component.setChecked(False))
    assert not rec.shown.thresholds.largest_component
    assert label_components(np.stack([s.mask for s in rec.shown.slices]))[1] >= 2

    # The same for the voxel size.
    w.controls.largest_component.setChecked(True)
    calls["gui"] = 0
    change_while_running(lambda: w.set_spacing(Spacing(0.5, 0.5, 3.0)))
    assert calls["gui"] > 0
    assert rec.shown.spacing == Spacing(0.5, 0.5, 3.0)
    assert rec.shown.volume_ml == pytest.approx(rec.shown.volume_voxels * 0.5 * 0.5 * 3.0 / 1000)


def test_faint_edges_option_reaches_the_shown_thresholds_and_is_remembered(
    make_window, fixture_patient, scripted_models, qtbot
) -> None:
    from brainseg_core.thresholds import FAINT_EDGE_PROBABILITY

    w = make_window(scripted_models)
    _open_and_analyse(qtbot, w, fixture_patient)
    rec = w.current
    assert rec.shown.thresholds.edge == 0.0 and not w.controls.faint_edges.isChecked()  # the card's
    w.controls.faint_edges.setChecked(True)
    assert w.settings.faint_edges is True
    assert w.thresholds.edge == rec.shown.thresholds.edge == FAINT_EDGE_PROBABILITY
    w.controls.default_thresholds.click()
    assert w.settings.faint_edges is None and rec.shown.thresholds.edge == 0.0
    assert not w.controls.faint_edges.isChecked()


def test_non_finite_or_huge_numbers_in_the_settings_file_fall_back_to_defaults(make_window) -> None:
    from brainseg_app.settings import config_dir

    (config_dir() / "brainseg.ini").write_text(
        "[thresholds]\nclassifier=nan\nmask=inf\n[overlay]\ncontour_width=1e400\nopacity=-1e400\n"
    )
    w = make_window(auto_run=False)  # used to raise inside MainWindow.__init__
    s = w.settings
    assert s.classifier_threshold is None and s.mask_threshold is None
    assert (s.contour_width, s.opacity) == (2, 40)
    assert (w.thresholds.gate, w.thresholds.mask) == (0.5, 0.5)
    assert (w.controls.contour_width.value(), w.controls.opacity.value()) == (2, 40)


def test_run_or_analyse_all_right_after_cancel_runs_the_patient_again(
    make_window, lgg_fixture_root, scripted_models, monkeypatch, qtbot
) -> None:
    _slow(monkeypatch, 0.3)
    w = make_window(scripted_models, auto_run=False)
    w.controls.gate.setValue(0)  # segment every slice: two batches of 16 + 4
    assert w.open_path(lgg_fixture_root)
    qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)
    rec = w.current
    other = next(r for r in w.records.values() if r is not rec)

    def cancel_mid_run() -> None:
        qtbot.waitUntil(lambda: rec.state is PatientState.RUNNING and len(rec.raw) > 0, timeout=20_000)
        w.cancel_analysis()
        assert w.analysis.running and w.analysis.cancelling

    w.run_current()
    cancel_mid_run()
    w.run_current()  # queued until the cancelled job's worker stops
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=30_000)
    assert rec.state is PatientState.DONE and len(rec.raw) == N_FIXTURE
    assert not w.analysis.cancelling

    w.run_current()
    cancel_mid_run()
    w.analyse_all()
    assert rec.state is PatientState.QUEUED
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=30_000)
    assert rec.state is PatientState.DONE and len(rec.raw) == N_FIXTURE
    assert other.state is PatientState.DONE and len(other.raw) == N_FIXTURE


def test_changing_models_while_a_patient_runs_never_leaves_it_analysed_without_results(
    make_window, fixture_patient, scripted_models, monkeypatch, qtbot
) -> None:
    w = make_window(scripted_models, auto_run=False)
    assert w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)
    w.run_current()
    qtbot.waitUntil(lambda: _analysed(w), timeout=20_000)
    rec = w.current
    _slow(monkeypatch, 0.3)
    w.controls.gate.setValue(0)  # the slices the gate stopped are segmented now, slowly
    qtbot.waitUntil(lambda: w.analysis.running and w.analysis.tag == ("segment", rec), timeout=20_000)
    w.set_models(*scripted_models)  # the segment job is cancelled and every result cleared
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=20_000)
    # never "Analysed" with nothing to show: once the cancelled job has stopped, auto-run off, the
    # saved analysis by the active models (the same card here) is restored
    qtbot.waitUntil(lambda: rec.state is PatientState.DONE, timeout=5_000)
    assert rec.complete and len(rec.raw) == N_FIXTURE

    w.run_current()  # a new run asked for, cancelled by another model change: restored as well
    qtbot.waitUntil(lambda: rec.state is PatientState.RUNNING and len(rec.raw) > 0, timeout=20_000)
    w.set_models(*scripted_models)
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=20_000)
    qtbot.waitUntil(lambda: rec.state is not PatientState.NEW, timeout=5_000)
    assert rec.state is PatientState.DONE and rec.complete  # not "Cancelled" over a full analysis


def test_leaving_a_patient_and_coming_straight_back_analyses_it(
    make_window, lgg_fixture_root, scripted_models, monkeypatch, qtbot
) -> None:
    import threading

    hold, second_pass = threading.Event(), threading.Event()
    calls = [0]
    forward = DiscSegmenter.forward

    def held(self, x):  # the second forward pass waits while hold is set
        calls[0] += 1
        if calls[0] == 2:
            second_pass.set()
            while hold.is_set():
                time.sleep(0.02)
        return forward(self, x)

    monkeypatch.setattr(DiscSegmenter, "forward", held)
    hold.set()
    w = make_window(scripted_models)
    w.controls.gate.setValue(0)  # segment every slice: two forward passes (16 + 4 slices)
    assert w.open_path(lgg_fixture_root)
    first, second = sorted(w.records)
    rec = w.records[first]
    qtbot.waitUntil(second_pass.is_set, timeout=20_000)  # the run is held in its second pass
    assert rec.state is PatientState.RUNNING
    w.open_patient(second)  # cancels the first patient's run
    w.open_patient(first)  # back before that run has stopped
    qtbot.waitUntil(lambda: w.volume is not None and w.current is rec, timeout=20_000)
    assert w.analysis.running and w.analysis.cancelling  # read back before the run stopped
    hold.clear()
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=30_000)
    assert rec.state is PatientState.DONE and len(rec.raw) == N_FIXTURE


def test_leaving_while_newly_gated_slices_are_segmented_and_coming_back_segments_them(
    make_window, lgg_fixture_root, scripted_models, monkeypatch, qtbot
) -> None:
    import threading

    hold, entered = threading.Event(), threading.Event()  # while hold is set, a forward pass waits
    forward = DiscSegmenter.forward

    def held(self, x):
        entered.set()
        while hold.is_set():
            time.sleep(0.02)
        return forward(self, x)

    monkeypatch.setattr(DiscSegmenter, "forward", held)
    w = make_window(scripted_models)
    assert w.open_path(lgg_fixture_root)
    first, second = sorted(w.records)
    rec = w.records[first]
    qtbot.waitUntil(lambda: _analysed(w), timeout=20_000)
    hold.set()
    entered.clear()
    w.controls.gate.setValue(0)  # the slices the gate stopped are segmented now
    qtbot.waitUntil(lambda: w.analysis.tag == ("segment", rec) and entered.is_set(), timeout=20_000)
    w.open_patient(second)  # cancels the segmentation
    w.open_patient(first)  # back before it has stopped
    qtbot.waitUntil(lambda: w.volume is not None and w.current is rec, timeout=20_000)
    assert w.analysis.cancelling
    hold.clear()
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=20_000)
    assert rec.state is PatientState.DONE and not rec.missing(w.thresholds)


def test_opening_another_patient_while_the_models_load_keeps_them(
    make_window, lgg_fixture_root, scripted_models, monkeypatch, qtbot
) -> None:
    from brainseg_app import analysis

    builds = []
    build = analysis._build_pipeline

    def slow_build(*args, **kwargs):
        builds.append(args)
        time.sleep(0.5)
        return build(*args, **kwargs)

    monkeypatch.setattr(analysis, "_build_pipeline", slow_build)
    w = make_window(scripted_models)
    assert w.open_path(lgg_fixture_root)
    qtbot.waitUntil(lambda: w.analysis.running and w.analysis.tag == ("prepare", None), timeout=20_000)
    second = sorted(w.records)[1]
    w.open_patient(second)
    assert not w.analysis.cancelling
    qtbot.waitUntil(lambda: w.current.path == second and _analysed(w), timeout=30_000)
    assert len(builds) == 1 and w.analyser.pipeline is not None


def test_slices_to_review_are_listed_and_explained(
    make_window, fixture_patient, scripted_models, qtbot
) -> None:
    from brainseg_core.inference import ReviewReason

    w = make_window(scripted_models)
    _open_and_analyse(qtbot, w, fixture_patient)
    rec = w.current
    rec.reviewed = set(range(rec.n_slices))  # the reader has looked at every slice...
    w._refresh_results()
    assert "to review" not in w.results.summary_label.text()
    rec.reviewed -= {3, 7}  # ...but these two
    slices = list(rec.shown.slices)
    slices[3] = dataclasses.replace(slices[3], review=ReviewReason.CLASSIFIER_ONLY)
    slices[7] = dataclasses.replace(slices[7], review=ReviewReason.OUTSIDE_LARGEST_REGION)
    rec.shown = dataclasses.replace(rec.shown, slices=slices)
    w.set_slice(3)
    w._refresh_results()
    assert "2</b> slice(s) to review (R): 4, 8" in w.results.summary_label.text()
    assert "Review: classifier says tumour but the segmenter outlined nothing" in w.results.slice_label.text()
    w.set_slice(0)
    assert "classifier says tumour" not in w.results.slice_label.text()


def test_the_slice_panel_says_in_plain_words_what_the_gate_did(
    make_window, fixture_patient, scripted_models, qtbot
) -> None:
    w = make_window(scripted_models)
    _open_and_analyse(qtbot, w, fixture_patient)
    gate = w.thresholds.gate
    for s in w.current.shown.slices:
        w.set_slice(s.index)
        text = w.results.slice_label.text()
        if s.tumour_probability >= gate:
            assert f"passed the slice gate ({gate:.3g}), segmented" in text
        else:
            assert f"below the slice gate ({gate:.3g}), not segmented" in text
        assert "above the gate" not in text


def test_the_keyboard_stays_with_the_slice_view_after_dialogs_and_patient_picks(
    make_window, fixture_patient, scripted_models, qtbot, monkeypatch
) -> None:
    from PySide6.QtWidgets import QApplication

    from brainseg_app import dialogs

    w = make_window(scripted_models)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    _open_and_analyse(qtbot, w, fixture_patient)
    w.browser.tree.setFocus()  # e.g. the user clicked in the patient list
    qtbot.waitUntil(lambda: QApplication.focusWidget() is w.browser.tree)
    w.browser.patientActivated.emit(fixture_patient)  # picking a patient gives the keys back
    qtbot.waitUntil(lambda: QApplication.focusWidget() is w.view)

    def exec_moving_focus(dialog) -> int:  # a dialog that leaves the focus elsewhere on closing
        w.browser.tree.setFocus()
        return 0

    monkeypatch.setattr(dialogs.ShortcutsDialog, "exec", exec_moving_focus)
    w.show_shortcuts()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is w.view)
    before = w.index
    qtbot.keyClick(w.view, Qt.Key.Key_Down)
    assert w.index == before + 1 and w.current.path == fixture_patient


def test_opening_a_queued_patient_analyses_it_next_and_progress_moves_by_slices(
    make_window, lgg_fixture_root, scripted_models, qtbot
) -> None:
    from brainseg_app.analysis import _build_pipeline
    from brainseg_core.engine import LocalEngine
    from brainseg_core.inference.device import CPU_FORWARD_BATCH

    w = make_window(scripted_models, auto_run=False)
    assert w.open_path(lgg_fixture_root)
    first, second = sorted(w.records)
    an = w.analyser
    an._batch = True  # as during "Analyse all", with both patients waiting
    an.queue[:] = [("analyse", first), ("analyse", second)]
    w.open_patient(second)
    assert an.queue[0] == ("analyse", second) and len(an.queue) == 2
    an.queue.clear()
    an._batch = False
    # on the CPU the viewer streams CPU_FORWARD_BATCH slices at a time: progress per slice or two,
    # and Cancel acts after at most that many slices
    pipeline, warnings = _build_pipeline(LocalEngine(), w.classifier, w.segmenter, "cpu")
    assert warnings == [] and pipeline.batch_size == CPU_FORWARD_BATCH


def test_the_status_bar_does_not_say_analysing_once_the_work_is_done(
    make_window, fixture_patient, scripted_models, qtbot
) -> None:
    w = make_window(scripted_models)
    _open_and_analyse(qtbot, w, fixture_patient)
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=20_000)
    w.statusBar().showMessage("Segmenting 2 more slice(s) of X on cpu …")  # as a job would leave it
    w.analyser.idle.emit()
    assert w.statusBar().currentMessage() == ""
    w.statusBar().showMessage("X: tumour on 3 of 20 slices")  # a result stays
    w.analyser.idle.emit()
    assert w.statusBar().currentMessage() == "X: tumour on 3 of 20 slices"


def test_window_level_is_kept_per_patient_and_channel_with_auto_on_first_view(
    make_window, lgg_fixture_root, scripted_models, qtbot
) -> None:
    from brainseg_core.display import auto_window

    w = make_window(scripted_models, auto_run=False)
    assert w.open_path(lgg_fixture_root)
    qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)
    first = w.current.path
    flair_auto = auto_window(w.volume.images[..., 1])
    assert w.view.width_level == pytest.approx(flair_auto)  # not the raw 0-255 range
    w.view.set_window(100.0, 80.0)  # the reader's own window on FLAIR (as a right-drag sets it)
    w.controls.channel.setCurrentIndex(0)  # pre-contrast gets its own, automatic one
    assert w.view.width_level == pytest.approx(auto_window(w.volume.images[..., 0]))
    w.controls.window_preset.textActivated.emit("Full range (0-255)")
    assert w.view.width_level == (255.0, 127.5)
    w.controls.channel.setCurrentIndex(1)
    assert w.view.width_level == (100.0, 80.0)  # FLAIR as the reader left it
    second = sorted(w.records)[1]
    w.open_patient(second)
    qtbot.waitUntil(lambda: w.volume is not None and w.current.path == second, timeout=20_000)
    assert w.view.width_level == pytest.approx(auto_window(w.volume.images[..., 1]))
    w.open_patient(first)
    qtbot.waitUntil(lambda: w.volume is not None and w.current.path == first, timeout=20_000)
    assert w.view.width_level == (100.0, 80.0)


def test_quitting_during_an_analysis_asks_first(
    make_window, fixture_patient, scripted_models, qtbot, messages, monkeypatch
) -> None:
    w = make_window(scripted_models)
    closed: list[bool] = []
    monkeypatch.setattr(w, "close", lambda: closed.append(True))
    assert w.confirm_quit()  # nothing running: no question
    monkeypatch.setattr(type(w.analyser), "active", property(lambda self: True))
    messages.answer = QMessageBox.StandardButton.No
    w.quit()
    assert closed == [] and "Quit BrainSeg?" in messages.questions[-1]
    messages.answer = QMessageBox.StandardButton.Yes
    w.quit()
    assert closed == [True]
    # an export being written asks too
    monkeypatch.setattr(type(w.analyser), "active", property(lambda self: False))

    class _Writing:
        runner = type("R", (), {"running": True})()

    w.exporter.dialogs.append(_Writing())
    messages.answer = QMessageBox.StandardButton.No
    w.quit()
    assert closed == [True] and "export is being written" in messages.questions[-1]
    w.exporter.dialogs.clear()


def test_an_analysis_survives_a_restart(
    make_window, fixture_patient, scripted_models, qtbot, monkeypatch
) -> None:
    from brainseg_core.inference import Pipeline

    w = make_window(scripted_models)
    _open_and_analyse(qtbot, w, fixture_patient)
    first = w.current.shown
    assert list(w.analyser.store.folder.glob("*.npz"))  # kept in the user data folder
    w.close()

    runs: list[int] = []
    real_run = Pipeline.run
    monkeypatch.setattr(Pipeline, "run", lambda self, *a, **k: runs.append(1) or real_run(self, *a, **k))
    # A new window without auto-run: the saved analysis is shown at once, no network runs.
    w2 = make_window(scripted_models, auto_run=False)
    assert w2.open_path(fixture_patient)
    qtbot.waitUntil(lambda: _analysed(w2), timeout=20_000)
    assert runs == [] and "restored" in w2.statusBar().currentMessage()
    assert [s.area_px for s in w2.current.shown.slices] == [s.area_px for s in first.slices]
    areas = [s.area_px for s in first.slices]
    assert w2.index == areas.index(max(areas)) != w2.n_slices // 2  # on its largest outline
    w2.close()
    # With auto-run the analysis job takes the saved one too; an explicit Run analysis runs the networks.
    w3 = make_window(scripted_models)
    _open_and_analyse(qtbot, w3, fixture_patient)
    assert runs == [] and w3.current.tumour_slices() == first.tumour_slices
    w3.run_current()
    qtbot.waitUntil(lambda: runs != [] and _analysed(w3), timeout=20_000)


def test_switching_thorough_mode_back_restores_the_first_analysis_without_a_run(
    make_window, fixture_patient, scripted_models, qtbot, monkeypatch
) -> None:
    from brainseg_core.inference import Pipeline

    runs: list[bool] = []
    real_run = Pipeline.run
    monkeypatch.setattr(
        Pipeline, "run", lambda self, *a, **k: runs.append(self.flip_tta) or real_run(self, *a, **k)
    )
    w = make_window(scripted_models)
    _open_and_analyse(qtbot, w, fixture_patient)
    for on in (True, False, True):
        w.actions_by_name["thorough"].trigger()
        qtbot.waitUntil(lambda on=on: _analysed(w) and w.current.model_shown.flip_tta is on, timeout=20_000)
    assert runs == [False, True]  # each mode ran once; switching back restored its saved analysis


def test_a_saved_analysis_of_other_models_is_not_shown_as_current(
    make_window, fixture_patient, scripted_models, qtbot
) -> None:
    w = make_window(scripted_models)
    _open_and_analyse(qtbot, w, fixture_patient)
    w.close()
    cls, seg = scripted_models
    other = dataclasses.replace(seg, card=dataclasses.replace(seg.card, weights_sha256="f" * 64))
    w2 = make_window((cls, other), auto_run=False)
    assert w2.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w2.volume is not None, timeout=20_000)
    assert w2.current.state is PatientState.NEW and w2.current.base is None
    assert "made by other models" in w2.statusBar().currentMessage()
    w2.close()
    # the same models in the other mode: the message says which
    w3 = make_window(scripted_models, auto_run=False)
    w3.settings.thorough = True
    assert w3.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w3.volume is not None, timeout=20_000)
    assert w3.current.state is PatientState.NEW
    assert "made without thorough mode" in w3.statusBar().currentMessage()


def test_stepping_through_slices_keeps_the_plot_in_place(
    make_window, fixture_patient, scripted_models, qtbot
) -> None:
    # Slices with review reasons have more lines of text than those without. The plot above the
    # text keeps its place and height whatever the text: it would jump, and be redrawn in full, at
    # every such step.
    from brainseg_core.inference import ReviewReason

    w = make_window(scripted_models)
    w.resize(1400, 860)
    _open_and_analyse(qtbot, w, fixture_patient)
    rec = w.current
    slices = list(rec.shown.slices)
    slices[3] = dataclasses.replace(slices[3], review=ReviewReason.CLASSIFIER_ONLY)
    rec.shown = dataclasses.replace(rec.shown, slices=slices)
    plot, lines = set(), set()
    for index in (0, 3, 4, 3, 0, 4):  # no reason, two (set here and near the gate), one (near it)
        w.set_slice(index)
        QApplication.processEvents()
        plot.add(w.results.plot.geometry().getRect())
        lines.add(w.results.slice_label.text().count("\n"))
    assert len(lines) == 3  # three different lengths of text...
    assert len(plot) == 1, plot  # ...one plot geometry


def test_the_plot_caches_its_points_and_lets_them_repaint_for_a_new_screen(make_window, qtbot) -> None:
    from PySide6.QtWidgets import QGraphicsItem

    w = make_window()
    cached = QGraphicsItem.CacheMode.DeviceCoordinateCache
    points = w.results._points
    qtbot.waitUntil(lambda: all(p.cacheMode() == cached for p in points), timeout=5_000)
    assert w.results.curve.curve.cacheMode() == cached  # the curve's line, the item that paints
    w.windowHandle().screenChanged.emit(w.windowHandle().screen())  # moved to another screen
    assert all(p.cacheMode() == QGraphicsItem.CacheMode.NoCache for p in points)  # painted on the plot
    qtbot.waitUntil(lambda: all(p.cacheMode() == cached for p in points), timeout=5_000)


def test_streamed_results_refresh_the_plot_at_most_every_quarter_second(
    make_window, fixture_patient, scripted_models, qtbot, monkeypatch
) -> None:
    import itertools

    from brainseg_app.window import MainWindow

    refreshes: list[float] = []
    real = MainWindow._refresh_results

    def counted(self) -> None:
        refreshes.append(time.monotonic())
        real(self)

    monkeypatch.setattr(MainWindow, "_refresh_results", counted)
    w = make_window(scripted_models)
    _open_and_analyse(qtbot, w, fixture_patient)
    qtbot.wait(300)
    refreshes.clear()
    rec = w.current
    for k in range(6):  # a slice every 100 ms, as the networks deliver them here
        w.analyser.sliceAnalysed.emit(rec, k)
        qtbot.wait(100)
    qtbot.wait(300)
    # each slice used to restart a 60 ms refresh (one ~100 ms after another); now at most one per
    # 250 ms (however late a loaded machine delivers the slices)
    assert refreshes
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(refreshes))
