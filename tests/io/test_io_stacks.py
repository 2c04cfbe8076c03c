"""Multi-page TIFF stacks, with an optional ``<name>_mask.tif`` mask stack beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from brainseg_core.errors import DataError
from brainseg_core.io import open_volume


def _stack(n: int = 5, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _masks(n: int = 5, size: int = 32) -> np.ndarray:
    m = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        m[i, : i + 1, 0] = 255  # slice i has i + 1 tumour pixels
    return m


def test_rgb_stack_with_mask_stack(tmp_path: Path) -> None:
    images, masks = _stack(), _masks()
    path = tmp_path / "brain.tif"
    tifffile.imwrite(path, images, photometric="rgb", compression="zlib")
    tifffile.imwrite(tmp_path / "brain_mask.tif", masks, photometric="minisblack")
    vol = open_volume(path)
    assert vol.patient_id == "brain" and vol.source == path
    assert vol.slice_paths == [path] * 5 and vol.slice_numbers == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(vol.images, images)
    assert vol.masks is not None and vol.masks.sum(axis=(1, 2)).tolist() == [1, 2, 3, 4, 5]
    assert vol.skipped == [] and vol.warnings == []


def test_stack_without_mask_has_no_masks(tmp_path: Path) -> None:
    path = tmp_path / "brain.tiff"
    tifffile.imwrite(path, _stack(3), photometric="rgb")
    vol = open_volume(path)
    assert vol.n_slices == 3 and vol.masks is None and vol.warnings == []


def test_greyscale_16_bit_stack_pages_are_slices(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 4000, (7, 24, 24), dtype=np.uint16)
    path = tmp_path / "t2.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    vol = open_volume(path)
    assert vol.images.shape == (7, 24, 24, 3) and vol.images.dtype == np.uint8
    assert (vol.images[..., 0] == vol.images[..., 2]).all()
    # the rescale keeps the order of intensities
    order = np.argsort(data.ravel(), kind="stable")
    assert np.all(np.diff(vol.images[..., 0].ravel()[order].astype(int)) >= 0)


def test_imagej_hyperstack_with_three_channels_and_spacing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    zcyx = rng.integers(0, 256, (4, 3, 16, 16), dtype=np.uint8)
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(
        path,
        zcyx,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"axes": "ZCYX", "unit": "mm", "spacing": 2.5},
    )
    vol = open_volume(path)
    assert vol.n_slices == 4 and vol.slice_numbers == [1, 2, 3, 4]
    np.testing.assert_array_equal(vol.images, np.moveaxis(zcyx, 1, -1))
    assert vol.spacing is not None
    assert vol.spacing.pixel_mm == pytest.approx((0.5, 0.5))
    assert vol.spacing.thickness_mm == pytest.approx(2.5)
    assert vol.spacing.voxel_ml == pytest.approx(0.5 * 0.5 * 2.5 / 1000)


def test_imagej_two_channel_stack_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, np.zeros((2, 2, 8, 8), np.uint8), imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(DataError, match="2 channels per slice"):
        open_volume(path)


def test_stack_page_of_another_size_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "odd.tif"
    with tifffile.TiffWriter(path) as w:
        for i in range(4):
            size = 16 if i == 2 else 32
            w.write(np.full((size, size), i + 1, np.uint8))
    vol = open_volume(path)
    assert vol.slice_numbers == [1, 2, 4]
    assert vol.images[:, 0, 0, 0].tolist() == [1, 2, 4]
    assert len(vol.skipped) == 1 and vol.skipped[0].path == path
    assert "slice 3 is 16x16 pixels but the other slices are 32x32" in vol.skipped[0].reason


def test_truncated_stack_keeps_the_complete_pages(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    images = _stack(6)
    tifffile.imwrite(path, images, photometric="rgb")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    vol = open_volume(path)
    assert 1 <= vol.n_slices < 6
    np.testing.assert_array_equal(vol.images, images[: vol.n_slices])
    assert any("truncated" in s.reason for s in vol.skipped)


def test_mask_stack_with_wrong_page_count_is_ignored_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "brain.tif"
    tifffile.imwrite(path, _stack(5), photometric="rgb")
    tifffile.imwrite(tmp_path / "brain_mask.tif", _masks(4), photometric="minisblack")
    vol = open_volume(path)
    assert vol.n_slices == 5 and vol.masks is None
    assert any("has 4 page(s)" in w and "5 slice(s)" in w for w in vol.warnings)


def test_mask_stack_of_another_size_is_ignored_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "brain.tif"
    tifffile.imwrite(path, _stack(2), photometric="rgb")
    tifffile.imwrite(tmp_path / "brain_mask.tif", _masks(2, size=16), photometric="minisblack")
    vol = open_volume(path)
    assert vol.masks is None
    assert any("16x16" in w and "32x32" in w for w in vol.warnings)


def test_single_page_tiff_is_a_one_slice_volume(tmp_path: Path) -> None:
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, _stack(1)[0], photometric="rgb")
    vol = open_volume(path)
    assert vol.n_slices == 1 and vol.slice_numbers == [1]


def test_opening_the_mask_stack_says_to_open_the_image(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "brain.tif", _stack(2), photometric="rgb")
    tifffile.imwrite(tmp_path / "brain_mask.tif", _masks(2), photometric="minisblack")
    with pytest.raises(DataError, match=r"is a ground-truth mask; open its image brain\.tif"):
        open_volume(tmp_path / "brain_mask.tif")


def test_non_tiff_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG\r\n")
    with pytest.raises(DataError, match="is not a TIFF file") as err:
        open_volume(path)
    assert err.value.path == path


@pytest.mark.parametrize(
    "content", [b"", b"not a tiff", b"II*\x00\xff\xff\xff\xff"], ids=["empty", "text", "bad-ifd"]
)
def test_unreadable_stack_is_a_data_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.tif"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        open_volume(path)
    assert err.value.path == path
    assert str(err.value).startswith(str(path))
