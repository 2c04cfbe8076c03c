"""Patient split, in-memory slice set, epoch sampling and on-device augmentation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from brainseg_core.io import open_volume
from brainseg_core.preprocessing import preprocess_volume
from brainseg_core.training.data import (
    AUGMENTATION,
    Augmentation,
    augment,
    epoch_indices,
    find_labelled_patients,
    load_slices,
    read_patient_list,
    split_patients,
)

IDS = [f"P{i:02d}" for i in range(10)]

#: An augmentation that moves and rescales nothing (tests turn one part on at a time).
STILL = Augmentation(
    flip_left_right=0.0, rotation_deg=0.0, scale=(1.0, 1.0), intensity_gain=(1.0, 1.0),
    intensity_offset=(0.0, 0.0),
)  # fmt: skip


def test_split_is_by_patient_disjoint_and_reproducible() -> None:
    train, val = split_patients(IDS, 0.2, seed=1)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == IDS
    assert split_patients(list(reversed(IDS)), 0.2, seed=1) == (train, val)  # order-independent
    others = {tuple(split_patients(IDS, 0.2, seed=s)[1]) for s in range(6)}
    assert len(others) > 1  # the seed matters


def test_split_explicit_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "val.txt"
    f.write_text("# validation\nP03\n\nP07  # note\n")
    ids = read_patient_list(f)
    assert ids == ["P03", "P07"]
    assert split_patients(IDS, ids)[1] == ["P03", "P07"]
    with pytest.raises(ValueError, match="not in the data"):
        split_patients(IDS, ["P99"])
    with pytest.raises(ValueError, match="leave some"):
        split_patients(IDS[:2], IDS[:2])
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_patients(IDS, 1.5)
    with pytest.raises(ValueError, match="duplicate"):
        split_patients(["A", "A", "B"], 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        split_patients(["A"], 0.5)
    tr, va = split_patients(["A", "B"], 0.01)  # at least one patient on each side
    assert len(tr) == len(va) == 1


def test_load_slices_normalises_per_volume(tiny_dataset: Path) -> None:
    patients = find_labelled_patients(tiny_dataset)
    data = load_slices(patients[:2], size=32, workers=2)
    assert data.images.shape == (16, 3, 32, 32) and data.images.dtype == torch.float16
    assert data.masks.shape == (16, 1, 32, 32) and data.masks.dtype == torch.uint8
    assert data.patient_ids == [p.name for p in patients[:2]]
    assert data.labels.tolist() == [0, 0, 1, 1, 1, 1, 0, 0] * 2
    vol = open_volume(patients[1])
    expected = preprocess_volume(vol.images, size=32).half()
    assert torch.equal(data.images[8:], expected)
    sub = data.subset([data.patient_ids[1]])
    assert len(sub) == 8 and sub.patient_ids == [data.patient_ids[1]] and sub.patient.tolist() == [0] * 8
    assert torch.equal(sub.images, data.images[8:])


def test_epoch_indices_tumour_fraction() -> None:
    labels = torch.tensor([1.0] * 3 + [0.0] * 7)
    g = torch.Generator().manual_seed(0)
    idx = epoch_indices(labels, length=20, tumour_fraction=0.7, generator=g)
    assert idx.numel() == 20 and int(labels[idx].sum()) == 14
    # every tumour slice drawn about equally often (repeated shuffles, not i.i.d. draws)
    counts = np.bincount(idx.numpy(), minlength=10)
    assert counts[:3].max() - counts[:3].min() <= 1
    nat = epoch_indices(labels, length=10, tumour_fraction=None, generator=g)
    assert sorted(nat.tolist()) == list(range(10))
    with pytest.raises(ValueError, match="no tumour"):
        epoch_indices(torch.zeros(4), length=4, tumour_fraction=0.5, generator=g)


def test_augment_moves_masks_with_images() -> None:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    mask = ((yy - 20) ** 2 + (xx - 40) ** 2 < 100).float()[None, None].repeat(8, 1, 1, 1)
    images = mask.repeat(1, 3, 1, 1).half()
    x, m = augment(images, mask.to(torch.uint8), g)
    assert x.shape == images.shape and x.dtype == torch.float32 and m is not None
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}  # nearest neighbour: still binary
    assert not torch.equal(m, mask)  # something moved
    inside = x[:, 0:1][m > 0.5]
    outside = x[:, 0:1][m < 0.5]
    assert (inside > 0.5).float().mean() > 0.95 and (outside < 0.5).float().mean() > 0.95
    # same generator state, same result
    x2, m2 = augment(images, mask, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(m, m2)
    xi, none = augment(images, None, torch.Generator().manual_seed(0))
    assert none is None and torch.equal(xi, x)


def test_augment_takes_its_parameters_from_one_definition() -> None:
    images = torch.randn(4, 3, 32, 32)
    masks = (torch.rand(4, 1, 32, 32) > 0.5).to(torch.uint8)
    x, m = augment(images, masks, torch.Generator().manual_seed(0), STILL)
    assert torch.allclose(x, images, atol=1e-5) and torch.equal(m, masks.float())
    mirror = Augmentation(
        flip_left_right=1.0, rotation_deg=0.0, scale=(1.0, 1.0), intensity_gain=(2.0, 2.0),
        intensity_offset=(0.0, 0.0),
    )  # fmt: skip
    x, m = augment(images, masks, torch.Generator().manual_seed(0), mirror)
    assert torch.allclose(x, 2 * images.flip(-1), atol=1e-5) and torch.equal(m, masks.flip(-1).float())
    # the card records the parameters training uses
    card = AUGMENTATION.card()
    assert card["flip_left_right"] == AUGMENTATION.flip_left_right == 0.5
    assert card["rotation_deg"] == AUGMENTATION.rotation_deg and card["scale"] == list(AUGMENTATION.scale)
    assert card["intensity_gain"] == list(AUGMENTATION.intensity_gain)
    assert card["intensity_offset"] == list(AUGMENTATION.intensity_offset)


def test_missing_sequence_augmentation_puts_flair_in_a_dropped_sequences_place() -> None:
    images = torch.stack([torch.full((64, 8, 8), float(c)) for c in range(3)], 1)  # channel c == c
    drop = dataclasses.replace(STILL, missing_sequence=0.5)
    x, _ = augment(images, None, torch.Generator().manual_seed(0), drop)
    pre, flair, post = (x[:, c, 0, 0] for c in range(3))
    assert torch.all(flair == 1.0)  # FLAIR, the reference, is never dropped
    assert set(pre.tolist()) == {0.0, 1.0} and set(post.tolist()) == {2.0, 1.0}
    dropped = torch.stack([pre == 1.0, post == 1.0], 1)
    assert 0.25 < dropped.float().mean() < 0.75  # about half of each
    assert dropped.all(1).any() and (~dropped).all(1).any()  # drawn independently per channel
    assert torch.all(x[:, :, 0, 0, None, None] == x)  # a whole channel at a time
    off, _ = augment(images, None, torch.Generator().manual_seed(0), STILL)
    assert torch.equal(off, images)
    with pytest.raises(ValueError, match="missing_sequence"):
        Augmentation(missing_sequence=1.5)
    card = Augmentation(missing_sequence=0.2).card()["missing_sequence"]
    assert isinstance(card, dict) and card["probability"] == 0.2


def test_strong_intensity_jitters_intensities_only_and_leaves_the_standard_draws_alone() -> None:
    from brainseg_core.training.data import Intensity

    images = torch.randn(16, 3, 32, 32)
    masks = (torch.rand(16, 1, 32, 32) > 0.5).to(torch.uint8)
    standard = Augmentation.of("standard")
    strong = Augmentation.of(Intensity.STRONG, missing_sequence=0.1)
    assert standard == AUGMENTATION and strong.missing_sequence == 0.1
    assert strong.gamma == (0.7, 1.5) and strong.noise_std == 0.1 and strong.intensity_gain == (0.75, 1.25)
    xs, ms = augment(images, masks, torch.Generator().manual_seed(3), standard)
    xd, md = augment(images, masks, torch.Generator().manual_seed(3), Augmentation())
    assert torch.equal(xs, xd) and torch.equal(ms, md)  # the presets' standard is the old default
    xg, mg = augment(
        images, masks, torch.Generator().manual_seed(3), dataclasses.replace(strong, missing_sequence=0.0)
    )
    assert torch.equal(mg, ms) and not torch.allclose(xg, xs)  # the same warp, other intensities
    # gamma alone maps each channel onto its own range: its minimum and maximum stay
    gamma_only = dataclasses.replace(standard, gamma=(0.5, 2.0))
    xo, _ = augment(images, None, torch.Generator().manual_seed(3), gamma_only)
    assert not torch.allclose(xo, xs, atol=1e-3)
    assert torch.allclose(xo.amin((2, 3)), xs.amin((2, 3)), atol=1e-5)
    assert torch.allclose(xo.amax((2, 3)), xs.amax((2, 3)), atol=1e-5)
    card = strong.card()
    assert card["gamma"] == [0.7, 1.5] and card["noise_std_max"] == 0.1
    assert "gamma" not in standard.card() and "noise_std_max" not in standard.card()
    with pytest.raises(ValueError, match="standard, strong"):
        Augmentation.of("loud")
    with pytest.raises(ValueError, match="gamma"):
        Augmentation(gamma=(1.5, 0.7))


def test_the_standard_augmentation_draws_what_it_always_drew() -> None:
    # the draws of the standard augmentation, in order (a resumed or repeated recipe depends on
    # them): an extra draw here (a strong-only step run always) shifts every later batch
    b, per = 5, 3
    g = torch.Generator().manual_seed(11)
    augment(torch.randn(b, 3, 16, 16), torch.zeros(b, 1, 16, 16), g, Augmentation.of("standard"))
    ref = torch.Generator().manual_seed(11)
    for shape in ((b,), (b,), (b,), (b, per, 1, 1), (b, per, 1, 1)):
        torch.rand(*shape, generator=ref)
    assert torch.equal(torch.rand(8, generator=g), torch.rand(8, generator=ref))


def test_gamma_maps_one_value_to_one_value_across_stacked_slices() -> None:
    gamma_only = dataclasses.replace(STILL, gamma=(0.5, 2.0))
    one = torch.rand(4, 3, 16, 16)
    stacked = one.repeat(1, 3, 1, 1)  # a slice and two identical neighbours (2.5-D input)
    stacked[:, 6, 0, 0] = 5.0  # except one bright voxel in the last neighbour's first sequence
    x, _ = augment(stacked, None, torch.Generator().manual_seed(0), gamma_only)
    assert not torch.allclose(x[:, :3], one, atol=1e-3)  # gamma did something
    same = torch.ones_like(one, dtype=torch.bool)
    same[:, 0, 0, 0] = False
    assert torch.allclose(x[:, :3][same], x[:, 3:6][same], atol=1e-6)
    assert torch.allclose(x[:, :3][same], x[:, 6:9][same], atol=1e-6)
    for bad in ({"gamma": (0.0, 1.0)}, {"noise_std": float("nan")}, {"intensity_gain": (1.2, 0.8)}):
        with pytest.raises(ValueError):
            Augmentation(**bad)  # type: ignore[arg-type]
    assert Augmentation(gamma=[1.0, 1.0]).gamma == (1.0, 1.0)  # type: ignore[arg-type]


def test_load_slices_reports_each_volumes_warnings_and_skipped_slices(tmp_path: Path) -> None:
    import shutil

    from tests.support import make_patient

    patient = make_patient(tmp_path / "data", patient_id="TCGA_XX_0009_20000101", n=4)
    bad = patient / f"{patient.name}_3.tif"
    bad.write_bytes(b"not a tiff")
    shutil.copy(patient / f"{patient.name}_1_mask.tif", patient / f"{patient.name}_9_mask.tif")  # orphan
    lines: list[str] = []
    data = load_slices([patient], size=32, workers=1, warn=lines.append)
    assert len(data) == 3
    assert any(line.startswith(f"warning: skipped {bad}") for line in lines)
    assert any("_9_mask.tif" in line and "mask without an image" in line for line in lines)


def test_a_nifti_dataset_trains_like_the_tiff_one(tiny_dataset: Path, tmp_path: Path) -> None:
    """BraTS-style NIfTI patients (images + _seg) give the very slices and masks of their TIFFs."""
    from tests.support import AFFINES, geometry_for, write_nifti_patient

    tiff_patients = find_labelled_patients(tiny_dataset)[:2]
    for p in tiff_patients:
        vol = open_volume(p)
        geometry = geometry_for((vol.n_slices, *vol.shape), AFFINES["sagittal-flipped"])
        write_nifti_patient(tmp_path / "nifti" / p.name, vol, geometry)
    nifti_patients = find_labelled_patients(tmp_path / "nifti")
    assert [p.name for p in nifti_patients] == [p.name for p in tiff_patients]
    a = load_slices(tiff_patients, size=32, workers=1)
    b = load_slices(nifti_patients, size=32, workers=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert b.labels.tolist() == a.labels.tolist() and b.patient_ids == a.patient_ids


def test_elastic_deformation_moves_image_and_mask_together_by_at_most_its_pixels() -> None:
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    ramp = torch.stack([xx.float(), yy.float(), xx.float() * 0 + 1.0])[None].repeat(6, 1, 1, 1)  # x, y, 1
    mask = ((yy - 32) ** 2 + (xx - 30) ** 2 < 144).to(torch.uint8)[None, None].repeat(6, 1, 1, 1)
    bent = dataclasses.replace(STILL, elastic_px=4.0)
    x, m = augment(ramp, mask, torch.Generator().manual_seed(0), bent)
    assert m is not None
    # the ramp's values are the source coordinates each output pixel was sampled from
    inner = (slice(None), slice(6, -6), slice(6, -6))  # away from the border padding
    dx, dy = x[:, 0][inner] - xx[6:-6, 6:-6], x[:, 1][inner] - yy[6:-6, 6:-6]
    assert dx.abs().max() <= 4.0 + 1e-3 and dy.abs().max() <= 4.0 + 1e-3
    assert dx.abs().max() > 1.0 and dy.abs().max() > 1.0  # it moved things, in x and in y
    assert not torch.allclose(dx[0], dx[1])  # a field per slice
    # smooth: neighbouring pixels move alike (7 x 7 control points over 64 px)
    assert (dx[:, :, 1:] - dx[:, :, :-1]).abs().max() < 1.0
    # the mask goes where the image goes: a mask pixel samples the source inside the disc
    src_inside = ((x[:, 1] - 32) ** 2 + (x[:, 0] - 30) ** 2) < 144
    agree = (m[:, 0] > 0.5) == src_inside
    assert agree.float().mean() > 0.98  # nearest vs bilinear differ only at the edge
    off, m_off = augment(ramp, mask, torch.Generator().manual_seed(0), STILL)
    assert torch.allclose(off, ramp, atol=1e-4) and torch.equal(m_off, mask.float())
    # off, it draws nothing: the standard stream of draws is unchanged
    assert Augmentation.of("standard", elastic_px=0.0) == AUGMENTATION
    card = Augmentation.of("standard", elastic_px=6.0).card()
    assert card["elastic"]["max_px"] == 6.0 and "elastic" not in AUGMENTATION.card()  # type: ignore[index]
    for bad in ({"elastic_px": -1.0}, {"elastic_px": float("inf")}, {"elastic_grid": 1}):
        with pytest.raises(ValueError, match="elastic"):
            Augmentation(**bad)  # type: ignore[arg-type]
