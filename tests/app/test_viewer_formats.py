"""The viewer on scans with geometry (NIfTI here): orientation labels, true pixel shape, volumes in
mL without asking, and the formats offered for export."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainseg_app.session import PatientState
from brainseg_core.io import PatientFormat, open_volume
from tests.support import AFFINES, geometry_for, write_nifti_patient

pytestmark = pytest.mark.usefixtures("_no_shipped_models", "messages")


def test_nifti_patient_shows_orientation_and_exports_on_its_grid(
    make_window, fixture_patient: Path, scripted_models, qtbot, messages, tmp_path: Path
) -> None:
    tiff = open_volume(fixture_patient)
    n, (h, w_px) = tiff.n_slices, tiff.shape
    geometry = geometry_for((n, h, w_px), AFFINES["sagittal-flipped"])
    folder = write_nifti_patient(tmp_path / "in" / "BraTS_9", tiff, geometry)

    w = make_window(scripted_models)
    assert w.open_path(folder)
    qtbot.waitUntil(
        lambda: w.current is not None and w.current.state is PatientState.DONE and not w.is_busy(),
        timeout=20_000,
    )
    np.testing.assert_array_equal(w.volume.images, tiff.images)  # the same slices as the TIFFs
    edges = {e: w.view.edge_text(e) for e in ("left", "right", "top", "bottom")}
    assert edges == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    # stored sagittal: the axial rows are 0.9 mm apart, the columns 5 mm (the sagittal slices)
    assert w.volume.spacing.pixel_mm == pytest.approx((0.9, 5.0))
    assert w.view.vb.state["aspectLocked"] == pytest.approx(5.0 / 0.9)
    assert "mL" in w.results.summary_label.text()  # the files' voxel size, nothing to enter
    assert not w.actions_by_name["spacing"].isEnabled() and not w.results.spacing.isVisible()

    dlg = w.export_dialog()
    assert not dlg.format_boxes["dicom-seg"].isEnabled()  # a DICOM SEG needs DICOM input
    dlg.destination.setText(str(tmp_path / "out"))
    for key, box in dlg.format_boxes.items():
        box.setChecked(key == "nifti")
    with qtbot.waitSignals([dlg.exported, dlg.runner.stopped], timeout=20_000):
        assert dlg.start_export()
    img = nib.load(str(tmp_path / "out" / "BraTS_9" / "BraTS_9_mask.nii.gz"))
    flair = nib.load(str(folder / "BraTS_9_flair.nii.gz"))
    assert img.shape == flair.shape
    np.testing.assert_allclose(img.affine, flair.affine, atol=1e-5)
    shown = np.stack([s.mask for s in w.current.shown.slices])
    assert shown.any()
    np.testing.assert_array_equal(np.asarray(img.dataobj).astype(bool), geometry.to_source(shown))
    dlg.close()

    # a sequence missing: its channel is FLAIR, and the reader is told so
    (folder / "BraTS_9_t1.nii.gz").unlink()
    w.open_path(folder)
    qtbot.waitUntil(lambda: w.volume is not None and bool(w.volume.warnings), timeout=20_000)
    assert "note(s) on reading the files" in w.results.summary_label.text()
    assert "no T1 pre-contrast image; its channel is filled with FLAIR" in w.results.summary_label.text()

    w.open_path(fixture_patient)  # a TIFF patient: no geometry, no labels, square pixels
    qtbot.waitUntil(lambda: w.volume is not None and w.volume.patient_id == tiff.patient_id, timeout=20_000)
    assert w.view.edge_text("left") == "" and w.view.vb.state["aspectLocked"] == 1.0
    assert w.actions_by_name["spacing"].isEnabled() and w.results.spacing.isVisible()
    assert messages.shown == []


def test_dicom_study_asks_once_for_its_series_and_rereads_with_the_choice(
    make_window, fixture_patient: Path, scripted_models, qtbot, messages, tmp_path: Path, monkeypatch
) -> None:
    from PySide6.QtWidgets import QDialog

    from brainseg_app import dialogs
    from tests.dicom_support import AXIAL, make_geometry, write_study

    tiff = open_volume(fixture_patient)
    built = write_study(tmp_path / "study", tiff.images, make_geometry(tiff.images.shape[:3], AXIAL))
    shown: list[dict[str, str]] = []

    def exec_(dlg: dialogs.SeriesDialog) -> int:
        shown.append({seq.value: box.currentData() for seq, box in dlg.combos.items()})
        flair = dlg.combos[next(s for s in dlg.combos if s.value == "flair")]
        flair.setCurrentIndex(flair.findData(built.series_uids["AX T1 POST GAD"]))  # the reader's pick
        return int(QDialog.DialogCode.Accepted.value)

    monkeypatch.setattr(dialogs.SeriesDialog, "exec", exec_)
    w = make_window(scripted_models)
    assert w.open_path(built.folder)
    qtbot.waitUntil(
        lambda: w.current is not None and w.current.state is PatientState.DONE and not w.is_busy(),
        timeout=20_000,
    )
    # the dialog showed the guesses, and the study was read again with the reader's FLAIR
    assert shown == [{s: built.series_uids[d] for s, d in _GUESSES.items()}]
    np.testing.assert_array_equal(w.volume.images[..., 1], tiff.images[..., 2])
    assert w.settings.series_choice(built.folder)["flair"] == built.series_uids["AX T1 POST GAD"]
    assert w.actions_by_name["series"].isEnabled() and w.view.edge_text("left") == "R"
    assert w.current.format is PatientFormat.DICOM
    dlg = w.export_dialog()
    assert dlg.format_boxes["dicom-seg"].isEnabled()  # known from the read, no headers read again
    dlg.close()
    w.close()

    w2 = make_window(scripted_models, auto_run=False)  # remembered: not asked again
    w2.open_path(built.folder)
    qtbot.waitUntil(lambda: w2.volume is not None, timeout=20_000)
    assert len(shown) == 1
    np.testing.assert_array_equal(w2.volume.images[..., 1], tiff.images[..., 2])
    assert messages.shown == []


_GUESSES = {"pre": "AX T1 PRE", "flair": "AX FLAIR", "post": "AX T1 POST GAD"}


def test_patients_analysed_unopened_and_left_keep_their_files_voxel_size(
    make_window, fixture_patient: Path, scripted_models, qtbot, tmp_path: Path
) -> None:
    tiff = open_volume(fixture_patient)
    n, (h, w_px) = tiff.n_slices, tiff.shape
    folders = [
        write_nifti_patient(tmp_path / "set" / name, tiff, geometry_for((n, h, w_px), AFFINES[affine]))
        for name, affine in (("BraTS_1", "las-aniso"), ("BraTS_2", "sagittal-flipped"))
    ]
    spacing = {f: open_volume(f).spacing for f in folders}
    assert None not in spacing.values() and len(set(spacing.values())) == 2

    w = make_window(scripted_models, auto_run=False)
    assert w.open_path(tmp_path / "set")
    qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)
    shown_first = w.current
    w.analyse_all()
    recs = {rec.path: rec for rec in w.records.values()}
    qtbot.waitUntil(
        lambda: all(r.state is PatientState.DONE for r in recs.values()) and not w.is_busy(), timeout=30_000
    )
    for path, rec in recs.items():  # the one never opened too: its volume in mL, from its own files
        assert rec.shown.spacing == spacing[path]
        assert w.model.spacing_for(rec) == spacing[path]
    other = next(r for r in recs.values() if r is not shown_first)
    w.open_patient(other.path)
    qtbot.waitUntil(lambda: w.volume is not None and w.current is other, timeout=20_000)
    assert w.model.spacing_for(shown_first) == spacing[shown_first.path]  # not on display any more
    assert shown_first.shown.spacing == spacing[shown_first.path]


def test_other_series_chosen_during_analyse_all_get_their_own_work_and_the_batch_goes_on(
    make_window,
    fixture_patient: Path,
    scripted_models,
    qtbot,
    messages,
    tmp_path: Path,
    monkeypatch,
    flair_series_pick,
) -> None:
    from brainseg_core.edits import EditKind
    from tests.dicom_support import AXIAL, Study, make_geometry, write_study

    tiff = open_volume(fixture_patient)
    geometry = make_geometry(tiff.images.shape[:3], AXIAL)
    built = [
        write_study(
            tmp_path / "set" / f"study{k}", tiff.images, geometry, study=Study(patient_id=f"TCGA_TEST_{k}")
        )
        for k in (1, 2)
    ]
    w = make_window(scripted_models, auto_run=False)
    assert w.open_path(tmp_path / "set")
    qtbot.waitUntil(lambda: w.volume is not None, timeout=20_000)
    rec = w.current
    other = next(r for r in w.records.values() if r is not rec)
    w.run_current()
    qtbot.waitUntil(lambda: rec.state is PatientState.DONE and not w.is_busy(), timeout=20_000)
    w.set_slice(3)
    w.edit(EditKind.CLEAR)
    w.toggle_reviewed()
    assert rec.edits.edited == [3] and rec.reviewed == {3}

    forward = type(scripted_models[1].model).forward

    def slow(self, x):
        time.sleep(0.3)
        return forward(self, x)

    monkeypatch.setattr(type(scripted_models[1].model), "forward", slow)
    w.controls.gate.setValue(0)  # every slice through the slowed segmenter
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=20_000)
    w.analyse_all()
    qtbot.waitUntil(lambda: other.state is PatientState.RUNNING, timeout=20_000)
    studied = next(b for b in built if b.folder == rec.path)
    flair_series_pick[0] = studied.series_uids["AX T1 POST GAD"]
    assert w.series_dialog()  # another FLAIR: read again
    assert rec.edits.edited == [] and rec.reviewed == set()  # made on the other series
    qtbot.waitUntil(lambda: not w.is_busy(), timeout=30_000)
    assert rec.state is PatientState.DONE and other.state is PatientState.DONE  # the batch went on
    assert rec.edits.edited == [] and rec.reviewed == set()

    flair_series_pick[0] = studied.series_uids["AX FLAIR"]  # back to the first choice: its work returns
    assert w.series_dialog()
    qtbot.waitUntil(lambda: w.volume is not None and rec.work_loaded, timeout=20_000)
    assert rec.edits.edited == [3] and rec.reviewed == {3}
    assert messages.shown == []
