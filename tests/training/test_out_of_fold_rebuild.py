"""Out-of-fold files rebuilt from the fold bundles alone (``brainseg-eval --cv DIR DATA``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from brainseg_core.cli.eval import main as eval_main
from brainseg_core.crossval import OUT_OF_FOLD_FILE, load_fold
from brainseg_core.errors import DataError
from brainseg_core.out_of_fold import fold_folders, rebuild_missing, rebuild_out_of_fold
from brainseg_core.training.loop import train
from tests.support import tiny_config


@pytest.fixture(scope="module")
def two_folds(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cv")
    for i in (0, 1):
        cfg = tiny_config(
            tiny_dataset, root / f"fold{i}", epochs=1, folds=2, fold=i, keep="last", val_every=1
        )
        train(cfg, log=lambda _m: None, progress=False)
    return root


def _kept_bundles_only(two_folds: Path, tmp_path: Path) -> Path:
    """A copy of the run with nothing but each fold's bundle (what a project would commit)."""
    root = tmp_path / "kept"
    for fold in fold_folders(two_folds):
        (root / fold.name).mkdir(parents=True)
        for f in fold.iterdir():
            if f.suffix in (".json", ".safetensors"):
                shutil.copy2(f, root / fold.name / f.name)
    return root


def test_the_rebuilt_files_are_the_trainers_own_to_within_rounding(
    two_folds: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    root = _kept_bundles_only(two_folds, tmp_path)
    assert [f.name for f in fold_folders(root)] == ["fold0", "fold1"]
    written = rebuild_missing(root, tiny_dataset)
    assert written == [root / "fold0" / OUT_OF_FOLD_FILE, root / "fold1" / OUT_OF_FOLD_FILE]
    for name in ("fold0", "fold1"):
        own, rebuilt = (
            load_fold(two_folds / name / OUT_OF_FOLD_FILE),
            load_fold(root / name / OUT_OF_FOLD_FILE),
        )
        assert rebuilt.patient_ids == own.patient_ids and np.array_equal(rebuilt.patient, own.patient)
        assert np.array_equal(rebuilt.mask, own.mask)
        assert np.abs(rebuilt.prob.astype(int) - own.prob).max() <= 3  # bf16/fp16 rounding, uint8 storage
    assert rebuild_missing(root, tiny_dataset) == []  # every fold has its file: nothing is redone


def test_eval_cv_with_data_rebuilds_then_reports(
    two_folds: Path, tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    root = _kept_bundles_only(two_folds, tmp_path)
    assert (
        eval_main(["--cv", str(root), str(tiny_dataset), "--quiet", "--json", str(tmp_path / "cv.json")]) == 0
    )
    assert (root / "fold1" / OUT_OF_FOLD_FILE).is_file()
    report = json.loads((tmp_path / "cv.json").read_text())
    assert report["folds"] == 2 and report["pooled"]["patients"] == 4  # every patient, out of fold


def test_a_missing_held_out_patient_or_a_model_trained_on_everyone_is_named(
    two_folds: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    root = _kept_bundles_only(two_folds, tmp_path)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_dataset, partial)
    held_out = json.loads(next((root / "fold0").glob("*.json")).read_text())["training"]["split"][
        "val_patients"
    ]
    shutil.rmtree(partial / held_out[0])
    with pytest.raises(DataError, match=held_out[0]):
        rebuild_out_of_fold(root / "fold0", partial)
    card = next((root / "fold1").glob("*.json"))
    text = json.loads(card.read_text())
    text["training"]["split"]["val_patients"] = []
    card.write_text(json.dumps(text))
    with pytest.raises(DataError, match="names no held-out patients"):
        rebuild_out_of_fold(root / "fold1", tiny_dataset)
