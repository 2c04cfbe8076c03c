"""NIfTI patients: built at test time from an LGG fixture patient with known, non-trivial geometry.

The fixture's TIFF slices are the truth. Each case stores them under an affine (oblique, flipped,
sagittal storage order, anisotropic voxels), and the NIfTI reader must give back exactly the
fixture's slices; exports must land on exactly the stored voxels with the reference affine.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainseg_core.errors import DataError
from brainseg_core.export import export_results
from brainseg_core.geometry import Geometry
from brainseg_core.io import PatientFormat, Volume, find_patients, open_volume, patient_format
from brainseg_core.io.sequences import Sequence, sequence_from_filename
from tests.support import AFFINES, geometry_for, write_nifti, write_nifti_patient
from tests.test_export import _result


@pytest.fixture(scope="module")
def fixture_volume(fixture_patient: Path) -> Volume:
    return open_volume(fixture_patient)


@pytest.mark.parametrize("case", sorted(AFFINES))
def test_nifti_patient_reads_back_the_fixture_exactly(
    tmp_path: Path, fixture_volume: Volume, case: str
) -> None:
    n, (h, w) = fixture_volume.n_slices, fixture_volume.shape
    geometry = geometry_for((n, h, w), AFFINES[case])
    folder = write_nifti_patient(tmp_path / "BraTS_007", fixture_volume, geometry)
    assert patient_format(folder) is PatientFormat.NIFTI
    assert find_patients(tmp_path) == [folder]

    vol = open_volume(folder)

    assert vol.patient_id == "BraTS_007"
    np.testing.assert_array_equal(vol.images, fixture_volume.images)
    assert vol.masks is not None
    np.testing.assert_array_equal(vol.masks, fixture_volume.masks)
    assert vol.geometry is not None and vol.geometry.same_grid(geometry)
    expected = np.linalg.norm(AFFINES[case], axis=0)  # mm per stored axis
    assert sorted([vol.spacing.row_mm, vol.spacing.col_mm, vol.spacing.thickness_mm]) == pytest.approx(
        sorted(expected), abs=1e-4
    )
    assert vol.geometry.edge_labels == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert vol.reference_files == (folder / "BraTS_007_flair.nii.gz",)
    assert vol.warnings == []


def test_nifti_export_lands_on_the_flair_file_voxels(tmp_path: Path, fixture_volume: Volume) -> None:
    n, (h, w) = fixture_volume.n_slices, fixture_volume.shape
    geometry = geometry_for((n, h, w), AFFINES["sagittal-flipped"])
    folder = write_nifti_patient(tmp_path / "in" / "P1", fixture_volume, geometry)
    vol = open_volume(folder)
    written = export_results(vol, _result(vol), tmp_path / "out", formats=["nifti", "csv"])

    mask_file = tmp_path / "out" / "P1" / "P1_mask.nii.gz"
    assert mask_file in written
    assert mask_file.read_bytes()[:2] == b"\x1f\x8b"  # gzip-compressed, as .gz says
    img = nib.load(str(mask_file))
    flair = nib.load(str(folder / "P1_flair.nii.gz"))
    assert img.shape == flair.shape
    np.testing.assert_allclose(img.affine, flair.affine, atol=1e-5)
    data = np.asarray(img.dataobj)
    assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
    truth = np.asarray(nib.load(str(folder / "P1_seg.nii.gz")).dataobj) > 0
    np.testing.assert_array_equal(data.astype(bool), truth)  # the very voxels of the source's label
    summary = (tmp_path / "out" / "P1" / "P1_summary.csv").read_text()
    assert "source_affine_ras_mm" in summary and "FLAIR_source" in summary


def test_tiff_patient_exports_nifti_with_its_spacing(tmp_path: Path, fixture_volume: Volume) -> None:
    from brainseg_core.spacing import Spacing

    spacing = Spacing(0.8, 0.8, 3.0)
    vol = fixture_volume.with_spacing(spacing)
    export_results(vol, _result(vol, spacing=spacing), tmp_path, formats=["nifti"])
    img = nib.load(str(tmp_path / vol.patient_id / f"{vol.patient_id}_mask.nii.gz"))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.diag(img.affine)[:3], [0.8, 0.8, 3.0])
    back = Geometry(img.affine, img.shape).to_display(np.asarray(img.dataobj).astype(bool))
    np.testing.assert_array_equal(back, fixture_volume.masks)


def test_sequences_on_other_grids_are_resampled_onto_flair(tmp_path: Path, fixture_volume: Volume) -> None:
    n, (h, w) = fixture_volume.n_slices, fixture_volume.shape
    geometry = geometry_for((n, h, w), AFFINES["las-aniso"])
    folder = write_nifti_patient(tmp_path / "P2", fixture_volume, geometry)
    # the post-contrast image stored on a grid shifted by exactly 3 voxels along the first axis
    shifted = geometry.source_affine.copy()
    shifted[:3, 3] += 3 * geometry.source_affine[:3, 0]
    post = geometry.to_source(fixture_volume.images[..., 2])
    moved = np.zeros_like(post)
    moved[:-3] = post[3:]  # voxel i of the new grid is voxel i+3 of the old one
    write_nifti(folder / "P2_t1ce.nii.gz", moved, shifted)

    vol = open_volume(folder)

    assert any("resampled onto the FLAIR grid" in w for w in vol.warnings)
    np.testing.assert_array_equal(vol.images[..., 1], fixture_volume.images[..., 1])
    covered = np.ones(post.shape, bool)
    covered[:3] = False  # FLAIR voxel i sits on voxel i-3 of the moved grid: i < 3 is outside it
    valid = geometry.to_display(covered)
    np.testing.assert_array_equal(vol.images[..., 2][valid], fixture_volume.images[..., 2][valid])
    assert (vol.images[..., 2][~valid] == 0).all()


def test_one_4d_file_and_missing_sequences(tmp_path: Path, fixture_volume: Volume) -> None:
    n, (h, w) = fixture_volume.n_slices, fixture_volume.shape
    geometry = geometry_for((n, h, w), AFFINES["oblique"])
    four_d = np.stack([geometry.to_source(fixture_volume.images[..., c]) for c in range(3)], axis=-1)
    single = write_nifti(tmp_path / "case12.nii.gz", four_d, geometry.source_affine)
    vol = open_volume(single)
    assert vol.patient_id == "case12"
    np.testing.assert_array_equal(vol.images, fixture_volume.images)

    only_flair = tmp_path / "P3"
    only_flair.mkdir()
    write_nifti(
        only_flair / "P3_FLAIR.nii", geometry.to_source(fixture_volume.images[..., 1]), geometry.source_affine
    )
    vol = open_volume(only_flair)
    assert sum("filled with FLAIR" in w for w in vol.warnings) == 2
    for c in range(3):
        np.testing.assert_array_equal(vol.images[..., c], fixture_volume.images[..., 1])
    assert vol.masks is None
    assert sorted(find_patients(tmp_path)) == [only_flair, single]


def test_bad_nifti_input_names_the_file(tmp_path: Path, fixture_volume: Volume) -> None:
    geometry = geometry_for((4, 8, 8), np.eye(3))
    data = np.ones(geometry.source_shape, np.uint8)

    no_flair = tmp_path / "a"
    no_flair.mkdir()
    write_nifti(no_flair / "a_t1.nii.gz", data, geometry.source_affine)
    with pytest.raises(DataError, match="no FLAIR"):
        open_volume(no_flair)

    two = tmp_path / "b"
    two.mkdir()
    write_nifti(two / "b_flair.nii.gz", data, geometry.source_affine)
    write_nifti(two / "b_t2flair.nii.gz", data, geometry.source_affine)
    with pytest.raises(DataError, match="two FLAIR files"):
        open_volume(two)

    wrong_4d = write_nifti(tmp_path / "c.nii.gz", np.ones((8, 8, 4, 2), np.uint8), geometry.source_affine)
    with pytest.raises(DataError, match="exactly 3") as err:
        open_volume(wrong_4d)
    assert err.value.path == wrong_4d

    whole = write_nifti(tmp_path / "d.nii.gz", np.ones((32, 32, 32), np.int16), geometry.source_affine)
    truncated = tmp_path / "e.nii.gz"
    truncated.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(DataError, match="cannot be read as NIfTI") as err:
        open_volume(truncated)
    assert err.value.path == truncated

    label = write_nifti(tmp_path / "f_seg.nii.gz", data, geometry.source_affine)
    with pytest.raises(DataError, match="ground-truth"):
        open_volume(label)


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("BraTS20_Training_001_flair", Sequence.FLAIR),
        ("BraTS-GLI-00000-000-t2f", Sequence.FLAIR),  # BraTS 2023 names
        ("BraTS-GLI-00000-000-t1n", Sequence.PRE),
        ("BraTS-GLI-00000-000-t1c", Sequence.POST),
        ("BraTS-GLI-00000-000-t2w", Sequence.T2),
        ("BraTS-GLI-00000-000-seg", Sequence.LABEL),
        ("BraTS20_Training_001_T1CE", Sequence.POST),
        ("brats_t1c", Sequence.POST),
        ("x_t1gd", Sequence.POST),
        ("x_t1", Sequence.PRE),
        ("x-t2", Sequence.T2),
        ("BraTS20_Training_001_seg", Sequence.LABEL),
        ("x_mask", Sequence.LABEL),
        ("t1", Sequence.PRE),
        ("scan", None),
        ("flairy_thing", None),
    ],
)
def test_sequence_names(stem: str, expected: Sequence | None) -> None:
    assert sequence_from_filename(stem) is expected


def test_pipeline_on_nifti_writes_the_masks_the_tiff_path_finds(
    tmp_path: Path, fixture_volume: Volume
) -> None:
    from brainseg_core.inference.pipeline import Pipeline
    from brainseg_core.registry import resolve_models

    n, (h, w) = fixture_volume.n_slices, fixture_volume.shape
    geometry = geometry_for((n, h, w), AFFINES["oblique"])
    vol = open_volume(write_nifti_patient(tmp_path / "in" / "P4", fixture_volume, geometry))
    pipeline = Pipeline(*resolve_models(), device="cpu")
    from_tiff = pipeline.analyse(fixture_volume)
    from_nifti = pipeline.analyse(vol)
    tiff_masks = np.stack([s.mask for s in from_tiff.slices])
    assert tiff_masks.sum() > 500  # the fixture's tumour is found: the comparison means something
    np.testing.assert_array_equal(np.stack([s.mask for s in from_nifti.slices]), tiff_masks)
    assert from_nifti.volume_ml == pytest.approx(tiff_masks.sum() * 0.9 * 0.9 * 5.0 / 1000, rel=1e-4)

    export_results(vol, from_nifti, tmp_path / "out", formats=["nifti"])
    img = nib.load(str(tmp_path / "out" / "P4" / "P4_mask.nii.gz"))
    np.testing.assert_array_equal(np.asarray(img.dataobj).astype(bool), geometry.to_source(tiff_masks))
