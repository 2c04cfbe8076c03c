"""Learning from corrections (brainseg_core.finetune): the split, a tiny fine-tune of both models end to
end, the cards' provenance, cancel, adopt (both or one) and discard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainseg_core.bundle import load_bundle
from brainseg_core.errors import Cancelled, DataError
from brainseg_core.finetune import (
    RESULT_FILE,
    Comparison,
    FinetuneResult,
    FinetuneSettings,
    GateScores,
    Stage,
    adopt,
    discard,
    fine_tune,
    split_corrected,
)
from brainseg_core.model_card import read_card
from brainseg_core.model_kind import ModelKind
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
def gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The current classifier, with a gate that is not the default 0.5 (the candidate must keep it)."""
    return save_tiny_bundle(
        tmp_path_factory.mktemp("gate"), "classifier", input_size=32, seed=1, threshold=0.45
    )


@pytest.fixture(scope="module")
def corrections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _patients(tmp_path_factory.mktemp("corrections"), "XX", 4)


@pytest.fixture(scope="module")
def encoder_gate(parent: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gate on the parent segmenter's encoder (as the shipped pair is), at a gate of 0.3."""
    import torch

    from brainseg_core.bundle import save_bundle
    from brainseg_core.models import build_model
    from brainseg_core.models.encoder_gate import ENCODER_PREFIXES

    torch.manual_seed(2)
    model = build_model("resunet_gate", base_filters=4, depth=2)
    seg = load_bundle(parent).model.state_dict()
    encoder = {k: v.float() for k, v in seg.items() if k.startswith(ENCODER_PREFIXES)}
    model.load_state_dict(encoder, strict=False)
    return save_bundle(
        model,
        tmp_path_factory.mktemp("encoder_gate"),
        name="tiny-gate",
        kind="classifier",
        arch="resunet_gate",
        arch_args={"base_filters": 4, "depth": 2},
        input_size=32,
        thresholds={"tumour_probability": 0.3},
    )


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


def test_tiny_fine_tune_end_to_end(parent: Path, gate: Path, corrections: Path, tmp_path: Path) -> None:
    """Both models fine-tuned on the same patients, held out by patient, mixed with original data (a
    corrected copy replaces its original), both pairs scored, provenance in both cards, the result file
    readable, nothing installed."""
    original = _patients(tmp_path / "original", "OO", 3, seed=10)
    make_patient(original, "TCGA_XX_0000_20000101", n=6, size=32, tumour_slices=(1,), seed=99)
    stages: list[Stage] = []
    progress: list[tuple[int, int]] = []
    result = fine_tune(
        parent,
        corrections,
        tmp_path / "ft",
        classifier=gate,
        original_data=original,
        settings=TINY,
        progress=lambda d, t: progress.append((d, t)),
        on_stage=stages.append,
    )
    assert stages == [Stage.PREPARE, Stage.TRAIN, Stage.TRAIN_CLASSIFIER, Stage.EVALUATE]
    assert result.comparison is Comparison.HELD_OUT and len(result.held_out) == 1
    assert not set(result.trained_on) & set(result.held_out) and len(result.trained_on) == 3
    assert result.original_patients == 2  # at most 2 of the 3 originals not also corrected
    assert progress[-1][0] == progress[-1][1] and [d for d, _ in progress] == sorted(d for d, _ in progress)

    held = result.held_out[0]
    for scores in (result.current, result.candidate_scores):
        assert list(scores.dice) == [held] and 0.0 <= scores.dice[held] <= 1.0
        assert scores.tumour_slices == 2 and 0 <= scores.found_slices <= 2
    assert result.current.sha256 == read_card(parent).weights_sha256
    cur_gate, cand_gate = result.current_gate, result.candidate_gate
    assert cur_gate is not None and cand_gate is not None and result.classifier_candidate is not None
    for g in (cur_gate, cand_gate):
        assert g.threshold == 0.45 and list(g.recall) == list(g.specificity) == [held]
        assert g.tp + g.fn == 2 and g.tn + g.fp == 4  # 6 slices, 2 with tumour
        assert g.roc_auc is None or 0.0 <= g.roc_auc <= 1.0
        assert list(g.pipeline_dice) == [held] and 0.0 <= g.pipeline_dice_mean <= 1.0
    assert cur_gate.sha256 == read_card(gate).weights_sha256 != cand_gate.sha256
    assert cur_gate.name == "tiny-cls" and cand_gate.name.startswith("tiny-cls-ft-")
    assert result.classifier_is_better is cand_gate.no_worse_than(cur_gate)
    assert set(result.candidates) == {ModelKind.SEGMENTER, ModelKind.CLASSIFIER}

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
    assert ft["fine_tuned_alongside"]["name"] == cand_gate.name

    cls_card = load_bundle(result.classifier_candidate).card
    cft = cls_card.training["fine_tune"]
    assert cls_card.kind == "classifier" and cls_card.arch == "plain_cnn"
    assert cft["parent"] == {"name": "tiny-cls", "sha256": cur_gate.sha256, "path": str(gate)}
    assert cls_card.training["init_from"]["sha256"] == cur_gate.sha256
    for key in ("corrections", "corrected_patients_trained_on", "held_out_patients", "compared_on"):
        assert cft[key] == ft[key]  # the same patients, held out of both
    assert cls_card.training["patients"]["train"] == 3 + 2
    assert cls_card.thresholds["tumour_probability"] == 0.45  # the parent's gate
    assert cls_card.metrics["recall"] == cand_gate.slice_recall and "held-out" in cls_card.metrics["scope"]
    assert cls_card.metrics["specificity"] == cand_gate.slice_specificity
    assert cft["scores"]["parent"]["missed_tumour_slices"] == cur_gate.fn
    assert cft["per_patient_pipeline_dice"]["candidate"] == cand_gate.pipeline_dice
    assert cft["fine_tuned_alongside"]["name"] == result.candidate_scores.name

    assert FinetuneResult.read(tmp_path / "ft" / RESULT_FILE) == result
    assert GateScores.from_json(json.loads(json.dumps(cur_gate.to_json()))) == cur_gate
    assert not (tmp_path / "ft" / "data").exists()  # the linked training data are gone
    assert not user_models_dir().exists() or not any(user_models_dir().iterdir())


def test_segmenter_only_result_and_an_older_result_file_read_back(
    parent: Path, corrections: Path, tmp_path: Path
) -> None:
    result = fine_tune(parent, corrections, tmp_path / "ft", settings=TINY)
    assert result.classifier_candidate is None and result.current_gate is None
    assert result.classifier_is_better is None and set(result.candidates) == {ModelKind.SEGMENTER}
    assert not (tmp_path / "ft" / "run_classifier").exists()
    assert read_card(result.candidate).training["fine_tune"]["fine_tuned_alongside"] is None
    old = {k: v for k, v in result.to_json().items() if "classifier" not in k and "gate" not in k}
    assert FinetuneResult.from_json({**old, "format": "brainseg-finetune-result/1"}) == result
    with pytest.raises(ValueError, match="classifier candidate needs"):
        FinetuneResult.from_json({**result.to_json(), "classifier_candidate": "x.json"})


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


def test_refusals_name_the_file(parent: Path, gate: Path, corrections: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs the segmenter"):
        fine_tune(gate, corrections, tmp_path / "a", settings=TINY)
    with pytest.raises(ValueError, match="not a classifier"):
        fine_tune(parent, corrections, tmp_path / "a", classifier=parent, settings=TINY)
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
    parent: Path, gate: Path, corrections: Path, tmp_path: Path
) -> None:
    result = fine_tune(parent, corrections, tmp_path / "ft", classifier=gate, settings=TINY)
    installed = adopt(result)
    assert set(installed) == {ModelKind.SEGMENTER, ModelKind.CLASSIFIER} and not result.out.exists()
    for kind, path in installed.items():
        assert path.parent == user_models_dir()
        active = active_bundle(kind)
        assert active is not None and active.path == path
        parent_sha = read_card(parent if kind is ModelKind.SEGMENTER else gate).weights_sha256
        assert active.card.training["fine_tune"]["parent"]["sha256"] == parent_sha
        assert json.loads(path.read_text())["training"]["fine_tune"]["held_out_patients"] == result.held_out

    # only the ticked one is installed; the other is deleted with the run's folder
    other = fine_tune(parent, corrections, tmp_path / "ft2", classifier=gate, settings=TINY)
    with pytest.raises(ValueError, match="at least one"):
        adopt(other, [])
    only = adopt(other, [ModelKind.CLASSIFIER])
    assert list(only) == [ModelKind.CLASSIFIER] and not other.out.exists()
    assert active_bundle("classifier").path == only[ModelKind.CLASSIFIER]  # type: ignore[union-attr]
    assert active_bundle("segmenter").path == installed[ModelKind.SEGMENTER]  # type: ignore[union-attr]

    third = fine_tune(parent, corrections, tmp_path / "ft3", settings=TINY)
    with pytest.raises(ValueError, match="no classifier candidate"):
        adopt(third, [ModelKind.CLASSIFIER])
    discard(third)
    assert not third.out.exists()
    assert active_bundle("segmenter").path == installed[ModelKind.SEGMENTER]  # type: ignore[union-attr]


def test_a_gate_on_the_encoder_continues_on_the_candidates_encoder(
    parent: Path, encoder_gate: Path, corrections: Path, tmp_path: Path
) -> None:
    """The candidate gate sits on the candidate segmenter's encoder (its head from the current gate),
    so the candidate pair shares the encoder as the current pair does."""
    from brainseg_core.inference.pipeline import shares_encoder

    assert shares_encoder(load_bundle(encoder_gate), load_bundle(parent))
    result = fine_tune(parent, corrections, tmp_path / "ft", classifier=encoder_gate, settings=TINY)
    assert result.classifier_candidate is not None
    seg, cls = load_bundle(result.candidate), load_bundle(result.classifier_candidate)
    assert not shares_encoder(load_bundle(encoder_gate), seg)  # the encoder did change...
    assert shares_encoder(cls, seg)  # ...and the candidate gate took it
    training = cls.card.training
    assert training["init_from"]["sha256"] == read_card(encoder_gate).weights_sha256
    assert training["encoder_from"]["sha256"] == seg.card.weights_sha256
    assert cls.card.thresholds["tumour_probability"] == 0.3
