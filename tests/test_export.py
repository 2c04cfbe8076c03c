"""export_results: every format round-trips, the sidecar is complete, sources and old exports are safe."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import brainseg_core
from brainseg_core.display import auto_window, overlay_image
from brainseg_core.errors import Cancelled, ExportError
from brainseg_core.export import SIDECAR_NAME, export_results, key_image, models_line
from brainseg_core.io import open_volume
from brainseg_core.model_ref import ModelRef
from brainseg_core.results import PatientResult, SliceResult, rethreshold
from brainseg_core.review import ReviewReason, past_tumour_ends, review_reasons
from brainseg_core.spacing import Spacing
from brainseg_core.thresholds import Thresholds
from tests.support import make_patient

MODELS = {
    "classifier": {"name": "cls-x", "sha256": "a" * 64},
    "segmenter": {"name": "seg-y", "sha256": "b" * 64},
}


def _result(volume, *, spacing: Spacing | None = None) -> PatientResult:
    """A result whose masks are the volume's ground truth, with tumour probability 0.9 / 0.1."""
    slices = [
        SliceResult(
            index=i,
            tumour_probability=0.9 if m.any() else 0.1,
            segmented=False,
            mask_probability=m.astype(np.float32),
            mask=np.zeros_like(m),
            area_px=0,
            area_mm2=None,
        )
        for i, m in enumerate(volume.masks)
    ]
    raw = PatientResult(
        patient_id=volume.patient_id,
        slices=slices,
        thresholds=Thresholds(),
        segmenter=ModelRef(**MODELS["segmenter"]),
        classifier=ModelRef(**MODELS["classifier"]),
        device="cpu",
        spacing=spacing,
    )
    return rethreshold(raw)


@pytest.fixture
def volume(tiny_volume_dir: Path):
    return open_volume(tiny_volume_dir)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_format_round_trips(volume, tmp_path: Path) -> None:
    result = _result(volume, spacing=Spacing(0.5, 0.5, 2.0))
    out = tmp_path / "out"
    calls: list[tuple[int, int]] = []
    paths = export_results(volume, result, out, progress=lambda d, t: calls.append((d, t)))
    pid = volume.patient_id
    dest = (out / pid).resolve()
    assert all(p.parent == dest and p.is_file() for p in paths)
    assert paths[-1].name == SIDECAR_NAME
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in paths)  # nothing else
    n = volume.n_slices
    reasons = review_reasons(result, truth=volume.masks)
    key = [s.index for s, why in zip(result.slices, reasons, strict=True) if s.area_px > 0 or why]
    assert 0 < len(key) < n  # key images only: the slices with tumour (or a review flag)
    assert calls[0] == (0, n + len(key) + 4) and calls[-1] == (n + len(key) + 4,) * 2
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    for number, s in zip(volume.slice_numbers, result.slices, strict=True):
        with tifffile.TiffFile(dest / f"{pid}_{number}_mask.tif") as tif:
            assert len(tif.pages) == 1
            page = tif.pages[0]
            assert page.shape == volume.shape and page.dtype == np.uint8 and page.photometric == 1
            mask = page.asarray()
        np.testing.assert_array_equal(mask, np.where(s.mask, 255, 0))
        picture = dest / f"{pid}_{number}_overlay.png"
        assert picture.is_file() == (s.index in key)
        if s.index in key:
            png = np.asarray(Image.open(picture))
            window = auto_window(volume.images[..., 1])  # FLAIR's foreground window by default
            shown = key_image(volume, result, s.index, window=window, reasons=reasons[s.index])
            np.testing.assert_array_equal(png, shown)
            zoom = 512 // volume.shape[0] + (512 % volume.shape[0] > 0)
            assert png.shape[1] == volume.shape[1] * zoom >= 512 and png.shape[0] > volume.shape[0] * zoom
            # the slice itself: FLAIR through the window, outline in red, enlarged without blur
            top = png[: volume.shape[0] * zoom]
            np.testing.assert_array_equal(
                top, overlay_image(volume.images[s.index], s.mask, window=window, zoom=zoom)
            )
            assert (top == (255, 0, 0)).all(axis=2).any() == (s.area_px > 0)  # a flagged end has none

    with tifffile.TiffFile(dest / f"{pid}_mask_stack.tif") as tif:
        assert len(tif.pages) == n
        stack = np.stack([p.asarray() for p in tif.pages])
    assert set(np.unique(stack)) <= {0, 255}
    np.testing.assert_array_equal(stack, np.where(volume.masks, 255, 0))
    # the ground truth of this patient has tumour on 2 slices, so the stack is not trivially empty
    assert (stack.reshape(n, -1).max(axis=1) == 255).sum() == 2

    with open(dest / f"{pid}_report.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["slice_number"]) for r in rows] == volume.slice_numbers
    assert [int(r["area_px"]) for r in rows] == [s.area_px for s in result.slices]
    assert [float(r["area_mm2"]) for r in rows] == pytest.approx([s.area_px * 0.25 for s in result.slices])
    assert [r["segmenter_read"] for r in rows] == ["yes" if s.segmented else "no" for s in result.slices]
    assert [r["tumour"] for r in rows] == ["yes" if s.area_px else "no" for s in result.slices]
    assert [float(r["tumour_probability"]) for r in rows] == [s.tumour_probability for s in result.slices]
    with open(dest / f"{pid}_summary.csv", newline="", encoding="utf-8") as f:
        summary = dict(csv.reader(f))
    assert summary["patient_id"] == pid
    assert int(summary["tumour_slices"]) == 2
    assert int(summary["tumour_volume_voxels"]) == int(volume.masks.sum())
    assert float(summary["tumour_volume_ml"]) == pytest.approx(result.volume_ml, abs=1e-3)
    assert summary["segmenter_sha256"] == "b" * 64
    assert summary["tumour_probability"] == "0.5" and summary["min_area_px"] == "0"
    assert summary["largest_component"] == "no"
    assert float(summary["slice_thickness_mm"]) == 2.0 and float(summary["row_spacing_mm"]) == 0.5
    assert summary["flip_tta"] == "no" and "segmenter2_name" not in summary


def test_the_summary_names_the_models_thorough_mode_averaged(volume, tmp_path: Path) -> None:
    member = ModelRef("seg-seed1", "c" * 64)
    result = dataclasses.replace(_result(volume), ensemble=(member,))
    export_results(volume, result, tmp_path / "out", formats=("csv",))
    dest = tmp_path / "out" / result.patient_id
    with open(dest / f"{result.patient_id}_summary.csv", newline="", encoding="utf-8") as f:
        summary = dict(csv.reader(f))
    assert (summary["segmenter2_name"], summary["segmenter2_sha256"]) == ("seg-seed1", "c" * 64)
    side = json.loads((dest / SIDECAR_NAME).read_text())
    assert side["models"]["segmenter_ensemble"] == [member.to_json()]


def test_a_key_image_caption_names_what_thorough_mode_averaged_in(volume) -> None:
    result = _result(volume)
    assert models_line(result) == f"models: {result.segmenter.name}" + (
        "" if result.classifier is None else f" + {result.classifier.name}"
    )
    thorough = dataclasses.replace(result, ensemble=(ModelRef("seg-seed1", "c" * 64),))
    assert models_line(thorough).endswith("(thorough: averaged with seg-seed1)")
    plain, both = (key_image(volume, r, 0, window=(255.0, 127.5)) for r in (result, thorough))
    assert plain.shape == both.shape and not np.array_equal(plain, both)  # the caption is drawn


def test_sidecar_names_models_thresholds_and_files(volume, tmp_path: Path) -> None:
    result = _result(volume)
    paths = export_results(volume, result, tmp_path / "out", formats=("csv", "stack"))
    side = json.loads(paths[-1].read_text())
    assert side["models"] == MODELS
    assert side["thresholds"] == {
        "tumour_probability": 0.5,
        "gate_reach_slices": 0,
        "mask_probability": 0.5,
        "min_area_px": 0,
        "largest_component": False,
        "region_rule": "largest",
        "edge_probability": 0.0,
    }
    assert side["spacing_mm"] is None and side["flip_tta"] is False
    # the masks are the truth: only the empty slices just past the tumour are left to look at
    ends = sorted(past_tumour_ends(volume.masks.reshape(volume.n_slices, -1).any(1)))
    listed = side["summary"]["slices_to_review"]
    assert ends and [e["reasons"] for e in listed] == [["tumour_end"]] * len(ends)
    assert side["device"] == "cpu" and side["software_version"] == brainseg_core.__version__
    assert side["created"].endswith("+00:00")
    assert side["formats"] == ["stack", "csv"]
    assert side["files"] == [p.name for p in paths[:-1]]
    assert side["summary"]["volume_voxels"] == int(volume.masks.sum())
    assert not list(paths[0].parent.glob("*_overlay.png")) and not list(paths[0].parent.glob("*_1_mask.tif"))


def test_report_leaves_probability_blank_without_classifier(volume, tmp_path: Path) -> None:
    result = dataclasses.replace(_result(volume), classifier=None)
    paths = export_results(volume, result, tmp_path / "out", formats="csv")
    with open(paths[0], newline="", encoding="utf-8") as f:
        assert {r["tumour_probability"] for r in csv.DictReader(f)} == {""}


def test_refuses_to_write_into_the_source_folders(volume, tiny_volume_dir: Path, tmp_path: Path) -> None:
    before = _tree(tiny_volume_dir.parent)
    result = _result(volume)
    # the dataset root: out/<patient> IS the patient folder, whose _mask.tif files would be replaced
    for out in (tiny_volume_dir.parent, tiny_volume_dir, tiny_volume_dir / "sub"):
        with pytest.raises(ExportError, match="source images"):
            export_results(volume, result, out, overwrite=True)
    link_root = tmp_path / "links"
    link_root.mkdir()
    os.symlink(tiny_volume_dir, link_root / volume.patient_id)
    with pytest.raises(ExportError, match="source images"):
        export_results(volume, result, link_root, overwrite=True)
    assert _tree(tiny_volume_dir.parent) == before


def test_existing_export_needs_overwrite(volume, tmp_path: Path) -> None:
    result = _result(volume)
    export_results(volume, result, tmp_path / "out")
    dest = tmp_path / "out" / volume.patient_id
    (dest / "stale.txt").write_text("from an older export")
    with pytest.raises(ExportError, match="--overwrite"):
        export_results(volume, result, tmp_path / "out")
    assert (dest / "stale.txt").exists()
    paths = export_results(volume, result, tmp_path / "out", formats="csv", overwrite=True)
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in paths)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [volume.patient_id]  # no staging left


def test_never_replaces_a_folder_that_is_not_an_export(volume, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    dest = tmp_path / volume.patient_id
    dest.mkdir(parents=True)
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a BrainSeg export"):
        export_results(volume, _result(volume), tmp_path, overwrite=True)
    assert (dest / "notes.txt").read_text() == "mine"
    (dest / "notes.txt").unlink()  # an empty folder is fine to fill
    assert export_results(volume, _result(volume), tmp_path, formats="csv")[0].parent == dest.resolve()


def test_cancel_leaves_the_old_export_untouched(volume, tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    result = _result(volume)
    export_results(volume, result, tmp_path, formats="csv")
    before = _tree(tmp_path)
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if done == 3:
            stop.set()

    with pytest.raises(Cancelled):
        export_results(volume, result, tmp_path, overwrite=True, progress=progress, cancel=stop)
    assert _tree(tmp_path) == before
    assert [p.name for p in tmp_path.iterdir()] == [volume.patient_id]
    with pytest.raises(Cancelled):
        export_results(volume, result, tmp_path / "new", cancel=lambda: True)
    assert not (tmp_path / "new" / volume.patient_id).exists()


def test_bad_arguments(volume, tmp_path: Path) -> None:
    result = _result(volume)
    with pytest.raises(ValueError, match="unknown export format"):
        export_results(volume, result, tmp_path / "out", formats=("tif", "jpeg"))
    other = make_patient(tmp_path / "data2", patient_id="TCGA_YY_0002_20000101", n=4)
    with pytest.raises(ExportError, match="does not belong"):
        export_results(open_volume(other), result, tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        export_results(volume, result, tmp_path / "file")


def test_real_fixture_patient_numbers(fixture_patient: Path, tmp_path: Path) -> None:
    volume = open_volume(fixture_patient)
    paths = export_results(volume, _result(volume), tmp_path / "out", formats="tif")
    assert [p.name for p in paths[:-1]] == [f"{volume.patient_id}_{n}_mask.tif" for n in volume.slice_numbers]
    for p, m in zip(paths[:-1], volume.masks, strict=True):
        # the exported mask of the ground truth is byte-for-byte the published mask's pixels
        source = fixture_patient / p.name
        np.testing.assert_array_equal(tifffile.imread(p), tifffile.imread(source))
        np.testing.assert_array_equal(tifffile.imread(p) > 0, m)


def test_export_is_readable_like_any_file_the_user_writes(volume, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        paths = export_results(volume, _result(volume), tmp_path / "out", formats=("csv", "tif"))
    finally:
        os.umask(old)
    assert paths[0].parent.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in paths} == {0o644}


@pytest.mark.parametrize("width", [1, 3])
def test_mask_stack_has_one_page_per_slice_whatever_the_width(volume, tmp_path: Path, width: int) -> None:
    import dataclasses

    narrow = dataclasses.replace(
        volume, images=volume.images[:, :, :width].copy(), masks=volume.masks[:, :, :width].copy()
    )
    narrow.masks[1, 0, 0] = True  # a tumour pixel the stack must keep on its own page
    result = _result(narrow)
    paths = export_results(narrow, result, tmp_path / "out", formats=("stack",))
    stack_path = next(p for p in paths if p.name.endswith("_mask_stack.tif"))
    with tifffile.TiffFile(stack_path) as tif:
        pages = [p.asarray() for p in tif.pages]
    assert len(pages) == narrow.n_slices and all(p.shape == (narrow.shape[0], width) for p in pages)
    assert np.array_equal(np.stack(pages) > 0, np.stack([s.mask for s in result.slices]))


def test_a_second_writer_of_the_same_patient_fails_cleanly(volume, tmp_path: Path) -> None:
    from brainseg_core.export import exclusive_lock

    out = tmp_path / "out"
    result = _result(volume)
    with (
        exclusive_lock(out / f".{volume.patient_id}.lock", holder="test"),
        pytest.raises(ExportError, match=r"another export of .* into this folder is running"),
    ):
        export_results(volume, result, out, formats=("csv",))
    assert not (out / volume.patient_id).exists()
    export_results(volume, result, out, formats=("csv",))  # the lock is free again
    assert not list(out.glob(".*.lock"))


def test_staging_left_by_a_killed_export_is_removed(volume, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stale = out / f".{volume.patient_id}.0123abcd.partial"
    stale.mkdir(parents=True)
    (stale / "half.tif").write_bytes(b"half")
    other = out / ".ANOTHER_PATIENT.0123abcd.partial"  # another patient's: not ours to judge
    other.mkdir()
    export_results(volume, _result(volume), out, formats=("csv",))
    assert not stale.exists() and other.exists()


def test_a_full_disk_is_said_plainly(volume, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import brainseg_core.export as export_module

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_module, "_write_csv", lambda rows: full)
    with pytest.raises(ExportError, match="the disk is full"):
        export_results(volume, _result(volume), tmp_path / "out", formats=("csv",))
    assert not (tmp_path / "out" / volume.patient_id).exists()
    assert not list((tmp_path / "out").glob(".*.partial"))


def test_pictures_of_every_slice_at_the_readers_window_when_asked(volume, tmp_path: Path) -> None:
    result = _result(volume)
    paths = export_results(volume, result, tmp_path / "out", formats="png-all", window=(100.0, 60.0))
    pictures = [p for p in paths if p.name.endswith("_overlay.png")]
    assert len(pictures) == volume.n_slices
    side = json.loads(paths[-1].read_text())
    assert side["picture_window"] == [100.0, 60.0] and side["formats"] == ["png-all"]
    first = np.asarray(Image.open(pictures[0]))
    np.testing.assert_array_equal(first, key_image(volume, result, 0, window=(100.0, 60.0)))
    assert not np.array_equal(first, key_image(volume, result, 0, window=(255.0, 127.5)))


def test_every_export_lists_the_review_reasons_the_viewer_shows(volume, tmp_path: Path) -> None:
    base = _result(volume)
    tumour = [i for i, m in enumerate(volume.masks) if m.any()]
    clear = [i for i, m in enumerate(volume.masks) if not m.any()]
    nudged = {clear[0]: 0.4, tumour[0]: 0.3}  # one nearly let through, one gated out
    slices = [
        dataclasses.replace(s, tumour_probability=nudged.get(s.index, s.tumour_probability))
        for s in base.slices
    ]
    result = rethreshold(dataclasses.replace(base, slices=slices))
    reasons = review_reasons(result, truth=volume.masks)
    flagged = {i: why for i, why in enumerate(reasons) if why}
    assert ReviewReason.NEAR_GATE in flagged[clear[0]]
    assert ReviewReason.DISAGREES_WITH_TRUTH in flagged[tumour[0]]
    # beyond the pipeline's own flags: e.g. near the gate, or disagreeing with the ground truth
    assert any(r not in (ReviewReason.CLASSIFIER_ONLY, ReviewReason.OUTSIDE_LARGEST_REGION)
               for why in flagged.values() for r in why)  # fmt: skip
    paths = export_results(volume, result, tmp_path / "out", formats=("csv", "png"))
    side = json.loads(paths[-1].read_text())
    numbers = volume.slice_numbers
    assert side["summary"]["slices_to_review"] == [
        {"slice": numbers[i], "reasons": [r.value for r in why]} for i, why in flagged.items()
    ]
    with open(next(p for p in paths if p.name.endswith("_report.csv")), newline="") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["slice_number"]): r["review"] for r in rows if r["review"]} == {
        numbers[i]: ";".join(r.value for r in why) for i, why in flagged.items()
    }
    summary = next(p for p in paths if p.name.endswith("_summary.csv")).read_text()
    assert f"slices_to_review,{len(flagged)}" in summary
    pictures = {p.name for p in paths if p.suffix == ".png"}
    assert {f"{volume.patient_id}_{numbers[i]}_overlay.png" for i in flagged} <= pictures


def test_the_pdf_report_is_one_page_with_the_key_images(volume, tmp_path: Path) -> None:
    from brainseg_core.report import key_slices, report_page

    result = _result(volume, spacing=Spacing(0.5, 0.5, 2.0))
    paths = export_results(volume, result, tmp_path / "out", formats="report")
    pdf = next(p for p in paths if p.suffix == ".pdf")
    assert pdf.name == f"{volume.patient_id}_report.pdf"
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") >= 1
    tumour = [s.index for s in result.slices if s.area_px > 0]
    reasons = review_reasons(result, truth=volume.masks)
    chosen = key_slices(result, reasons)
    worth = {s.index for s, why in zip(result.slices, reasons, strict=True) if s.area_px or why}
    assert chosen and set(chosen) <= worth
    largest = max(tumour, key=lambda i: result.slices[i].area_px)
    assert largest in chosen
    page = np.asarray(report_page(volume, result, window=(200.0, 100.0)))
    assert page.shape == (1754, 1240, 3)  # A4 at 150 dpi
    assert ((page[..., 0] > 200) & (page[..., 1] < 60) & (page[..., 2] < 60)).sum() > 50  # red outlines


def test_key_images_put_slices_flagged_for_where_they_lie_last(volume) -> None:
    from brainseg_core.report import key_slices

    result = _result(volume)
    n = len(result.slices)
    empty = [i for i, s in enumerate(result.slices) if s.area_px == 0]
    assert len(empty) >= 2
    reasons: list[tuple[ReviewReason, ...]] = [()] * n
    reasons[empty[0]] = (ReviewReason.TUMOUR_END,)  # first in slice order, but only where it lies
    reasons[empty[-1]] = (ReviewReason.CLASSIFIER_ONLY,)
    chosen = key_slices(result, reasons, limit=2)  # the largest outline, and room for one more
    assert empty[-1] in chosen and empty[0] not in chosen
    assert empty[0] in key_slices(result, reasons, limit=n)  # with room, it gets its picture too


def _edited(volume):
    """The ground-truth result with slice 0 painted and slice 2 cleared by the reader."""
    from brainseg_core.edits import MaskEdits, apply_edits

    result = _result(volume)
    edits = MaskEdits()
    edits.brush(0, result.slices[0].mask, (10, 10), 3)
    edits.clear(2, result.slices[2].mask)
    return apply_edits(result, edits)


def test_exports_write_the_final_masks_and_say_whose_they_are(volume, tmp_path: Path) -> None:
    result = _edited(volume)
    pid = volume.patient_id
    export_results(volume, result, tmp_path / "out", formats=["tif", "csv"])
    dest = tmp_path / "out" / pid
    n = volume.slice_numbers
    painted = tifffile.imread(dest / f"{pid}_{n[0]}_mask.tif")
    assert painted[10, 10] == 255 and int((painted == 255).sum()) == result.slices[0].area_px
    assert not tifffile.imread(dest / f"{pid}_{n[2]}_mask.tif").any()  # the reader cleared it
    rows = list(csv.DictReader((dest / f"{pid}_report.csv").read_text(encoding="utf-8").splitlines()))
    assert [r["mask_source"] for r in rows] == ["reader", "model", "reader", "model", "model", "model"]
    summary = dict(csv.reader((dest / f"{pid}_summary.csv").read_text(encoding="utf-8").splitlines()))
    assert summary["reader_edited_slices"] == "2"
    sidecar = json.loads((dest / SIDECAR_NAME).read_text())
    assert sidecar["mask_sources"][0] == {"slice": n[0], "source": "reader"}
    assert [m["source"] for m in sidecar["mask_sources"]].count("reader") == 2


def test_corrections_are_written_as_training_data_never_over_the_source(volume, tmp_path: Path) -> None:
    from brainseg_core.export import CORRECTIONS_SIDECAR, export_training_data
    from brainseg_core.io import find_patients

    result = _edited(volume)
    pid = volume.patient_id
    root = tmp_path / "corrections"
    paths = export_training_data(volume, result, root)
    assert paths[-1].name == CORRECTIONS_SIDECAR and len(paths) == 2 * volume.n_slices + 1
    # The folder reads back as a patient of a dataset, images byte for byte, masks as corrected.
    assert [p.name for p in find_patients(root)] == [pid]
    back = open_volume(root / pid)
    assert np.array_equal(back.images, volume.images)
    assert np.array_equal(back.masks, np.stack([s.mask for s in result.slices]))
    n0 = volume.slice_numbers[0]
    assert (root / pid / f"{pid}_{n0}.tif").read_bytes() == volume.slice_paths[0].read_bytes()
    record = json.loads((root / pid / CORRECTIONS_SIDECAR).read_text())
    assert record["reader_slices"] == [volume.slice_numbers[0], volume.slice_numbers[2]]
    with pytest.raises(ExportError, match="already exists"):
        export_training_data(volume, result, root)
    export_training_data(volume, result, root, overwrite=True)
    with pytest.raises(ExportError, match="source"):
        export_training_data(volume, result, volume.source.parent)
    before = _tree(volume.source)
    with pytest.raises(ExportError):
        export_training_data(volume, result, volume.source)
    assert _tree(volume.source) == before


def test_corrections_of_a_stack_or_nifti_patient_are_written_slice_by_slice(volume, tmp_path: Path) -> None:
    """A volume without one TIFF per slice (a stack, NIfTI, DICOM) gets its slices written from
    its pixels, one single-page TIFF each, never a copy of the whole source file per slice."""
    from brainseg_core.export import export_training_data

    (tmp_path / "in").mkdir()
    stack = tmp_path / "in" / "stacked.tif"
    tifffile.imwrite(stack, volume.images, photometric="rgb")
    tifffile.imwrite(tmp_path / "in" / "stacked_mask.tif", volume.masks.astype(np.uint8) * 255)
    stacked = open_volume(stack)
    result = _edited(stacked)
    export_training_data(stacked, result, tmp_path / "out")
    back = open_volume(tmp_path / "out" / stacked.patient_id)
    assert back.n_slices == stacked.n_slices
    assert np.array_equal(back.images, stacked.images)
    assert (
        len(tifffile.TiffFile(tmp_path / "out" / stacked.patient_id / f"{stacked.patient_id}_1.tif").pages)
        == 1
    )


def test_key_images_of_a_scan_with_geometry_carry_orientation_markers(volume) -> None:
    import dataclasses as dc

    from brainseg_core.geometry import Geometry

    result = _result(volume)
    plain = key_image(volume, result, 2, window=(255.0, 127.5))
    geometry = Geometry.for_display((volume.n_slices, *volume.shape), None)
    marked = key_image(dc.replace(volume, geometry=geometry), result, 2, window=(255.0, 127.5))
    assert marked.shape == plain.shape
    differs = np.argwhere((marked != plain).any(axis=-1))
    h, w = marked.shape[0], marked.shape[1]
    # only the four markers differ: near the middle of each edge of the picture, nowhere else
    assert len(differs)
    for y, x in differs:
        assert min(x, w - 1 - x) < w // 8 or min(y, abs(y - (h - 1))) < h // 8 or y > h * 0.8


def _drawn_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text drawn on a report page from now on, in drawing order."""
    from PIL import ImageDraw

    texts: list[str] = []
    real = ImageDraw.ImageDraw.text
    monkeypatch.setattr(
        ImageDraw.ImageDraw,
        "text",
        lambda self, xy, text, *a, **k: texts.append(str(text)) or real(self, xy, text, *a, **k),
    )
    return texts


def test_the_report_marks_the_readers_masks_and_the_orientation(
    volume, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses as dc

    from brainseg_core.geometry import Geometry
    from brainseg_core.report import report_page

    texts = _drawn_texts(monkeypatch)
    result = _edited(volume)  # slice 1 painted by the reader
    report_page(volume, result, window=(200.0, 100.0))
    assert any("reader's mask" in t for t in texts)
    assert not {"R", "L", "A", "P"} & set(texts)  # TIFF input: no geometry, no markers
    texts.clear()
    geometry = Geometry.for_display((volume.n_slices, *volume.shape), None)
    report_page(dc.replace(volume, geometry=geometry), result, window=(200.0, 100.0))
    assert {"R", "L", "A", "P"} <= set(texts)


def test_a_report_line_too_long_for_the_page_is_cut_with_an_ellipsis() -> None:
    from PIL import Image, ImageDraw

    from brainseg_core.fonts import caption_font
    from brainseg_core.report import _fit

    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = caption_font(17)
    assert _fit(draw, "short", font, 400) == "short"
    long = "faint edge of the tumour: outlined below the mask threshold; " * 4
    cut = _fit(draw, long, font, 400)
    assert cut.endswith("...") and len(cut) < len(long)
    assert draw.textlength(cut, font=font) <= 400


def test_a_key_image_says_why_its_slice_is_to_be_reviewed(volume, monkeypatch: pytest.MonkeyPatch) -> None:

    from brainseg_core.report import key_slices, report_page
    from brainseg_core.review import ReviewReason

    texts = _drawn_texts(monkeypatch)
    result = _result(volume)
    largest = max(range(volume.n_slices), key=lambda i: result.slices[i].area_px)
    reasons: list[tuple[ReviewReason, ...]] = [() for _ in result.slices]
    reasons[largest] = (ReviewReason.LOW_CONFIDENCE, ReviewReason.NEAR_GATE)
    assert largest in key_slices(result, reasons)
    report_page(volume, result, window=(200.0, 100.0), reasons=reasons)
    number = volume.slice_numbers[largest]
    at = texts.index(f"slice {number}: {result.slices[largest].area_px} px")
    assert texts[at + 1] == "review: uncertain outline, near the gate"  # the line under its caption
    assert sum(t.startswith("review:") for t in texts) == 1


def test_a_caption_too_long_for_its_image_drops_whole_labels_and_keeps_the_readers_mark() -> None:
    from PIL import Image, ImageDraw

    from brainseg_core.fonts import caption_font
    from brainseg_core.report import _fit_words

    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = caption_font(16)
    notes = ["reader's mask", "review: classifier only, outside the kept region, disagrees with truth"]
    assert _fit_words(draw, notes, font, 2000) == "; ".join(notes)
    line = _fit_words(draw, notes, font, 362)  # a key image's width on the page
    assert line.startswith("reader's mask; review: ") and line.endswith(("+1", "+2"))
    assert draw.textlength(line, font=font) <= 362 and "..." not in line
