"""ResultStore: analyses survive a restart, keyed by image content, stale after a model change."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from brainseg_core.inference import PatientResult, SliceResult, rethreshold
from brainseg_core.model_ref import ModelRef
from brainseg_core.result_store import ResultStore, volume_key
from brainseg_core.spacing import Spacing
from brainseg_core.thresholds import Thresholds
from tests.support import make_volume

SEG = ModelRef("seg", "a" * 64)
CLS = ModelRef("cls", "b" * 64)


def _result(volume, *, gate: float = 0.5) -> PatientResult:
    rng = np.random.default_rng(1)
    slices = []
    for i in range(volume.n_slices):
        p = float(rng.random())
        prob = rng.random(volume.shape).astype(np.float32) if p >= gate else None
        slices.append(SliceResult(i, p, prob is not None, prob, np.zeros(volume.shape, bool), 0, None))
    raw = PatientResult(volume.patient_id, slices, Thresholds(gate=gate, mask=0.6), SEG, CLS, "cpu")
    return rethreshold(raw)


def test_a_saved_analysis_comes_back_identical(tmp_path: Path) -> None:
    volume = make_volume(n=6, size=32, spacing=(0.5, 0.5), thickness=2.0)
    result = _result(volume)
    store = ResultStore(tmp_path / "results")
    path = store.save(volume, result)
    assert path.parent == tmp_path / "results" and path.stem == volume_key(volume)
    back = store.load(volume, segmenter=SEG, classifier=CLS)
    assert back is not None and back.current and back.path == path and back.saved.endswith("+00:00")
    r = back.result
    assert (r.thresholds, r.segmenter, r.classifier, r.device) == (result.thresholds, SEG, CLS, "cpu")
    assert r.spacing == Spacing(0.5, 0.5, 2.0) and result.volume_voxels > 0
    for a, b in zip(r.slices, result.slices, strict=True):
        assert (a.index, a.segmented) == (b.index, b.segmented)
        assert a.tumour_probability == pytest.approx(b.tumour_probability)
        if b.mask_probability is None:
            assert a.mask_probability is None
        else:  # float16 storage: 3 decimals
            np.testing.assert_allclose(a.mask_probability, b.mask_probability, atol=1e-3)
    # the masks at the stored thresholds agree except where a probability sits on the threshold
    changed = sum(int((a.mask != b.mask).sum()) for a, b in zip(r.slices, result.slices, strict=True))
    assert changed <= 0.002 * result.volume_voxels + 2
    assert abs(r.volume_voxels - result.volume_voxels) <= changed


def test_other_models_make_it_stale_and_other_pixels_miss(tmp_path: Path) -> None:
    volume = make_volume(n=4, size=32)
    store = ResultStore(tmp_path)
    store.save(volume, _result(volume))
    assert not store.load(volume, segmenter=ModelRef("seg2", "c" * 64), classifier=CLS).current
    assert not store.load(volume, segmenter=SEG, classifier=None).current
    assert not store.load(volume, segmenter=SEG, classifier=CLS, flip_tta=True).current  # run otherwise
    assert store.load(volume, segmenter=SEG, classifier=None).stale == "by other models"
    assert store.load(volume, segmenter=SEG, classifier=CLS, flip_tta=True).stale == "without thorough mode"
    moved = dataclasses.replace(volume, source=Path("/elsewhere/TCGA_ZZ_0001_20000101"))
    assert store.load(moved, segmenter=SEG, classifier=CLS).current  # same pixels, same key
    edited = volume.images.copy()
    edited[0, 0, 0, 0] ^= 1
    assert store.load(dataclasses.replace(volume, images=edited), segmenter=SEG, classifier=CLS) is None


def test_each_mode_keeps_its_own_analysis_so_switching_back_reruns_nothing(tmp_path: Path) -> None:
    volume = make_volume(n=4, size=32)
    store = ResultStore(tmp_path)
    member = ModelRef("seg-seed1", "c" * 64)
    plain = _result(volume)
    thorough = dataclasses.replace(plain, ensemble=(member,), device="thorough-run")
    store.save(volume, plain)
    # no thorough analysis yet: the plain one comes back, marked as another mode's
    other = store.load(volume, segmenter=SEG, classifier=CLS, ensemble=(member,))
    assert other is not None and not other.current and other.result.ensemble == ()
    path = store.save(volume, thorough)
    assert path.name.endswith(".thorough.npz") and path != store.path_for(volume)
    both = [store.load(volume, segmenter=SEG, classifier=CLS, ensemble=e) for e in ((), (member,))]
    assert all(b is not None and b.current for b in both)
    assert [b.result.device for b in both] == ["cpu", "thorough-run"]  # neither replaced the other
    flipped = store.load(volume, segmenter=SEG, classifier=CLS, flip_tta=True)  # thorough, another run
    assert flipped is not None and not flipped.current and flipped.result.ensemble == (member,)
    assert flipped.stale == "by another thorough ensemble" and other.stale == "without thorough mode"


def test_a_damaged_or_foreign_file_is_ignored_not_trusted(tmp_path: Path, caplog) -> None:
    volume = make_volume(n=4, size=32)
    store = ResultStore(tmp_path)
    path = store.save(volume, _result(volume))
    path.write_bytes(path.read_bytes()[:100])
    assert store.load(volume, segmenter=SEG, classifier=CLS) is None
    assert str(path) in caplog.text
    # intact zip directory, damaged compressed data (zlib.error, not BadZipFile): ignored too
    whole = bytearray(store.save(volume, _result(volume)).read_bytes())
    whole[60:100] = b"\xff" * 40
    path.write_bytes(bytes(whole))
    assert store.load(volume, segmenter=SEG, classifier=CLS) is None
    np.savez(path, meta=np.array('{"format": "other/9"}'))
    assert store.load(volume, segmenter=SEG, classifier=CLS) is None
    with pytest.raises(ValueError, match="does not belong"):
        store.save(make_volume(n=3, size=32), _result(volume))


def test_the_readers_work_is_kept_beside_the_analysis_and_survives_a_new_one(tmp_path: Path, caplog) -> None:
    from brainseg_core.result_store import ReaderWork

    volume = make_volume(n=6, size=32)
    store = ResultStore(tmp_path / "results")
    assert store.load_reader_work(volume) is None
    edited = np.zeros(volume.shape, bool)
    edited[3:9, 4:7] = True
    path = store.save_reader_work(volume, ReaderWork({2: edited}, frozenset({1, 4})))
    assert path.name == f"{volume_key(volume)}.reader.npz"
    store.save(volume, _result(volume))  # a new analysis does not touch it
    back = store.load_reader_work(volume)
    assert back is not None and back.reviewed == {1, 4} and back.saved.endswith("+00:00")
    assert list(back.masks) == [2] and np.array_equal(back.masks[2], edited)
    with pytest.raises(ValueError, match="outside"):
        store.save_reader_work(volume, ReaderWork({}, frozenset({6})))
    store.save_reader_work(volume, ReaderWork({}, frozenset()))  # nothing left: the file goes
    assert not path.exists() and store.load_reader_work(volume) is None
    path.write_bytes(b"not a zip")
    assert store.load_reader_work(volume) is None and "cannot be read" in caplog.text


def test_the_least_recently_used_analyses_go_beyond_the_limit_the_readers_work_never(tmp_path: Path) -> None:
    import os

    from brainseg_core.result_store import ReaderWork

    volumes = [make_volume(n=4, size=32, seed=i) for i in range(4)]
    probe = ResultStore(tmp_path / "probe")
    one = probe.save(volumes[0], _result(volumes[0])).stat().st_size
    store = ResultStore(tmp_path / "results", max_bytes=int(2.5 * one))  # room for two analyses
    edited = np.ones(volumes[0].shape, bool)
    reader = store.save_reader_work(volumes[0], ReaderWork({0: edited}, frozenset()))
    paths = []
    for age, v in enumerate(volumes[:2]):
        paths.append(store.save(v, _result(v)))
        os.utime(paths[-1], (1000 + age, 1000 + age))  # saved long ago, the first one earliest
    assert store.load(volumes[0], segmenter=SEG, classifier=CLS) is not None  # used now: newest
    paths.append(store.save(volumes[2], _result(volumes[2])))  # over the limit: the LRU goes
    assert [p.exists() for p in paths] == [True, False, True]
    assert reader.exists()  # the reader's work is not a cache
    assert store.evict() == []  # within the limit now
    with pytest.raises(ValueError, match="positive"):
        ResultStore(tmp_path, max_bytes=0)
