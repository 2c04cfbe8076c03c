"""A gate's cross-validated threshold and end-to-end numbers (brainseg_core.gate_crossval, --gate-cv)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from brainseg_core.crossval import FoldPredictions
from brainseg_core.errors import DataError
from brainseg_core.gate_crossval import (
    GateFold,
    format_gate_report,
    gated_cross_validation,
    load_gate_fold,
    review_queue_yield,
)
from brainseg_core.thresholds import Thresholds
from tests.test_crossval import _fold, _save


def _gate(fold: FoldPredictions, tumour_prob: float = 0.9) -> GateFold:
    """Confident on tumour slices (slices 1-2 of each patient), 0.1 on slice 0, 0.3 on slice 3."""
    label = fold.mask.any(axis=(1, 2))
    prob = np.where(label, tumour_prob, np.tile([0.1, 0.0, 0.0, 0.3], len(fold.patient_ids)))
    return GateFold(fold.name, prob.astype(np.float64), label, fold.patient.copy(), list(fold.patient_ids))


def _folds() -> tuple[list[FoldPredictions], list[GateFold]]:
    rng = np.random.default_rng(3)
    segs = [_fold(f"fold{i}", [f"P{i}a", f"P{i}b"], rng) for i in range(3)]
    for seg in segs:  # patient a's tumour slices 1-2: the segmenter outlines nothing there
        seg.prob[1:3] = seg.prob_flip[1:3] = 60
    return segs, [_gate(s) for s in segs]


def test_gate_stops_false_positive_slices_and_flags_what_it_cannot_outline() -> None:
    segs, gates = _folds()
    result = gated_cross_validation(segs, gates, target_recall=0.99)
    pooled, ungated = result["pooled"], result["ungated"]
    # without the gate the speckles on slices 0 and 3 are outlined; the gate stops them
    assert ungated["false_positive_slices"] == 12 and pooled["false_positive_slices"] == 0
    assert pooled["slice_specificity"] == 1.0 and pooled["decoded_share"] == 0.5
    assert pooled["dice_patient_mean"] > ungated["dice_patient_mean"]
    # patient a of each fold has no outline: its two tumour slices are missed by the outline and
    # shown by the confident gate's review flag; patient b's empty slices 0 and 3, just past its
    # outline, are flagged as its tumour's ends
    assert pooled["slice_recall"] == pytest.approx(6 / 12) and pooled["flagged_slices"] == 12
    assert pooled["recall_outlined_or_flagged"] == 1.0 and pooled["gate_recall"] == 1.0
    # the flags' cost: of the 12 tumour-free slices, patient b's 6 are flagged as its tumour's
    # ends; patient a's 6 are stopped by the gate and neither outlined nor flagged
    assert pooled["specificity_outlined_or_flagged"] == pytest.approx(6 / 12)
    # ungated, patient a's speckles on slices 0 and 3 are outlined: its empty tumour slices lie
    # between them and are flagged instead
    assert ungated["beside_flags"] == 6 and ungated["beside_flags_with_tumour"] == 6
    assert ungated["slice_recall"] == pytest.approx(6 / 12) and ungated["recall_outlined_or_beside"] == 1.0
    no_gate = next(line for line in format_gate_report(result).splitlines() if line.startswith("no gate"))
    # recall, then "+flag": outlined or flagged; specificity, then "+flag": neither
    assert no_gate.split()[8:12] == ["50.0", "100.0", "0.0", "0.0"]
    pooled_row = next(line for line in format_gate_report(result).splitlines() if line.startswith("pooled"))
    assert pooled_row.split()[7:11] == ["50.0", "100.0", "100.0", "50.0"]
    assert result["threshold"] == pytest.approx(0.9)
    # the gate's out-of-fold probabilities, binned against what the slices hold: 0.9 on the 12
    # tumour slices (all tumour), 0.1 and 0.3 on the 12 others (none)
    cal = result["calibration"]
    assert [(b["n"], b["observed"]) for b in cal["bins"]] == [(6, 0.0), (6, 0.0), (12, 1.0)]
    assert cal["ece"] == pytest.approx((6 * 0.1 + 6 * 0.3 + 12 * 0.1) / 24)


def test_each_folds_threshold_comes_from_the_other_folds() -> None:
    segs, gates = _folds()
    gates[1] = _gate(segs[1], tumour_prob=0.2)  # fold 1's own tumour slices score low
    result = gated_cross_validation(segs, gates, target_recall=0.99)
    thresholds = {f["fold"]: f["threshold"] for f in result["per_fold"]}
    assert thresholds == {
        "fold0": pytest.approx(0.2),
        "fold1": pytest.approx(0.9),
        "fold2": pytest.approx(0.2),
    }
    fold1 = next(f["metrics"] for f in result["per_fold"] if f["fold"] == "fold1")
    assert fold1["gate_recall"] == 0.0 and fold1["slice_recall"] == 0.0  # it could not lower its own bar
    assert result["pooled"]["gate_recall"] == pytest.approx(8 / 12)


def test_each_fold_can_take_its_own_post_processing_the_nested_choice() -> None:
    from brainseg_core.crossval import FoldScorer, PostProcessing

    segs, gates = _folds()
    plain, strict = PostProcessing(0.5, 0), PostProcessing(0.5, 10_000)  # strict: nothing is outlined
    mixed = gated_cross_validation(segs, gates, post={"fold0": plain, "fold1": strict, "fold2": plain})
    one = gated_cross_validation(segs, gates, post=plain)
    dice = {f["fold"]: f["metrics"]["dice_patient_mean"] for f in mixed["per_fold"]}
    same = {f["fold"]: f["metrics"]["dice_patient_mean"] for f in one["per_fold"]}
    assert dice["fold0"] == same["fold0"] and dice["fold2"] == same["fold2"]
    assert dice["fold1"] == 0.0 < same["fold1"]  # fold 1 scored with its own choice
    assert mixed["ungated"]["dice_patient_mean"] == pytest.approx(
        np.mean(
            [*FoldScorer(segs[0]).score(plain)["dice"], 0.0, 0.0, *FoldScorer(segs[2]).score(plain)["dice"]]
        )
    )
    assert mixed["post_processing"] == "each fold's own choice" and one["post_processing"] == plain.describe()
    with pytest.raises(ValueError, match="fold2"):
        gated_cross_validation(segs, gates, post={"fold0": plain, "fold1": plain})


def test_the_eval_cli_puts_each_folds_nested_choice_behind_its_gate() -> None:
    from brainseg_core.cli.eval import gated_post_processing
    from brainseg_core.crossval import PostProcessing

    a, b = PostProcessing(0.3, 40, True), PostProcessing(0.4, 160)
    per_fold = [
        {"fold": "fold0", "choice": dataclasses.asdict(a)},
        {"fold": "fold1", "choice": dataclasses.asdict(b)},
    ]
    shipped = {"per_fold": per_fold, "ship": dataclasses.asdict(a)}
    assert gated_post_processing({**shipped, "ship_metrics": "pooled"}) == {"fold0": a, "fold1": b}
    default = {**shipped, "ship": dataclasses.asdict(PostProcessing()), "ship_metrics": "default_pooled"}
    assert gated_post_processing(default) == PostProcessing()  # the selection did not pay: what ships


def test_folds_that_do_not_line_up_are_refused() -> None:
    segs, gates = _folds()
    with pytest.raises(ValueError, match="same number"):
        gated_cross_validation(segs, gates[:2])
    shifted = GateFold("fold0", gates[0].prob, gates[0].label, gates[0].patient, ["X", "Y"])
    with pytest.raises(ValueError, match="same patients"):
        gated_cross_validation(segs, [shifted, *gates[1:]])


def test_eval_cli_reports_the_gate_and_files_name_their_kind(tmp_path: Path, tiny_bundle) -> None:
    from brainseg_core.bundle import load_bundle
    from brainseg_core.cli.eval import main

    segs, gates = _folds()
    for seg, gate in zip(segs, gates, strict=True):
        _save(seg, tmp_path / "seg" / seg.name / "out_of_fold.npz")
        (tmp_path / "gate" / gate.name).mkdir(parents=True)
        np.savez_compressed(
            tmp_path / "gate" / gate.name / "out_of_fold.npz",
            kind=np.array("classifier"),
            slice_prob=gate.prob.astype(np.float32),
            label=gate.label,
            patient=gate.patient,
            patient_ids=np.array(gate.patient_ids),
        )
    out = tmp_path / "cv.json"
    card = tiny_bundle(tmp_path / "gate_model", kind="classifier")
    args = ["--cv", str(tmp_path / "seg"), "--gate-cv", str(tmp_path / "gate"), "--json", str(out), "--quiet"]
    assert main([*args, "--write-gate-card", str(card)]) == 0
    gate = json.loads(out.read_text())["gate"]
    assert gate["pooled"]["decoded_share"] == 0.5 and len(gate["per_fold"]) == 3
    written = load_bundle(card).card
    assert written.thresholds["tumour_probability"] == pytest.approx(gate["threshold"])
    assert written.metrics["recall_outlined_or_flagged"] == gate["pooled"]["recall_outlined_or_flagged"]
    assert written.training["cross_validation"]["target_recall"] == gate["target_recall"]
    assert main([*args, "--gate-recall", "0.5"]) == 0
    assert json.loads(out.read_text())["gate"]["target_recall"] == 0.5
    with pytest.raises(SystemExit):
        main([*args, "--gate-recall", "1.5"])
    seg_card = tiny_bundle(tmp_path / "seg_model", kind="segmenter")
    assert main([*args, "--write-gate-card", str(seg_card)]) != 0  # a segmenter is no gate
    with pytest.raises(DataError, match="segmenter's predictions"):
        load_gate_fold(tmp_path / "seg" / "fold0" / "out_of_fold.npz")
    assert main(["--cv", str(tmp_path / "gate"), "--quiet"]) != 0  # a gate's folds are not a segmenter's


def _reach_folds() -> tuple[list[FoldPredictions], list[GateFold]]:
    """Patients of 8 slices, tumour on slices 2-4 (slice 2 faint to the gate), and two slices far
    from it (6, 7) that the gate scores 0.4: only a gate that looks at the neighbours keeps the
    faint slice without passing them."""
    own = np.array([0.05, 0.05, 0.2, 0.9, 0.9, 0.05, 0.4, 0.4])
    segs, gates = [], []
    for i in range(3):
        ids = [f"P{i}a", f"P{i}b"]
        mask = np.zeros((16, 32, 32), bool)
        for p in range(2):
            mask[8 * p + 2 : 8 * p + 5, 8:20, 8:20] = True
        q = np.where(mask, 230, 0).astype(np.uint8)
        patient = np.repeat(np.arange(2), 8)
        segs.append(FoldPredictions(f"fold{i}", q, q.copy(), mask, patient, ids))
        gates.append(GateFold(f"fold{i}", np.tile(own, 2), mask.any(axis=(1, 2)), patient, ids))
    return segs, gates


def test_the_gate_reach_is_chosen_on_the_other_folds() -> None:
    segs, gates = _reach_folds()
    own_only = gated_cross_validation(segs, gates, target_recall=1.0, reaches=(0,))
    result = gated_cross_validation(segs, gates, target_recall=1.0)
    assert [f["reach"] for f in result["per_fold"]] == [1, 1, 1] and result["reach"] == 1
    assert result["threshold"] == pytest.approx(0.9) and own_only["threshold"] == pytest.approx(0.2)
    # both keep every tumour slice; looking at the neighbours stops the two far slices (4 of 5
    # slices without tumour are stopped instead of 3: slice 5 passes next to the tumour)
    assert result["pooled"]["gate_recall"] == own_only["pooled"]["gate_recall"] == 1.0
    assert own_only["pooled"]["gate_specificity"] == pytest.approx(0.6)
    assert result["pooled"]["gate_specificity"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="reaches"):
        gated_cross_validation(segs, gates, reaches=(4,))


def test_the_review_queue_counts_what_each_reason_flags_and_what_the_masks_get_wrong() -> None:
    segs, gates = _folds()
    queue = review_queue_yield(segs[0], gates[0], Thresholds(gate=0.5, mask=0.5))
    # patient a: the confident gate over its empty tumour slices 1-2 (both wrong: tumour missed,
    # and nothing else flags them); patient b: its tumour outlined on 1-2, the empty slices 0 and
    # 3 just past it flagged as its ends (right: no tumour there)
    assert (queue["patients"], queue["slices"], queue["wrong_slices"]) == (2, 8, 2)
    assert queue["reasons"]["classifier_only"] == {
        "slices": 2,
        "with_tumour": 2,
        "wrong": 2,
        "wrong_only_this": 2,
    }
    assert queue["reasons"]["tumour_end"] == {"slices": 2, "with_tumour": 0, "wrong": 0, "wrong_only_this": 0}
    assert (queue["flagged"], queue["flagged_wrong"]) == (4, 2)
    assert sum(c["slices"] for c in queue["reasons"].values()) == 4
    # the cross-validation sums every fold's queue under that fold's own gate
    result = gated_cross_validation(segs, gates, target_recall=0.99)
    assert result["review_queue"]["patients"] == 6 and result["review_queue"]["wrong_slices"] == 6
    table = format_gate_report(result)
    assert "Review queue" in table
    assert "Slices the final masks get wrong: 6 of 24, 6 of them flagged (100.0 %)" in table


def test_the_review_queue_counts_a_wrong_slice_with_two_reasons_under_each() -> None:
    segs, gates = _folds()
    queue = review_queue_yield(segs[0], gates[0], Thresholds(gate=0.05, mask=0.5))
    # every slice passes: the speckles on slices 0 and 3 are outlined (4 false outlines), and
    # patient a's empty tumour slices 1-2 are flagged twice, for the confident classifier and as
    # a gap between outlines, so neither reason finds them alone
    assert (queue["wrong_slices"], queue["flagged"], queue["flagged_wrong"]) == (6, 2, 2)
    for reason in ("classifier_only", "gap"):
        assert queue["reasons"][reason] == {"slices": 2, "with_tumour": 2, "wrong": 2, "wrong_only_this": 0}
    assert (queue["tumour_shown"], queue["tumour_slices"]) == (4, 4)
    assert (queue["clear_spared"], queue["clear_slices"]) == (0, 4)


def _rich_fold(name: str, ids: list[str], rng: np.random.Generator) -> tuple[FoldPredictions, GateFold]:
    """6-slice patients: a tumour on slices 1-4 with a faint first slice and a small last one, a
    false positive somewhere, mirrored probabilities brighter over the tumour, a noisy gate."""
    n = len(ids) * 6
    mask = np.zeros((n, 32, 32), bool)
    prob = rng.uniform(0, 0.03, (n, 32, 32))
    for p in range(len(ids)):
        s = 6 * p
        mask[s + 1 : s + 5, 8:20, 8:20] = True
        prob[s + 2 : s + 4, 8:20, 8:20] = rng.uniform(0.6, 1.0)
        prob[s + 1, 8:20, 8:20] = rng.uniform(0.05, 0.45)
        prob[s + 4, 10:16, 10:16] = rng.uniform(0.5, 0.9)
        prob[s + rng.integers(0, 6), 24:30, 24:31] = rng.uniform(0.5, 0.9)
    flip = prob.copy()
    flip[:, 8:20, 8:20] += 0.15
    label = mask.any(axis=(1, 2))
    gate = np.where(label, rng.uniform(0.3, 1.0, n), rng.uniform(0.0, 0.4, n))
    patient = np.repeat(np.arange(len(ids)), 6)

    def q(a: np.ndarray) -> np.ndarray:
        return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)

    return FoldPredictions(name, q(prob), q(flip), mask, patient, ids), GateFold(
        name, gate, label, patient, ids
    )


def test_the_review_queue_sees_the_masks_the_cross_validation_scores() -> None:
    """Under every post-processing step (mirrored probabilities, minimum area, largest region,
    faint edges) and a gate reach, the pipeline's own steps in the queue give the masks the
    vectorised scorer gives, and each fold's queue runs under that fold's gate."""
    from brainseg_core.crossval import FoldScorer, PostProcessing
    from brainseg_core.review import disagrees, past_tumour_ends

    rng = np.random.default_rng(0)
    pairs = [_rich_fold(f"fold{i}", [f"P{i}{c}" for c in "abcd"], rng) for i in range(3)]
    segs, gates = [s for s, _ in pairs], [g for _, g in pairs]
    post = PostProcessing(0.5, 40, True, True, 0.05)
    result = gated_cross_validation(segs, gates, post=post, target_recall=0.99, reaches=(1,))
    wrong = spared = clear = faint_tumour = 0
    for (seg, gate), f in zip(pairs, result["per_fold"], strict=True):
        assert f["reach"] == 1
        gated = gate.gate_score(1) >= f["threshold"]
        masks = FoldScorer(seg).masks(post, gated)
        wrong += sum(disagrees(m, t, 0.5) for m, t in zip(masks, seg.mask, strict=True))
        outlined = masks.any(axis=(1, 2))
        scorer = FoldScorer(seg)
        firm = scorer.masks(dataclasses.replace(post, edge_probability=0.0), gated).any(axis=(1, 2))
        # a slice whose own outline the largest region set aside keeps that flag instead
        own = scorer.masks(PostProcessing(0.5, 40, False, True), gated).any(axis=(1, 2))
        faint_tumour += int(np.sum(outlined & ~firm & ~own & gate.label))
        beside = np.zeros(len(masks), bool)
        for p in range(len(seg.patient_ids)):
            rows = np.flatnonzero(seg.patient == p)
            beside[rows[sorted(past_tumour_ends(outlined[rows]))]] = True
        flagged = (gated & ~outlined & (gate.prob >= 0.5)) | beside
        clear += int(np.sum(~gate.label))
        spared += int(np.sum(~gate.label & ~outlined & ~flagged))
    assert result["review_queue"]["wrong_slices"] == wrong > 0
    # the faint tumour ends outlined right: flagged, holding tumour, and not wrong
    faint = result["review_queue"]["reasons"]["faint_edge"]
    assert faint["with_tumour"] == faint_tumour > faint["wrong"]
    assert result["pooled"]["specificity_outlined_or_flagged"] == pytest.approx(spared / clear)
    assert 0 < spared < clear
    ungated = result["review_queue_ungated"]
    assert ungated["patients"] == 12 and ungated["reasons"]["classifier_only"]["slices"] == 0
