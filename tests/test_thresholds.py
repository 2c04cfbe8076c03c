"""Thresholds and Spacing: frozen, validated value types with one JSON vocabulary."""

from __future__ import annotations

import dataclasses

import pytest

from brainseg_core.spacing import Spacing
from brainseg_core.thresholds import RegionRule, Thresholds


def test_thresholds_round_trip_in_the_card_vocabulary() -> None:
    t = Thresholds(gate=0.3, gate_reach=1, mask=0.6, min_area_px=12, largest_component=True, edge=0.05)
    data = t.to_json()
    assert data == {
        "tumour_probability": 0.3,
        "gate_reach_slices": 1,
        "mask_probability": 0.6,
        "min_area_px": 12,
        "largest_component": True,
        "region_rule": "largest",
        "edge_probability": 0.05,
    }
    assert Thresholds.from_json(data) == t
    assert Thresholds.from_json({}) == Thresholds()
    confident = Thresholds.from_json({**data, "region_rule": "most_confident"})
    assert confident.region_rule is RegionRule.MOST_CONFIDENT and confident != t
    assert confident.describe_region() == "most confident 3-D region only"
    assert t.describe_region() == "largest 3-D region only"
    assert t.replace(largest_component=False).describe_region() == ""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gate": -0.01}, "classifier gate"),
        ({"mask": 1.01}, "mask threshold"),
        ({"gate": True}, "classifier gate"),
        ({"min_area_px": -1}, "min_area_px"),
        ({"min_area_px": 3.0}, "min_area_px"),
        ({"largest_component": 1}, "largest_component"),
        ({"gate_reach": -1}, "gate_reach"),
        ({"gate_reach": 4}, "gate_reach"),
        ({"gate_reach": 1.0}, "gate_reach"),
        ({"edge": 1.5}, "faint-edge"),
        ({"region_rule": "biggest"}, "region rule must be one of 'largest', 'most_confident'"),
    ],
)
def test_thresholds_refuse_invalid_values_naming_the_field(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds(**changes)
    with pytest.raises(ValueError, match=message):
        Thresholds().replace(**changes)


def test_thresholds_are_frozen_and_ints_become_floats() -> None:
    t = Thresholds(gate=1, mask=0)
    assert isinstance(t.gate, float) and isinstance(t.mask, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.gate = 0.2  # type: ignore[misc]


def test_spacing_areas_and_volumes() -> None:
    s = Spacing(0.5, 0.8, 2.0)
    assert s.pixel_mm == (0.5, 0.8)
    assert s.area_mm2(10) == pytest.approx(4.0)
    assert s.voxel_ml == pytest.approx(0.5 * 0.8 * 2.0 / 1000)
    assert s.volume_ml(1000) == pytest.approx(0.8)
    flat = Spacing(0.5, 0.8)
    assert flat.voxel_ml is None and flat.volume_ml(10) is None
    assert Spacing.from_sequence(s.to_list()) == s
    assert Spacing.from_sequence([0.5, 0.8]) == flat
    assert Spacing.from_sequence(None) is None


@pytest.mark.parametrize("values", [(0, 1), (1, -1), (1, 1, 0), (float("nan"), 1), (1, float("inf"))])
def test_spacing_refuses_non_positive_or_non_finite_sizes(values) -> None:
    with pytest.raises(ValueError, match="millimetres"):
        Spacing(*values)


def test_spacing_refuses_a_wrong_length() -> None:
    with pytest.raises(ValueError, match="row, col"):
        Spacing.from_sequence([1.0])


def test_the_gate_in_words_names_its_reach() -> None:
    assert Thresholds(gate=0.1320).describe_gate() == "0.132"
    assert Thresholds(gate=0.1320, gate_reach=1).describe_gate() == "0.132 (or an adjacent slice)"
    assert Thresholds(gate=0.5186, gate_reach=2).describe_gate() == "0.519 (or a slice up to 2 away)"
    assert Thresholds(gate=0.5186, gate_reach=2).describe_gate("g") == "0.5186 (or a slice up to 2 away)"
