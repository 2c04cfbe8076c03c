"""Cross-validated gate: its threshold, what it saves and what it costs the reader, end to end.

A K-fold classifier run on the same folds as a segmenter's (``brainseg-train classifier DATA
--arch resunet_gate --folds K --fold i --keep last --init-from <fold i's segmenter>``) leaves in each
fold folder an ``out_of_fold.npz`` of slice probabilities
(:func:`brainseg_core.training.validation.save_gate_out_of_fold`) that lines up slice by slice with
the segmenter's file of that fold.

:func:`gated_cross_validation` chooses each fold's gate on the *other* folds' held-out slices: for
each reach in :data:`GATE_REACHES` (a slice also passes when a slice within that many slices of it
does; see :attr:`brainseg_core.results.SliceResult.gate_score`) the highest threshold that keeps
``target_recall`` of their tumour slices, and of those the reach that passes the fewest slices
without tumour (the smaller reach on a tie). It applies that choice to
the fold with the segmenter's post-processing (slices below the gate get empty masks, as in the
pipeline) and pools the patients. Besides the segmentation metrics of
:mod:`brainseg_core.crossval` it reports, per fold and pooled:

- the gate's own slice recall, specificity and ROC AUC;
- ``decoded_share``: the share of slices the gate passes, i.e. on which the segmenter's decoder
  runs (the encoder gate's cost per slice is the encoder plus this share of the decoder);
- ``review_queue``: what the viewer's review queue (:func:`brainseg_core.review.review_reasons`)
  flags over the held-out patients under each fold's gate and the post-processing, reason by
  reason: how many slices, how many of them hold tumour, and how many the final mask gets wrong
  (:func:`brainseg_core.review.disagrees`: tumour missed, a false outline, or slice Dice < 0.5),
  so a reader knows what each flag is worth;
- ``recall_outlined_or_flagged``: tumour slices that end with an outline *or* with one of two
  review flags that need no outline: the gate is confident (``>= REVIEW_CONFIDENCE``) over an
  empty mask, or the slice lies just past an outline (a tumour end or a gap);
  ``specificity_outlined_or_flagged`` its counterpart, the tumour-free slices that end with
  neither. The viewer flags more (the review queue above counts every reason), so these two are
  the cheap vectorised view, and the queue's own ``tumour_shown`` / ``clear_spared`` say what the
  reader is shown.

The threshold chosen on all folds together is the one a gate's card ships; its honest estimate is
the nested, pooled result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainseg_core.crossval import (
    FoldPredictions,
    FoldScorer,
    PostProcessing,
    pct,
    summary_metrics,
)
from brainseg_core.errors import DataError
from brainseg_core.metrics import calibration, roc_auc
from brainseg_core.npz import NPZ_READ_ERRORS
from brainseg_core.results import REVIEW_CONFIDENCE, neighbour_probabilities
from brainseg_core.review import DEFAULT_CRITERIA, ReviewCriteria, ReviewReason
from brainseg_core.thresholds import MAX_GATE_REACH, Thresholds

__all__ = [
    "GATE_REACHES",
    "GATE_TARGET_RECALL",
    "GateFold",
    "apply_gate_to_card",
    "format_gate_report",
    "gated_cross_validation",
    "load_gate_fold",
    "review_queue_yield",
]

#: Share of tumour slices the gate must pass on the folds that choose its threshold. The gate only
#: decides where the decoder runs (the outline decides what the reader sees), so it errs far on
#: the side of passing slices.
GATE_TARGET_RECALL = 0.99
#: The gate reaches (slices on either side) the cross-validation chooses among.
GATE_REACHES = (0, 1, 2)
_KEYS = ("slice_prob", "label", "patient", "patient_ids")


@dataclass
class GateFold:
    """One fold's held-out gate probabilities.

    Attributes:
        name: the fold's name (its folder).
        prob: ``(N,)`` tumour probability of each slice.
        label: ``(N,)`` bool, the slice's true mask is not empty.
        patient: ``(N,)`` index into ``patient_ids``.
        patient_ids: the held-out patients.
    """

    name: str
    prob: np.ndarray
    label: np.ndarray
    patient: np.ndarray
    patient_ids: list[str]

    def gate_score(self, reach: int) -> np.ndarray:
        """Each slice's gate score for ``reach``: the highest tumour probability of the slice and
        its neighbours within ``reach`` slices of the same patient (the slices are stored in
        volume order, patient by patient)."""
        score = self.prob.copy()
        starts = np.flatnonzero(np.r_[True, self.patient[1:] != self.patient[:-1]])
        for a, b in zip(starts, [*starts[1:], len(score)], strict=True):
            score[a:b] = np.maximum(score[a:b], neighbour_probabilities(self.prob[a:b], reach))
        return score


def load_gate_fold(path: str | Path) -> GateFold:
    """Read a classifier fold's ``out_of_fold.npz`` (plain arrays only).

    Raises:
        DataError: naming the file when it cannot be read, is a segmenter's, or does not fit together.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "slice_prob" not in z.files and "prob" in z.files:
                raise DataError(path, "holds a segmenter's predictions; pass the gate's fold folders")
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise DataError(path, f"not a gate out-of-fold file: missing {', '.join(missing)}")
            arrays = {k: z[k] for k in _KEYS}
    except NPZ_READ_ERRORS as exc:
        raise DataError(path, f"cannot read out-of-fold gate probabilities: {exc}") from exc
    prob = arrays["slice_prob"].astype(np.float64)
    n = prob.shape[0]
    if prob.ndim != 1 or arrays["label"].shape != (n,) or arrays["patient"].shape != (n,):
        raise DataError(path, "slice_prob, label and patient must be (N,) arrays of one length")
    return GateFold(
        name=path.parent.name,
        prob=prob,
        label=arrays["label"].astype(bool),
        patient=arrays["patient"].astype(np.int64),
        patient_ids=[str(i) for i in arrays["patient_ids"]],
    )


def _check_pair(seg: FoldPredictions, gate: GateFold) -> None:
    if seg.patient_ids != gate.patient_ids or not np.array_equal(seg.patient, gate.patient):
        raise ValueError(
            f"gate fold {gate.name} does not hold out the same patients and slices as segmenter fold "
            f"{seg.name}: train both with the same --folds, --fold and --seed on the same data"
        )
    if not np.array_equal(seg.mask.any(axis=(1, 2)), gate.label):
        raise ValueError(f"gate fold {gate.name} and segmenter fold {seg.name} disagree on tumour slices")


def _threshold(labels: np.ndarray, probs: np.ndarray, target: float) -> float:
    from brainseg_core.training.validation import choose_classifier_threshold

    return choose_classifier_threshold(labels, probs, target=target)


def _choose(folds: Sequence[GateFold], target: float, reaches: Sequence[int]) -> tuple[int, float]:
    """The (reach, threshold) that keeps ``target`` of ``folds``' tumour slices and passes the
    fewest of their other slices."""
    labels = np.concatenate([g.label for g in folds])
    best: tuple[float, int, float] | None = None
    for reach in reaches:
        scores = np.concatenate([g.gate_score(reach) for g in folds])
        t = _threshold(labels, scores, target)
        specificity = float(np.mean(scores[~labels] < t)) if (~labels).any() else 0.0
        if best is None or specificity > best[0]:
            best = (specificity, reach, t)
    assert best is not None
    return best[1], best[2]


def _gated_part(
    scorer: FoldScorer,
    gate: GateFold,
    reach: int,
    threshold: float,
    post: PostProcessing,
) -> dict[str, Any]:
    gated = gate.gate_score(reach) >= threshold
    # a slice the gate stops has no outline, so it ranks last
    part = scorer.score_masks(
        scorer.masks(post, gated), np.where(gated, scorer.slice_score(post.flip_tta), 0.0)
    )
    part["gated"] = gated
    # what the review queue flags without an outline: a confident gate over an empty mask, and the
    # empty slices just past an outline (tumour ends and gaps)
    part["flagged"] = (gated & ~part["slice_pred"] & (gate.prob >= REVIEW_CONFIDENCE)) | part["slice_beside"]
    part["gate_prob"] = gate.prob
    return part


def _gate_metrics(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    m = summary_metrics(parts)
    y = np.concatenate([p["slice_true"] for p in parts])
    gated = np.concatenate([p["gated"] for p in parts])
    shown = np.concatenate([p["slice_pred"] | p["flagged"] for p in parts])
    prob = np.concatenate([p["gate_prob"] for p in parts])
    m.update(
        {
            "gate_recall": float(np.mean(gated[y])) if y.any() else float("nan"),
            "gate_specificity": float(np.mean(~gated[~y])) if (~y).any() else float("nan"),
            "gate_roc_auc": roc_auc(y, prob),
            "decoded_share": float(np.mean(gated)),
            "flagged_slices": int(np.sum(np.concatenate([p["flagged"] for p in parts]))),
            "recall_outlined_or_flagged": float(np.mean(shown[y])) if y.any() else float("nan"),
            "specificity_outlined_or_flagged": float(np.mean(~shown[~y])) if (~y).any() else float("nan"),
        }
    )
    return m


def review_queue_yield(
    seg: FoldPredictions,
    gate: GateFold | None,
    thresholds: Thresholds,
    *,
    flip_tta: bool = False,
    criteria: ReviewCriteria = DEFAULT_CRITERIA,
) -> dict[str, Any]:
    """What the review queue flags on one fold's held-out patients, reason by reason.

    Each patient is run through the pipeline's own threshold, whole-volume and review steps
    (:func:`~brainseg_core.results.rethreshold`, :func:`~brainseg_core.review.review_reasons`)
    from its out-of-fold probabilities, as the viewer would show it without ground truth: the
    slices the gate stops get no outline, a confident gate over an empty mask is flagged from
    :data:`~brainseg_core.results.REVIEW_CONFIDENCE`, and a slice carries the pipeline's one
    per-slice flag (the largest-region or faint-edge step's replaces the classifier's).

    Args:
        seg: the segmenter's fold; each patient's slices consecutive and in slice order, the
            probabilities at the model's size (``thresholds.min_area_px`` in its pixels).
        gate: the gate's fold (the same slices), or None for the segmenter on every slice
            without a classifier (``--segment-all``: no classifier or near-gate flags).
        thresholds: the gate, reach and post-processing to apply.
        flip_tta: use the flip-averaged mask probabilities.
        criteria: the review limits.

    Returns:
        Counts, summable over folds: ``patients``, ``slices``, ``wrong_slices`` (slices whose
        final mask disagrees with the truth: :func:`~brainseg_core.review.disagrees`),
        ``flagged`` and ``flagged_wrong`` (slices with any reason), ``tumour_slices`` and
        ``tumour_shown`` (those outlined or flagged), ``clear_slices`` and ``clear_spared``
        (tumour-free slices neither outlined nor flagged), and per reason value ``slices``,
        ``with_tumour``, ``wrong`` and ``wrong_only_this`` (wrong slices no other reason flags).

    Raises:
        ValueError: when ``gate`` does not line up with ``seg``.
    """
    from brainseg_core.model_ref import ModelRef
    from brainseg_core.results import PatientResult, SliceResult, rethreshold
    from brainseg_core.review import disagrees, review_reasons

    if gate is not None:
        _check_pair(seg, gate)
    prob = seg.prob_flip if flip_tta else seg.prob
    reasons = [r for r in ReviewReason if r is not ReviewReason.DISAGREES_WITH_TRUTH]
    counts = ("patients", "slices", "wrong_slices", "flagged", "flagged_wrong")
    shown_counts = ("tumour_slices", "tumour_shown", "clear_slices", "clear_spared")
    out: dict[str, Any] = dict.fromkeys((*counts, *shown_counts), 0)
    out["reasons"] = {
        r.value: {"slices": 0, "with_tumour": 0, "wrong": 0, "wrong_only_this": 0} for r in reasons
    }
    segmenter, classifier = (
        ModelRef("segmenter fold", ""),
        None if gate is None else ModelRef("gate fold", ""),
    )
    for p, pid in enumerate(seg.patient_ids):
        rows = np.flatnonzero(seg.patient == p)
        if not rows.size:
            continue
        empty = np.zeros(seg.mask.shape[1:], bool)
        slices = [
            SliceResult(
                k,
                1.0 if gate is None else float(gate.prob[i]),
                True,
                prob[i].astype(np.float32) / 255.0,
                empty,
                0,
                None,
            )
            for k, i in enumerate(rows)
        ]
        raw = PatientResult(pid, slices, Thresholds(), segmenter, classifier, "cpu")
        shown = rethreshold(raw, thresholds)
        out["patients"] += 1
        for s, why, i in zip(shown.slices, review_reasons(shown, criteria=criteria), rows, strict=True):
            truth = seg.mask[i]
            has_tumour = bool(truth.any())
            wrong = disagrees(s.mask, truth, criteria.min_dice)
            seen = bool(why) or s.area_px > 0
            out["slices"] += 1
            out["wrong_slices"] += wrong
            out["flagged"] += bool(why)
            out["flagged_wrong"] += bool(why) and wrong
            out["tumour_slices" if has_tumour else "clear_slices"] += 1
            out["tumour_shown"] += has_tumour and seen
            out["clear_spared"] += not has_tumour and not seen
            for r in why:
                c = out["reasons"][r.value]
                c["slices"] += 1
                c["with_tumour"] += has_tumour
                c["wrong"] += wrong
                c["wrong_only_this"] += wrong and len(why) == 1
    return out


def _add_counts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The sum of two :func:`review_queue_yield` counts."""
    return {k: _add_counts(v, b[k]) if isinstance(v, dict) else v + b[k] for k, v in a.items()}


def gated_cross_validation(
    seg_folds: Sequence[FoldPredictions],
    gate_folds: Sequence[GateFold],
    *,
    post: PostProcessing | Mapping[str, PostProcessing] | None = None,
    target_recall: float = GATE_TARGET_RECALL,
    reaches: Sequence[int] = GATE_REACHES,
) -> dict[str, Any]:
    """Nested cross-validated end-to-end metrics of a gate in front of a segmenter.

    Args:
        seg_folds: the segmenter's folds (:func:`brainseg_core.crossval.load_fold`).
        gate_folds: the gate's folds, the same patients and slices in the same order.
        post: the segmenter's post-processing: one for every fold (a card's; default:
            ``PostProcessing()``), or each fold's by fold name, e.g. the choice
            :func:`~brainseg_core.crossval.cross_validate` made for it on the other folds (then
            every number here is nested: a choice made on all folds has seen the fold it scores).
        target_recall: the gate recall each threshold keeps on the folds that choose it.
        reaches: the gate reaches to choose among (``(0,)``: each slice's own probability only).

    Returns:
        A JSON-ready dict: ``per_fold`` (reach and threshold chosen on the other folds,
        metrics), ``pooled`` (nested, honest), ``ungated`` (the segmenter on every slice, for
        comparison), ``review_queue`` and ``review_queue_ungated`` (:func:`review_queue_yield`
        summed over the folds, under each fold's gate, and without a gate), ``reach`` and
        ``threshold`` (chosen on all folds: what a card ships), ``calibration`` (of the slices'
        own probabilities) and the settings.

    Raises:
        ValueError: with fewer than 2 folds, unequal fold lists, folds that do not line up, a fold
            without its post-processing, or no reach (or one outside ``[0, MAX_GATE_REACH]``) to
            choose among.
    """
    if not reaches or any(not 0 <= r <= MAX_GATE_REACH for r in reaches):
        raise ValueError(f"reaches must be gate reaches from 0 to {MAX_GATE_REACH}, got {list(reaches)}")
    if len(seg_folds) < 2 or len(seg_folds) != len(gate_folds):
        raise ValueError(
            f"need the same number (>= 2) of segmenter and gate folds, got {len(seg_folds)} and "
            f"{len(gate_folds)}"
        )
    seg_by_name = {f.name: f for f in seg_folds}
    if set(seg_by_name) != {g.name for g in gate_folds}:
        raise ValueError(
            f"fold names differ: segmenter {sorted(seg_by_name)}, gate {sorted(g.name for g in gate_folds)}"
        )
    by_fold = dict(post) if isinstance(post, Mapping) else None
    if by_fold is not None and (missing := sorted(set(seg_by_name) - set(by_fold))):
        raise ValueError(f"no post-processing given for fold(s) {missing}")
    every_fold = post if isinstance(post, PostProcessing) else PostProcessing()

    def post_of(fold: str) -> PostProcessing:
        return every_fold if by_fold is None else by_fold[fold]

    pairs = [(seg_by_name[g.name], g) for g in gate_folds]
    for seg, gate in pairs:
        _check_pair(seg, gate)
    scorers = [FoldScorer(seg) for seg, _ in pairs]
    per_fold, parts, queue, ungated_queue = [], [], None, None
    for k, (scorer, (seg, gate)) in enumerate(zip(scorers, pairs, strict=True)):
        reach, t = _choose([g for j, (_, g) in enumerate(pairs) if j != k], target_recall, reaches)
        post = post_of(gate.name)
        part = _gated_part(scorer, gate, reach, t, post)
        parts.append(part)
        per_fold.append({"fold": gate.name, "threshold": t, "reach": reach, "metrics": _gate_metrics([part])})
        shown = Thresholds(
            gate=t,
            mask=post.mask_probability,
            min_area_px=post.min_area_px,
            largest_component=post.largest_component,
            region_rule=post.region_rule,
            gate_reach=reach,
            edge=post.edge_probability,
        )
        counts = review_queue_yield(seg, gate, shown, flip_tta=post.flip_tta)
        queue = counts if queue is None else _add_counts(queue, counts)
        every = dataclasses.replace(shown, gate=0.0, gate_reach=0)
        counts = review_queue_yield(seg, None, every, flip_tta=post.flip_tta)
        ungated_queue = counts if ungated_queue is None else _add_counts(ungated_queue, counts)
    all_reach, all_t = _choose([g for _, g in pairs], target_recall, reaches)
    described = {post_of(g.name).describe() for _, g in pairs}
    return {
        "folds": len(pairs),
        "post_processing": described.pop() if len(described) == 1 else "each fold's own choice",
        "target_recall": target_recall,
        "reaches": list(reaches),
        "review_probability": REVIEW_CONFIDENCE,
        "per_fold": per_fold,
        "pooled": _gate_metrics(parts),
        "review_queue": queue,
        "review_queue_ungated": ungated_queue,
        "ungated": summary_metrics([s.score(post_of(s.fold.name)) for s in scorers]),
        "threshold": all_t,
        "reach": all_reach,
        "calibration": calibration(
            np.concatenate([g.label for _, g in pairs]), np.concatenate([g.prob for _, g in pairs])
        ),
    }


def format_gate_report(result: dict[str, Any]) -> str:
    """The text table ``brainseg-eval --cv SEG --gate-cv GATE`` prints."""

    head = (
        f"{'':<26} {'reach':>5} {'thr':>6} {'Dice mean':>9} {'median':>7} {'min':>6} {'<0.5':>5} "
        f"{'recall':>7} {'+flag':>6} {'spec':>6} {'+flag':>6} {'gate rec':>8} {'gate spec':>9} "
        f"{'gate AUC':>8} {'decoded':>7}"
    )

    def row(label: str, reach: int | None, thr: float | None, m: dict[str, Any]) -> str:
        gate = m.get("gate_recall")
        return (
            f"{label:<26} {'' if reach is None else reach:>5} {'' if thr is None else f'{thr:.4f}':>6} "
            f"{pct(m['dice_patient_mean']):>9} "
            f"{pct(m['dice_patient_median']):>7} {pct(m['dice_patient_min']):>6} "
            f"{len(m['patients_below_0.5']):>5} {pct(m['slice_recall']):>7} "
            f"{pct(m.get('recall_outlined_or_flagged', m['recall_outlined_or_beside'])):>6} "
            f"{pct(m['slice_specificity']):>6} "
            f"{pct(m.get('specificity_outlined_or_flagged', m['specificity_outlined_or_beside'])):>6} "
            + (
                f"{pct(gate):>8} {pct(m['gate_specificity']):>9} {m['gate_roc_auc']:>8.3f} "
                f"{pct(m['decoded_share']):>7}"
                if gate is not None
                else f"{'':>8} {'':>9} {'':>8} {'100.0':>7}"
            )
        )

    lines = [
        f"Gate in front of the segmenter ({result['post_processing']}), {result['folds']} folds: each fold's "
        f"gate keeps {100 * result['target_recall']:.0f}% of the other folds' tumour slices",
        "(percent; recall = tumour slices outlined, spec = tumour-free slices not outlined; +flag = "
        f"counting a review flag as outlined: gate p >= {result['review_probability']:g} over an empty "
        "mask, or just past an outline; decoded = slices the decoder runs on)",
        head,
        "-" * len(head),
    ]
    for f in result["per_fold"]:
        lines.append(row(f["fold"], f["reach"], f["threshold"], f["metrics"]))
    lines.append(row("pooled (nested, honest)", None, None, result["pooled"]))
    lines.append(row("no gate: every slice", None, None, result["ungated"]))
    lines += [
        "",
        f"Chosen on all folds (a card ships it): threshold {result['threshold']:.4f}, reach "
        f"{result['reach']} slice(s) (reach: a slice also passes when one within that many slices does; "
        f"chosen among {', '.join(map(str, result['reaches']))})",
    ]
    queue = result.get("review_queue")
    if queue and queue["patients"]:
        lines += ["", *format_review_queue(queue, result.get("review_queue_ungated"))]
    cal = result.get("calibration")
    if cal:
        lines += [
            "",
            f"Calibration of the gate's out-of-fold tumour probability ({cal['n']} slices): Brier "
            f"{cal['brier']:.4f}, expected calibration error {cal['ece']:.4f}",
            f"{'probability':>13} {'slices':>7} {'mean probability':>16} {'tumour slices':>13}",
        ]
        lines += [
            f"{b['low']:>6.3f}-{b['high']:<6.3f} {b['n']:>7} {b['mean_probability']:>16.4f} "
            f"{b['observed']:>13.4f}"
            for b in cal["bins"]
        ]
    return "\n".join(lines)


def format_review_queue(queue: dict[str, Any], ungated: dict[str, Any] | None = None) -> list[str]:
    """The review-queue table of :func:`format_gate_report`.

    Args:
        queue: :func:`review_queue_yield` counts under the gate.
        ungated: the same without a gate (the segmenter on every slice), or None.

    Returns:
        The table's lines.
    """
    n = queue["patients"]
    head = (
        f"{'reason':<24} {'slices':>7} {'per patient':>11} {'tumour':>7} {'wrong':>6} {'wrong %':>7} "
        f"{'only it':>7}"
    )
    lines = [
        "Review queue (each fold's gate above, no ground truth shown; wrong = the slice's final mask misses "
        "tumour, outlines none there or has slice Dice < 0.5; only it = wrong slices no other reason flags)",
        head,
        "-" * len(head),
    ]

    def row(label: str, slices: int, tumour: int | str, wrong: int, only: int | str) -> str:
        share = f"{100 * wrong / slices:.0f}" if slices else "-"
        return f"{label:<24} {slices:>7} {slices / n:>11.2f} {tumour:>7} {wrong:>6} {share:>7} {only:>7}"

    for reason, c in queue["reasons"].items():
        if c["slices"]:
            lines.append(row(reason, c["slices"], c["with_tumour"], c["wrong"], c["wrong_only_this"]))
    lines.append(row("any reason", queue["flagged"], "", queue["flagged_wrong"], ""))
    lines.append(
        f"Slices the final masks get wrong: {queue['wrong_slices']} of {queue['slices']}, "
        f"{queue['flagged_wrong']} of them flagged "
        f"({pct(queue['flagged_wrong'] / max(queue['wrong_slices'], 1))} %)"
    )
    for label, q in (("with the gate", queue), ("without a gate (every slice segmented)", ungated)):
        if q and q["tumour_slices"] and q["clear_slices"]:
            lines.append(
                f"Outlined or in the queue, {label}: tumour slices "
                f"{pct(q['tumour_shown'] / q['tumour_slices'])} %, tumour-free slices neither "
                f"{pct(q['clear_spared'] / q['clear_slices'])} % ({q['flagged'] / q['patients']:.2f} "
                "flagged per patient)"
            )
    return lines


def apply_gate_to_card(
    result: dict[str, Any], card_path: str | Path, *, source: str, folds: Sequence[dict[str, Any]] = ()
) -> Path:
    """Write a gate's cross-validated threshold and honest metrics into its classifier card.

    The card's ``thresholds["tumour_probability"]`` and ``thresholds["gate_reach_slices"]`` become
    the threshold and reach chosen on all folds;
    ``metrics`` becomes the nested, pooled end-to-end and gate metrics, and
    ``training.cross_validation`` records where they came from. The weights are untouched.

    Args:
        result: what :func:`gated_cross_validation` returned.
        card_path: the gate's bundle (card, weights file or folder).
        source: where the gate's folds came from.
        folds: the fold models (:func:`brainseg_core.crossval.fold_models`).

    Returns:
        The card's path.

    Raises:
        ValueError: if the bundle is not a classifier.
        BundleError: if the card cannot be read.
    """
    from brainseg_core.bundle import update_card
    from brainseg_core.jsonsafe import json_safe
    from brainseg_core.model_card import read_card, resolve_card_path

    path = resolve_card_path(card_path)
    card = read_card(path)
    if card.kind != "classifier":
        raise ValueError(f"{path}: is a {card.kind}; a gate's threshold belongs to a classifier")
    pooled = result["pooled"]
    metrics = {
        "scope": (
            f"{result['folds']}-fold cross-validation by patient: out-of-fold slice probabilities of gate "
            "models trained with this recipe on each fold's segmenter, each fold's threshold chosen on "
            f"the other folds (gate recall >= {result['target_recall']:g}, reach among "
            f"{result.get('reaches', [0])}), end to end with the "
            f"segmenter's held-out masks ({result['post_processing']})"
        ),
        **pooled,
        "per_fold_threshold": {f["fold"]: f["threshold"] for f in result["per_fold"]},
        "per_fold_reach": {f["fold"]: f["reach"] for f in result["per_fold"]},
    }
    training = {
        **card.training,
        "cross_validation": {
            "source": source,
            "folds": result["folds"],
            "target_recall": result["target_recall"],
            "threshold_chosen_on_all_folds": result["threshold"],
            "reach_chosen_on_all_folds": result["reach"],
            "fold_models": list(folds),
        },
    }
    update_card(
        path,
        thresholds={
            **card.thresholds,
            "tumour_probability": float(result["threshold"]),
            "gate_reach_slices": int(result["reach"]),
        },
        metrics=json_safe(metrics),
        training=json_safe(training),
    )
    return path
