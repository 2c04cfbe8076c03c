"""``brainseg-train`` command line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from brainseg_core.bundle import save_bundle
from brainseg_core.cli.train import main
from brainseg_core.models import build_model
from brainseg_core.registry import active_bundle, install_bundle, user_models_dir
from brainseg_core.training.config import TrainConfig
from tests.support import make_patient


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("traindata")
    for i in range(3):
        make_patient(root, f"TCGA_YY_{i:04d}_20000101", n=6, size=32, tumour_slices=(2, 3), seed=i)
    return root


TINY = ["--width", "4", "--depth", "2", "--image-size", "32", "--batch-size", "4", "--quiet"]


def test_train_segmenter_and_install(data: Path, tmp_path: Path, capsys) -> None:
    torch.set_num_threads(1)

    def run(out: Path, *extra: str) -> int:
        args = ["segmenter", str(data), "--out", str(out), "--max-epochs", "2", "--name", "cli-seg"]
        return main([*args, "--install", *extra, *TINY])

    # the active segmenter claims a perfect validation Dice: a two-epoch model is worse, so it is
    # trained and kept, but not installed
    perfect = save_bundle(
        build_model("resunet", base_filters=4, depth=2),
        tmp_path / "perfect",
        name="perfect",
        kind="segmenter",
        arch="resunet",
        arch_args={"base_filters": 4, "depth": 2},
        input_size=32,
        thresholds={"mask_probability": 0.5, "min_area_px": 0},
        metrics={"dice_patient_mean": 1.0},
    )
    install_bundle(perfect)
    assert run(tmp_path / "run") == 1
    captured = capsys.readouterr()
    assert "epoch 2:" in captured.out and "dice_patient_mean" in captured.out
    assert "stopped: epochs" in captured.out
    assert "below the active segmenter" in captured.err and "--force" in captured.err
    card = json.loads((tmp_path / "run" / "cli-seg.json").read_text())
    assert card["training"]["epochs_run"] == 2 and card["name"] == "cli-seg"
    assert not (user_models_dir() / "cli-seg.json").exists()
    # --force installs it, and it becomes the active segmenter
    assert run(tmp_path / "forced", "--force") == 0
    assert (user_models_dir() / "cli-seg.json").is_file()
    assert active_bundle("segmenter").card.name == "cli-seg"


def test_train_classifier_with_explicit_validation_list(data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ids = tmp_path / "val.txt"
    ids.write_text("TCGA_YY_0001_20000101\n")
    out = tmp_path / "cls"
    rc = main(
        ["classifier", str(data), "--out", str(out), "--arch", "plain_cnn", "--width", "4", "--epochs", "1",
         "--image-size", "32", "--batch-size", "4", "--val-patients", str(ids), "--quiet", "--name", "c"]
    )  # fmt: skip
    assert rc == 0
    assert (out / "val_patients.txt").read_text().split() == ["TCGA_YY_0001_20000101"]
    assert json.loads((out / "c.json").read_text())["training"]["split"]["rule"] == "explicit list"


def test_errors_exit_1_with_a_message(data: Path, tmp_path: Path, capsys) -> None:
    assert main(["segmenter", str(data), "--out", str(tmp_path / "x"), "--arch", "resnet18"]) == 2
    assert "cannot be a segmenter" in capsys.readouterr().err
    assert main(["segmenter", str(tmp_path / "missing"), "--out", str(tmp_path / "y"), *TINY]) == 2
    assert "error" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segmenter", str(data), "--out", str(tmp_path / "z"), "--tumour-fraction", "lots"])


def test_all_folds_in_one_command_skip_finished_folds(data: Path, tmp_path: Path, capsys) -> None:
    torch.set_num_threads(1)
    args = ["segmenter", str(data), "--out", str(tmp_path / "cv"), "--folds", "2", "--fold", "all"]
    args += ["--keep", "last", "--epochs", "1", "--crop", "16", *TINY]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fold 0 of 2: training" in out and "fold 1 of 2: training" in out
    held_out = [(tmp_path / "cv" / f"fold{i}" / "val_patients.txt").read_text().split() for i in (0, 1)]
    assert sorted(held_out[0] + held_out[1]) == sorted(p.name for p in data.iterdir())
    assert main(args) == 0  # again: nothing left to do
    assert capsys.readouterr().out.count("already trained") == 2
    from brainseg_core.cli.eval import main as eval_main

    assert (
        main(["segmenter", str(data), "--out", str(tmp_path / "all"), "--val-patients", "0", *args[8:]]) == 0
    )
    assert eval_main(["--cv", str(tmp_path / "cv"), "--quiet", "--write-card", str(tmp_path / "all")]) == 0
    assert "pooled (nested, honest)" in capsys.readouterr().out
    card = json.loads(next((tmp_path / "all").glob("*.json")).read_text())
    folds = card["training"]["cross_validation"]["fold_models"]
    assert [f["fold"] for f in folds] == ["fold0", "fold1"]
    assert sorted(p for f in folds for p in f["held_out_patients"]) == sorted(
        card["metrics"]["per_patient_dice"]
    )
    assert main(["segmenter", str(data), "--out", str(tmp_path / "x"), "--fold", "all", *TINY]) == 2
    assert "--fold all needs --folds K" in capsys.readouterr().err


def test_tumour_fraction_default_depends_on_the_kind(tmp_path: Path) -> None:
    from brainseg_core.cli.train import build_parser, config_from_args

    def tf(*extra: str) -> float | None:
        return config_from_args(
            build_parser().parse_args([*extra, str(tmp_path), "--out", "x"])
        ).tumour_fraction

    assert tf("segmenter") == 0.7 and tf("classifier") is None
    assert tf("segmenter", "--tumour-fraction", "natural") is None
    assert tf("classifier", "--tumour-fraction", "0.4") == 0.4
    assert tf("classifier", "--tumour-fraction", "default") is None


def test_missing_sequence_option_reaches_the_augmentation(tmp_path: Path) -> None:
    from brainseg_core.cli.train import build_parser, config_from_args

    def config(*extra: str) -> TrainConfig:
        return config_from_args(build_parser().parse_args(["segmenter", str(tmp_path), "--out", "x", *extra]))

    assert config().augmentation.missing_sequence == 0.0
    assert config("--missing-sequence", "0.2").augmentation.missing_sequence == 0.2
    with pytest.raises(ValueError, match="--missing-sequence"):
        config("--missing-sequence", "2").resolved()
    assert config().augmentation.gamma == (1.0, 1.0)
    strong = config("--intensity", "strong", "--missing-sequence", "0.1").augmentation
    assert strong.gamma == (0.7, 1.5) and strong.noise_std == 0.1 and strong.missing_sequence == 0.1
    with pytest.raises(SystemExit):
        config("--intensity", "loud")
    with pytest.raises(ValueError, match="--intensity must be one of standard, strong"):
        dataclasses.replace(config(), intensity="loud").resolved()
    assert config().augmentation.elastic_px == 0.0
    assert config("--elastic", "6").augmentation.elastic_px == 6.0
    with pytest.raises(ValueError, match="--elastic"):
        config("--elastic", "-2").resolved()
