"""Engines: the networks in a model process give what they give here, with progress, cancel and
errors carried across, and the viewer's side of it never imports torch."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
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


def test_cancel_stops_the_job_in_the_model_process_and_the_next_one_runs(
    engine, bundles, fixture_patient
) -> None:
    vol = open_volume(fixture_patient)
    there = engine.pipeline(*bundles, device="cpu")
    cancel = threading.Event()
    stream = there.run(vol, cancel=cancel)
    next(stream)
    cancel.set()
    t = time.monotonic()
    with pytest.raises(Cancelled):
        list(stream)
    assert time.monotonic() - t < 5  # a batch, not the whole volume
    # a stream dropped half-way (the viewer stopped iterating) is cancelled too; what the child
    # still sends of it is not taken for the next job's
    dropped = there.run(vol)
    next(dropped)
    dropped.close()
    assert len(list(there.run(vol))) == vol.n_slices


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


def test_the_viewer_reads_cards_and_builds_its_window_without_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from brainseg_app.window import MainWindow\n"
        "from brainseg_core.registry import resolve_cards\n"
        "w = MainWindow()\n"
        "assert w.ensure_models(), 'no models'\n"
        "cls, seg = resolve_cards()\n"
        "print('torch' in sys.modules, seg.card.name)\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", BRAINSEG_USER_DATA=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    imported, name = out.stdout.split()
    assert imported == "False" and name
