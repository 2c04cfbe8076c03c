"""Learning from corrections (brainseg_core.finetune): the split, a tiny fine-tune end to end, the card's
provenance, cancel, adopt and discard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainseg_core.bundle import load_bundle, read_card
from brainseg_core.errors import Cancelled, DataError
from brainseg_core.finetune import (
    RESULT_FILE,
    Comparison,
    FinetuneResult,
    FinetuneSettings,
    Stage,
    adopt,
    discard,
    fine_tune,
    split_corrected,
)
from brainseg_core.registry import active_bundle, user_models_dir
from tests.support import make_patient, save_tiny_bundle

TINY = FinetuneSettings(epochs=1, batch_size=4, device="cpu", max_original_patients=2)


def _patients(root: Path, prefix: str, n: int, seed: int = 0) -> Path:
    for i in range(n):
        pid = f"TCGA_{prefix}_{i:04d}_20000101"
        make_patient(root, pid, n=6, size=32, tumour_slices=(2, 3), seed=seed + i)
    return root


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bundle(tmp_path_factory.mktemp("parent"), "segmenter", input_size=32, seed=0)


@pytest.fixture(scope="module")
def corrections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _patients(tmp_path_factory.mktemp("corrections"), "XX", 4)


def test_split_is_by_patient_reproducible_and_says_when_nothing_is_held_out() -> None:
    ids = [f"p{i}" for i in range(8)]
    train, held, how = split_corrected(ids, 0.25, seed=3)
    assert how is Comparison.HELD_OUT and len(held) == 2 and not set(train) & set(held)
    assert sorted(train + held) == ids
    assert split_corrected(list(reversed(ids)), 0.25, seed=3) == (train, held, how)
    # at least two patients are left to train on, at least one is held out
    assert [len(x) for x in split_corrected(["a", "b", "c"], 0.9)[:2]] == [2, 1]
    assert len(split_corrected(ids, 0.01)[1]) == 1
    # too few patients, or a share of 0: compared on the training patients, and said so
    for few, share in ((["a"], 0.5), (["a", "b"], 0.5), (ids, 0.0)):
        train, compare, how = split_corrected(few, share)
        assert how is Comparison.TRAINING and train == compare == sorted(few)
        assert "NOT held out" in how.label
    with pytest.raises(ValueError, match="share"):
        split_corrected(ids, 1.0)


def test_tiny_fine_tune_end_to_end(parent: Path, corrections: Path, tmp_path: Path) -> None:
    """Held out by patient, mixed with original data (a corrected copy replaces its original), scored,
    provenance in the card, the result file readable, nothing installed."""
    original = _patients(tmp_path / "original", "OO", 3, seed=10)
    make_patient(original, "TCGA_XX_0000_20000101", n=6, size=32, tumour_slices=(1,), seed=99)
    stages: list[Stage] = []
    progress: list[tuple[int, int]] = []
    result = fine_tune(
        parent,
        corrections,
        tmp_path / "ft",
        original_data=original,
        settings=TINY,
        progress=lambda d, t: progress.append((d, t)),
        on_stage=stages.append,
    )
    assert stages == [Stage.PREPARE, Stage.TRAIN, Stage.EVALUATE]
    assert result.comparison is Comparison.HELD_OUT and len(result.held_out) == 1
    assert not set(result.trained_on) & set(result.held_out) and len(result.trained_on) == 3
    assert result.original_patients == 2  # at most 2 of the 3 originals not also corrected
    assert progress[-1][0] == progress[-1][1] and [d for d, _ in progress] == sorted(d for d, _ in progress)

    held = result.held_out[0]
    for scores in (result.current, result.candidate_scores):
        assert list(scores.dice) == [held] and 0.0 <= scores.dice[held] <= 1.0
        assert scores.tumour_slices == 2 and 0 <= scores.found_slices <= 2
    assert result.current.sha256 == read_card(parent).weights_sha256

    card = load_bundle(result.candidate).card  # a loadable bundle, hash verified
    ft = card.training["fine_tune"]
    assert ft["parent"] == {"name": "tiny-seg", "sha256": result.current.sha256, "path": str(parent)}
    assert card.training["init_from"]["sha256"] == result.current.sha256
    assert ft["corrections"] == str(corrections.resolve())
    assert ft["corrected_patients_trained_on"] == result.trained_on and ft["held_out_patients"] == [held]
    assert card.training["patients"]["train"] == 3 + 2  # corrected + original, never the held-out one
    assert card.metrics["dice_patient_mean"] == pytest.approx(result.candidate_scores.dice_mean)
    assert card.metrics["slice_recall"] == result.candidate_scores.slice_recall
    assert "held-out" in card.metrics["scope"]
    assert card.thresholds == read_card(parent).thresholds

    assert FinetuneResult.read(tmp_path / "ft" / RESULT_FILE) == result
    assert not (tmp_path / "ft" / "data").exists()  # the linked training data are gone
    assert not user_models_dir().exists() or not any(user_models_dir().iterdir())


def test_two_patients_are_compared_on_the_training_patients_and_ranked_by_nothing(
    parent: Path, tmp_path: Path
) -> None:
    corr = _patients(tmp_path / "two", "TT", 2)
    result = fine_tune(parent, corr, tmp_path / "ft", settings=TINY)
    assert result.comparison is Comparison.TRAINING and result.held_out == []
    assert result.compared_on == result.trained_on == sorted(p.name for p in corr.iterdir())
    card = read_card(result.candidate)
    assert card.metrics == {}  # optimistic numbers never rank it in a model listing
    assert card.training["fine_tune"]["comparison"] == "training"
    assert "NOT held out" in card.training["fine_tune"]["comparison_label"]


def test_cancel_removes_everything(parent: Path, corrections: Path, tmp_path: Path) -> None:
    steps: list[int] = []
    with pytest.raises(Cancelled):
        fine_tune(
            parent,
            corrections,
            tmp_path / "ft",
            settings=TINY,
            progress=lambda d, t: steps.append(d),
            cancel=lambda: len(steps) >= 1,
        )
    assert steps and not (tmp_path / "ft").exists()


def test_refusals_name_the_file(parent: Path, corrections: Path, tmp_path: Path) -> None:
    cls = save_tiny_bundle(tmp_path / "cls", "classifier", input_size=32)
    with pytest.raises(ValueError, match="needs the segmenter"):
        fine_tune(cls, corrections, tmp_path / "a", settings=TINY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        fine_tune(parent, tmp_path / "empty", tmp_path / "b", settings=TINY)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        fine_tune(parent, corrections, busy, settings=TINY)
    assert (busy / "x").is_file()  # a folder it did not create is left alone
    with pytest.raises(ValueError, match="epochs"):
        fine_tune(parent, corrections, tmp_path / "c", settings=FinetuneSettings(epochs=0))


def test_adopt_installs_activates_and_tidies_discard_deletes(
    parent: Path, corrections: Path, tmp_path: Path
) -> None:
    result = fine_tune(parent, corrections, tmp_path / "ft", settings=TINY)
    installed = adopt(result)
    assert installed.parent == user_models_dir() and not result.out.exists()
    active = active_bundle("segmenter")
    assert active is not None and active.path == installed
    assert active.card.training["fine_tune"]["parent"]["sha256"] == read_card(parent).weights_sha256
    assert json.loads(installed.read_text())["training"]["fine_tune"]["held_out_patients"] == result.held_out

    other = fine_tune(parent, corrections, tmp_path / "ft2", settings=TINY)
    discard(other)
    assert not other.out.exists() and active_bundle("segmenter").path == installed  # type: ignore[union-attr]
