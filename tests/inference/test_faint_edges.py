"""Faint edges: a tumour's faint first and last slices, outlined below the mask threshold."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg_core.inference import PatientResult, SliceResult, rethreshold
from brainseg_core.model_ref import ModelRef
from brainseg_core.results import extend_faint_edges
from brainseg_core.review import ReviewReason, review_reasons
from brainseg_core.thresholds import Thresholds

SIZE = 16


def _volume() -> np.ndarray:
    """Five slices: a firm tumour on slices 2-3, faint on 1 and 0 (touching it through slice 1),
    a faint blob on slice 4 far from it, and a faint pixel beside the tumour on slice 3."""
    p = np.zeros((5, SIZE, SIZE), np.float32)
    p[2:4, 4:9, 4:9] = 0.9
    p[1, 5:8, 5:8] = 0.12
    p[0, 6:8, 6:8] = 0.07
    p[4, 12:15, 12:15] = 0.2
    p[3, 4, 10] = 0.2
    return p


def test_only_empty_slices_take_the_faint_pixels_that_connect_to_an_outline() -> None:
    p = _volume()
    masks = p >= 0.5
    grown = extend_faint_edges(masks, p, 0.05)
    assert [int(m.sum()) for m in grown] == [4, 9, 25, 25, 0]
    assert np.array_equal(grown[2:4], masks[2:4])  # outlined slices keep their outline
    assert not grown[4].any()  # a faint blob that touches no outline stays out
    assert [int(m.sum()) for m in extend_faint_edges(masks, p, 0.1)] == [0, 9, 25, 25, 0]
    assert extend_faint_edges(masks, p, 0.0) is masks
    assert not extend_faint_edges(np.zeros_like(masks), p, 0.05).any()


def _result(p: np.ndarray, *, segmented: list[bool]) -> PatientResult:
    slices = [
        SliceResult(i, 0.9, seg, p[i], np.zeros((SIZE, SIZE), bool), 0, None)
        for i, seg in enumerate(segmented)
    ]
    return PatientResult("P", slices, Thresholds(), ModelRef("s", "a" * 64), ModelRef("c", "b" * 64), "cpu")


def test_rethreshold_outlines_faint_edges_and_flags_them_for_review() -> None:
    p = _volume()
    raw = _result(p, segmented=[True] * 5)
    plain = rethreshold(raw, Thresholds(gate=0.5, mask=0.5))
    edged = rethreshold(raw, Thresholds(gate=0.5, mask=0.5, largest_component=True, edge=0.05))
    assert [s.area_px for s in plain.slices] == [0, 0, 25, 25, 0]
    assert [s.area_px for s in edged.slices] == [4, 9, 25, 25, 0]
    assert [s.review for s in edged.slices[:2]] == [ReviewReason.FAINT_EDGE] * 2
    assert [s.review for s in edged.slices[2:]] == [None, None, ReviewReason.CLASSIFIER_ONLY]
    assert edged.volume_voxels == 63 and edged.tumour_slices == 4
    reasons = review_reasons(edged)
    assert ReviewReason.FAINT_EDGE in reasons[0] and ReviewReason.FAINT_EDGE in reasons[1]
    assert ReviewReason.FAINT_EDGE.describe().startswith("faint edge of the tumour")
    # back to no edge: the faint slices are empty again (the probabilities were kept)
    assert [s.area_px for s in rethreshold(edged, Thresholds(gate=0.5, mask=0.5)).slices] == [0, 0, 25, 25, 0]


def test_a_slice_the_gate_stopped_is_not_read_for_its_faint_pixels() -> None:
    p = _volume()
    raw = _result(p, segmented=[True] * 5)
    stopped = [s if s.index != 1 else SliceResult(1, 0.1, False, p[1], s.mask, 0, None) for s in raw.slices]
    result = rethreshold(
        PatientResult("P", stopped, raw.thresholds, raw.segmenter, raw.classifier, "cpu"),
        Thresholds(gate=0.5, mask=0.5, edge=0.05),
    )
    # slice 1 is below the gate: no outline, and slice 0 no longer connects through it
    assert [s.area_px for s in result.slices] == [0, 0, 25, 25, 0]


@pytest.mark.parametrize("edge", [-0.1, 1.5])
def test_the_edge_is_a_probability(edge: float) -> None:
    with pytest.raises(ValueError, match="faint-edge"):
        Thresholds(edge=edge)
