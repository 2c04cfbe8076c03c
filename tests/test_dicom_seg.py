"""DICOM SEG export: the fixture's ground truth written for a study built from the fixture, read back."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from brainseg_core.dicom_seg import write_dicom_seg
from brainseg_core.io import Volume, open_volume
from brainseg_core.io.dicom import read_dicom_study
from tests.dicom_support import AXIAL_OBLIQUE_FLIPPED, SAGITTAL_OBLIQUE, Layout, make_geometry, write_study


@pytest.fixture(scope="module")
def fixture_volume(fixture_patient: Path) -> Volume:
    vol = open_volume(fixture_patient)
    assert vol.masks is not None and vol.masks.any()
    return vol


def _display_mask_from_seg(seg_path: Path, volume: Volume) -> np.ndarray:
    """Rebuild the display-grid mask from the SEG's frames alone: each frame goes to the stored
    slice of the source instance it references."""
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(seg_path))
    assert volume.geometry is not None
    k_of_uid = {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: k
        for k, p in enumerate(volume.reference_files)
    }
    cols, rows, n = volume.geometry.source_shape
    stored = np.zeros((n, rows, cols), bool)
    pixels = seg.pixel_array.reshape(-1, rows, cols)
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        (source,) = frame.DerivationImageSequence[0].SourceImageSequence
        k = k_of_uid[source.ReferencedSOPInstanceUID]
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        expected = pydicom.dcmread(volume.reference_files[k], stop_before_pixels=True).ImagePositionPatient
        np.testing.assert_allclose(position, np.asarray(expected, float), atol=1e-4)
        stored[k] = pixels[i] != 0
    return volume.geometry.to_display(stored.transpose(2, 1, 0))


@pytest.mark.parametrize(
    ("layout", "crop"),
    [
        (AXIAL_OBLIQUE_FLIPPED, slice(None)),
        (SAGITTAL_OBLIQUE, slice(112, 144)),
    ],
    ids=["axial-oblique-flipped", "sagittal"],
)
def test_seg_references_flair_and_maps_back_to_the_same_voxels(
    tmp_path: Path, fixture_volume: Volume, layout: Layout, crop: slice
) -> None:
    images = np.ascontiguousarray(fixture_volume.images[:, :, crop])
    assert fixture_volume.masks is not None
    mask = np.ascontiguousarray(fixture_volume.masks[:, :, crop])
    geometry = make_geometry(images.shape[:3], layout)
    built = write_study(tmp_path / "study", images, geometry, subfolders=True)
    volume = read_dicom_study(tmp_path / "study")
    out = tmp_path / "out" / "seg.dcm"
    write_dicom_seg(volume, mask, out, algorithm="BrainSeg ResUNet", algorithm_version="2.1")
    assert [p.name for p in out.parent.iterdir()] == ["seg.dcm"]  # no temporary file left

    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.Modality == "SEG"
    assert ds.SegmentationType == "BINARY" and ds.Manufacturer == "BrainSeg"
    assert ds.StudyInstanceUID == built.study.study_uid and ds.FrameOfReferenceUID == built.study.frame_uid
    assert ds.PatientID == "TCGA_TEST_0001"
    (referenced,) = ds.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == built.series_uids["AX FLAIR"]
    flair_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in built.files["AX FLAIR"]}
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} <= flair_uids
    assert ds.SeriesInstanceUID not in {built.series_uids[k] for k in built.series_uids}
    (segment,) = ds.SegmentSequence
    assert segment.SegmentLabel == "Tumor" and segment.SegmentAlgorithmType == "AUTOMATIC"
    category = segment.SegmentedPropertyCategoryCodeSequence[0]
    kind = segment.SegmentedPropertyTypeCodeSequence[0]
    assert (category.CodingSchemeDesignator, category.CodeValue) == ("SCT", "49755003")
    assert (kind.CodingSchemeDesignator, kind.CodeValue) == ("SCT", "108369006")
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("BrainSeg ResUNet", "2.1")

    np.testing.assert_array_equal(_display_mask_from_seg(out, volume), mask)


def test_empty_mask_and_overwrite(tmp_path: Path, fixture_volume: Volume) -> None:
    images = np.ascontiguousarray(fixture_volume.images[:, 80:176, 90:170])
    geometry = make_geometry(images.shape[:3])
    write_study(tmp_path / "study", images, geometry, channels=(1,))
    volume = read_dicom_study(tmp_path / "study")
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"old")
    write_dicom_seg(volume, np.zeros(images.shape[:3], bool), out, algorithm="m", algorithm_version="1")
    back = _display_mask_from_seg(out, volume)
    assert not back.any() and back.shape == images.shape[:3]


def test_refuses_volumes_without_dicom_references_and_wrong_masks(
    tmp_path: Path, fixture_volume: Volume
) -> None:
    assert fixture_volume.masks is not None
    with pytest.raises(ValueError, match="no DICOM reference files"):
        write_dicom_seg(
            fixture_volume, fixture_volume.masks, tmp_path / "a.dcm", algorithm="m", algorithm_version="1"
        )
    images = np.ascontiguousarray(fixture_volume.images[:, 80:176, 90:170])
    write_study(tmp_path / "study", images, make_geometry(images.shape[:3]), channels=(1,))
    volume = read_dicom_study(tmp_path / "study")
    with pytest.raises(ValueError, match="the mask is"):
        write_dicom_seg(
            volume, np.zeros((3, 4, 5), bool), tmp_path / "b.dcm", algorithm="m", algorithm_version="1"
        )
    assert not (tmp_path / "a.dcm").exists() and not (tmp_path / "b.dcm").exists()
