"""``brainseg-train`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_patient

from brainseg_core.cli.train import main
from brainseg_core.registry import list_bundles, user_models_dir


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("traindata")
    for i in range(3):
        make_patient(root, f"TCGA_YY_{i:04d}_20000101", n=6, size=32, tumour_slices=(2, 3), seed=i)
    return root


TINY = ["--width", "4", "--depth", "2", "--image-size", "32", "--batch-size", "4", "--quiet"]


def test_train_segmenter_and_install(data: Path, tmp_path: Path, capsys) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "run"
    rc = main(
        [
            "segmenter",
            str(data),
            "--out",
            str(out),
            "--max-epochs",
            "2",
            "--name",
            "cli-seg",
            "--install",
            *TINY,
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "epoch 2:" in text and "dice_patient_mean" in text and "stopped: epochs" in text
    card = json.loads((out / "cli-seg.json").read_text())
    assert card["training"]["epochs_run"] == 2 and card["name"] == "cli-seg"
    assert (user_models_dir() / "cli-seg.json").is_file()
    assert any(b.card.name == "cli-seg" for b in list_bundles())


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
    assert main(["segmenter", str(data), "--out", str(tmp_path / "x"), "--arch", "resnet18"]) == 1
    assert "cannot be a segmenter" in capsys.readouterr().err
    assert main(["segmenter", str(tmp_path / "missing"), "--out", str(tmp_path / "y"), *TINY]) == 1
    assert "error" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segmenter", str(data), "--out", str(tmp_path / "z"), "--tumour-fraction", "lots"])
