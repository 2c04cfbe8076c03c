"""Nested cross-validation over out-of-fold predictions (brainseg_core.crossval, brainseg-eval --cv)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from brainseg_core.crossval import (
    FoldPredictions,
    FoldScorer,
    PostProcessing,
    cross_validate,
    find_fold_files,
    format_cv_report,
    load_fold,
    recall_by_area,
    score_fold,
    summary_metrics,
)
from brainseg_core.errors import DataError
from brainseg_core.metrics import dice
from brainseg_core.results import keep_largest_component, remove_small_components
from brainseg_core.thresholds import RegionRule


def _fold(name: str, ids: list[str], rng: np.random.Generator, *, speckle: bool = True) -> FoldPredictions:
    """Patients of 4 slices of 32 x 32: a square tumour on slices 1-2, predicted with soft edges,
    plus (optionally) a 2-pixel false positive on slice 3 and a 12-pixel one on slice 0."""
    n = len(ids) * 4
    mask = np.zeros((n, 32, 32), bool)
    prob = np.zeros((n, 32, 32), np.float64)
    for p in range(len(ids)):
        s = 4 * p
        mask[s + 1 : s + 3, 8:20, 8:20] = True
        prob[s + 1 : s + 3, 8:20, 8:20] = 0.9
        prob[s + 1 : s + 3, 7, 8:20] = 0.45  # an edge row only a low threshold keeps
        if speckle:
            prob[s + 3, 28, 28:30] = 0.8
            prob[s, 2:5, 2:6] = 0.8
    prob += rng.uniform(0, 0.02, prob.shape)
    q = np.round(np.clip(prob, 0, 1) * 255).astype(np.uint8)
    return FoldPredictions(name, q, q.copy(), mask, np.repeat(np.arange(len(ids)), 4), ids)


def _save(fold: FoldPredictions, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        prob=fold.prob,
        prob_flip=fold.prob_flip,
        mask=fold.mask,
        patient=fold.patient,
        patient_ids=np.array(fold.patient_ids),
    )
    return path


def test_post_processing_matches_the_pipeline_functions() -> None:
    fold = _fold("f", ["A", "B"], np.random.default_rng(0))
    post = PostProcessing(mask_probability=0.5, min_area_px=5, largest_component=True)
    m = score_fold(fold, post)
    binary = fold.prob >= 128
    expected = np.stack([remove_small_components(s, 5) for s in binary])
    for p in range(2):
        sl = slice(4 * p, 4 * p + 4)
        vol = keep_largest_component(expected[sl])
        assert m["per_patient_dice"]["AB"[p]] == pytest.approx(dice(vol, fold.mask[sl]))
    plain = score_fold(fold, PostProcessing())
    assert plain["dice_patient_mean"] < m["dice_patient_mean"]  # the speckles cost Dice
    assert plain["false_positive_slices"] == 4 and m["false_positive_slices"] == 0
    assert m["slice_recall"] == 1.0 and m["slice_specificity"] == 1.0
    assert m["volume_ratio_median"] == pytest.approx(1.0)


def test_nested_choice_never_uses_the_scored_fold() -> None:
    rng = np.random.default_rng(1)
    clean = _fold("clean", ["A", "B"], rng, speckle=False)
    noisy = [_fold(f"noisy{i}", [f"N{i}a", f"N{i}b"], rng) for i in range(2)]
    grid = [PostProcessing(0.5, 0), PostProcessing(0.5, 20)]
    res = cross_validate([clean, *noisy], grid=grid)
    by_fold = {f["fold"]: f["choice"]["min_area_px"] for f in res["per_fold"]}
    # the clean fold is scored with what the noisy folds prefer (remove small regions) ...
    assert by_fold["clean"] == 20
    # ... and each noisy fold with what the other noisy fold + the clean fold choose
    assert by_fold["noisy0"] == 20 and by_fold["noisy1"] == 20
    assert res["chosen"]["min_area_px"] == 20 and res["pooled"]["patients"] == 6
    assert set(res["pooled"]["per_patient_dice"]) == {"A", "B", "N0a", "N0b", "N1a", "N1b"}
    # the grid's first entry wins ties: on the clean fold alone both choices score the same
    twin = dataclasses.replace(clean, name="c2", patient_ids=["C", "D"])
    assert cross_validate([clean, twin], grid=grid)["chosen"]["min_area_px"] == 0
    text = format_cv_report(res)
    assert "pooled (nested, honest)" in text and "min area 20 px" in text


def test_a_selection_that_does_not_pay_on_held_out_folds_is_not_shipped() -> None:
    rng = np.random.default_rng(6)
    # two folds that want opposite thresholds: each is scored with the other's choice, so the
    # nested selection loses to simply keeping the default
    folds = [_fold(f"f{i}", [f"P{i}a", f"P{i}b"], rng, speckle=False) for i in range(2)]
    for p in range(2):
        folds[0].mask[4 * p + 1 : 4 * p + 3, 7, 8:20] = True  # only fold 0 wants the 0.45 edge row
    res = cross_validate(folds, grid=[PostProcessing(0.5), PostProcessing(0.4)])
    assert res["pooled"]["dice_patient_mean"] < res["default_pooled"]["dice_patient_mean"]
    assert res["ship"] == dataclasses.asdict(PostProcessing(0.5)) and res["ship_metrics"] == "default_pooled"


def test_threshold_choice_follows_the_data() -> None:
    rng = np.random.default_rng(2)
    folds = [_fold(f"f{i}", [f"P{i}a", f"P{i}b"], rng, speckle=False) for i in range(3)]
    # the 0.45 edge row lies outside the truth, so a 0.4 threshold adds false positives
    res = cross_validate(folds, grid=[PostProcessing(0.4), PostProcessing(0.5)])
    assert res["chosen"]["mask_probability"] == 0.5
    # make the edge row part of the truth: now 0.4 is better
    for f in folds:
        for p in range(2):
            f.mask[4 * p + 1 : 4 * p + 3, 7, 8:20] = True
    res = cross_validate(folds, grid=[PostProcessing(0.4), PostProcessing(0.5)])
    assert res["chosen"]["mask_probability"] == 0.4
    assert res["pooled"]["dice_patient_mean"] == pytest.approx(1.0)


def test_patient_in_two_folds_and_too_few_folds_are_refused() -> None:
    rng = np.random.default_rng(3)
    a, b = _fold("a", ["X"], rng), _fold("b", ["X"], rng)
    with pytest.raises(ValueError, match="held out by both a and b"):
        cross_validate([a, b])
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_validate([a])


def test_files_round_trip_and_bad_files_name_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    f0 = _save(_fold("x", ["A"], rng), tmp_path / "cv" / "fold0" / "out_of_fold.npz")
    _save(_fold("y", ["B"], rng), tmp_path / "cv" / "fold1" / "out_of_fold.npz")
    files = find_fold_files(tmp_path / "cv")
    assert [f.parent.name for f in files] == ["fold0", "fold1"]
    loaded = load_fold(f0)
    assert loaded.name == "fold0" and loaded.patient_ids == ["A"] and loaded.mask.dtype == bool
    with pytest.raises(DataError, match=r"no out_of_fold\.npz"):
        find_fold_files(tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, prob=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"bad\.npz.*missing prob_flip"):
        load_fold(bad)
    pickled = tmp_path / "pickled.npz"
    np.savez(
        pickled,
        prob=np.zeros((1, 2, 2), np.uint8),
        prob_flip=np.zeros((1, 2, 2), np.uint8),
        mask=np.zeros((1, 2, 2), bool),
        patient=np.zeros(1, np.int64),
        patient_ids=np.array([{"not": "data"}], dtype=object),
    )
    with pytest.raises(DataError, match=r"pickled\.npz"):
        load_fold(pickled)


def test_eval_cli_cv_report_and_card(tmp_path: Path, tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    from brainseg_core.bundle import load_bundle
    from brainseg_core.cli.eval import main

    rng = np.random.default_rng(5)
    for i in range(3):
        _save(_fold(f"f{i}", [f"P{i}a", f"P{i}b"], rng), tmp_path / "cv" / f"fold{i}" / "out_of_fold.npz")
    card = tiny_bundle(tmp_path / "seg", kind="segmenter")
    out = tmp_path / "cv.json"
    assert main(["--cv", str(tmp_path / "cv"), "--json", str(out), "--write-card", str(card), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["pooled"]["patients"] == 6 and len(result["per_fold"]) == 3
    loaded = load_bundle(card).card
    chosen = result["chosen"]
    assert chosen["min_area_px"] > 0 or chosen["largest_component"]  # the speckles must go
    assert result["ship"] == chosen and result["ship_metrics"] == "pooled"  # and that pays
    assert loaded.thresholds["min_area_px"] == chosen["min_area_px"]
    assert loaded.thresholds["largest_component"] == chosen["largest_component"]
    assert loaded.metrics["dice_patient_mean"] == pytest.approx(result["pooled"]["dice_patient_mean"])
    assert loaded.training["cross_validation"]["folds"] == 3
    # a folder outside the working directory is named in full; one inside it relative to it, so
    # a card written in a project's clone names the same folder on every clone
    assert loaded.training["cross_validation"]["source"] == str((tmp_path / "cv").resolve())
    monkeypatch.chdir(tmp_path)
    assert main(["--cv", "cv", "--write-card", str(card), "--quiet"]) == 0
    assert load_bundle(card).card.training["cross_validation"]["source"] == "cv"
    with pytest.raises(SystemExit):
        main(["--write-card", str(card), str(tmp_path)])


def test_the_selection_grid_holds_only_what_a_card_can_carry() -> None:
    from brainseg_core.crossval import DEFAULT_GRID

    # flip TTA is an opt-in run mode: scored as a fixed row, never selected and written into a card
    assert DEFAULT_GRID and not any(p.flip_tta for p in DEFAULT_GRID)
    assert len({(p.mask_probability, p.min_area_px, p.largest_component) for p in DEFAULT_GRID}) == 60
    # the region rule is chosen only where one region is kept: both rules, nothing else doubled
    rules = {p.region_rule for p in DEFAULT_GRID if p.largest_component}
    assert rules == set(RegionRule) and all(
        p.region_rule is RegionRule.LARGEST for p in DEFAULT_GRID if not p.largest_component
    )
    assert len(DEFAULT_GRID) == len(set(DEFAULT_GRID)) == 3 * (30 + 2 * 30)


def test_the_most_confident_region_rule_matches_the_pipeline_function_and_reaches_the_card(
    tmp_path: Path, tiny_bundle
) -> None:
    from brainseg_core.bundle import load_bundle
    from brainseg_core.crossval import apply_to_card

    fold = _fold("f", ["A", "B"], np.random.default_rng(3), speckle=False)
    for p in range(2):  # a faint false positive on slice 0, apart from the tumour and larger
        fold.prob[4 * p, 22:, :] = 150  # 320 px at p 0.59 against 288 at p 0.9
    post = PostProcessing(0.5, 0, True, False, 0.0, RegionRule.MOST_CONFIDENT)
    pred = FoldScorer(fold).masks(post)
    for p in range(2):
        sl = slice(4 * p, 4 * p + 4)
        expected = keep_largest_component(fold.prob[sl] >= 128, fold.prob[sl] / 255.0)
        np.testing.assert_array_equal(pred[sl], expected)
        np.testing.assert_array_equal(pred[sl], fold.mask[sl])  # the tumour, not the wide region
    largest = FoldScorer(fold).masks(dataclasses.replace(post, region_rule=RegionRule.LARGEST))
    assert not (largest & fold.mask).any()  # the most pixels: the false positive
    assert "most confident 3-D region" in post.describe()
    assert PostProcessing(region_rule="most_confident") == dataclasses.replace(
        post, mask_probability=0.5, largest_component=False
    )
    result = cross_validate(
        [fold, _fold("g", ["C", "D"], np.random.default_rng(4), speckle=False)], grid=[post]
    )
    card = apply_to_card(result, tiny_bundle(tmp_path / "seg", kind="segmenter"), source="test")
    assert load_bundle(card).card.thresholds["region_rule"] == "most_confident"


def test_recall_is_broken_down_by_true_tumour_area() -> None:
    area = np.array([0, 50, 99, 100, 499, 500, 5000, 5000])
    detected = np.array([True, False, True, True, False, True, True, False])
    bands = recall_by_area(area, detected)
    assert [(b["min_px"], b["max_px"]) for b in bands] == [(1, 100), (100, 500), (500, 1000), (1000, None)]
    assert [(b["tumour_slices"], b["detected"], b["recall"]) for b in bands] == [
        (2, 1, 0.5),
        (2, 1, 0.5),
        (1, 1, 1.0),
        (2, 1, 0.5),
    ]
    assert np.isnan(recall_by_area(np.array([0, 200]), np.array([True, True]))[0]["recall"])

    # pooled over folds, the bands add up to the tumour slices and the misses the report counts
    rng = np.random.default_rng(3)
    folds = [_fold(f"f{i}", [f"P{i}a", f"P{i}b"], rng) for i in range(3)]
    folds[0].prob[1] = 0  # one 144-px tumour slice left empty
    result = cross_validate(folds)
    pooled = result["pooled"]
    bands = pooled["slice_recall_by_area"]
    assert sum(b["tumour_slices"] for b in bands) == pooled["tumour_slices"] == 12
    assert sum(b["tumour_slices"] - b["detected"] for b in bands) == pooled["missed_tumour_slices"] == 1
    assert bands[1]["tumour_slices"] == 12 and bands[1]["detected"] == 11
    assert "100-499 px 91.7 (11/12)" in format_cv_report(result)


def test_faint_edges_outline_a_tumours_faint_last_slice() -> None:
    """Tumour on slices 1-3, the segmenter firm on 1-2 and faint (0.1) on 3: only the faint-edge
    step outlines slice 3, and nothing where the faint pixels touch no outline."""
    rng = np.random.default_rng(0)
    fold = _fold("fold0", ["A", "B"], rng, speckle=False)
    for p in range(2):
        s = 4 * p
        fold.mask[s + 3, 8:20, 8:20] = True
        fold.prob[s + 3, 9:19, 9:19] = 26  # 0.1
        fold.prob[s, 25:30, 25:30] = 26  # faint too, but touching no outline
    scorer = FoldScorer(fold)
    plain = summary_metrics([scorer.score(PostProcessing(largest_component=True))])
    edged = summary_metrics([scorer.score(PostProcessing(largest_component=True, edge_probability=0.05))])
    assert plain["slice_recall"] == pytest.approx(2 / 3) and edged["slice_recall"] == 1.0
    assert edged["slice_specificity"] == 1.0
    assert edged["dice_patient_mean"] > plain["dice_patient_mean"]
    assert "faint edges p>=0.05" in PostProcessing(edge_probability=0.05).describe()
    with pytest.raises(ValueError, match="edge_probability"):
        PostProcessing(edge_probability=1.5)


def test_empty_slices_just_past_an_outline_are_counted_as_review_flags_per_patient() -> None:
    fold = _fold("f", ["A", "B"], np.random.default_rng(1), speckle=False)
    fold.prob[4:7] = fold.prob_flip[4:7] = 0  # patient B: only its slice 3 outlined (no tumour there)
    fold.prob[7, 8:20, 8:20] = fold.prob_flip[7, 8:20, 8:20] = 230
    part = FoldScorer(fold).score(PostProcessing())
    # A (slices 0-3): tumour outlined on 1-2, so 0 and 3 are flagged; B (4-7): only 7 outlined,
    # so 6 (B's slice 2, a tumour slice) is flagged and 4-5 are not
    assert np.flatnonzero(part["slice_beside"]).tolist() == [0, 3, 6]
    m = summary_metrics([part])
    assert m["beside_flags"] == 3 and m["beside_flags_with_tumour"] == 1
    assert m["slice_recall"] == pytest.approx(2 / 4) and m["recall_outlined_or_beside"] == pytest.approx(
        3 / 4
    )
    # of the tumour-free slices 0, 3, 4 and 7, only 4 is neither outlined nor flagged
    assert m["slice_specificity"] == pytest.approx(3 / 4)
    assert m["specificity_outlined_or_beside"] == pytest.approx(1 / 4)
    report = format_cv_report(cross_validate([fold, _fold("g", ["C"], np.random.default_rng(2))]))
    assert "Empty slices just past an outline" in report


def test_fold_sets_average_into_the_ensembles_out_of_fold_predictions() -> None:
    from brainseg_core.crossval import average_folds

    a = _fold("f0", ["A", "B"], np.random.default_rng(1))
    b = _fold("f0", ["A", "B"], np.random.default_rng(2))
    (avg,) = average_folds([[a], [b]])
    expected = np.round((a.prob.astype(np.float32) + b.prob) / 2)
    np.testing.assert_array_equal(avg.prob, expected.astype(np.uint8))
    assert avg.prob.dtype == np.uint8 and avg.patient_ids == ["A", "B"] and avg.mask is a.mask
    assert not np.array_equal(avg.prob, a.prob)
    other = _fold("f0", ["A", "C"], np.random.default_rng(3))
    with pytest.raises(ValueError, match="same held-out patients"):
        average_folds([[a], [other]])
    shuffled = dataclasses.replace(b, patient=b.patient[::-1].copy())  # slices of other patients
    with pytest.raises(ValueError, match="same held-out patients"):
        average_folds([[a], [shuffled]])
    with pytest.raises(ValueError, match="two or more fold sets"):
        average_folds([[a], [b, b]])


def test_eval_cv_with_another_fold_set_writes_the_cards_thorough_ensemble(
    tmp_path: Path, tiny_bundle
) -> None:
    from brainseg_core.bundle import load_bundle
    from brainseg_core.cli.eval import main
    from brainseg_core.thorough import thorough_mode

    for seed, root in ((5, "cv"), (6, "cv-seed1")):
        rng = np.random.default_rng(seed)
        for i in range(3):
            _save(_fold(f"f{i}", [f"P{i}a", f"P{i}b"], rng), tmp_path / root / f"fold{i}" / "out_of_fold.npz")
    card = tiny_bundle(tmp_path / "models" / "seg.json", kind="segmenter", name="seg")
    member = tiny_bundle(tmp_path / "models" / "seg1.json", kind="segmenter", name="seg1", seed=9)
    before = load_bundle(card).card
    out = tmp_path / "cv.json"
    cv, other = str(tmp_path / "cv"), str(tmp_path / "cv-seed1")
    args = [
        "--cv",
        cv,
        "--with",
        other,
        "--json",
        str(out),
        "--write-card",
        str(card),
        "--member",
        str(member),
    ]
    assert main([*args, "--quiet"]) == 0
    result = json.loads(out.read_text())
    after = load_bundle(card).card
    assert (after.thresholds, after.metrics) == (before.thresholds, before.metrics)  # its own: untouched
    section = after.thorough
    assert section["ensemble"] == [
        {"name": "seg1", "weights_sha256": load_bundle(member).card.weights_sha256}
    ]
    assert section["metrics"]["dice_patient_mean"] == pytest.approx(result["pooled"]["dice_patient_mean"])
    assert section["thresholds"]["min_area_px"] == result["ship"]["min_area_px"]
    assert section["cross_validation"]["source"] == [cv, other]
    assert [m.card.name for m in thorough_mode(load_bundle(card)).ensemble] == ["seg1"]
    with pytest.raises(SystemExit):  # the ensemble's card needs its other model named
        main(["--cv", cv, "--with", other, "--write-card", str(card)])
    with pytest.raises(SystemExit):  # a member without a card to write it into
        main(["--cv", cv, "--with", other, "--member", str(member)])
    with pytest.raises(SystemExit):  # the default gate is not chosen on the ensemble's folds
        main(["--cv", cv, "--with", other, "--gate-cv", cv, "--write-gate-card", str(card)])
    elsewhere = tiny_bundle(tmp_path / "elsewhere" / "seg2.json", kind="segmenter", name="seg2")
    from brainseg_core.crossval import apply_thorough_to_card

    with pytest.raises(ValueError, match=r"beside seg\.json"):
        apply_thorough_to_card(result, card, [elsewhere], source=[cv])
