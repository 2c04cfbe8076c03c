"""Viewer building blocks without the main window: overlay maths, settings, session, worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from brainseg_app.overlay import boundary_segments, mask_rgba
from brainseg_app.session import PatientRecord, PatientState
from brainseg_app.settings import Settings, config_dir
from brainseg_app.worker import JobRunner
from brainseg_core.display import auto_window, levels
from brainseg_core.errors import Cancelled, DataError
from brainseg_core.inference import PatientResult, SliceResult
from brainseg_core.io import PatientFormat
from brainseg_core.model_ref import ModelRef
from brainseg_core.spacing import Spacing
from brainseg_core.thresholds import Thresholds


def test_mask_rgba_paints_only_the_mask() -> None:
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    out = mask_rgba(mask, (255, 0, 0), 0.4)
    assert out.shape == (4, 5, 4) and out.dtype == np.uint8
    assert (out[mask] == [255, 0, 0, 102]).all()
    assert (out[~mask] == 0).all()
    with pytest.raises(ValueError, match="opacity"):
        mask_rgba(mask, (1, 2, 3), 1.5)


def test_boundary_segments_of_a_square_and_a_hole() -> None:
    mask = np.zeros((6, 6), bool)
    mask[1:4, 2:5] = True
    x, y = boundary_segments(mask)
    segs = {((x[i], y[i]), (x[i + 1], y[i + 1])) for i in range(0, len(x), 2)}
    assert segs == {((2, 1), (5, 1)), ((2, 4), (5, 4)), ((2, 1), (2, 4)), ((5, 1), (5, 4))}
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False
    x, y = boundary_segments(ring)
    assert len(x) // 2 == 8  # outer square (4) + the hole's four unit edges
    assert boundary_segments(np.zeros((3, 3), bool))[0].size == 0


def test_boundary_segments_cover_every_mask_edge_once() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) < rng.random()
        x, y = boundary_segments(mask)
        unit_edges = set()
        for (x0, x1), (y0, y1) in zip(x.reshape(-1, 2), y.reshape(-1, 2), strict=True):
            assert x0 == x1 or y0 == y1  # along pixel edges
            if y0 == y1:
                unit_edges |= {("h", int(y0), c) for c in range(int(min(x0, x1)), int(max(x0, x1)))}
            else:
                unit_edges |= {("v", int(x0), r) for r in range(int(min(y0, y1)), int(max(y0, y1)))}
        m = np.pad(mask, 1)
        h = np.argwhere(m[:-1, 1:-1] != m[1:, 1:-1])
        v = np.argwhere(m[1:-1, :-1] != m[1:-1, 1:])
        expected = {("h", int(r), int(c)) for r, c in h} | {("v", int(c), int(r)) for r, c in v}
        assert unit_edges == expected and len(x) // 2 <= len(expected)


def test_window_helpers() -> None:
    assert levels(100, 50) == (0, 100)
    assert levels(0, 10) == (9.5, 10.5)  # width is at least one grey level
    data = np.zeros((2, 10, 10), np.uint8)
    assert auto_window(data) == (255.0, 127.5)
    data[0, :5] = np.arange(50).reshape(5, 10) + 100
    width, level = auto_window(data)
    assert 40 < width < 50 and 120 < level < 130


def test_settings_round_trip(tmp_path: Path) -> None:
    ini = config_dir() / "brainseg.ini"
    assert str(ini).startswith(str(Path(__import__("os").environ["BRAINSEG_CONFIG_DIR"])))
    s = Settings()
    assert (s.opacity, s.fill, s.contour, s.auto_run, s.device) == (40, True, True, True, "auto")
    assert s.classifier_threshold is None and s.spacing(tmp_path) is None
    s.opacity, s.fill, s.device, s.auto_run = 70, False, "cpu", False
    s.classifier_threshold, s.mask_threshold = 0.3, 0.6
    for p in ("a", "b", "a"):
        s.add_recent(tmp_path / p)
    s.set_spacing(tmp_path, Spacing(0.9, 0.9, 3.0))
    s.sync()
    t = Settings()
    assert (t.opacity, t.fill, t.device, t.auto_run) == (70, False, "cpu", False)
    assert (t.classifier_threshold, t.mask_threshold) == (0.3, 0.6)
    assert t.recent == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert t.spacing(tmp_path) == Spacing(0.9, 0.9, 3.0) and t.spacing(tmp_path / "other") is None
    t.classifier_threshold = None
    assert Settings().classifier_threshold is None


def _slice(i: int, p: float, prob: np.ndarray | None) -> SliceResult:
    mask = np.zeros((8, 8), bool) if prob is None else prob >= 0.5
    return SliceResult(i, p, prob is not None, prob, mask, int(mask.sum()), None)


def test_record_streams_and_rethresholds_without_networks() -> None:
    prob = np.zeros((8, 8), np.float32)
    prob[2:6, 2:6] = 0.7
    prob[3:5, 3:5] = 0.9
    rec = PatientRecord(Path("/x/P1"), "P1")
    t = Thresholds(0.5, 0.5)
    empty = PatientResult(
        "P1", [], t, segmenter=ModelRef("seg", "0"), classifier=ModelRef("cls", "1"), device="cpu"
    )
    rec.start(empty, 3, PatientFormat.TIFF)
    assert rec.state is PatientState.RUNNING and rec.tumour_slices() is None
    rec.add(_slice(0, 0.9, prob), t, None)
    rec.add(_slice(1, 0.2, None), t, None)
    assert not rec.complete and rec.tumour_slices() == 1
    rec.add(_slice(2, 0.6, prob), t, Spacing(0.5, 0.5, 2.0))
    assert rec.complete and rec.slice_shown(0).area_px == 16
    rec.apply(Thresholds(0.5, 0.8), Spacing(0.5, 0.5, 2.0))
    assert rec.slice_shown(0).area_px == 4 and rec.slice_shown(0).area_mm2 == pytest.approx(1.0)
    assert rec.shown.volume_ml == pytest.approx(8 * 0.5 * 0.5 * 2.0 / 1000)
    rec.apply(Thresholds(0.7, 0.5), None)  # slice 2 (p=0.6) falls below the gate
    assert rec.tumour_slices() == 1 and rec.shown.volume_ml is None
    assert rec.missing(Thresholds(0.1, 0.5)) == [1]  # never segmented: needs the network
    assert rec.missing(Thresholds(0.5, 0.5)) == []
    with pytest.raises(ValueError):
        Thresholds(1.2, 0.5)


def _run(runner: JobRunner, job, qtbot, *, cancel_after_first: bool = False) -> dict:
    seen: dict = {"items": [], "done": None, "failed": None, "cancelled": False}
    runner.item.connect(seen["items"].append)
    runner.finished.connect(lambda r: seen.__setitem__("done", r))
    runner.failed.connect(lambda m, d: seen.__setitem__("failed", (m, d)))
    runner.cancelled.connect(lambda: seen.__setitem__("cancelled", True))
    if cancel_after_first:
        runner.item.connect(lambda _o: runner.cancel())
    with qtbot.waitSignal(runner.stopped, timeout=10_000):
        runner.start(job)
        with pytest.raises(RuntimeError, match="already running"):
            runner.start(job)
    assert not runner.running
    return seen


def test_job_runner_outcomes(qtbot) -> None:
    runner = JobRunner()
    main = threading.get_ident()
    progress: list[tuple[int, int]] = []
    runner.progress.connect(lambda d, t: progress.append((d, t)))

    def ok(cancel, report_progress):  # a generator: each yield streams to the GUI
        assert threading.get_ident() != main  # really in a worker thread
        for i in range(5):
            report_progress(i + 1, 5)
            yield i
        return "result"

    seen = _run(runner, ok, qtbot)
    assert seen["items"] == [0, 1, 2, 3, 4] and seen["done"] == "result"
    assert progress == [(i + 1, 5) for i in range(5)]

    def plain(cancel, report_progress):  # a plain function: its return value is the result
        return 42

    assert _run(runner, plain, qtbot)["done"] == 42

    def bad(cancel, report_progress):
        raise DataError("/x/y.tif", "is not a TIFF")

    seen = _run(runner, bad, qtbot)
    assert seen["failed"] == ("/x/y.tif: is not a TIFF", "") and seen["done"] is None

    def bug(cancel, report_progress):
        return 1 / 0

    seen = _run(runner, bug, qtbot)
    assert seen["failed"][0].startswith("ZeroDivisionError") and "Traceback" in seen["failed"][1]

    def torch_failure(cancel, report_progress):  # torch raises RuntimeError for most failures
        yield 0
        raise RuntimeError("out of memory")

    seen = _run(runner, torch_failure, qtbot)  # superqt alone would never end this job
    assert seen["items"] == [0] and seen["done"] is None
    assert seen["failed"][0] == "RuntimeError: out of memory" and "torch_failure" in seen["failed"][1]

    def slow(cancel, report_progress):  # stops at its next yield once cancelled
        for i in range(200):
            yield i
            time.sleep(0.01)
        return "never"

    seen = _run(runner, slow, qtbot, cancel_after_first=True)
    assert seen["cancelled"] and seen["done"] is None and len(seen["items"]) < 200

    def core_call(cancel, report_progress):  # a core function checking cancel= between steps
        for _ in range(200):
            if cancel.is_set():
                raise Cancelled("stop")
            time.sleep(0.01)
        return "never"

    runner.started.connect(runner.cancel)
    seen = _run(runner, core_call, qtbot)
    assert seen["cancelled"] and seen["done"] is None and seen["failed"] is None


def test_a_job_waited_for_leaves_no_signal_behind_for_the_next_one(qtbot) -> None:
    """wait() (the window closing) delivers what the job's worker had queued: an item after
    cancel is dropped, the job ends as cancelled, and nothing is taken for the next job's."""
    runner = JobRunner()
    release = threading.Event()
    got: list[object] = []
    runner.item.connect(got.append)
    runner.cancelled.connect(lambda: got.append("cancelled"))
    runner.stopped.connect(lambda: got.append("stopped"))

    def first(cancel, report_progress):
        release.wait(5)
        yield "old item"
        return "old result"

    runner.start(first)
    runner.cancel()
    release.set()
    assert runner.wait() and not runner.running
    assert got == ["cancelled", "stopped"]
    seen = _run(runner, lambda cancel, report_progress: "new result", qtbot)
    assert seen["done"] == "new result" and not seen["cancelled"]
    assert got == ["cancelled", "stopped", "stopped"]


def test_jobs_run_below_the_windows_priority(qtbot) -> None:
    """Both kinds of job (generator and plain function) run on a thread the window out-ranks."""
    import os
    import sys

    from PySide6.QtCore import QThread

    from brainseg_app.worker import BACKGROUND_NICE

    def priority() -> object:
        if sys.platform.startswith("linux"):
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return QThread.currentThread().priority()

    def stream(cancel, report_progress):
        yield priority()
        return priority()

    def plain(cancel, report_progress):
        return priority()

    runner = JobRunner()
    seen = _run(runner, stream, qtbot)
    results = [*seen["items"], seen["done"], _run(runner, plain, qtbot)["done"]]
    if sys.platform.startswith("linux"):
        window = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert results == [min(19, window + BACKGROUND_NICE)] * 3
    else:
        assert results == [QThread.Priority.LowPriority] * 3


def test_outlines_are_reused_by_content_and_follow_an_edit_in_place(qtbot, monkeypatch) -> None:
    from PySide6.QtCore import QRectF

    from brainseg_app import slice_view
    from brainseg_app.slice_view import SliceView

    built: list[int] = []
    monkeypatch.setattr(
        slice_view, "boundary_segments", lambda m: built.append(int(m.sum())) or boundary_segments(m)
    )
    view = SliceView()
    qtbot.addWidget(view)
    view.set_volume(np.zeros((2, 16, 16, 3), np.uint8), "P1")
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True

    def outline() -> QRectF:
        return view.pred.outline.path().boundingRect()

    view.set_masks(mask, None)
    assert outline() == QRectF(4, 4, 4, 4) and built == [16]
    view.set_masks(None, None)
    assert view.pred.outline.path().isEmpty()
    view.set_masks(mask.copy(), None)  # the same content: the outline is not built again
    assert outline() == QRectF(4, 4, 4, 4) and built == [16]
    mask[4:8, 4:12] = True  # a reader's edit changes the array in place
    view.set_masks(mask, None)
    assert outline() == QRectF(4, 4, 8, 4) and built == [16, 32]


def test_the_gate_text_says_when_a_neighbour_let_the_slice_through() -> None:
    from brainseg_app.panels import _gate_text

    def slice_(own: float, near: float) -> SliceResult:
        mask = np.zeros((4, 4), bool)
        return SliceResult(0, own, True, None, mask, 0, None, neighbour_probability=near)

    assert _gate_text(slice_(0.7, 0.9), 0.5).endswith("passed the slice gate (0.5), segmented")
    text = _gate_text(slice_(0.12, 0.87), 0.5)
    assert "Tumour probability 0.120" in text
    assert text.endswith("passed the slice gate (0.5) through a neighbouring slice (0.870), segmented")
    assert _gate_text(slice_(0.12, 0.3), 0.5).endswith("below the slice gate (0.5), not segmented")
    assert _gate_text(slice_(0.12, 0.87), None) == "No slice classifier: every slice is segmented"


def test_the_plot_marks_slices_passed_through_a_neighbour(qtbot) -> None:
    from brainseg_app.panels import ResultsPanel

    panel = ResultsPanel()
    qtbot.addWidget(panel)
    probs: list[float | None] = [0.1, 0.9, 0.2, None]
    panel.set_probabilities(probs, [False, True, True, False], None, 0.5, by_neighbour=[2])
    points = panel.scatter.points()
    assert [p.data() for p in points] == [0, 1, 2]
    assert [p.symbol() for p in points] == ["o", "o", "t1"]
    panel.set_probabilities(probs, [False, True, True, False], None, 0.5)
    assert [p.symbol() for p in panel.scatter.points()] == ["o", "o", "o"]


def test_the_gate_label_moves_off_the_points_it_would_cover(qtbot) -> None:
    from brainseg_app.panels import ResultsPanel

    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.resize(330, 600)
    panel.show()
    qtbot.waitExposed(panel)
    n = 21
    view = panel.plot.getPlotItem().getViewBox()

    def placed(probs: list[float], gate: float) -> tuple[float, tuple[float, float]]:
        panel.set_probabilities(list(probs), [p >= gate for p in probs], None, gate)
        # what the reader sees: the label's rectangle, in data units, holds no point
        box = view.mapSceneToView(panel.gate_label.sceneBoundingRect()).boundingRect()
        assert not any(box.contains(i + 1, p) for i, p in enumerate(probs)), (box, probs)
        return panel.gate_label.pos().x(), (panel.gate_label.anchor.x(), panel.gate_label.anchor.y())

    clear = [0.02] * 5 + [0.99] * 11 + [0.02] * 5  # tumour in the middle, nothing near the gate
    assert placed(clear, 0.132) == (n + 0.45, (1, 1))  # the right end, above the line
    # the last slices just above and just below the gate: the left end is free
    right_end = [*clear[:-6], 0.16, 0.1, 0.17, 0.11, 0.18, 0.1]
    assert placed(right_end, 0.132) == (0.55, (0, 1))
    # both ends just above it: below the line at the right end, where nothing lies
    both_above = [0.16, 0.17, 0.18, 0.16, *clear[4:-6], *[0.17] * 6]
    assert placed(both_above, 0.132) == (n + 0.45, (1, 0))
    # a gate too close to the top for the label to fit above it: below
    assert placed(clear[:5] + [0.5] * 11 + clear[-5:], 1.0)[1] == (1, 0)
    # one point above the gate four slices from the right end: the label, a few slices wide in
    # this narrow plot, would cover it; widened, the label spans fewer slices and is placed again
    lone = [*clear[:16], 0.17, *clear[-4:]]
    assert placed(lone, 0.132)[0] == 0.55
    before = view.viewPixelSize()[0]
    panel.resize(900, 600)
    qtbot.waitUntil(lambda: view.viewPixelSize()[0] < before / 2)
    assert panel.gate_label.pos().x() == n + 0.45
