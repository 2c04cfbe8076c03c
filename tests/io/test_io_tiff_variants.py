"""The TIFF variants real data comes in: compression, greyscale, RGBA, 16-bit, other sizes, spacing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from brainseg_core.io import open_volume
from brainseg_core.io.tiff import RESCALE_PERCENTILE, to_uint8


def _rgb(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + n).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _folder(tmp_path: Path, slices: list[np.ndarray], masks: list[np.ndarray] | None = None, **kw) -> Path:
    folder = tmp_path / "P"
    folder.mkdir()
    for i, img in enumerate(slices, start=1):
        tifffile.imwrite(folder / f"P_{i}.tif", img, **kw)
        if masks is not None:
            tifffile.imwrite(folder / f"P_{i}_mask.tif", masks[i - 1])
    return folder


@pytest.mark.parametrize("compression", ["zlib", "lzw", "packbits", "lzma"])
def test_compressed_slices_read_like_uncompressed(tmp_path: Path, compression: str) -> None:
    slices = [_rgb(i) for i in range(3)]
    vol = open_volume(_folder(tmp_path, slices, photometric="rgb", compression=compression))
    with tifffile.TiffFile(vol.slice_paths[0]) as tif:
        assert tif.pages[0].compression != tifffile.COMPRESSION.NONE
    np.testing.assert_array_equal(vol.images, np.stack(slices))


def test_greyscale_is_replicated_to_three_channels(tmp_path: Path) -> None:
    grey = [_rgb(i)[:, :, 0] for i in range(2)]
    vol = open_volume(_folder(tmp_path, grey, photometric="minisblack"))
    assert vol.images.shape == (2, 32, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(vol.images[..., c], np.stack(grey))


def test_min_is_white_greyscale_is_inverted(tmp_path: Path) -> None:
    grey = _rgb(0)[:, :, 0]
    vol = open_volume(_folder(tmp_path, [grey], photometric="miniswhite"))
    np.testing.assert_array_equal(vol.images[0, :, :, 0], 255 - grey)


def test_rgba_alpha_is_dropped(tmp_path: Path) -> None:
    rgb = _rgb(0)
    rgba = np.concatenate([rgb, np.full((32, 32, 1), 255, np.uint8)], axis=2)
    vol = open_volume(_folder(tmp_path, [rgba], photometric="rgb", extrasamples=["unassalpha"]))
    np.testing.assert_array_equal(vol.images[0], rgb)


def test_planar_rgb_reads_like_interleaved(tmp_path: Path) -> None:
    rgb = _rgb(0)
    vol = open_volume(_folder(tmp_path, [np.moveaxis(rgb, 2, 0)], photometric="rgb", planarconfig="separate"))
    np.testing.assert_array_equal(vol.images[0], rgb)


def test_16_bit_is_rescaled_per_volume_with_a_robust_maximum(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    slices = [rng.integers(1, 1001, (40, 40), dtype=np.uint16) for _ in range(3)]
    for s in slices:
        s[:5] = 0  # background
    slices[1][20, 20] = 65535  # one hot pixel must not darken the whole volume
    vol = open_volume(_folder(tmp_path, slices, photometric="minisblack"))
    img = vol.images[..., 0].astype(int)
    assert vol.images.dtype == np.uint8
    assert (img[:, :5] == 0).all(), "background stays 0 (the preprocessing's foreground is > 0)"
    assert img[1, 20, 20] == 255
    fg = np.stack(slices)[:, 5:].astype(float)
    high = np.percentile(fg[fg > 0], RESCALE_PERCENTILE)
    np.testing.assert_array_equal(img[:, 5:], np.clip(np.rint(fg * 255 / high), 0, 255))
    assert img[:, 5:].max() == 255 and np.median(img[:, 5:]) > 100, "tissue keeps its contrast"
    # one scale for the whole volume: equal raw values give equal 8-bit values across slices
    same = (slices[0] == 500) & (slices[2] == 500)
    if same.any():
        assert (img[0][same] == img[2][same]).all()


def test_16_bit_rgb_is_rescaled_per_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    img = rng.integers(1, 100, (32, 32, 3), dtype=np.uint16)
    img[..., 1] *= 300  # the FLAIR channel has a much larger range
    vol = open_volume(_folder(tmp_path, [img], photometric="rgb"))
    assert all(vol.images[0, :, :, c].max() == 255 for c in range(3))


def test_float_images_are_rescaled(tmp_path: Path) -> None:
    img = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    img[0, 0] = np.nan
    vol = open_volume(_folder(tmp_path, [img], photometric="minisblack"))
    assert vol.images[0, 0, 0, 0] == 0
    assert vol.images[0, -1, -1, 0] == 255
    assert np.all(np.diff(vol.images[0, 1:, :, 0].ravel().astype(int)) >= 0), "rescaling keeps the order"


def test_other_sizes_are_kept_at_source_size(tmp_path: Path) -> None:
    slices = [_rgb(i, size=300) for i in range(2)]
    masks = [np.zeros((300, 300), np.uint8) for _ in range(2)]
    masks[1][100:150, 120:200] = 255
    vol = open_volume(_folder(tmp_path, slices, masks, photometric="rgb"))
    assert vol.shape == (300, 300) and vol.images.shape == (2, 300, 300, 3)
    assert vol.masks is not None and vol.masks.sum() == 50 * 80
    np.testing.assert_array_equal(vol.images, np.stack(slices))


def test_non_square_slices(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 255, (20, 50, 3), dtype=np.uint8)
    vol = open_volume(_folder(tmp_path, [img], photometric="rgb"))
    assert vol.shape == (20, 50)


@pytest.mark.parametrize(
    "mask",
    [
        np.where(np.eye(32, dtype=bool), 255, 0).astype(np.uint8),
        np.eye(32, dtype=np.uint8),
        np.eye(32, dtype=bool),
        np.where(np.eye(32, dtype=bool), 1000, 0).astype(np.uint16),
    ],
    ids=["0-255", "0-1", "bool", "uint16"],
)
def test_mask_encodings_become_bool(tmp_path: Path, mask: np.ndarray) -> None:
    vol = open_volume(_folder(tmp_path, [_rgb(0)], [mask], photometric="rgb"))
    assert vol.masks is not None and vol.masks.dtype == np.bool_
    np.testing.assert_array_equal(vol.masks[0], np.eye(32, dtype=bool))


def test_rgb_and_rgba_masks_use_any_channel(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [_rgb(0), _rgb(1)], photometric="rgb")
    rgb_mask = np.zeros((32, 32, 3), np.uint8)
    rgb_mask[3, 4, 0] = 255  # red only
    rgb_mask[5, 6, 2] = 7  # faint blue only
    tifffile.imwrite(folder / "P_1_mask.tif", rgb_mask, photometric="rgb")
    rgba_mask = np.zeros((32, 32, 4), np.uint8)
    rgba_mask[..., 3] = 255  # opaque everywhere: alpha must not count as tumour
    rgba_mask[8, 9, 1] = 255
    tifffile.imwrite(folder / "P_2_mask.tif", rgba_mask, photometric="rgb", extrasamples=["unassalpha"])
    vol = open_volume(folder)
    assert vol.masks is not None
    assert sorted(zip(*np.nonzero(vol.masks[0]), strict=True)) == [(3, 4), (5, 6)]
    assert list(zip(*np.nonzero(vol.masks[1]), strict=True)) == [(8, 9)]


def test_palette_image_is_skipped_with_reason(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [_rgb(0)], photometric="rgb")
    colormap = np.tile(np.arange(256, dtype=np.uint16) * 257, (3, 1))
    palette = folder / "P_2.tif"
    tifffile.imwrite(palette, _rgb(1)[:, :, 0], photometric="palette", colormap=colormap)
    vol = open_volume(folder)
    assert vol.slice_numbers == [1]
    assert vol.skipped[0].path == palette and "PALETTE colour model" in vol.skipped[0].reason


# ---------------------------------------------------------------------------------------------
# Pixel spacing from the resolution tags


def test_centimetre_resolution_gives_pixel_spacing(tmp_path: Path) -> None:
    # 20 px/cm across (0.5 mm), 10 px/cm down (1 mm)
    folder = _folder(
        tmp_path, [_rgb(0), _rgb(1)], photometric="rgb", resolution=(20, 10), resolutionunit="CENTIMETER"
    )
    vol = open_volume(folder)
    assert vol.spacing is not None and vol.spacing.pixel_mm == pytest.approx((1.0, 0.5))
    assert vol.spacing.thickness_mm is None and vol.spacing.voxel_ml is None


def test_inch_resolution_is_not_a_physical_spacing(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [_rgb(0)], photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    assert open_volume(folder).spacing is None


def test_slices_disagreeing_on_spacing_give_unknown_spacing(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [_rgb(0)], photometric="rgb", resolution=(10, 10), resolutionunit="CENTIMETER")
    tifffile.imwrite(
        folder / "P_2.tif", _rgb(1), photometric="rgb", resolution=(20, 20), resolutionunit="CENTIMETER"
    )
    vol = open_volume(folder)
    assert vol.spacing is None
    assert any("disagree on pixel spacing" in w for w in vol.warnings)


def test_to_uint8_leaves_8_bit_untouched() -> None:
    a = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    g = a[:, :, :1]
    out = to_uint8([a, g])
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_array_equal(out[1], np.repeat(g, 3, axis=2))


def test_to_uint8_all_background_is_zero() -> None:
    out = to_uint8([np.zeros((4, 4, 1), np.uint16)])
    assert out.shape == (1, 4, 4, 3) and not out.any()
