"""2.5-D input: neighbouring slices stacked with each slice, in training, bundles and inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brainseg_core.bundle import load_bundle, save_bundle
from brainseg_core.errors import BundleError
from brainseg_core.inference.pipeline import Pipeline
from brainseg_core.io.volume import CHANNELS
from brainseg_core.model_card import read_card
from brainseg_core.models import build_model
from brainseg_core.preprocessing import (
    centre_channels,
    channel_stats,
    context_indices,
    model_input,
    preprocess_volume,
)
from brainseg_core.training.data import Augmentation, augment, load_slices
from brainseg_core.training.learner import widen_context
from brainseg_core.training.loop import train
from tests.support import make_volume, tiny_config

FLAIR = CHANNELS.index("FLAIR")


def test_context_indices_repeat_the_edge_slices() -> None:
    got = context_indices(5, [0, 2, 4], 1)
    assert got.tolist() == [[0, 0, 1], [1, 2, 3], [3, 4, 4]]
    assert context_indices(5, [3], 0).tolist() == [[3]]
    assert context_indices(1, [0], 2).tolist() == [[0, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="context must be >= 0"):
        context_indices(5, [0], -1)
    with pytest.raises(ValueError, match=r"slice indices must be in \[0, 5\)"):
        context_indices(5, [5], 1)


def test_model_input_stacks_neighbours_slice_major() -> None:
    vol = make_volume(n=5, size=32, seed=3)
    plain = preprocess_volume(vol.images, size=32)
    assert torch.equal(model_input(vol.images, range(5), size=32), plain)
    x = model_input(vol.images, [0, 2, 4], size=32, context=1)
    assert x.shape == (3, 9, 32, 32)
    # slice 2: slices 1, 2, 3 in order, three sequences each
    assert torch.equal(x[1], plain[1:4].reshape(9, 32, 32))
    # the edges repeat the first / last slice
    assert torch.equal(x[0, :3], plain[0]) and torch.equal(x[0, 3:6], plain[0])
    assert torch.equal(x[2, 6:], plain[4])
    # a subset is normalised with the whole volume's statistics when given them
    stats = channel_stats(vol.images)
    assert torch.equal(model_input(vol.images, [2], size=32, stats=stats, context=1)[0], x[1])
    # the centre of a wider input is the narrower input
    assert torch.equal(centre_channels(x, 1, 0), plain[[0, 2, 4]])
    assert centre_channels(x, 1, 1) is x
    with pytest.raises(ValueError, match="cannot take 2"):
        centre_channels(x, 1, 2)


def test_load_slices_with_context_matches_model_input(tiny_dataset: Path) -> None:
    patients = sorted(p for p in tiny_dataset.iterdir() if p.is_dir())[:2]
    plain = load_slices(patients, size=64)
    wide = load_slices(patients, size=64, context=1)
    assert wide.images.shape[1] == 9 and len(wide) == len(plain)
    assert torch.equal(wide.images[:, 3:6], plain.images)
    # the first slice of the second patient does not borrow the first patient's last slice
    first_of_second = int((plain.patient == 1).nonzero()[0])
    assert torch.equal(wide.images[first_of_second, :3], plain.images[first_of_second])


def test_missing_sequences_are_dropped_in_every_stacked_slice() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 9, 8, 8)
    no_warp = Augmentation(
        missing_sequence=0.5,
        flip_left_right=0.0,
        rotation_deg=0.0,
        scale=(1.0, 1.0),
        intensity_gain=(1.0, 1.0),
        intensity_offset=(0.0, 0.0),
    )
    out, _ = augment(x, None, g, no_warp)
    for seq in (c for c in range(3) if c != FLAIR):
        per_sample = torch.stack(
            [(out[:, 3 * s + seq] - x[:, 3 * s + FLAIR]).abs().flatten(1).amax(1) < 1e-5 for s in range(3)]
        )
        # a sample drops a sequence in all three slices or in none
        assert torch.equal(per_sample[0], per_sample[1]) and torch.equal(per_sample[0], per_sample[2])
        assert 0 < int(per_sample[0].sum()) < 64


def test_intensity_jitter_is_shared_by_a_slice_and_its_neighbours() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.ones(4, 9, 8, 8)
    jitter_only = Augmentation(flip_left_right=0.0, rotation_deg=0.0, scale=(1.0, 1.0))
    out, _ = augment(x, None, g, jitter_only)
    per_channel = out.mean(dim=(2, 3))
    assert torch.allclose(per_channel[:, :3], per_channel[:, 3:6]) and torch.allclose(
        per_channel[:, :3], per_channel[:, 6:]
    )
    assert not torch.allclose(per_channel[:, 0], per_channel[:, 1])


def test_widening_a_bundle_keeps_its_output_and_refuses_to_narrow() -> None:
    torch.manual_seed(0)
    narrow = build_model("resunet", base_filters=4, depth=2).eval()
    wide = build_model("resunet", base_filters=4, depth=2, in_channels=9).eval()
    state = widen_context(narrow.state_dict(), wide.state_dict(), have=0, want=1, path=Path("b.json"))
    wide.load_state_dict(state)
    vol = make_volume(n=4, size=32, seed=1)
    with torch.no_grad():
        a = narrow(model_input(vol.images, range(4), size=32))
        b = wide(model_input(vol.images, range(4), size=32, context=1))
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="--context must be at least 1"):
        widen_context(wide.state_dict(), narrow.state_dict(), have=1, want=0, path=Path("b.json"))


def test_training_with_context_writes_a_card_inference_follows(tiny_dataset: Path, tmp_path: Path) -> None:
    first = train(tiny_config(tiny_dataset, tmp_path / "a", epochs=1), progress=False, log=lambda m: None)
    res = train(
        tiny_config(tiny_dataset, tmp_path / "b", epochs=1, context=1, init_from=str(first.card_path)),
        progress=False,
        log=lambda m: None,
    )
    bundle = load_bundle(res.card_path)
    assert bundle.card.context_slices == 1 and bundle.card.arch_args["in_channels"] == 9
    assert read_card(res.card_path).to_dict()["context_slices"] == 1
    vol = make_volume(n=5, size=64, seed=2)
    result = Pipeline(None, bundle, device="cpu", precision="fp32").analyse(vol)
    with torch.no_grad():
        direct = torch.sigmoid(bundle.model(model_input(vol.images, range(5), size=64, context=1)))[:, 0]
    got = np.stack([s.mask_probability for s in result.slices])
    assert np.allclose(got, direct.numpy(), atol=1e-5)
    # a narrower model cannot start from it
    with pytest.raises(ValueError, match="--context must be at least 1"):
        train(
            tiny_config(tiny_dataset, tmp_path / "c", epochs=1, init_from=str(res.card_path)),
            progress=False,
            log=lambda m: None,
        )


def test_a_card_whose_context_does_not_fit_the_network_is_refused(tmp_path: Path) -> None:
    model = build_model("resunet", base_filters=4, depth=2)
    args = {"base_filters": 4, "depth": 2}
    thresholds = {"mask_probability": 0.5, "min_area_px": 0}
    with pytest.raises(ValueError, match="takes 3 input channels but 3 sequences with context_slices=1"):
        save_bundle(
            model, tmp_path, name="m", kind="segmenter", arch="resunet", arch_args=args,
            input_size=32, thresholds=thresholds, context_slices=1,
        )  # fmt: skip
    card = save_bundle(
        model, tmp_path, name="m", kind="segmenter", arch="resunet", arch_args=args,
        input_size=32, thresholds=thresholds,
    )  # fmt: skip
    text = card.read_text().replace('"context_slices": 0', '"context_slices": 1')
    card.write_text(text)
    with pytest.raises(BundleError, match="context_slices=1"):
        load_bundle(card)
    card.write_text(text.replace('"context_slices": 1', '"context_slices": -1'))
    with pytest.raises(BundleError, match="context_slices"):
        load_bundle(card)


def test_config_checks_context(tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--context must be a whole number of slices from 0 to 3"):
        tiny_config(tiny_dataset, tmp_path, context=4).resolved()
    with pytest.raises(ValueError, match="--context applies to resunet"):
        cfg = tiny_config(tiny_dataset, tmp_path, kind="classifier", arch="plain_cnn", depth=None, context=1)
        cfg.resolved()
    assert tiny_config(tiny_dataset, tmp_path, context=2).resolved().arch_args()["in_channels"] == 15


def test_a_plain_classifier_gates_a_context_segmenter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    seg_args = {"base_filters": 4, "depth": 2, "in_channels": 9}
    seg_card = save_bundle(
        build_model("resunet", **seg_args), tmp_path / "seg", name="seg", kind="segmenter",
        arch="resunet", arch_args=seg_args, input_size=32,
        thresholds={"mask_probability": 0.5, "min_area_px": 0}, context_slices=1,
    )  # fmt: skip
    cls_card = save_bundle(
        build_model("plain_cnn", width=4), tmp_path / "cls", name="cls", kind="classifier",
        arch="plain_cnn", arch_args={"width": 4}, input_size=32, thresholds={"tumour_probability": 0.5},
    )  # fmt: skip
    seg, cls = load_bundle(seg_card), load_bundle(cls_card)
    vol = make_volume(n=6, size=32, seed=4)
    x3 = model_input(vol.images, range(6), size=32)
    with torch.no_grad():
        tumour = torch.sigmoid(cls.model(x3))[:, 0].numpy()
        direct = torch.sigmoid(seg.model(model_input(vol.images, range(6), size=32, context=1)))[:, 0]
    gate = float(np.median(tumour))  # about half the slices pass
    pipe = Pipeline(cls, seg, device="cpu", precision="fp32", batch_size=4)
    result = pipe.replace(thresholds=pipe.thresholds.replace(gate=gate)).analyse(vol)
    assert np.allclose([s.tumour_probability for s in result.slices], tumour, atol=1e-5)
    passed = [i for i, s in enumerate(result.slices) if s.mask_probability is not None]
    assert passed == [i for i in range(6) if tumour[i] >= gate] and 0 < len(passed) < 6
    for i in passed:
        assert np.allclose(result.slices[i].mask_probability, direct[i].numpy(), atol=1e-5)
