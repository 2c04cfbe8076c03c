"""Local resume checkpoints: plain torch.save files read with weights_only, and clear refusals."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from brainseg_core.errors import DataError
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
