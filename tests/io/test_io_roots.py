"""Dataset roots: finding every patient once, including the Kaggle archive's nested duplicate."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from brainseg_core.errors import DataError
from brainseg_core.io import find_patients, open_volume


def test_fixture_root_lists_both_patients(lgg_fixture_root: Path) -> None:
    patients = find_patients(lgg_fixture_root)
    assert patients == sorted(p for p in lgg_fixture_root.iterdir() if p.is_dir())
    assert [p.name for p in patients] == ["TCGA_CS_4942_19970222", "TCGA_CS_4943_20000902"]


def test_published_archive_nested_duplicate_is_found_once(tmp_path: Path, lgg_fixture_root: Path) -> None:
    # The Kaggle archive unpacks to kaggle_3m/ and lgg-mri-segmentation/kaggle_3m/ (same patients).
    archive = tmp_path / "archive"
    shutil.copytree(lgg_fixture_root, archive / "kaggle_3m")
    shutil.copytree(lgg_fixture_root, archive / "lgg-mri-segmentation" / "kaggle_3m")
    (archive / "kaggle_3m" / "data.csv").write_text("Patient,RNASeqCluster\n")
    (archive / "kaggle_3m" / "README.md").write_text("readme\n")
    patients = find_patients(archive)
    assert patients == [
        archive / "kaggle_3m" / "TCGA_CS_4942_19970222",
        archive / "kaggle_3m" / "TCGA_CS_4943_20000902",
    ]
    assert [open_volume(p).n_slices for p in patients] == [20, 20]


def test_same_id_with_different_content_is_not_merged(
    tmp_path: Path, patient_factory: Callable[..., Path]
) -> None:
    a = patient_factory(tmp_path / "site_a", patient_id="P1", n=3)
    b = patient_factory(tmp_path / "site_b", patient_id="P1", n=4)
    assert find_patients(tmp_path) == [a, b]


def test_same_id_same_file_sizes_but_other_pixels_is_not_merged(
    tmp_path: Path, patient_factory: Callable[..., Path]
) -> None:
    # Uncompressed TIFFs of one size have equal byte sizes whatever they hold: sizes are no proof.
    a = patient_factory(tmp_path / "site_a", patient_id="P1", n=3, seed=1)
    b = patient_factory(tmp_path / "site_b", patient_id="P1", n=3, seed=2)
    assert sorted(f.stat().st_size for f in a.iterdir()) == sorted(f.stat().st_size for f in b.iterdir())
    assert find_patients(tmp_path) == [a, b]
    shutil.copytree(a, tmp_path / "site_c" / "P1")  # a true copy is still found once
    assert find_patients(tmp_path) == [a, b]


def test_copies_that_differ_in_one_middle_slice_are_not_merged(
    tmp_path: Path, patient_factory: Callable[..., Path]
) -> None:
    # 5 slices + 5 masks: change slice 2, which a first/middle/last sample of the files never reads
    a = patient_factory(tmp_path / "site_a", patient_id="P1", n=5, seed=1)
    b = tmp_path / "site_b" / "P1"
    shutil.copytree(a, b)
    changed = sorted(b.iterdir())[1]
    data = bytearray(changed.read_bytes())
    data[-1] ^= 0xFF
    changed.write_bytes(bytes(data))
    assert find_patients(tmp_path) == [a, b]


def test_patients_at_mixed_depths_and_stacks(tmp_path: Path, patient_factory: Callable[..., Path]) -> None:
    p1 = patient_factory(tmp_path, patient_id="A_1", n=2)
    p2 = patient_factory(tmp_path / "deep" / "er", patient_id="B_2", n=2)
    stack = tmp_path / "stacks" / "brain.tif"
    stack.parent.mkdir()
    tifffile.imwrite(stack, np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    tifffile.imwrite(
        stack.with_name("brain_mask.tif"), np.zeros((3, 8, 8), np.uint8), photometric="minisblack"
    )
    hidden = patient_factory(tmp_path / ".trash", patient_id="C_3", n=2)
    # a folder inside a patient folder is not searched
    patient_factory(p1 / "extra", patient_id="D_4", n=2)
    found = find_patients(tmp_path)
    assert found == sorted([p1, p2, stack], key=str)
    assert hidden not in found


def test_patient_folder_and_stack_file_give_themselves(
    tmp_path: Path, tiny_volume_dir: Path, patient_factory: Callable[..., Path]
) -> None:
    assert find_patients(tiny_volume_dir) == [tiny_volume_dir]
    stack = tmp_path / "s.tiff"
    tifffile.imwrite(stack, np.zeros((2, 8, 8), np.uint8), photometric="minisblack")
    assert find_patients(stack) == [stack]
    assert find_patients(str(stack)) == [stack], "str paths work too"


def test_find_patients_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        find_patients(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty folder") as err:
        find_patients(empty)
    assert err.value.path == empty
    (empty / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds no patient folders"):
        find_patients(empty)
    with pytest.raises(DataError, match="is not a TIFF, NIfTI or DICOM file"):
        find_patients(empty / "notes.txt")
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "x_mask.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="ground-truth mask"):
        find_patients(tmp_path / "x_mask.tif")


def test_export_output_inside_a_root_is_not_a_patient(
    tmp_path: Path, patient_factory: Callable[..., Path]
) -> None:
    patient = patient_factory(tmp_path / "root")
    export = tmp_path / "root" / "exports" / patient.name
    export.mkdir(parents=True)
    tifffile.imwrite(export / f"{patient.name}_mask_stack.tif", np.zeros((2, 8, 8), np.uint8))
    tifffile.imwrite(export / f"{patient.name}_1_mask.tif", np.zeros((8, 8), np.uint8))
    assert find_patients(tmp_path / "root") == [patient, export / f"{patient.name}_mask_stack.tif"]
    (export / "brainseg_export.json").write_text("{}")
    assert find_patients(tmp_path / "root") == [patient]


def test_numbered_multi_page_stacks_are_patients_not_slices(tmp_path: Path) -> None:
    folder = tmp_path / "stacks"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("patient1", "patient2"):
        tifffile.imwrite(
            folder / f"{name}.tif", rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8), photometric="rgb"
        )
        tifffile.imwrite(
            folder / f"{name}_mask.tif", np.zeros((5, 16, 16), np.uint8), photometric="minisblack"
        )
    expected = [folder / "patient1.tif", folder / "patient2.tif"]
    assert find_patients(folder) == expected
    assert find_patients(tmp_path) == expected
    assert open_volume(expected[0]).n_slices == 5
    with pytest.raises(DataError, match="multi-page TIFF stacks named like slices"):
        open_volume(folder)


def test_symlinked_patient_folders_are_found_and_link_loops_end(
    tmp_path: Path, lgg_fixture_root: Path
) -> None:
    root = tmp_path / "links"
    root.mkdir()
    for patient in sorted(p for p in lgg_fixture_root.iterdir() if p.is_dir()):
        (root / patient.name).symlink_to(patient, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)  # a link back to the root
    (root / "again").symlink_to(root / sorted(os.listdir(root))[0], target_is_directory=True)
    found = find_patients(root)
    names = [p.name for p in found]
    assert sorted(set(names)) == sorted(p.name for p in lgg_fixture_root.iterdir() if p.is_dir())
    assert len(found) == 2  # each real folder once, the loop entered once
