"""Engines: the networks in a model process give what they give here, with progress, cancel and
errors carried across, and the viewer's side of it never imports torch."""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from brainseg_core.engine import EngineError, LocalEngine, ProcessEngine
from brainseg_core.errors import BundleError, Cancelled, DataError
from brainseg_core.io import open_volume
from brainseg_core.registry import BundleInfo, open_bundle
from brainseg_core.thresholds import Thresholds
from tests.support import save_tiny_bundle


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[BundleInfo, BundleInfo]:
    out = tmp_path_factory.mktemp("engine_bundles")
    seg = save_tiny_bundle(out, "segmenter", input_size=64, seed=0, threshold=0.3)
    cls = save_tiny_bundle(out, "classifier", input_size=64, seed=1, threshold=0.4)
    return open_bundle(cls), open_bundle(seg)


@pytest.fixture(scope="module")
def engine() -> object:
    e = ProcessEngine(nice=0)
    yield e
    e.close()


def _same(remote: list, local: list) -> None:
    assert [s.index for s in remote] == [s.index for s in local]
    for a, b in zip(remote, local, strict=True):
        assert a.segmented == b.segmented
        assert a.tumour_probability == pytest.approx(b.tumour_probability, abs=1e-3)
        if b.mask_probability is None:
            assert a.mask_probability is None
        else:
            np.testing.assert_allclose(a.mask_probability, b.mask_probability, atol=1e-3)


def test_a_model_process_streams_what_the_pipeline_here_computes(engine, bundles, fixture_patient) -> None:
    vol = open_volume(fixture_patient)
    here = LocalEngine().pipeline(*bundles, device="cpu")
    there = engine.pipeline(*bundles, device="cpu")
    assert (there.device, there.batch_size, there.flip_tta) == ("cpu", here.batch_size, False)
    assert there.thresholds == here.thresholds == Thresholds.from_cards(bundles[0].card, bundles[1].card)
    assert there.empty_result(vol) == here.empty_result(vol)

    progress: list[tuple[int, int]] = []
    remote = list(there.run(vol, progress=lambda done, total: progress.append((done, total))))
    local = list(here.run(vol))
    assert len(remote) == vol.n_slices
    _same(remote, local)
    assert progress[0] == (0, vol.n_slices) and progress[-1] == (vol.n_slices, vol.n_slices)
    assert len(progress) > 2  # batch by batch, not once at the end

    # other thresholds travel with the request; segmenting chosen slices gives the same maps
    strict = Thresholds.from_cards(bundles[0].card, bundles[1].card).replace(gate=0.99)
    base = here.replace(thresholds=strict).analyse(vol)
    left = [s.index for s in base.slices if not s.segmented][:3]
    assert left
    done_there = there.replace(thresholds=strict).segment_slices(vol, base, left)
    done_here = here.replace(thresholds=strict).segment_slices(vol, base, left)
    _same(done_there.slices, done_here.slices)


def _long(volume, times: int = 10):
    """``volume``'s slices ``times`` over: long enough for a cancel to land half-way."""
    return dataclasses.replace(
        volume,
        images=np.concatenate([volume.images] * times),
        masks=None,
        slice_paths=volume.slice_paths * times,
        slice_numbers=list(range(1, volume.n_slices * times + 1)),
    )


def test_cancel_stops_the_job_in_the_model_process_and_the_next_one_runs(
    engine, bundles, fixture_patient
) -> None:
    vol = _long(open_volume(fixture_patient))
    there = engine.pipeline(*bundles, device="cpu")
    cancel = threading.Event()
    stream = there.run(vol, cancel=cancel)
    got = [next(stream)]
    cancel.set()
    with pytest.raises(Cancelled):
        got += list(stream)
    assert len(got) < vol.n_slices // 2  # stopped within a batch or two, not at the end

    # the router cancels a job whose caller has stopped reading (a worker that quit mid-stream
    # and never closed its generator), and the next job still runs
    cancel = threading.Event()
    dropped = there.run(vol, cancel=cancel)
    next(dropped)
    cancel.set()
    small = open_volume(fixture_patient)
    assert len(list(there.run(small))) == small.n_slices  # runs after the dropped one in the child
    with pytest.raises(Cancelled):  # nobody read the dropped job, yet it was cancelled
        list(dropped)

    # a cancel set before the stream starts reaches the child after its job, not before
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        list(there.run(vol, cancel=cancel))

    # a stream closed half-way leaves nothing behind (later messages of its job are dropped)
    closed = there.run(vol)
    next(closed)
    closed.close()
    assert not engine._inboxes and not engine._cancels
    assert len(list(there.run(small))) == small.n_slices


def test_the_model_process_keeps_its_newest_pipelines(engine, bundles, fixture_patient) -> None:
    from brainseg_core.engine import KEPT_PIPELINES

    vol = open_volume(fixture_patient)
    pipelines = [engine.pipeline(*bundles, device="cpu") for _ in range(KEPT_PIPELINES + 1)]
    assert len(list(pipelines[1].run(vol))) == vol.n_slices
    with pytest.raises(EngineError, match="unloaded"):
        list(pipelines[0].run(vol))


def test_errors_in_the_model_process_arrive_as_themselves(engine, bundles, tmp_path: Path) -> None:
    cls, seg = bundles
    with pytest.raises(ValueError, match="device"):
        engine.pipeline(cls, seg, device="no-such-device")
    # a card whose weights hash matches but whose tensors do not fit its architecture
    wrong = save_tiny_bundle(tmp_path, "segmenter", input_size=64, seed=0, name="wrong")
    card = wrong.read_text().replace('"base_filters": 4', '"base_filters": 8')
    wrong.write_text(card)
    with pytest.raises(BundleError) as err:
        engine.pipeline(cls, open_bundle(wrong), device="cpu")
    assert err.value.path.name == "wrong.safetensors" and "architecture" in err.value.problem
    assert "In the model process" in "".join(err.value.__notes__)
    # torch's own errors come back as RuntimeError: unpickling them would import torch here
    import torch

    from brainseg_core.engine import _portable

    oom = _portable(torch.OutOfMemoryError("CUDA out of memory"))
    assert type(oom) is RuntimeError and "OutOfMemoryError" in str(oom)
    # the core's errors cross the pipe whole (their path and problem, not just the text)
    for exc in (DataError("a/b.tif", "not a TIFF"), BundleError("m.json", "bad card")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and (back.path, back.problem, str(back)) == (
            exc.path,
            exc.problem,
            str(exc),
        )


def test_a_dead_model_process_is_reported(bundles, fixture_patient) -> None:
    e = ProcessEngine(nice=0)
    there = e.pipeline(*bundles, device="cpu")
    assert e.alive and e.pid is not None
    os.kill(e.pid, signal.SIGKILL)
    with pytest.raises(EngineError, match="killed"):
        list(there.run(open_volume(fixture_patient)))
    assert not e.alive
    with pytest.raises(EngineError):
        e.pipeline(*bundles, device="cpu")
    e.close()


def test_the_viewer_analyses_and_exports_without_importing_torch(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from brainseg_app.selftest import sample_patient\n"
        "from brainseg_app.window import MainWindow\n"
        "from brainseg_core.engine import ProcessEngine\n"
        "from brainseg_core.export import export_results\n"
        "w = MainWindow(engine=ProcessEngine())\n"
        "w.open_path(sample_patient())\n"
        "end = time.time() + 120\n"
        "while time.time() < end and not (w.current and w.current.complete and not w.is_busy()):\n"
        "    app.processEvents(); time.sleep(0.01)\n"
        "formats = ['report', 'tif', 'png', 'csv']\n"
        "written = export_results(w.volume, w.current.shown, Path(sys.argv[1]), formats=formats)\n"
        "print(w.current.shown.tumour_slices, len(written), 'torch' in sys.modules)\n"
        "w.close()\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", BRAINSEG_USER_DATA=str(tmp_path / "data"))
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    tumour_slices, written, imported = out.stdout.split()
    assert int(tumour_slices) > 0 and int(written) > 0
    assert imported == "False"


def test_the_model_process_warms_networks_up_only_when_no_request_follows(
    bundles, fixture_patient, caplog
) -> None:
    import logging
    import time

    caplog.set_level(logging.INFO, logger="brainseg_core.engine")

    def warm_ups() -> int:
        return sum("warming the networks up" in r.getMessage() for r in caplog.records)

    def wait_for_warm_ups(n: int) -> None:
        deadline = time.monotonic() + 30
        while warm_ups() < n and time.monotonic() < deadline:
            time.sleep(0.05)

    vol = open_volume(fixture_patient)
    # a wait long enough for a loaded machine: the run below comes well within it
    e = ProcessEngine(nice=0, warm_up_after=1.5)
    try:
        pipeline = e.pipeline(*bundles, device="cpu")
        assert len(list(pipeline.run(vol))) == vol.n_slices  # asked for at once: run, not warmed up first
        assert warm_ups() == 0
        e.pipeline(
            *bundles, device="cpu", thorough=True
        )  # other networks (flip TTA), and nobody asks for a run
        wait_for_warm_ups(1)
        assert warm_ups() == 1
        again = e.pipeline(*bundles, device="cpu")  # networks that have run: nothing to warm up
        time.sleep(2.0)  # past the wait; the next request's answer comes after any warm-up's log line
        assert len(list(again.run(vol))) == vol.n_slices
        assert warm_ups() == 1
    finally:
        e.close()
    with pytest.raises(ValueError, match="warm_up_after"):
        ProcessEngine(warm_up_after=-1.0)
