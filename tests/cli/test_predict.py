"""brainseg-predict end to end on small generated patients with explicit tiny bundles."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from brainseg_core.cli.predict import main
from brainseg_core.inference import Pipeline
from tests.support import make_patient


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, tiny_bundle) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("cli_bundles")
    seg = tiny_bundle(d / "seg.json", "segmenter", seed=1)
    cls = tiny_bundle(d / "cls.json", "classifier")
    return cls, seg


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("brainseg-predict: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_one_patient_end_to_end(bundles, tmp_path: Path, capsys) -> None:
    cls, seg = bundles
    patient = make_patient(tmp_path / "data", n=5)
    out = tmp_path / "out"
    argv = [str(patient), "--out", str(out), "--classifier", str(cls), "--segmenter", str(seg)]
    code = main([*argv, "--device", "cpu", "--threshold", "0", "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    dest = out / patient.name
    for n in range(1, 6):
        mask = tifffile.imread(dest / f"{patient.name}_{n}_mask.tif")
        assert mask.shape == (64, 64) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert (dest / f"{patient.name}_{n}_overlay.png").is_file()
    assert len(tifffile.TiffFile(dest / f"{patient.name}_mask_stack.tif").pages) == 5
    side = json.loads((dest / "brainseg_export.json").read_text())
    assert side["models"]["segmenter"]["name"] == "tiny-seg"
    assert side["models"]["classifier"]["name"] == "tiny-cls"
    assert side["thresholds"]["tumour_probability"] == 0.0
    assert side["device"] == "cpu"
    assert patient.name in capsys.readouterr().out

    # a second run refuses to replace the export, then replaces it with --overwrite
    assert main([*argv, "--format", "csv"]) == 2  # refused before the models load
    assert "add --overwrite to replace" in _one_error_line(capsys.readouterr().err)
    assert main([*argv, "--format", "csv", "--overwrite", "--segment-all"]) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [f"{patient.name}_report.csv", f"{patient.name}_summary.csv", "brainseg_export.json"]
    )


def test_dataset_root_with_a_broken_patient(bundles, tmp_path: Path, capsys) -> None:
    cls, seg = bundles
    root = tmp_path / "data"
    good = make_patient(root, patient_id="TCGA_AA_0001_20000101", n=3)
    bad = root / "TCGA_BB_0002_20000101"
    bad.mkdir()
    for n in (1, 2):
        (bad / f"{bad.name}_{n}.tif").write_bytes(b"not a tiff")
    code = main(
        [str(root), "--out", str(tmp_path / "out"), "--segmenter", str(seg), "--classifier", str(cls)]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"brainseg-predict: error: {bad}" in err and "Traceback" not in err
    assert "1 of 2 patients failed" in err
    assert (tmp_path / "out" / good.name / "brainseg_export.json").is_file()
    assert not (tmp_path / "out" / bad.name).exists()
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        rows = {r["patient_id"]: r for r in csv.DictReader(f)}
    assert rows[good.name]["status"] == "done" and rows[good.name]["slices"] == "3"
    assert rows[bad.name]["status"] == "failed" and str(bad) in rows[bad.name]["error"]
    assert "\x1b[" not in err  # no progress-bar escape codes when not on a terminal


def test_two_patients_with_one_id_are_refused_before_any_export(bundles, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    make_patient(root / "site_a", patient_id="TCGA_AA_0001_20000101", n=3, seed=1)
    make_patient(root / "site_b", patient_id="TCGA_AA_0001_20000101", n=3, seed=2)
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out), "--segmenter", str(bundles[1]), "--overwrite"]) == 2
    assert "same id" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_bad_path_exits_2_with_one_line(bundles, tmp_path: Path, capsys) -> None:
    code = main([str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--segmenter", str(bundles[1])])
    assert code == 2
    assert "does not exist" in _one_error_line(capsys.readouterr().err)


def test_usage_errors_exit_2(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path), "--out", str(tmp_path / "o"), "--threshold", "1.5"]) == 2
    assert "probability" in capsys.readouterr().err
    assert main([str(tmp_path), "--out", str(tmp_path / "o"), "--format", "tif,jpeg"]) == 2
    assert "jpeg" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2  # --out is required
    assert main(["--help"]) == 0
    help_text = capsys.readouterr().out
    assert "exit codes" in help_text and "130" in help_text


def test_unusable_output_folder_exits_2_before_models_load(tmp_path: Path, capsys) -> None:
    patient = make_patient(tmp_path / "data", n=2)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    # the segmenter does not exist: a 3 would mean the models were loaded before the check
    code = main([str(patient), "--out", str(blocker / "out"), "--segmenter", str(tmp_path / "nope.json")])
    assert code == 2
    assert "is a file, not a folder" in _one_error_line(capsys.readouterr().err)


def test_model_problem_exits_3(tmp_path: Path, capsys) -> None:
    patient = make_patient(tmp_path / "data", n=2)
    code = main([str(patient), "--out", str(tmp_path / "out"), "--segmenter", str(tmp_path / "nope.json")])
    assert code == 3
    assert "nope.json" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_swapped_bundles_exit_3(bundles, tmp_path: Path, capsys) -> None:
    cls, seg = bundles
    patient = make_patient(tmp_path / "data", n=2)
    code = main(
        [str(patient), "--out", str(tmp_path / "out"), "--segmenter", str(cls), "--classifier", str(seg)]
    )
    assert code == 3
    assert "swap" in _one_error_line(capsys.readouterr().err)


def test_interrupt_exits_130(bundles, tmp_path: Path, capsys, monkeypatch) -> None:
    seg = bundles[1]
    patient = make_patient(tmp_path / "data", n=2)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Pipeline, "analyse", interrupted)
    code = main([str(patient), "--out", str(tmp_path / "out"), "--segmenter", str(seg)])
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "out" / patient.name).exists()


def test_nifti_patient_to_nifti_mask_and_dicom_seg_refused(bundles, tmp_path: Path, capsys) -> None:
    import nibabel as nib

    from brainseg_core.io import open_volume
    from tests.support import AFFINES, geometry_for, write_nifti_patient

    vol = open_volume(make_patient(tmp_path / "tiff", n=5))
    geometry = geometry_for((vol.n_slices, *vol.shape), AFFINES["oblique"])
    patient = write_nifti_patient(tmp_path / "data" / "case_1", vol, geometry)
    cls, seg = bundles
    argv = [str(patient), "--out", str(tmp_path / "out"), "--classifier", str(cls), "--segmenter", str(seg)]
    assert main([*argv, "--segment-all", "--mask-threshold", "0.3", "--format", "nifti,csv"]) == 0
    img = nib.load(str(tmp_path / "out" / "case_1" / "case_1_mask.nii.gz"))
    flair = nib.load(str(patient / "case_1_flair.nii.gz"))
    assert img.shape == flair.shape and np.allclose(img.affine, flair.affine, atol=1e-5)
    side = json.loads((tmp_path / "out" / "case_1" / "brainseg_export.json").read_text())
    assert side["geometry"]["source_shape"] == list(flair.shape)
    assert side["channel_sources"]["FLAIR"] == str(patient / "case_1_flair.nii.gz")
    capsys.readouterr()

    assert main([*argv, "--format", "dicom-seg", "--overwrite"]) == 1  # NIfTI input has no series
    assert "export it as NIfTI" in capsys.readouterr().err


def test_largest_region_follows_the_card_unless_told_either_way(tmp_path: Path, tiny_bundle) -> None:
    from brainseg_core.bundle import load_bundle, update_card
    from brainseg_core.cli.predict import _thresholds, build_parser

    card = tiny_bundle(tmp_path / "seg.json", "segmenter")
    update_card(card, thresholds={"mask_probability": 0.5, "min_area_px": 0, "largest_component": True})
    seg = load_bundle(card)

    def largest(*flags: str) -> bool:
        args = build_parser().parse_args([str(tmp_path), "--out", str(tmp_path / "o"), *flags])
        return _thresholds(args, None, seg).largest_component

    assert largest() is True  # the card's choice
    assert largest("--no-largest-component") is False  # the reader can see every outline
    assert largest("--largest-component") is True


def test_region_rule_and_thorough_thresholds_follow_the_card_unless_told(tmp_path: Path, tiny_bundle) -> None:
    from brainseg_core.bundle import load_bundle, update_card
    from brainseg_core.cli.predict import _thresholds, build_parser
    from brainseg_core.model_card import read_card
    from brainseg_core.thresholds import RegionRule

    card = tiny_bundle(tmp_path / "seg.json", "segmenter")
    member = tiny_bundle(tmp_path / "seg2.json", "segmenter", name="seg2", seed=3)
    entry = {"name": "seg2", "weights_sha256": read_card(member).weights_sha256}
    ensemble_thresholds = {
        "mask_probability": 0.3,
        "largest_component": True,
        "region_rule": "most_confident",
    }
    update_card(card, thorough={"ensemble": [entry], "thresholds": ensemble_thresholds})
    seg = load_bundle(card)

    def chosen(*flags: str):
        args = build_parser().parse_args([str(tmp_path), "--out", str(tmp_path / "o"), *flags])
        return _thresholds(args, None, seg)

    assert chosen().region_rule is RegionRule.LARGEST and chosen().mask == 0.5  # the card's own
    thorough = chosen("--thorough")  # the ensemble's
    assert (thorough.mask, thorough.region_rule) == (0.3, RegionRule.MOST_CONFIDENT)
    assert chosen("--thorough", "--region-rule", "largest").region_rule is RegionRule.LARGEST
    assert chosen("--region-rule", "most_confident").region_rule is RegionRule.MOST_CONFIDENT


def test_faint_edges_follow_the_card_unless_told(tmp_path: Path, tiny_bundle) -> None:
    from brainseg_core.bundle import load_bundle, update_card
    from brainseg_core.cli.predict import _thresholds, build_parser

    card = tiny_bundle(tmp_path / "seg.json", "segmenter")
    update_card(card, thresholds={"mask_probability": 0.5, "min_area_px": 0, "edge_probability": 0.05})
    seg = load_bundle(card)

    def edge(*flags: str) -> float:
        args = build_parser().parse_args([str(tmp_path), "--out", str(tmp_path / "o"), *flags])
        return _thresholds(args, None, seg).edge

    assert edge() == 0.05 and edge("--faint-edges", "0") == 0.0 and edge("--faint-edges", "0.1") == 0.1
    with pytest.raises(SystemExit):
        edge("--faint-edges", "2")
