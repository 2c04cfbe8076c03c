"""The Model menu's Manage models dialog: the brainseg-models actions in the viewer."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from PySide6.QtWidgets import QMessageBox

from brainseg_app import dialogs
from brainseg_core.bundle import save_bundle
from brainseg_core.models import build_model
from brainseg_core.registry import active_bundle, model_choice

# Every test here: no shipped models (only those it installs) and message boxes captured.
pytestmark = pytest.mark.usefixtures("_no_shipped_models", "messages")


def _seg(out: Path, name: str, dice: float | None) -> Path:
    torch.manual_seed(0)
    return save_bundle(
        build_model("resunet", base_filters=4, depth=2),
        out,
        name=name,
        kind="segmenter",
        arch="resunet",
        arch_args={"base_filters": 4, "depth": 2},
        input_size=64,
        thresholds={"mask_probability": 0.5, "min_area_px": 0},
        metrics={} if dice is None else {"dice_patient_mean": dice},
    )


def _names(dialog: dialogs.ManageModelsDialog) -> list[tuple[str, str]]:
    return [
        (dialog.table.item(r, 0).text(), dialog.table.item(r, 2).text())
        for r in range(dialog.table.rowCount())
    ]


def test_manage_models_install_use_remove_and_shipped(qtbot, tmp_path: Path, messages, monkeypatch) -> None:
    shipped = Path(os.environ["BRAINSEG_RESOURCES"]) / "models"
    _seg(shipped, "shipped-seg", 0.8)
    dialog = dialogs.ManageModelsDialog()
    qtbot.addWidget(dialog)
    changes: list[bool] = []
    dialog.changed.connect(lambda: changes.append(True))
    assert _names(dialog) == [("●", "shipped-seg")]
    assert not dialog.remove_button.isEnabled()  # nothing selected

    worse = _seg(tmp_path / "w", "worse", 0.5)
    asked: list[str] = []
    assert not dialog.install(worse, ask=lambda text: asked.append(text) is not None)
    assert "below the active segmenter 'shipped-seg'" in asked[0] and not changes
    assert dialog.install(worse, ask=lambda text: True)
    assert _names(dialog) == [("●", "worse"), ("", "shipped-seg")] and changes == [True]

    dialog.table.selectRow(1)  # the shipped one: usable, not removable
    assert dialog.use_button.isEnabled() and not dialog.remove_button.isEnabled()
    dialog.use_selected()
    assert (
        active_bundle("segmenter").card.name == "shipped-seg" and model_choice()["segmenter"] == "shipped-seg"
    )

    dialog.table.selectRow(0)
    assert dialog.remove_button.isEnabled()
    messages.answer = QMessageBox.StandardButton.Yes
    dialog.remove_selected()
    assert "Remove model: Delete the installed model worse" in messages.questions[-1]
    assert _names(dialog) == [("●", "shipped-seg")]

    dialog.use_shipped()
    assert model_choice() == {"segmenter": "default", "classifier": "default"} and len(changes) == 4


def test_use_shipped_models_menu_reloads_the_shipped_segmenter(make_window, tiny_bundles) -> None:
    shipped = Path(os.environ["BRAINSEG_RESOURCES"]) / "models"
    _seg(shipped, "shipped-seg", 0.8)
    w = make_window(auto_run=False)
    assert w.ensure_models() and w.segmenter.card.name == "tiny-seg"  # the user's bundle first
    w.actions_by_name["default_models"].trigger()
    assert w.ensure_models() and w.segmenter.card.name == "shipped-seg"


def test_thorough_setting_builds_a_flip_tta_pipeline_and_reanalyses(
    make_window, fixture_patient, tiny_bundles, qtbot
):
    from brainseg_app.session import PatientState

    w = make_window()
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.current is not None and w.current.state is PatientState.DONE, timeout=20_000)
    assert w.analyser.pipeline is not None and not w.analyser.pipeline.flip_tta
    w.actions_by_name["thorough"].trigger()
    assert w.settings.thorough and w.actions_by_name["thorough"].isChecked()
    qtbot.waitUntil(
        lambda: w.current.state is PatientState.DONE and w.analyser.pipeline is not None, timeout=20_000
    )
    assert w.analyser.pipeline.flip_tta


def test_thorough_with_an_ensemble_runs_it_at_the_ensembles_thresholds(
    make_window, fixture_patient, tiny_bundles, tiny_bundle, qtbot
):
    from brainseg_app.session import PatientState
    from brainseg_core.bundle import update_card
    from brainseg_core.model_card import read_card

    member = tiny_bundle(
        tiny_bundles / "tiny-seg-2.json", "segmenter", input_size=64, seed=5, name="tiny-seg-2"
    )
    section = {
        "ensemble": [{"name": "tiny-seg-2", "weights_sha256": read_card(member).weights_sha256}],
        "thresholds": {
            "mask_probability": 0.35,
            "min_area_px": 3,
            "largest_component": True,
            "region_rule": "most_confident",
        },
    }
    update_card(tiny_bundles / "tiny-seg.json", thorough=section)
    w = make_window()
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.current is not None and w.current.state is PatientState.DONE, timeout=20_000)
    assert w.segmenter.card.name == "tiny-seg"  # the member is not a model of its own
    assert w.model.thresholds.mask == 0.5 and not w.model.thresholds.largest_component
    w.actions_by_name["thorough"].trigger()
    t = w.model.thresholds
    assert (t.mask, t.largest_component, t.region_rule.value) == (0.35, True, "most_confident")
    assert w.controls.largest_component.text() == "Most confident 3-D region only"
    assert "averaged with tiny-seg-2" in w.results.models_label.text()
    qtbot.waitUntil(
        lambda: w.current.state is PatientState.DONE and w.analyser.pipeline is not None, timeout=20_000
    )
    shown = w.current.model_shown
    assert [m.name for m in shown.ensemble] == ["tiny-seg-2"] and not shown.flip_tta
    assert shown.thresholds.region_rule.value == "most_confident"
    w.actions_by_name["thorough"].trigger()  # off again: the segmenter's own card
    assert w.model.thresholds.mask == 0.5 and "averaged" not in w.results.models_label.text()
    card = dialogs.card_html("Segmenter", w.segmenter)  # the card dialog shows the ensemble
    assert "Thorough mode: the ensemble" in card and "tiny-seg-2 (" in card and "most_confident" in card


def test_turning_thorough_on_during_analyse_all_analyses_every_patient_in_thorough_mode(
    make_window, lgg_fixture_root, scripted_models, qtbot
):
    from brainseg_app.session import PatientState

    w = make_window(scripted_models, auto_run=False)
    assert w.open_path(lgg_fixture_root)
    w.analyse_all()
    assert w.analyser.batch_running
    w.analyser.export_after_batch = True  # as "export all" asks when patients are left to analyse
    exports = []
    w.analyser.exportRequested.disconnect()
    w.analyser.exportRequested.connect(lambda: exports.append(True))
    w.actions_by_name["thorough"].trigger()
    assert w.analyser.batch_running and w.analyser.export_after_batch

    def done() -> bool:
        return all(r.state is PatientState.DONE for r in w.records.values()) and bool(exports)

    qtbot.waitUntil(done, timeout=30_000)
    assert all(r.model_shown is not None and r.model_shown.flip_tta for r in w.records.values())


def _ensemble_section(tiny_bundles: Path, tiny_bundle) -> dict:
    """Make tiny-seg's card name a second segmenter (tiny-seg-2, beside it) as its ensemble."""
    from brainseg_core.bundle import update_card
    from brainseg_core.model_card import read_card

    member = tiny_bundle(
        tiny_bundles / "tiny-seg-2.json", "segmenter", input_size=64, seed=5, name="tiny-seg-2"
    )
    section = {
        "ensemble": [{"name": "tiny-seg-2", "weights_sha256": read_card(member).weights_sha256}],
        "thresholds": {"mask_probability": 0.35, "min_area_px": 3},
    }
    update_card(tiny_bundles / "tiny-seg.json", thorough=section)
    return section


@pytest.mark.parametrize("when", ["at start", "toggled"])
def test_a_missing_ensemble_member_keeps_the_models_and_runs_them_without_thorough_mode(
    make_window, fixture_patient, tiny_bundles, tiny_bundle, messages, qtbot, when
):
    from brainseg_app.session import PatientState

    _ensemble_section(tiny_bundles, tiny_bundle)
    (tiny_bundles / "tiny-seg-2.json").unlink()  # the member went missing
    w = make_window()
    if when == "at start":  # the setting remembered from the last session: no model loaded yet
        w.settings.thorough = True
        w.actions_by_name["thorough"].setChecked(True)
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.current is not None and w.current.state is PatientState.DONE, timeout=20_000)
    if when == "toggled":
        w.actions_by_name["thorough"].trigger()
        qtbot.waitUntil(lambda: not w.settings.thorough, timeout=20_000)
        qtbot.waitUntil(lambda: w.current.state is PatientState.DONE, timeout=20_000)
    # the user's models stay, and run as they are: thorough mode is off, and the user was told why
    assert w.segmenter is not None and w.segmenter.card.name == "tiny-seg"
    assert w.classifier is not None and w.classifier.card.name == "tiny-cls"
    assert not w.settings.thorough and not w.actions_by_name["thorough"].isChecked()
    assert w.current.model_shown.ensemble == () and w.model.thresholds.mask == 0.5
    (_, text, _), *_ = [m for m in messages.shown if m[0] == "Thorough mode not available"]
    assert "tiny-seg-2" in text and "without thorough mode" in text
    assert not any("could not be loaded" in m[1] for m in messages.shown)


def test_a_restored_thorough_analysis_is_set_aside_when_thorough_mode_falls_back(
    make_window, fixture_patient, tiny_bundles, tiny_bundle, messages, qtbot
):
    from brainseg_app.session import PatientState

    _ensemble_section(tiny_bundles, tiny_bundle)
    w = make_window()
    w.actions_by_name["thorough"].trigger()
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.current is not None and w.current.state is PatientState.DONE, timeout=20_000)
    assert w.current.model_shown.ensemble != ()  # analysed and saved in thorough mode
    w.close()
    (tiny_bundles / "tiny-seg-2.json").unlink()  # the member goes missing
    w2 = make_window(auto_run=False)  # thorough is still on (a setting)
    assert w2.settings.thorough and w2.ensure_models()  # the cards read (a menu does this)
    w2.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w2.current is not None and w2.current.state is PatientState.DONE, timeout=20_000)
    assert w2.current.model_shown.ensemble != ()  # restored from the card alone: nothing loaded yet
    w2.prepare()  # the models load: thorough mode cannot run
    qtbot.waitUntil(lambda: not w2.settings.thorough, timeout=20_000)
    assert w2.current.base is None and w2.current.state is PatientState.NEW  # not shown as plain
    assert w2.model.thresholds.mask == 0.5


def test_a_saved_analysis_of_an_earlier_ensemble_says_so(
    make_window, fixture_patient, tiny_bundles, tiny_bundle, qtbot
):
    from brainseg_app.session import PatientState
    from brainseg_core.bundle import update_card
    from brainseg_core.model_card import read_card

    section = _ensemble_section(tiny_bundles, tiny_bundle)
    w = make_window()
    w.actions_by_name["thorough"].trigger()
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.current is not None and w.current.state is PatientState.DONE, timeout=20_000)
    w.close()
    # the member is retrained: the card names the new weights
    new = tiny_bundle(tiny_bundles / "tiny-seg-2.json", "segmenter", input_size=64, seed=9, name="tiny-seg-2")
    section["ensemble"][0]["weights_sha256"] = read_card(new).weights_sha256
    update_card(tiny_bundles / "tiny-seg.json", thorough=section)
    w2 = make_window(auto_run=False)
    assert w2.ensure_models()
    w2.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w2.volume is not None, timeout=20_000)
    assert w2.current.state is PatientState.NEW
    assert "made by another thorough ensemble" in w2.statusBar().currentMessage()


def test_moving_one_threshold_slider_keeps_the_other_following_the_cards(
    make_window, fixture_patient, tiny_bundles, tiny_bundle, qtbot
):
    from brainseg_app.panels import STEPS
    from brainseg_app.session import PatientState

    _ensemble_section(tiny_bundles, tiny_bundle)
    w = make_window()
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.current is not None and w.current.state is PatientState.DONE, timeout=20_000)
    w.controls.gate.setValue(round(0.7 * STEPS))  # the reader moves the gate only
    qtbot.waitUntil(lambda: w.settings.classifier_threshold is not None, timeout=5_000)
    assert w.settings.mask_threshold is None
    w.actions_by_name["thorough"].trigger()
    assert w.model.thresholds.mask == 0.35  # the ensemble's own mask threshold
    assert w.model.thresholds.gate == pytest.approx(0.7)  # the reader's gate
    w.controls.mask_threshold.setValue(round(0.6 * STEPS))
    w.actions_by_name["thorough"].trigger()  # off at once, before the slider settled: it stays
    assert w.settings.mask_threshold == pytest.approx(0.6)
    assert w.model.thresholds.mask == pytest.approx(0.6)


def test_the_model_card_says_which_slices_the_network_reads(tmp_path: Path) -> None:
    from brainseg_core.bundle import load_bundle

    torch.manual_seed(0)
    args = {"base_filters": 4, "depth": 2, "in_channels": 9}
    card = save_bundle(
        build_model("resunet", **args), tmp_path, name="wide", kind="segmenter", arch="resunet",
        arch_args=args, input_size=64, thresholds={"mask_probability": 0.5, "min_area_px": 0},
        context_slices=1,
    )  # fmt: skip
    bundle = load_bundle(card)
    text = dialogs.card_html("Segmenter", bundle)
    assert "pre-contrast, FLAIR, post-contrast of each slice and 1 neighbouring slice on either side" in text
    plain = load_bundle(_seg(tmp_path / "plain", "plain", None))
    assert "post-contrast of each slice</td>" in dialogs.card_html("Segmenter", plain)


def test_a_folder_opened_while_the_models_load_keeps_them_and_shows_its_saved_analysis(
    make_window, fixture_patient, tiny_bundles, monkeypatch, qtbot
) -> None:
    from brainseg_app import analysis
    from brainseg_app.session import PatientState

    w = make_window()
    w.open_path(fixture_patient)
    qtbot.waitUntil(lambda: w.current is not None and w.current.state is PatientState.DONE, timeout=20_000)
    saved = [s.tumour_probability for s in w.current.raw]
    w.close()

    build = analysis._build_pipeline

    def slow_build(*args, **kwargs):
        time.sleep(1.0)
        return build(*args, **kwargs)

    monkeypatch.setattr(analysis, "_build_pipeline", slow_build)
    w = make_window(auto_run=False)
    w.prepare()  # as at start-up
    assert w.analysis.running and w.analysis.tag == ("prepare", None)
    w.open_path(fixture_patient)  # from the File menu while the models load
    assert not w.analysis.cancelling
    qtbot.waitUntil(lambda: w.volume is not None and not w.is_busy(), timeout=20_000)
    assert w.analyser.pipeline is not None  # the models were not given up
    assert w.current.state is PatientState.DONE  # the saved analysis, no network run
    assert [s.tumour_probability for s in w.current.raw] == saved
