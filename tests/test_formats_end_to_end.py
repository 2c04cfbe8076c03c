"""A DICOM study through the public entry points: found under a dataset root, analysed by the shipped
models exactly like its TIFF twin, exported as NIfTI on the FLAIR series' grid and as a DICOM SEG
that references the FLAIR series; the CLI takes series overrides."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from brainseg_core.cli.predict import main as predict_main
from brainseg_core.export import export_results
from brainseg_core.inference.pipeline import Pipeline
from brainseg_core.io import PatientFormat, Volume, find_patients, open_volume, patient_format
from brainseg_core.registry import resolve_models
from tests.dicom_support import AXIAL_OBLIQUE_FLIPPED, BuiltStudy, make_geometry, write_study
from tests.test_dicom_seg import _display_mask_from_seg


@pytest.fixture(scope="module")
def tiff_volume(fixture_patient: Path) -> Volume:
    return open_volume(fixture_patient)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiff_volume: Volume) -> BuiltStudy:
    root = tmp_path_factory.mktemp("dicom_root")
    geometry = make_geometry(tiff_volume.images.shape[:3], AXIAL_OBLIQUE_FLIPPED)
    return write_study(root / "PAT_A" / "study1", tiff_volume.images, geometry, subfolders=True)


def test_dicom_study_analysed_and_exported_like_its_tiff_twin(
    study: BuiltStudy, tiff_volume: Volume, tmp_path: Path
) -> None:
    root = study.folder.parent.parent
    assert find_patients(root) == [study.folder]
    assert patient_format(study.folder) is PatientFormat.DICOM
    vol = open_volume(study.folder)
    pipeline = Pipeline(*resolve_models(), device="cpu")
    from_dicom = pipeline.analyse(vol)
    tiff_masks = np.stack([s.mask for s in pipeline.analyse(tiff_volume).slices])
    dicom_masks = np.stack([s.mask for s in from_dicom.slices])
    assert tiff_masks.sum() > 500
    np.testing.assert_array_equal(dicom_masks, tiff_masks)

    written = export_results(vol, from_dicom, tmp_path, formats=["nifti", "dicom-seg"])
    folder = tmp_path / vol.patient_id
    assert {p.name for p in written} >= {f"{vol.patient_id}_mask.nii.gz", f"{vol.patient_id}_seg.dcm"}

    img = nib.load(str(folder / f"{vol.patient_id}_mask.nii.gz"))
    np.testing.assert_allclose(img.affine, study.geometry.source_affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj).astype(bool), study.geometry.to_source(tiff_masks))

    seg_file = folder / f"{vol.patient_id}_seg.dcm"
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(seg_file))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.series_uids["AX FLAIR"]
    assert seg.SegmentSequence[0].SegmentLabel == "Tumor"
    np.testing.assert_array_equal(_display_mask_from_seg(seg_file, vol), tiff_masks)


def test_cli_series_overrides(study: BuiltStudy, tmp_path: Path, capsys, tiny_bundle) -> None:
    seg = tiny_bundle(tmp_path / "seg.json", "segmenter", seed=1)
    argv = [str(study.folder), "--out", str(tmp_path / "out"), "--segmenter", str(seg), "--segment-all"]
    # FLAIR taken from the post-contrast series (by number), post from FLAIR (by description)
    code = predict_main([*argv, "--flair", "4", "--post", "ax flair", "--format", "csv"])
    assert code == 0, capsys.readouterr().err
    side = json.loads(next((tmp_path / "out").glob("*/brainseg_export.json")).read_text())
    assert "POST" in side["channel_sources"]["FLAIR"] and "FLAIR" in side["channel_sources"]["post-contrast"]
    capsys.readouterr()
    assert predict_main([*argv, "--flair", "no such series", "--format", "csv", "--overwrite"]) == 1
    assert "no such series" in capsys.readouterr().err


def test_a_dicom_seg_in_the_study_is_its_ground_truth(
    study: BuiltStudy, tiff_volume: Volume, tmp_path: Path
) -> None:
    """BrainSeg's own DICOM SEG, put back into the study, reads as the study's ground truth."""
    import shutil

    from brainseg_core.dicom_seg import write_dicom_seg

    copy = tmp_path / "study"
    shutil.copytree(study.folder, copy)
    vol = open_volume(copy)
    assert vol.masks is None
    write_dicom_seg(
        vol, tiff_volume.masks, copy / "SEG" / "truth.dcm", algorithm="manual", algorithm_version="1"
    )
    labelled = open_volume(copy)
    assert labelled.masks is not None
    np.testing.assert_array_equal(labelled.masks, tiff_volume.masks)
    assert not any("left out" in w for w in labelled.warnings)
    # a folder of such studies evaluates like a TIFF dataset (ground truth found for every patient)
    from brainseg_core.training.data import find_labelled_patients

    assert find_labelled_patients(tmp_path) == [copy]
    from brainseg_core.cli.eval import main as eval_main

    out = tmp_path / "eval.json"
    assert eval_main([str(tmp_path), "--flair", "AX FLAIR", "--quiet", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["segmentation"]["dice_patient"]["mean"] > 0.8  # the shipped models on the fixture
