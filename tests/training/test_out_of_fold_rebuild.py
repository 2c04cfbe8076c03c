"""Out-of-fold files rebuilt from the fold bundles alone (``brainseg-eval --cv DIR DATA``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from brainseg_core.cli.eval import main as eval_main
from brainseg_core.crossval import OUT_OF_FOLD_FILE, load_fold
from brainseg_core.errors import BundleError, DataError
from brainseg_core.gate_crossval import load_gate_fold
from brainseg_core.out_of_fold import (
    WEIGHTS_KEY,
    fold_folders,
    rebuild_missing,
    rebuild_out_of_fold,
    stale_folds,
)
from brainseg_core.training.loop import train
from tests.support import tiny_config


def _quiet(cfg):
    return train(cfg, log=lambda _m: None, progress=False)


@pytest.fixture(scope="module")
def runs(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two segmenter folds read at half the slices' size, a model trained on every patient beside
    them, and an encoder gate per fold."""
    root = tmp_path_factory.mktemp("cv")
    kw: dict = dict(epochs=1, folds=2, keep="last", val_every=1, image_size=32)
    for i in (0, 1):
        seg = _quiet(tiny_config(tiny_dataset, root / "seg" / f"fold{i}", fold=i, **kw))
        gate_kw: dict = dict(kind="classifier", arch="resunet_gate", width=4, depth=2, tumour_fraction=None)
        _quiet(
            tiny_config(
                tiny_dataset,
                root / "gate" / f"fold{i}",
                fold=i,
                init_from=str(seg.card_path),
                **kw,
                **gate_kw,
            )
        )
    _quiet(tiny_config(tiny_dataset, root / "seg" / "all", epochs=1, val_patients=0.0, image_size=32))
    return root


def _kept_bundles_only(run: Path, dest: Path) -> Path:
    """A copy of a run with nothing but each folder's bundle (what a project would commit)."""
    for fold in fold_folders(run):
        (dest / fold.name).mkdir(parents=True)
        for f in fold.iterdir():
            if f.suffix in (".json", ".safetensors"):
                shutil.copy2(f, dest / fold.name / f.name)
    return dest


def test_the_rebuilt_files_are_the_trainers_own_to_within_rounding(
    runs: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    root = _kept_bundles_only(runs / "seg", tmp_path / "seg")
    assert [f.name for f in fold_folders(root)] == ["all", "fold0", "fold1"]
    stale = [(f.name, why) for f, why in stale_folds(root)]
    assert stale == [("fold0", "missing"), ("fold1", "missing")]  # "all" has no held-out patient
    written = rebuild_missing(root, tiny_dataset)
    assert written == [root / "fold0" / OUT_OF_FOLD_FILE, root / "fold1" / OUT_OF_FOLD_FILE]
    for name in ("fold0", "fold1"):
        own, rebuilt = (
            load_fold(runs / "seg" / name / OUT_OF_FOLD_FILE),
            load_fold(root / name / OUT_OF_FOLD_FILE),
        )
        assert rebuilt.patient_ids == own.patient_ids and np.array_equal(rebuilt.patient, own.patient)
        assert rebuilt.prob.shape[1:] == (32, 32) and np.array_equal(rebuilt.mask, own.mask)
        assert np.abs(rebuilt.prob.astype(int) - own.prob).max() <= 3  # half-precision weights, uint8 storage
        assert np.abs(rebuilt.prob_flip.astype(int) - own.prob_flip).max() <= 3
    assert rebuild_missing(root, tiny_dataset) == [] and stale_folds(root) == []
    # each file names the weights that made it, the trainer's too
    for run in (root, runs / "seg"):
        card = json.loads(next((run / "fold0").glob("*.json")).read_text())
        with np.load(run / "fold0" / OUT_OF_FOLD_FILE) as z:
            assert str(z[WEIGHTS_KEY]) == card["weights_sha256"]


def test_a_file_of_other_weights_or_other_patients_is_rebuilt(
    runs: Path, tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    root = tmp_path / "seg"
    shutil.copytree(runs / "seg", root)
    assert stale_folds(root) == []
    # fold 1's bundle replaced by fold 0's (a retrained fold, say): its file is of other weights
    for f in (root / "fold1").glob("*.*"):
        f.unlink()
    for f in (runs / "seg" / "fold0").glob("*.*"):
        shutil.copy2(f, root / "fold1" / f.name)
    shutil.copy2(runs / "seg" / "fold1" / OUT_OF_FOLD_FILE, root / "fold1" / OUT_OF_FOLD_FILE)
    assert [(f.name, why) for f, why in stale_folds(root)] == [
        ("fold1", "made by other weights than the fold's bundle")
    ]
    assert eval_main(["--cv", str(root), "--quiet"]) != 0  # scored as it is? no: rebuild it
    assert "fold1: made by other weights" in capsys.readouterr().err
    # an unstamped file (an older version's) is trusted only when it holds the held-out patients
    with np.load(runs / "seg" / "fold1" / OUT_OF_FOLD_FILE) as z:
        arrays = {k: z[k] for k in z.files if k != WEIGHTS_KEY}
    np.savez_compressed(root / "fold1" / OUT_OF_FOLD_FILE, **arrays)
    assert [why for _, why in stale_folds(root)] == ["holds other patients than the bundle's held-out ones"]
    assert rebuild_missing(root, tiny_dataset) == [root / "fold1" / OUT_OF_FOLD_FILE]
    assert (
        stale_folds(root) == []
        and load_fold(root / "fold1" / OUT_OF_FOLD_FILE).patient_ids
        == load_fold(runs / "seg" / "fold0" / OUT_OF_FOLD_FILE).patient_ids
    )


def test_a_damaged_file_is_named_not_a_crash_and_a_run_without_held_out_patients_leaves_none(
    runs: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    root = tmp_path / "seg"
    shutil.copytree(runs / "seg", root)
    (root / "fold0" / OUT_OF_FOLD_FILE).write_bytes(b"PK\x03\x04 not a whole zip")
    assert [(f.name, why.split(" (")[0]) for f, why in stale_folds(root)] == [("fold0", "unreadable")]
    with pytest.raises(DataError, match="cannot read"):
        load_fold(root / "fold0" / OUT_OF_FOLD_FILE)
    # a model trained on every patient in a folder that holds an earlier fold's file: the file goes
    out = tmp_path / "again"
    shutil.copytree(runs / "seg" / "fold1", out, ignore=shutil.ignore_patterns("checkpoint"))
    _quiet(tiny_config(tiny_dataset, out, epochs=1, val_patients=0.0, image_size=32))
    assert not (out / OUT_OF_FOLD_FILE).exists()


def test_a_gates_folds_are_rebuilt_and_line_up_with_the_segmenters(
    runs: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    root = _kept_bundles_only(runs / "gate", tmp_path / "gate")
    rebuild_missing(root, tiny_dataset)
    for name in ("fold0", "fold1"):
        own, rebuilt = (
            load_gate_fold(runs / "gate" / name / OUT_OF_FOLD_FILE),
            load_gate_fold(root / name / OUT_OF_FOLD_FILE),
        )
        seg = load_fold(runs / "seg" / name / OUT_OF_FOLD_FILE)
        assert rebuilt.patient_ids == own.patient_ids == seg.patient_ids
        assert np.array_equal(rebuilt.label, own.label) and np.array_equal(
            rebuilt.label, seg.mask.any(axis=(1, 2))
        )
        assert np.abs(rebuilt.prob - own.prob).max() < 0.02


def test_eval_cv_rebuilds_with_data_and_refuses_without(
    runs: Path, tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    seg = _kept_bundles_only(runs / "seg", tmp_path / "seg")
    gate = _kept_bundles_only(runs / "gate", tmp_path / "gate")
    assert eval_main(["--cv", str(seg), "--gate-cv", str(gate), "--quiet"]) != 0  # no DATA: no partial report
    assert "pass DATA" in capsys.readouterr().err and not (seg / "fold0" / OUT_OF_FOLD_FILE).exists()
    out = tmp_path / "cv.json"
    assert (
        eval_main(
            ["--cv", str(seg), "--gate-cv", str(gate), str(tiny_dataset), "--quiet", "--json", str(out)]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert (
        report["folds"] == 2 and report["pooled"]["patients"] == 4 and "gate" in report
    )  # every patient, out of fold
    with pytest.raises(SystemExit):
        eval_main(
            ["--cv", str(seg), "--thorough"]
        )  # the folds' own choice: options of a model run are refused


def test_a_missing_held_out_patient_no_held_out_patient_or_two_bundles_are_named(
    runs: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    root = _kept_bundles_only(runs / "seg", tmp_path / "seg")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_dataset, partial)
    held_out = json.loads(next((root / "fold0").glob("*.json")).read_text())["training"]["split"][
        "val_patients"
    ]
    shutil.rmtree(partial / held_out[0])
    with pytest.raises(DataError, match=held_out[0]):
        rebuild_out_of_fold(root / "fold0", partial)
    with pytest.raises(DataError, match="no held-out patients"):
        rebuild_out_of_fold(root / "all", tiny_dataset)
    for f in (root / "fold0").iterdir():
        shutil.copy2(f, root / "fold1" / f"second-{f.name}")
    with pytest.raises(BundleError, match="2 bundles"):
        fold_folders(root)


def test_a_run_with_folds_missing_is_reported_as_such_and_writes_no_card(
    runs: Path, tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    seg = _kept_bundles_only(runs / "seg", tmp_path / "seg")
    for card in seg.glob("fold*/*.json"):  # as if the runs had been split into three folds
        text = json.loads(card.read_text())
        text["training"]["folds"]["k"] = 3
        card.write_text(json.dumps(text))
    assert eval_main(["--cv", str(seg), str(tiny_dataset), "--quiet"]) == 0
    assert "2 of the 3 folds" in capsys.readouterr().err
    card = next((seg / "fold0").glob("*.json"))
    before = card.read_text()
    assert eval_main(["--cv", str(seg), "--quiet", "--write-card", str(card)]) != 0
    assert "train the others first" in capsys.readouterr().err and card.read_text() == before
