"""DICOM study folders: series built at test time from an LGG fixture patient on known geometry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLSLossless, RLELossless, generate_uid

from brainseg_core.errors import DataError
from brainseg_core.io import Volume, open_volume
from brainseg_core.io.dicom import find_studies, holds_dicom, is_dicom_file, list_series, read_dicom_study
from brainseg_core.io.sequences import Sequence
from brainseg_core.io.tiff import to_uint8
from tests.dicom_support import (
    AXIAL_OBLIQUE_FLIPPED,
    SAGITTAL_OBLIQUE,
    Study,
    make_geometry,
    retag,
    write_series,
    write_study,
)

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # bundled, never downloaded


@pytest.fixture(scope="module")
def fixture_volume(fixture_patient: Path) -> Volume:
    return open_volume(fixture_patient)


@pytest.fixture(scope="module")
def small(fixture_volume: Volume) -> np.ndarray:
    """10 slices of the fixture cut to 96 x 80 (fewer files to write for the bad-input cases)."""
    return np.ascontiguousarray(fixture_volume.images[5:15, 80:176, 90:170])


def _normal_positions(files: tuple[Path, ...] | list[Path]) -> np.ndarray:
    out = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        out.append(float(np.asarray(ds.ImagePositionPatient, float) @ np.cross(iop[:3], iop[3:])))
    return np.asarray(out)


# ---------------------------------------------------------------------------- geometry and layouts


def test_oblique_flipped_anisotropic_axial_series_read_as_the_fixture(
    tmp_path: Path, fixture_volume: Volume
) -> None:
    images = fixture_volume.images
    geometry = make_geometry(images.shape[:3], AXIAL_OBLIQUE_FLIPPED)
    built = write_study(tmp_path / "study", images, geometry)  # all series in one folder
    vol = read_dicom_study(tmp_path / "study")
    np.testing.assert_array_equal(vol.images, images)
    assert vol.warnings == [] and vol.masks is None
    assert vol.patient_id == "TCGA_TEST_0001" and vol.source == tmp_path / "study"
    assert vol.geometry is not None and vol.spacing is not None
    assert (vol.spacing.thickness_mm, vol.spacing.row_mm, vol.spacing.col_mm) == (3.3, 1.1, 0.9)
    assert vol.geometry.obliquity_deg == pytest.approx(10.0, abs=3.0) and vol.geometry.obliquity_deg > 1
    assert vol.geometry.same_grid(geometry, tol_mm=1e-4)
    # the FLAIR instances, in stored slice order: what a SEG references
    assert vol.reference_files == tuple(built.files["AX FLAIR"])
    assert np.all(np.diff(_normal_positions(vol.reference_files)) > 0)
    assert [Path(p).parent for p in vol.slice_paths] == [tmp_path / "study"] * 20
    assert set(vol.slice_paths) == set(vol.reference_files)  # axial: one instance per displayed slice
    assert vol.slice_numbers == list(range(1, 21))
    assert ["AX T1 PRE" in s for s in vol.channel_sources] == [True, False, False]
    assert "AX FLAIR" in vol.channel_sources[1] and "AX T1 POST GAD" in vol.channel_sources[2]


def test_sagittal_storage_in_series_subfolders_with_other_files(
    tmp_path: Path, fixture_volume: Volume
) -> None:
    images = np.ascontiguousarray(fixture_volume.images[:, :, 112:144])  # 32 sagittal slices
    geometry = make_geometry(images.shape[:3], SAGITTAL_OBLIQUE)
    study = tmp_path / "study"
    built = write_study(study, images, geometry, subfolders=True, seed=3)
    (study / "README.txt").write_text("not DICOM")
    (study / "S002" / "notes").write_bytes(b"no preamble here" * 20)
    (study / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # present, ignored
    vol = read_dicom_study(study)
    np.testing.assert_array_equal(vol.images, images)
    assert vol.warnings == []
    assert vol.geometry is not None and vol.geometry.source_shape == (256, 20, 32)
    # stored slice order follows the slice normal, whatever the file names and instance numbers
    assert sorted(vol.reference_files) == sorted(built.files["AX FLAIR"])
    assert np.all(np.diff(_normal_positions(vol.reference_files)) > 0)
    assert vol.slice_paths == [study] * 20  # a displayed (axial) slice crosses every sagittal file


def test_list_series_guesses_and_orders_by_position(tmp_path: Path, small: np.ndarray) -> None:
    geometry = make_geometry(small.shape[:3], AXIAL_OBLIQUE_FLIPPED)
    built = write_study(tmp_path, small, geometry, subfolders=True)
    series = list_series(tmp_path)
    assert [
        (s.series_number, s.description, s.modality, s.n_instances, s.sequence, s.problem) for s in series
    ] == [
        (2, "AX T1 PRE", "MR", 10, Sequence.PRE, None),
        (3, "AX FLAIR", "MR", 10, Sequence.FLAIR, None),
        (4, "AX T1 POST GAD", "MR", 10, Sequence.POST, None),
    ]
    assert [s.series_uid for s in series] == [built.series_uids[s.description] for s in series]
    for s in series:
        assert s.files == tuple(built.files[s.description])
        assert np.all(np.diff(_normal_positions(s.files)) > 0)


def test_contrast_agent_alone_makes_a_t1_post(tmp_path: Path, small: np.ndarray) -> None:
    geometry = make_geometry(small.shape[:3])
    rng = np.random.default_rng(0)
    study = Study()
    for number, (desc, agent) in enumerate((("FLAIR AX", ""), ("T1 SE AX", ""), ("T1 SE AX", "GAD"))):
        write_series(
            tmp_path / desc / str(number), geometry.to_source(small[..., number]), geometry.source_affine,
            study=study, description=desc, series_number=number + 1, rng=rng, contrast=agent,
        )  # fmt: skip
    assert [s.sequence for s in list_series(tmp_path)] == [Sequence.FLAIR, Sequence.PRE, Sequence.POST]


# ---------------------------------------------------------------------------- pixel encodings


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless], ids=["rle", "jpeg-ls"])
def test_compressed_series_read_identically(tmp_path: Path, small: np.ndarray, syntax: str) -> None:
    if syntax == JPEGLSLossless:
        from pydicom.pixels.encoders import JPEGLSLosslessEncoder

        if not JPEGLSLosslessEncoder.is_available:
            pytest.skip("pyjpegls is not installed: no JPEG-LS encoder")
    geometry = make_geometry(small.shape[:3], AXIAL_OBLIQUE_FLIPPED)
    built = write_study(tmp_path, small, geometry, transfer_syntax=syntax)
    ds = pydicom.dcmread(built.files["AX FLAIR"][0])
    assert ds.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_dicom_study(tmp_path).images, small)


def test_16_bit_series_with_rescale(tmp_path: Path, small: np.ndarray) -> None:
    geometry = make_geometry(small.shape[:3], AXIAL_OBLIQUE_FLIPPED)
    stored = small.astype(np.uint16) * 13 + 200
    rng = np.random.default_rng(0)
    study = Study()
    for c, desc in enumerate(("T1 PRE", "FLAIR", "T1 POST")):
        write_series(
            tmp_path, geometry.to_source(stored[..., c]), geometry.source_affine, study=study,
            description=desc, series_number=c + 1, rng=rng, rescale=(0.5, -100.0),
            contrast="GAD" if c == 2 else "",
        )  # fmt: skip
    vol = read_dicom_study(tmp_path)
    values = stored.astype(np.float32) * np.float32(0.5) - np.float32(100.0)
    expected = to_uint8(list(values))
    assert np.abs(vol.images.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
    ],
)
def test_pydicom_bundled_mr_files(tmp_path: Path, name: str) -> None:
    source = PYDICOM_FILES / name
    if not source.is_file():
        pytest.skip(f"{name} is not bundled with this pydicom")
    shutil.copy(source, tmp_path / "IMG0001")  # no suffix: found by its preamble
    assert is_dicom_file(tmp_path / "IMG0001") and holds_dicom(tmp_path)
    (info,) = list_series(tmp_path)
    assert info.modality == "MR" and info.n_instances == 1 and info.problem is None
    assert info.sequence is None  # no description: no guess, and no FLAIR
    with pytest.raises(DataError, match="no usable FLAIR"):
        read_dicom_study(tmp_path)
    vol = read_dicom_study(tmp_path, choose={Sequence.FLAIR: info.series_uid})
    assert vol.images.shape == (1, 64, 64, 3) and vol.geometry is not None
    assert vol.geometry.spacing.row_mm == pytest.approx(0.3125)
    reference = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm").pixel_array
    expected = to_uint8([reference[:, :, None]])[0]  # a 1-slice axial series displays as stored
    np.testing.assert_array_equal(vol.images[0], expected)


# ---------------------------------------------------------------------------- choosing series


def test_choose_overrides_the_guesses(tmp_path: Path, small: np.ndarray) -> None:
    geometry = make_geometry(small.shape[:3])
    write_study(tmp_path, small, geometry)
    swapped = read_dicom_study(tmp_path, choose={Sequence.FLAIR: "4", Sequence.POST: "ax flair"})
    np.testing.assert_array_equal(swapped.images[..., 1], small[..., 2])
    np.testing.assert_array_equal(swapped.images[..., 2], small[..., 1])
    np.testing.assert_array_equal(swapped.images[..., 0], small[..., 0])
    with pytest.raises(DataError, match=r"no series match 'DWI'.*AX FLAIR.*FLAIR"):
        read_dicom_study(tmp_path, choose={Sequence.FLAIR: "DWI"})
    with pytest.raises(DataError, match=r"3 series match 'ax'"):
        read_dicom_study(tmp_path, choose={Sequence.FLAIR: "ax"})


def test_two_flair_series_the_longer_one_wins_with_a_warning(tmp_path: Path, small: np.ndarray) -> None:
    geometry = make_geometry(small.shape[:3])
    built = write_study(tmp_path, small, geometry, channels=(1,))
    short = make_geometry(small[:6].shape[:3])
    write_series(
        tmp_path / "other", short.to_source(small[:6, ..., 0]), short.source_affine, study=built.study,
        description="SAG FLAIR 3D", series_number=9, rng=np.random.default_rng(1),
    )  # fmt: skip
    vol = read_dicom_study(tmp_path)
    np.testing.assert_array_equal(vol.images[..., 1], small[..., 1])
    assert any("2 series look like FLAIR" in w and "SAG FLAIR 3D" in w for w in vol.warnings)


# ---------------------------------------------------------------------------- bad input


def test_mixed_studies_are_refused(tmp_path: Path, small: np.ndarray) -> None:
    geometry = make_geometry(small.shape[:3])
    a = write_study(tmp_path / "a", small, geometry, channels=(1,))
    b = write_study(tmp_path / "b", small, geometry, channels=(1,))
    with pytest.raises(DataError, match="2 studies") as err:
        read_dicom_study(tmp_path)
    assert a.study.study_uid in str(err.value) and b.study.study_uid in str(err.value)
    assert "open one study folder" in str(err.value)
    assert find_studies(tmp_path) == [tmp_path / "a", tmp_path / "b"]


def test_no_dicom_and_no_images(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="holds no DICOM files"):
        read_dicom_study(tmp_path)
    assert not holds_dicom(tmp_path) and find_studies(tmp_path) == []
    shutil.copy(PYDICOM_FILES / "test-SR.dcm", tmp_path / "report")
    with pytest.raises(DataError, match=r"holds no DICOM images.*not an image \(SR\)"):
        list_series(tmp_path)


def _break_flair(tmp_path: Path, small: np.ndarray, edit: str) -> None:
    geometry = make_geometry(small.shape[:3], AXIAL_OBLIQUE_FLIPPED)
    built = write_study(tmp_path, small, geometry)
    flair = built.files["AX FLAIR"]
    if edit == "duplicate":
        src = pydicom.dcmread(flair[5], stop_before_pixels=True)
        retag(flair[6], ImagePositionPatient=src.ImagePositionPatient)
    elif edit == "gap":
        flair[7].unlink()
    elif edit == "orientation":
        retag(flair[3], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    elif edit == "no position":
        ds = pydicom.dcmread(flair[2])
        del ds.ImagePositionPatient
        ds.save_as(flair[2])


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ("duplicate", "duplicate slice positions"),
        ("gap", "irregular slice spacing"),
        ("orientation", "orientation varies"),
        ("no position", "no ImagePositionPatient"),
    ],
)
def test_a_broken_flair_series_is_an_error_listing_the_series(
    tmp_path: Path, small: np.ndarray, edit: str, problem: str
) -> None:
    _break_flair(tmp_path, small, edit)
    with pytest.raises(DataError, match="no usable FLAIR") as err:
        read_dicom_study(tmp_path)
    text = str(err.value)
    assert str(tmp_path) in text and problem in text
    assert "series 2 'AX T1 PRE' (MR, T1 pre-contrast, 10 files)" in text
    assert "series 4 'AX T1 POST GAD' (MR, T1 post-contrast, 10 files)" in text


def test_one_broken_series_is_left_out_with_a_warning(tmp_path: Path, small: np.ndarray) -> None:
    geometry = make_geometry(small.shape[:3], AXIAL_OBLIQUE_FLIPPED)
    built = write_study(tmp_path, small, geometry, subfolders=True)
    built.files["AX T1 PRE"][4].unlink()  # a missing slice
    report = pydicom.dcmread(PYDICOM_FILES / "test-SR.dcm")
    report.StudyInstanceUID = built.study.study_uid
    report.save_as(tmp_path / "report.dcm")
    vol = read_dicom_study(tmp_path)
    np.testing.assert_array_equal(vol.images[..., 1:], small[..., 1:])
    np.testing.assert_array_equal(vol.images[..., 0], small[..., 1])  # filled with FLAIR
    assert any("series 2 'AX T1 PRE' left out: irregular slice spacing" in w for w in vol.warnings)
    assert any("left out: not an image (SR)" in w for w in vol.warnings)
    assert any("no T1 pre-contrast image" in w for w in vol.warnings)


def test_truncated_files_are_named(tmp_path: Path, small: np.ndarray) -> None:
    geometry = make_geometry(small.shape[:3])
    built = write_study(tmp_path, small, geometry)
    post = built.files["AX T1 POST GAD"][3]
    post.write_bytes(post.read_bytes()[:-500])  # in the pixel data
    pre = built.files["AX T1 PRE"][5]
    pre.write_bytes(pre.read_bytes()[:400])  # in the header
    vol = read_dicom_study(tmp_path)
    assert any(f"series 4 'AX T1 POST GAD' left out: {post} is truncated" in w for w in vol.warnings)
    assert any(str(pre) in w and "truncated" in w for w in vol.warnings)
    np.testing.assert_array_equal(vol.images[..., 2], small[..., 1])  # filled with FLAIR
    assert any("series 2 'AX T1 PRE' left out: irregular slice spacing" in w for w in vol.warnings)
    flair = built.files["AX FLAIR"][6]
    flair.write_bytes(flair.read_bytes()[:-500])
    with pytest.raises(DataError, match="no usable FLAIR") as err:
        read_dicom_study(tmp_path)
    assert "series 3 'AX FLAIR'" in str(err.value) and str(flair) in str(err.value)


def test_truncated_pydicom_file_is_named(tmp_path: Path) -> None:
    shutil.copy(PYDICOM_FILES / "MR_small.dcm", tmp_path / "a.dcm")
    shutil.copy(PYDICOM_FILES / "MR_truncated.dcm", tmp_path / "b.dcm")
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.save_as(tmp_path / "a.dcm")
    vol = read_dicom_study(tmp_path, choose={Sequence.FLAIR: ds.SeriesInstanceUID})
    assert any(str(tmp_path / "b.dcm") in w and "truncated" in w for w in vol.warnings)


def test_a_4d_series_is_left_out(tmp_path: Path, small: np.ndarray) -> None:
    geometry = make_geometry(small.shape[:3])
    built = write_study(tmp_path, small, geometry)
    write_series(
        tmp_path / "again",
        geometry.to_source(small[..., 0]),
        geometry.source_affine,
        study=built.study,
        description="AX T1 PRE",
        series_number=2,
        rng=np.random.default_rng(5),
        series_uid=built.series_uids["AX T1 PRE"],
    )  # fmt: skip  (the same positions a second time, in the same series: 2 time points)
    vol = read_dicom_study(tmp_path)
    assert any("AX T1 PRE' left out: every slice position is repeated 2 times" in w for w in vol.warnings)


def test_multi_frame_images_are_not_supported_yet(tmp_path: Path, small: np.ndarray) -> None:
    geometry = make_geometry(small.shape[:3])
    built = write_study(tmp_path, small, geometry)
    retag(built.files["AX T1 POST GAD"][0], NumberOfFrames=1, SOPClassUID="1.2.840.10008.5.1.4.1.1.4.1")
    (info,) = [s for s in list_series(tmp_path) if s.sequence is Sequence.POST]
    assert info.problem is not None and "multi-frame" in info.problem and "not supported yet" in info.problem


# ---------------------------------------------------------------------------- detection and roots


def test_detection_and_study_roots(tmp_path: Path, small: np.ndarray) -> None:
    geometry = make_geometry(small.shape[:3])
    root = tmp_path / "root"
    write_study(root / "p1" / "study", small, geometry, subfolders=True, channels=(1, 2))
    write_study(root / "p2", small, geometry, channels=(1,))
    write_study(root / "p3" / "x" / "y", small, geometry, subfolders=True, channels=(0, 1))
    assert holds_dicom(root / "p1" / "study") and holds_dicom(root / "p2")
    assert holds_dicom(root / "p1" / "study" / "S002")
    assert holds_dicom(root)  # p2 is an immediate subfolder
    assert not holds_dicom(root / "p1") and not holds_dicom(root / "p3")  # two levels down
    dicomdir_only = tmp_path / "cd"
    dicomdir_only.mkdir()
    (dicomdir_only / "DICOMDIR").write_bytes(b"")
    assert holds_dicom(dicomdir_only)
    assert not is_dicom_file(tmp_path / "missing") and not is_dicom_file(root)
    assert find_studies(root) == [root / "p1" / "study", root / "p2", root / "p3" / "x" / "y"]
    assert find_studies(root / "p2") == [root / "p2"]
    # a dataset root is not taken for one study because a study folder sits right under it
    from brainseg_core.io import find_patients

    assert find_patients(root) == find_studies(root)
    assert find_patients(root / "p1" / "study") == [root / "p1" / "study"]
    from brainseg_core.io import is_patient_dir

    assert is_patient_dir(root / "p2") and is_patient_dir(root / "p1" / "study")
    assert not is_patient_dir(root)  # holds DICOM right under it, but three studies
    assert not is_patient_dir(root / "p1") and is_patient_dir(dicomdir_only)
