"""Training a gate on a trained segmenter's encoder, and its held-out slice probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brainseg_core.bundle import load_bundle
from brainseg_core.models.encoder_gate import ENCODER_PREFIXES
from brainseg_core.training.config import TrainConfig
from brainseg_core.training.loop import TrainResult, train
from tests.support import tiny_config


def test_gate_learns_on_a_segmenters_frozen_encoder(tiny_dataset: Path, tmp_path: Path) -> None:
    def quiet(cfg: TrainConfig) -> TrainResult:
        return train(cfg, progress=False, log=lambda m: None)

    seg_res = quiet(tiny_config(tiny_dataset, tmp_path / "seg", epochs=2))
    gate_kw: dict = dict(kind="classifier", arch="resunet_gate", width=4, depth=2, tumour_fraction=None)
    with pytest.raises(ValueError, match="--init-from"):
        quiet(tiny_config(tiny_dataset, tmp_path / "g0", **gate_kw))
    seg_card = str(seg_res.card_path)
    res = quiet(tiny_config(tiny_dataset, tmp_path / "gate", epochs=3, init_from=seg_card, **gate_kw))
    seg, gate = load_bundle(seg_res.card_path), load_bundle(res.card_path)
    assert gate.card.kind == "classifier" and gate.card.arch == "resunet_gate"
    assert gate.card.training["init_from"]["sha256"] == seg.card.ref.to_json()["sha256"]
    assert "bottleneck's grid" in gate.card.training["targets"]
    ours, theirs = gate.model.state_dict(), seg.model.state_dict()
    shared = [k for k in ours if k.startswith(ENCODER_PREFIXES)]
    assert shared and all(torch.equal(ours[k].float(), theirs[k].float()) for k in shared)
    assert 0.0 <= gate.card.thresholds["tumour_probability"] <= 1.0
    # the held-out slice probabilities line up with the segmenter's file of the same split
    with np.load(tmp_path / "gate" / "out_of_fold.npz", allow_pickle=False) as z:
        g = {k: z[k] for k in z.files}
    with np.load(tmp_path / "seg" / "out_of_fold.npz", allow_pickle=False) as z:
        s = {k: z[k] for k in z.files}
    assert str(g["kind"]) == "classifier" and g["slice_prob"].dtype == np.float32
    assert list(g["patient_ids"]) == list(s["patient_ids"]) and np.array_equal(g["patient"], s["patient"])
    assert np.array_equal(g["label"], s["mask"].any(axis=(1, 2)))
    assert ((g["slice_prob"] >= 0) & (g["slice_prob"] <= 1)).all()
    # wrong source: a classifier of another architecture cannot give a gate its encoder
    cnn_kw: dict = dict(kind="classifier", arch="plain_cnn", depth=None, tumour_fraction=None)
    other = quiet(tiny_config(tiny_dataset, tmp_path / "cnn", **cnn_kw))
    with pytest.raises(ValueError, match="resunet segmenter"):
        quiet(tiny_config(tiny_dataset, tmp_path / "g1", init_from=str(other.card_path), **gate_kw))


def test_encoder_from_puts_another_segmenters_encoder_under_a_gates_head(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    def quiet(cfg: TrainConfig) -> TrainResult:
        return train(cfg, progress=False, log=lambda m: None)

    seg = quiet(tiny_config(tiny_dataset, tmp_path / "seg", epochs=1)).card_path
    seg2 = quiet(tiny_config(tiny_dataset, tmp_path / "seg2", epochs=1, seed=1)).card_path
    gate_kw: dict = dict(kind="classifier", arch="resunet_gate", width=4, depth=2, tumour_fraction=None)
    gate = quiet(tiny_config(tiny_dataset, tmp_path / "gate", epochs=1, init_from=str(seg), **gate_kw))
    moved = quiet(
        tiny_config(
            tiny_dataset,
            tmp_path / "moved",
            epochs=1,
            init_from=str(gate.card_path),
            encoder_from=str(seg2),
            **gate_kw,
        )
    )
    ours, theirs = load_bundle(moved.card_path).model.state_dict(), load_bundle(seg2).model.state_dict()
    shared = [k for k in ours if k.startswith(ENCODER_PREFIXES)]
    assert shared and all(torch.equal(ours[k].float(), theirs[k].float()) for k in shared)
    card = load_bundle(moved.card_path).card
    assert card.training["encoder_from"]["sha256"] == load_bundle(seg2).card.weights_sha256
    # only under a gate's head, and only from a ResUNet segmenter
    with pytest.raises(ValueError, match="--encoder-from"):
        quiet(tiny_config(tiny_dataset, tmp_path / "x", epochs=1, init_from=str(seg), encoder_from=str(seg2)))
    with pytest.raises(ValueError, match="resunet segmenter"):
        quiet(
            tiny_config(
                tiny_dataset,
                tmp_path / "y",
                epochs=1,
                init_from=str(gate.card_path),
                encoder_from=str(gate.card_path),
                **gate_kw,
            )
        )
