"""Local resume checkpoints: plain torch.save files read with weights_only, and clear refusals."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from brainseg_core.errors import Cancelled, DataError
from brainseg_core.training.checkpoint import CHECKPOINT_DIR, has_checkpoint, load_last
from brainseg_core.training.loop import train
from tests.support import tiny_config


def _quiet(**kw):
    return {"progress": False, "log": lambda m: None, **kw}


def test_an_old_format_checkpoint_is_refused_naming_the_file_and_what_to_do(tmp_path: Path) -> None:
    ckdir = tmp_path / CHECKPOINT_DIR
    ckdir.mkdir()
    (ckdir / "last.json").write_text(json.dumps({"epoch": 3, "step": 30}))
    assert has_checkpoint(tmp_path)  # --fold all resumes it, and so gets the message below
    with pytest.raises(DataError, match="older brainseg-train") as err:
        train(tiny_config(tmp_path, tmp_path, resume=True), **_quiet())
    assert err.value.path == ckdir / "last.json" and "without --resume" in str(err.value)
    with pytest.raises(ValueError, match="already holds a training checkpoint"):
        train(tiny_config(tmp_path, tmp_path), **_quiet())


def test_a_damaged_or_foreign_checkpoint_is_refused(tmp_path: Path) -> None:
    ckdir = tmp_path / CHECKPOINT_DIR
    ckdir.mkdir()
    last = ckdir / "last.pt"
    last.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read the training checkpoint") as err:
        load_last(tmp_path)
    assert err.value.path == last and "without --resume" in str(err.value)
    # anything but tensors and plain values is never unpickled
    last.write_bytes(pickle.dumps(Path("x"), protocol=2))
    with pytest.raises(DataError, match="cannot read the training checkpoint"):
        load_last(tmp_path)
    torch.save({"format": "something else", "model": {}}, last)
    with pytest.raises(DataError, match="not a checkpoint of this brainseg-train"):
        load_last(tmp_path)
    torch.save({"format": "brainseg-train-checkpoint/2", "model": {}}, last)
    with pytest.raises(DataError, match="incomplete training checkpoint"):
        load_last(tmp_path)


def test_resume_a_run_without_validation_patients(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "all"
    with pytest.raises(Cancelled):
        train(
            tiny_config(tiny_dataset, out, val_patients=0.0, epochs=2),
            **_quiet(cancel=lambda: (out / CHECKPOINT_DIR / "last.pt").exists()),
        )
    saved = load_last(out)
    assert saved.progress.epoch == 1 and saved.val_patients == []
    assert saved.config["tumour_fraction"] == 0.7 and saved.config["keep"] == "last"
    res = train(tiny_config(tiny_dataset, out, val_patients=0.0, epochs=2, resume=True), **_quiet())
    assert res.epochs_run == 2 and res.metrics == {"epoch": 2}
    card = json.loads(res.card_path.read_text())
    assert card["training"]["patients"] == {"train": 4, "val": 0}


def test_a_resumed_run_keeps_its_checkpoints_augmentation_even_one_saved_before_the_setting(
    tmp_path: Path,
) -> None:
    strong = tiny_config(tmp_path, tmp_path / "out", intensity="strong").resolved()
    saved = strong.to_plain()
    assert strong.with_saved(saved).intensity == "strong"
    standard = tiny_config(tmp_path, tmp_path / "out").resolved()
    assert standard.with_saved(saved).augmentation == strong.augmentation  # the checkpoint's wins
    del saved["intensity"]  # a checkpoint written before --intensity existed: its run was standard
    assert strong.with_saved(saved).intensity == "standard"
    assert strong.with_saved(saved).augmentation.gamma == (1.0, 1.0)
    bent = tiny_config(tmp_path, tmp_path / "out", elastic_px=5.0).resolved()
    assert standard.with_saved(bent.to_plain()).augmentation.elastic_px == 5.0
    del saved["elastic_px"]  # before --elastic existed: no elastic deformation
    assert bent.with_saved(saved).elastic_px == 0.0
