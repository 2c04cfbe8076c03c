"""Thorough mode: a segmenter's card names an ensemble, the pipeline averages its members, and the
ensemble's own thresholds and provenance travel with the results (brainseg_core.thorough)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brainseg_core.bundle import ModelBundle, load_bundle, update_card
from brainseg_core.errors import ThoroughModeError
from brainseg_core.inference import Pipeline
from brainseg_core.model_card import read_card
from brainseg_core.model_ref import ModelRef
from brainseg_core.thorough import run_mode, thorough_mode
from brainseg_core.thresholds import RegionRule, Thresholds
from tests.support import FakeClassifier, make_volume, save_tiny_bundle

OTHER = {"name": "seg-b", "weights_sha256": "b" * 64}
ENSEMBLE_THRESHOLDS = {
    "mask_probability": 0.3,
    "min_area_px": 4,
    "largest_component": True,
    "region_rule": "most_confident",
}


@pytest.fixture
def pair(tmp_path: Path) -> tuple[ModelBundle, ModelBundle]:
    """A segmenter whose card names a second one, beside it, as its thorough ensemble."""
    first = save_tiny_bundle(tmp_path / "models" / "seg-a.json", "segmenter", seed=1, name="seg-a")
    second = save_tiny_bundle(tmp_path / "models" / "seg-b.json", "segmenter", seed=2, name="seg-b")
    member = read_card(second)
    update_card(
        first,
        thorough={
            "ensemble": [{"name": "seg-b", "weights_sha256": member.weights_sha256}],
            "flip_tta": False,
            "thresholds": ENSEMBLE_THRESHOLDS,
            "metrics": {"dice_patient_mean": 0.9},
        },
    )
    return load_bundle(first), load_bundle(second)


def _probabilities(pipeline: Pipeline, volume) -> np.ndarray:
    result = pipeline.analyse(volume)
    return np.stack([s.mask_probability for s in result.slices if s.mask_probability is not None])


@pytest.mark.parametrize("gated", [False, True])
def test_the_ensemble_averages_its_members_probabilities(pair, cls_bundle, gated: bool) -> None:
    seg, member = pair
    volume = make_volume(n=5, size=32, seed=4)
    cls = None
    if gated:  # the gated path runs the segmenter only on slices 1, 3 and 4
        cls_bundle.model = FakeClassifier(volume, [0.1, 0.9, 0.2, 0.8, 0.7], 32)
        cls = cls_bundle
    every = Thresholds(gate=0.5 if gated else 0.0)
    alone = [
        _probabilities(Pipeline(cls, b, thresholds=every, device="cpu", precision="fp32"), volume)
        for b in (seg, member)
    ]
    assert not np.allclose(alone[0], alone[1], atol=1e-3)  # two different networks
    both = Pipeline(cls, seg, thresholds=every, device="cpu", precision="fp32", ensemble=[member])
    result = both.analyse(volume)
    np.testing.assert_allclose(_probabilities(both, volume), (alone[0] + alone[1]) / 2, atol=1e-5)
    assert [s.segmented for s in result.slices] == ([False, True, False, True, True] if gated else [True] * 5)
    assert result.ensemble == (member.card.ref,) and not result.flip_tta  # the result says what ran
    assert result.models_json()["segmenter_ensemble"] == [member.card.ref.to_json()]


def test_thorough_mode_loads_the_named_member_and_takes_the_ensemble_thresholds(pair) -> None:
    seg, member = pair
    mode = thorough_mode(seg)
    assert [m.card.ref for m in mode.ensemble] == [member.card.ref] and not mode.flip_tta
    assert mode.describe() == "2-model ensemble"
    pipeline = Pipeline(None, seg, device="cpu", ensemble=mode.ensemble)
    t = pipeline.thresholds
    assert (t.mask, t.min_area_px, t.largest_component, t.region_rule) == (
        0.3,
        4,
        True,
        RegionRule.MOST_CONFIDENT,
    )
    plain = Pipeline(None, seg, device="cpu").thresholds  # alone: the segmenter's own card
    assert (plain.mask, plain.largest_component) == (0.5, False)
    assert run_mode(seg.card, True) == (False, (member.card.ref,))
    assert run_mode(seg.card, False) == (False, ())


def test_a_segmenter_without_an_ensemble_runs_flip_tta_in_thorough_mode(pair) -> None:
    _, member = pair
    mode = thorough_mode(member)
    assert mode.ensemble == () and mode.flip_tta and mode.describe() == "flip TTA"
    assert run_mode(member.card, True) == (True, ())
    assert Thresholds.from_cards(None, member.card, thorough=True) == Thresholds.from_cards(None, member.card)


def test_a_missing_or_replaced_member_is_refused_naming_the_file(pair, tmp_path: Path) -> None:
    seg, member = pair
    weights = member.weights_path.read_bytes()
    member.path.rename(tmp_path / "away.json")
    with pytest.raises(ThoroughModeError, match="seg-b, which is not beside it") as info:
        thorough_mode(seg)
    assert str(seg.path) in str(info.value)
    (tmp_path / "away.json").rename(member.path)
    save_tiny_bundle(member.path, "segmenter", seed=7, name="seg-b")  # other weights, same name
    with pytest.raises(ThoroughModeError, match="cross-validated with other weights") as info:
        thorough_mode(seg)
    assert str(member.path) in str(info.value)
    assert member.weights_path.read_bytes() != weights
    member.weights_path.write_bytes(weights[:-8])  # damaged: the load's own error, as a thorough one
    with pytest.raises(ThoroughModeError, match="run without thorough mode") as info:
        thorough_mode(seg)
    assert str(member.path.parent) in str(info.value)


def test_an_ensemble_member_must_read_the_same_input(pair, tmp_path: Path) -> None:
    seg, _ = pair
    other = load_bundle(save_tiny_bundle(tmp_path / "big.json", "segmenter", input_size=64, name="big"))
    with pytest.raises(ThoroughModeError, match="must read the same input") as info:
        Pipeline(None, seg, device="cpu", ensemble=[other])
    assert str(other.path) in str(info.value)
    cls = load_bundle(save_tiny_bundle(tmp_path / "cls.json", "classifier"))
    with pytest.raises(ThoroughModeError, match="given as a member of the segmenter's ensemble"):
        Pipeline(None, seg, device="cpu", ensemble=[cls])


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"ensemble": [{"name": "x"}]}, "thorough.ensemble"),
        ({"ensemble": [{"name": "../x", "weights_sha256": "a" * 64}]}, "thorough.ensemble"),
        ({"ensemble": []}, "non-empty"),
        ({"ensemble": [OTHER, OTHER]}, "each once"),
        ({"ensemble": [{"name": "seg-a", "weights_sha256": "a" * 64}]}, "other segmenters than 'seg-a'"),
        ({"ensemble": [OTHER], "flip_tta": "yes"}, "thorough.flip_tta"),
        (
            {"ensemble": [OTHER], "thresholds": {"mask_probability": 2}},
            "thorough.thresholds.mask_probability",
        ),
        ({"ensemble": [OTHER], "thresholds": {"region_rule": "widest"}}, "thorough.thresholds.region_rule"),
    ],
)
def test_the_card_checks_its_thorough_section(pair, section, message) -> None:
    seg, _ = pair
    with pytest.raises(ValueError, match=message):
        update_card(seg.path, thorough=section)


def test_the_ensemble_with_flip_tta_averages_every_member_with_its_mirror(pair) -> None:
    import torch

    from brainseg_core.preprocessing import preprocess_volume

    seg, member = pair
    volume = make_volume(n=3, size=32, seed=6)
    result = Pipeline(None, seg, device="cpu", precision="fp32", flip_tta=True, ensemble=[member]).analyse(
        volume
    )
    x = preprocess_volume(volume.images, size=32)
    with torch.no_grad():
        each = [
            (torch.sigmoid(b.model(x)) + torch.sigmoid(b.model(x.flip(-1))).flip(-1)) / 2
            for b in (seg, member)
        ]
    expected = ((each[0] + each[1]) / 2)[:, 0].numpy()
    got = np.stack([s.mask_probability for s in result.slices])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert result.flip_tta and result.ensemble == (member.card.ref,)


def test_slices_are_not_filled_in_by_a_pipeline_of_another_mode(pair) -> None:
    seg, member = pair
    volume = make_volume(n=3, size=32)
    thorough = Pipeline(None, seg, device="cpu", ensemble=[member])
    result = thorough.analyse(volume)
    with pytest.raises(ValueError, match="another mode"):
        Pipeline(None, seg, device="cpu").segment_slices(volume, result, [0])
    assert thorough.segment_slices(volume, result, [0]).ensemble == (member.card.ref,)


def test_cards_without_an_ensemble_say_nothing_of_it(pair) -> None:
    seg, member = pair
    assert "thorough" not in json.loads(member.path.read_text())
    assert json.loads(seg.path.read_text())["thorough"]["thresholds"] == ENSEMBLE_THRESHOLDS
    classifier = save_tiny_bundle(seg.path.parent / "cls.json", "classifier")
    with pytest.raises(ValueError, match="belongs to a segmenter"):
        update_card(classifier, thorough={"ensemble": []})


def test_a_saved_analysis_is_current_only_for_the_same_ensemble(pair, tmp_path: Path) -> None:
    from brainseg_core.result_store import ResultStore

    seg, member = pair
    volume = make_volume(n=3, size=32)
    result = Pipeline(None, seg, device="cpu", ensemble=[member]).analyse(volume)
    store = ResultStore(tmp_path / "store")
    store.save(volume, result)
    load = store.load
    assert load(volume, segmenter=seg.card.ref, classifier=None, ensemble=(member.card.ref,)).current
    assert not load(volume, segmenter=seg.card.ref, classifier=None).current  # run alone now
    other = (ModelRef("seg-b", "0" * 64),)
    assert not load(volume, segmenter=seg.card.ref, classifier=None, ensemble=other).current
    assert load(
        volume, segmenter=seg.card.ref, classifier=None, ensemble=(member.card.ref,)
    ).result.ensemble == (member.card.ref,)
