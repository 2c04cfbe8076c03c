"""Patient folders in the LGG layout: ordering, mask pairing, broken slices and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from brainseg_core.errors import DataError
from brainseg_core.io import CHANNELS, SkippedSlice, Volume, is_patient_dir, open_volume

PID = "TCGA_XX_0001_20000101"


def _slice(value: int, size: int = 32) -> np.ndarray:
    """An RGB slice whose channels hold value, value+1, value+2 (so its origin is recognisable)."""
    img = np.zeros((size, size, 3), np.uint8)
    img[...] = (value, value + 1, value + 2)
    return img


def _write_patient(folder: Path, numbers: list[int], *, masks: bool = True, size: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        tifffile.imwrite(folder / f"{PID}_{n}.tif", _slice(n, size), photometric="rgb")
        if masks:
            mask = np.zeros((size, size), np.uint8)
            mask[: n % size, :2] = 255  # n % size rows marked: the mask tells which slice it belongs to
            tifffile.imwrite(folder / f"{PID}_{n}_mask.tif", mask)
    return folder


# ---------------------------------------------------------------------------------------------
# The real published fixture patients


def test_fixture_patients_open_with_20_slices_and_tumour(lgg_fixture_root: Path) -> None:
    folders = sorted(p for p in lgg_fixture_root.iterdir() if p.is_dir())
    assert len(folders) == 2
    for folder in folders:
        vol = open_volume(folder)
        assert isinstance(vol, Volume)
        assert vol.patient_id == folder.name
        assert vol.source == folder
        assert vol.n_slices == 20
        assert vol.slice_numbers == list(range(1, 21))
        assert vol.images.shape == (20, 256, 256, 3) and vol.images.dtype == np.uint8
        assert vol.masks is not None and vol.masks.shape == (20, 256, 256)
        assert vol.masks.any(), "the fixture patients hold tumour pixels"
        assert not vol.masks.all(axis=(1, 2)).any()
        assert vol.skipped == [] and vol.warnings == []
        assert vol.spacing is None
        # Byte-for-byte the published pixels, in slice order.
        for i in (0, 9, 19):
            n = vol.slice_numbers[i]
            assert vol.slice_paths[i] == folder / f"{folder.name}_{n}.tif"
            np.testing.assert_array_equal(vol.images[i], tifffile.imread(vol.slice_paths[i]))
            expected_mask = tifffile.imread(folder / f"{folder.name}_{n}_mask.tif") > 0
            np.testing.assert_array_equal(vol.masks[i], expected_mask)


def test_channels_are_the_lgg_order() -> None:
    assert CHANNELS == ("pre-contrast", "FLAIR", "post-contrast")


# ---------------------------------------------------------------------------------------------
# Ordering and pairing


def test_slices_are_ordered_by_number_not_by_name(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [10, 2, 1, 11, 3, 20])
    vol = open_volume(folder)
    assert vol.slice_numbers == [1, 2, 3, 10, 11, 20]
    assert [p.name for p in vol.slice_paths] == [f"{PID}_{n}.tif" for n in (1, 2, 3, 10, 11, 20)]
    assert vol.images[:, 0, 0, 0].tolist() == [1, 2, 3, 10, 11, 20]
    # each mask is paired with its own slice: n rows marked
    assert vol.masks is not None
    assert vol.masks[:, :, 0].sum(axis=1).tolist() == [1, 2, 3, 10, 11, 20]


def test_tiny_volume_masks_follow_their_slices(tiny_volume_dir: Path) -> None:
    vol = open_volume(tiny_volume_dir)
    assert vol.n_slices == 6 and vol.shape == (64, 64)
    assert vol.masks is not None
    assert vol.masks.any(axis=(1, 2)).tolist() == [False, False, True, True, False, False]
    # the generated tumour is bright in FLAIR exactly where the mask is
    assert (vol.images[2, :, :, 1][vol.masks[2]] == 220).all()


def test_patient_without_masks_has_none_and_no_warning(tmp_path: Path) -> None:
    vol = open_volume(_write_patient(tmp_path / PID, [1, 2, 3], masks=False))
    assert vol.masks is None and not vol.has_masks
    assert vol.warnings == [] and vol.skipped == []


def test_tiff_suffix_and_case_variants_are_slices(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    tifffile.imwrite(folder / "scan_1.TIF", _slice(1), photometric="rgb")
    tifffile.imwrite(folder / "scan_2.tiff", _slice(2), photometric="rgb")
    tifffile.imwrite(folder / "scan_2_MASK.tiff", np.ones((32, 32), np.uint8))
    tifffile.imwrite(folder / "scan_1_mask.TIF", np.zeros((32, 32), np.uint8))
    vol = open_volume(folder)
    assert vol.slice_numbers == [1, 2]
    assert vol.masks is not None and vol.masks.sum(axis=(1, 2)).tolist() == [0, 32 * 32]


def test_some_masks_missing_drops_ground_truth_and_says_which(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2, 3, 4])
    (folder / f"{PID}_3_mask.tif").unlink()
    vol = open_volume(folder)
    assert vol.n_slices == 4, "a slice without a mask is still shown"
    assert vol.masks is None
    assert vol.skipped == []
    text = "\n".join(vol.warnings)
    assert "1 of 4 slices have no usable mask" in text
    assert f"{PID}_3_mask.tif: missing" in text


def test_mask_of_another_size_than_its_image_is_reported(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2, 3])
    bad = folder / f"{PID}_2_mask.tif"
    tifffile.imwrite(bad, np.zeros((16, 16), np.uint8))
    vol = open_volume(folder)
    assert vol.n_slices == 3 and vol.masks is None
    assert any(
        w.startswith(str(bad)) and "16x16" in w and "32x32" in w and f"{PID}_2.tif" in w for w in vol.warnings
    )


def test_unreadable_mask_is_reported_and_image_kept(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2])
    bad = folder / f"{PID}_1_mask.tif"
    bad.write_bytes(b"this is not a tiff")
    vol = open_volume(folder)
    assert vol.n_slices == 2 and vol.masks is None
    assert any(w.startswith(str(bad)) and "not a readable TIFF" in w for w in vol.warnings)


def test_mask_without_an_image_is_reported_not_paired(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2])
    orphan = folder / f"{PID}_7_mask.tif"
    tifffile.imwrite(orphan, np.zeros((32, 32), np.uint8))
    vol = open_volume(folder)
    assert vol.slice_numbers == [1, 2]
    assert vol.masks is not None, "the real slices all have masks"
    assert any(w.startswith(str(orphan)) and "mask without an image" in w for w in vol.warnings)


def test_folder_of_masks_only_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / PID
    folder.mkdir()
    tifffile.imwrite(folder / f"{PID}_1_mask.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="only ground-truth masks") as err:
        open_volume(folder)
    assert err.value.path == folder


# ---------------------------------------------------------------------------------------------
# Broken slices: skipped with a reason, the rest opens


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
        (lambda p: p.write_bytes(b"II*\x00garbage" * 10), "not a readable TIFF image"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"%PDF-1.4 not an image at all"), "not a readable TIFF image"),
    ],
    ids=["truncated", "corrupt-header", "zero-bytes", "not-a-tiff"],
)
def test_broken_slice_is_skipped_with_reason(tmp_path: Path, damage, reason: str) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2, 3, 4])
    broken = folder / f"{PID}_3.tif"
    damage(broken)
    vol = open_volume(folder)
    assert vol.slice_numbers == [1, 2, 4]
    assert vol.images[:, 0, 0, 0].tolist() == [1, 2, 4]
    assert len(vol.skipped) == 1
    assert isinstance(vol.skipped[0], SkippedSlice)
    assert vol.skipped[0].path == broken
    assert reason in vol.skipped[0].reason
    assert vol.masks is not None and vol.masks.shape[0] == 3, "the kept slices keep their masks"


def test_truncated_compressed_slice_is_skipped(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2], masks=False)
    broken = folder / f"{PID}_2.tif"
    rng = np.random.default_rng(1)
    tifffile.imwrite(broken, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), compression="zlib")
    broken.write_bytes(broken.read_bytes()[:-200])
    vol = open_volume(folder)
    assert vol.slice_numbers == [1]
    assert "truncated" in vol.skipped[0].reason


def test_slice_of_another_size_is_skipped(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2, 3], masks=False)
    odd = folder / f"{PID}_2.tif"
    tifffile.imwrite(odd, _slice(2, size=48), photometric="rgb")
    vol = open_volume(folder)
    assert vol.slice_numbers == [1, 3] and vol.shape == (32, 32)
    assert vol.skipped == [SkippedSlice(odd, "is 48x48 pixels but the other slices are 32x32")]


def test_all_slices_broken_is_a_data_error(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2], masks=False)
    for p in folder.iterdir():
        p.write_bytes(b"junk")
    with pytest.raises(DataError, match="none of its 2 slice image") as err:
        open_volume(folder)
    assert err.value.path == folder
    assert "not a readable TIFF" in str(err.value)


def test_duplicate_slice_number_is_skipped(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2], masks=False)
    tifffile.imwrite(folder / f"{PID}_01.tif", _slice(99), photometric="rgb")
    vol = open_volume(folder)
    assert vol.slice_numbers == [1, 2]
    assert len(vol.skipped) == 1 and "duplicate slice number 1" in vol.skipped[0].reason


def test_unnumbered_tiff_in_patient_folder_is_reported(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2], masks=False)
    tifffile.imwrite(folder / "overview.tif", _slice(5), photometric="rgb")
    vol = open_volume(folder)
    assert vol.n_slices == 2
    assert any("overview.tif" in w and "no slice number" in w for w in vol.warnings)


def test_hidden_and_non_tiff_files_are_ignored(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2], masks=False)
    (folder / f"._{PID}_1.tif").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork
    (folder / "notes.txt").write_text("hello")
    (folder / "data.csv").write_text("a,b\n")
    vol = open_volume(folder)
    assert vol.slice_numbers == [1, 2] and vol.skipped == [] and vol.warnings == []


def test_two_series_in_one_folder_is_a_data_error(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2], masks=False)
    tifffile.imwrite(folder / "OTHER_PATIENT_1.tif", _slice(1), photometric="rgb")
    with pytest.raises(DataError, match="more than one series"):
        open_volume(folder)


# ---------------------------------------------------------------------------------------------
# Paths that are not a patient


def test_missing_path_is_a_data_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="does not exist") as err:
        open_volume(missing)
    assert err.value.path == missing and str(missing) in str(err.value)


def test_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty folder"):
        open_volume(tmp_path)


def test_folder_without_slices_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="holds no TIFF slices"):
        open_volume(tmp_path)


def test_dataset_root_given_as_patient_says_to_open_one(tiny_volume_dir: Path) -> None:
    with pytest.raises(DataError, match="dataset folder holding 1 patient") as err:
        open_volume(tiny_volume_dir.parent)
    assert tiny_volume_dir.name in str(err.value)


def test_is_patient_dir(tmp_path: Path, tiny_volume_dir: Path) -> None:
    assert is_patient_dir(tiny_volume_dir)
    assert not is_patient_dir(tiny_volume_dir.parent)
    assert not is_patient_dir(tiny_volume_dir / f"{tiny_volume_dir.name}_1.tif")
    assert not is_patient_dir(tmp_path / "missing")
    masks_only = tmp_path / "masks"
    masks_only.mkdir()
    shutil.copy(tiny_volume_dir / f"{tiny_volume_dir.name}_1_mask.tif", masks_only)
    assert not is_patient_dir(masks_only)


def test_dangling_symlink_slice_is_reported_not_dropped(tmp_path: Path) -> None:
    folder = _write_patient(tmp_path / PID, [1, 2, 3])
    gone = folder / f"{PID}_2.tif"
    gone.rename(tmp_path / "moved.tif")
    gone.symlink_to(tmp_path / "nowhere.tif")
    vol = open_volume(folder)
    assert vol.slice_numbers == [1, 3]
    assert [(s.path, s.reason) for s in vol.skipped] == [
        (gone, "is a symbolic link to a file that does not exist")
    ]


def test_tifffile_log_lines_are_attached_to_their_file_not_printed(tmp_path: Path, caplog) -> None:
    import logging
    import struct

    folder = _write_patient(tmp_path / PID, [1, 2])
    broken = folder / f"{PID}_2.tif"
    data = bytearray(broken.read_bytes())
    data[4:8] = struct.pack("<I", len(data) + 1000)  # first page directory beyond the end of file
    broken.write_bytes(bytes(data))
    with caplog.at_level(logging.DEBUG):
        vol = open_volume(folder)
    assert vol.slice_numbers == [1]
    reason = vol.skipped[0].reason
    assert "truncated or damaged" in reason and "tifffile: " in reason and "invalid offset" in reason
    assert "out of range" not in reason
    assert not [r for r in caplog.records if r.name == "tifffile"]
    # outside a read, tifffile's logger works as usual
    logging.getLogger("tifffile").warning("still reaches handlers")
    assert [r.getMessage() for r in caplog.records if r.name == "tifffile"] == ["still reaches handlers"]
