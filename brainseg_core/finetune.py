"""Learn from the reader's corrections: fine-tune the models on corrected patients, then compare.

:func:`fine_tune` takes the current segmenter bundle, optionally the current classifier (the slice
gate), and a folder of corrected patients (what :func:`brainseg_core.export.export_training_data`
writes: ``<patient>/<patient>_<n>.tif`` + ``_mask.tif``), and:

1. **Splits by patient** (never by slice): a share of the corrected patients is held out
   (:func:`split_corrected`: the sorted ids shuffled with ``numpy.random.default_rng(seed)``, at
   least one held out and at least two left to train on). With fewer than
   :data:`MIN_PATIENTS_TO_HOLD_OUT` corrected patients (or a share of 0) nothing is held out: the
   candidate is trained on every corrected patient and the two models are compared on those same
   patients, labelled :attr:`Comparison.TRAINING` ("not held out": the candidate has seen them, so
   its numbers are optimistic). The result says which one it is.
2. **Fine-tunes** with the one trainer (:func:`brainseg_core.training.loop.train` with
   ``init_from`` = the current bundle, a fresh schedule, no validation split and the last weights
   kept) on the training patients: the segmenter, then (when given) the classifier on the very same
   patients, so the same patients stay held out of both (a gate on the segmenter's encoder,
   ``resunet_gate``, continues from its head on the candidate segmenter's encoder, ``encoder_from``,
   so the candidate pair shares the encoder as the current one does); mixed with the original
   training data when its folder is given (the corrected patients replace their original copies,
   and no held-out patient enters training under any name). The trainer reads one data root, so
   the chosen patients are linked (copied where links are not allowed) into ``OUT/data``.
3. **Evaluates** the current pair and the candidate pair on the comparison patients with
   :func:`brainseg_core.evaluation.evaluate` (each model with its card's thresholds; a candidate
   keeps its parent's thresholds, the classifier its gate): the segmenter on every slice gives the
   per-patient volume Dice and the slice recall (:class:`ModelScores`: the share of ground-truth
   tumour slices whose mask overlaps the truth); with a classifier, the same run also gives the
   gate's slice recall and specificity at its threshold, its ROC AUC and the end-to-end volume Dice
   of the pair (gate, then segmenter: :class:`GateScores`).
4. **Records** provenance in each candidate's card: ``training.fine_tune`` names the parent bundle
   (name, sha256, path), the corrections folder, the patients trained on and held out, the
   original data, both models' scores and the other candidate of the run; ``metrics`` holds the
   candidate's held-out scores (none when nothing was held out, so a registry listing never ranks
   it by optimistic numbers).

The candidates stay in ``OUT`` until the caller installs them (:func:`adopt`, both or the ones the
reader chose) or deletes them (:func:`discard`); nothing is installed here. A failure or cancel
removes ``OUT``.

The viewer runs this in a separate process (``python -m brainseg_core.cli.finetune``), which reports
progress as JSON lines and writes :data:`RESULT_FILE` (:class:`FinetuneResult`). Importing this
module does not load torch.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainseg_core.atomic import atomic_write
from brainseg_core.errors import Cancelled, DataError
from brainseg_core.model_kind import ModelKind
from brainseg_core.progress import CancelArg, ProgressFn, cancel_checker

if TYPE_CHECKING:
    from brainseg_core.training.config import TrainConfig

__all__ = [
    "MIN_PATIENTS_TO_HOLD_OUT",
    "RESULT_FILE",
    "Comparison",
    "FinetuneResult",
    "FinetuneSettings",
    "GateScores",
    "ModelScores",
    "Stage",
    "adopt",
    "discard",
    "find_corrected_patients",
    "fine_tune",
    "split_corrected",
]

#: Fewer corrected patients than this: nothing is held out (see :class:`Comparison`).
MIN_PATIENTS_TO_HOLD_OUT = 3
#: The result file :func:`fine_tune` writes into its output folder.
RESULT_FILE = "finetune_result.json"
RESULT_FORMAT = "brainseg-finetune-result/2"
#: Earlier result formats :meth:`FinetuneResult.from_json` still reads (segmenter only).
_OLD_FORMATS = ("brainseg-finetune-result/1",)
#: Sub-folders of the output folder: the linked training data and the trainer's runs.
DATA_DIR, RUN_DIR, CLASSIFIER_RUN_DIR = "data", "run", "run_classifier"


class Comparison(StrEnum):
    """Which patients the candidate and the current model are compared on."""

    #: corrected patients held out of the fine-tuning: an honest comparison
    HELD_OUT = "held_out"
    #: too few corrected patients to hold any out: the patients the candidate was trained on
    TRAINING = "training"

    @property
    def label(self) -> str:
        """How the viewer and the card name it."""
        if self is Comparison.HELD_OUT:
            return "held-out corrected patients (not used for fine-tuning)"
        return "corrected patients the candidate was trained on (NOT held out: its scores are optimistic)"


class Stage(StrEnum):
    """The steps of :func:`fine_tune`, in order (reported to ``on_stage``)."""

    PREPARE = "prepare"
    #: fine-tuning the segmenter
    TRAIN = "train"
    #: fine-tuning the classifier (only when one was given)
    TRAIN_CLASSIFIER = "train_classifier"
    EVALUATE = "evaluate"


@dataclass(frozen=True)
class FinetuneSettings:
    """How to fine-tune.

    Attributes:
        held_out_share: share of the corrected patients held out for the comparison (0: none).
        epochs: epochs over the training slices (each epoch draws as many slices as there are).
        lr: peak learning rate (smaller than a training from scratch).
        batch_size: slices per step.
        seed: seed of the held-out draw, the subset of original patients and the training.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        max_original_patients: mix at most this many original patients (a seeded draw), so the
            corrections are not drowned and an epoch stays short; None: all of them.
    """

    held_out_share: float = 0.25
    epochs: int = 5
    lr: float = 2e-4
    batch_size: int = 16
    seed: int = 0
    device: str = "auto"
    max_original_patients: int | None = 20

    def check(self) -> None:
        """Raise ValueError naming the setting that is out of range."""
        if not 0.0 <= self.held_out_share < 1.0:
            raise ValueError(f"held-out share must be from 0 to below 1, got {self.held_out_share}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.max_original_patients is not None and self.max_original_patients < 0:
            raise ValueError(f"max original patients must be >= 0, got {self.max_original_patients}")


@dataclass(frozen=True)
class ModelScores:
    """One model's scores on the comparison patients.

    Attributes:
        name: the model's name.
        sha256: its weights' SHA-256.
        dice: per-patient volume Dice, by patient id (comparison order).
        recall: per-patient slice recall (None for a patient without tumour slices).
        tumour_slices: ground-truth tumour slices over all comparison patients.
        found_slices: of those, the slices whose mask overlaps the truth.
    """

    name: str
    sha256: str
    dice: dict[str, float]
    recall: dict[str, float | None]
    tumour_slices: int
    found_slices: int

    @property
    def dice_mean(self) -> float:
        """Mean per-patient volume Dice."""
        return statistics.fmean(self.dice.values()) if self.dice else float("nan")

    @property
    def slice_recall(self) -> float | None:
        """Share of the ground-truth tumour slices found (pooled), None without any."""
        return self.found_slices / self.tumour_slices if self.tumour_slices else None

    def card_metrics(self) -> dict[str, Any]:
        """The scores under the names model cards use (``dice_patient_mean``, ``slice_recall``, ...)."""
        values = list(self.dice.values())
        return {
            "patients": len(values),
            "dice_patient_mean": self.dice_mean,
            "dice_patient_median": statistics.median(values) if values else None,
            "dice_patient_min": min(values) if values else None,
            "tumour_slices": self.tumour_slices,
            "slice_recall": self.slice_recall,
            "missed_tumour_slices": self.tumour_slices - self.found_slices,
        }

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (read back with :meth:`from_json`)."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "dice": self.dice,
            "recall": self.recall,
            "tumour_slices": self.tumour_slices,
            "found_slices": self.found_slices,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelScores:
        """The scores of :meth:`to_json`."""
        return cls(
            name=str(data["name"]),
            sha256=str(data["sha256"]),
            dice={str(k): float(v) for k, v in data["dice"].items()},
            recall={str(k): None if v is None else float(v) for k, v in data["recall"].items()},
            tumour_slices=int(data["tumour_slices"]),
            found_slices=int(data["found_slices"]),
        )


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class GateScores:
    """One classifier's scores on the comparison patients, as the slice gate of its pair.

    The classifier is scored at its card's gate (``tumour_probability`` and
    ``gate_reach_slices``): a slice passes when its gate score (its own tumour probability or,
    within the reach, a neighbour's) is at least the threshold. The end-to-end Dice is that of the pair: this
    classifier gating the segmenter it was evaluated with (the current segmenter for the current
    classifier, the segmenter candidate for the classifier candidate).

    Attributes:
        name: the classifier's name.
        sha256: its weights' SHA-256.
        threshold: the gate (tumour probability threshold) it was scored at.
        recall: per-patient share of the ground-truth tumour slices that pass the gate (None for a
            patient without tumour slices).
        specificity: per-patient share of the tumour-free slices the gate stops (None without any).
        tp: tumour slices passed (pooled over the comparison patients).
        fn: tumour slices stopped (missed: never segmented).
        tn: tumour-free slices stopped.
        fp: tumour-free slices passed.
        roc_auc: pooled ROC AUC (threshold free), None with one class only.
        pipeline_dice: per-patient volume Dice of the pair (gate, then segmenter).
    """

    name: str
    sha256: str
    threshold: float
    recall: dict[str, float | None]
    specificity: dict[str, float | None]
    tp: int
    fn: int
    tn: int
    fp: int
    roc_auc: float | None
    pipeline_dice: dict[str, float]

    @property
    def slice_recall(self) -> float | None:
        """Pooled share of the tumour slices that pass the gate, None without any."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def slice_specificity(self) -> float | None:
        """Pooled share of the tumour-free slices the gate stops, None without any."""
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def balanced_accuracy(self) -> float | None:
        """Mean of recall and specificity at the gate (None unless both exist)."""
        r, s = self.slice_recall, self.slice_specificity
        return None if r is None or s is None else (r + s) / 2

    @property
    def pipeline_dice_mean(self) -> float:
        """Mean per-patient volume Dice of the pair (gate, then segmenter)."""
        return statistics.fmean(self.pipeline_dice.values()) if self.pipeline_dice else float("nan")

    def card_metrics(self) -> dict[str, Any]:
        """The scores under the names classifier cards use (``roc_auc``, ``recall``, ...)."""
        return {
            "patients": len(self.pipeline_dice),
            "slices": self.tp + self.fn + self.tn + self.fp,
            "tumour_slices": self.tp + self.fn,
            "threshold": self.threshold,
            "roc_auc": self.roc_auc,
            "recall": self.slice_recall,
            "specificity": self.slice_specificity,
            "balanced_accuracy": self.balanced_accuracy,
            "missed_tumour_slices": self.fn,
            "confusion": {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn},
            "pipeline_dice_patient_mean": self.pipeline_dice_mean,
        }

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (read back with :meth:`from_json`)."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "threshold": self.threshold,
            "recall": self.recall,
            "specificity": self.specificity,
            "confusion": {"tp": self.tp, "fn": self.fn, "tn": self.tn, "fp": self.fp},
            "roc_auc": self.roc_auc,
            "pipeline_dice": self.pipeline_dice,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateScores:
        """The scores of :meth:`to_json`."""

        def opt(v: Any) -> float | None:
            return None if v is None else float(v)

        c = data["confusion"]
        return cls(
            name=str(data["name"]),
            sha256=str(data["sha256"]),
            threshold=float(data["threshold"]),
            recall={str(k): opt(v) for k, v in data["recall"].items()},
            specificity={str(k): opt(v) for k, v in data["specificity"].items()},
            tp=int(c["tp"]),
            fn=int(c["fn"]),
            tn=int(c["tn"]),
            fp=int(c["fp"]),
            roc_auc=opt(data["roc_auc"]),
            pipeline_dice={str(k): float(v) for k, v in data["pipeline_dice"].items()},
        )

    def no_worse_than(self, other: GateScores) -> bool:
        """Whether this gate is at least as good as ``other`` on the same patients.

        At least the same ROC AUC (the registry's ranking metric for classifiers; balanced accuracy
        at the gate when either AUC is missing) **and** no more tumour slices missed at the gate
        (a missed slice is never segmented, the costliest error of a gate).
        """
        mine, theirs = self.roc_auc, other.roc_auc
        if mine is None or theirs is None:
            mine, theirs = self.balanced_accuracy, other.balanced_accuracy
        ranked = mine is None or theirs is None or mine >= theirs
        return ranked and self.fn <= other.fn


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`fine_tune` produced (also written as :data:`RESULT_FILE`).

    Attributes:
        candidate: the segmenter candidate's card (in the output folder, not installed).
        out: the output folder (delete it to discard the candidates).
        parent: the current segmenter's ``{"name", "sha256", "path"}``.
        corrections: the corrections folder.
        original_data: the original training data folder, or None.
        trained_on: the corrected patients the candidate was fine-tuned on.
        original_patients: how many original patients were mixed in.
        compared_on: the patients both models were scored on.
        comparison: whether those were held out (:class:`Comparison`).
        current: the current model's scores.
        candidate_scores: the candidate's scores.
        epochs: epochs run.
        wall_s: seconds from start to result.
        created: when the result was made (ISO 8601, UTC).
        classifier_candidate: the classifier candidate's card, None when only the segmenter was
            fine-tuned.
        classifier_parent: the current classifier's ``{"name", "sha256", "path"}``, or None.
        current_gate: the current classifier's scores (gating the current segmenter), or None.
        candidate_gate: the classifier candidate's scores (gating the segmenter candidate), or None.
    """

    candidate: Path
    out: Path
    parent: dict[str, str]
    corrections: Path
    original_data: Path | None
    trained_on: list[str]
    original_patients: int
    compared_on: list[str]
    comparison: Comparison
    current: ModelScores
    candidate_scores: ModelScores
    epochs: int
    wall_s: float
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    classifier_candidate: Path | None = None
    classifier_parent: dict[str, str] | None = None
    current_gate: GateScores | None = None
    candidate_gate: GateScores | None = None

    def __post_init__(self) -> None:
        parts = (self.classifier_candidate, self.classifier_parent, self.current_gate, self.candidate_gate)
        if any(p is None for p in parts) and any(p is not None for p in parts):
            raise ValueError("a classifier candidate needs its parent and both models' gate scores")

    @property
    def candidates(self) -> dict[ModelKind, Path]:
        """The candidates' cards by kind (the segmenter's, and the classifier's when there is one)."""
        found = {ModelKind.SEGMENTER: self.candidate}
        if self.classifier_candidate is not None:
            found[ModelKind.CLASSIFIER] = self.classifier_candidate
        return found

    @property
    def held_out(self) -> list[str]:
        """The held-out patients (empty when nothing could be held out)."""
        return list(self.compared_on) if self.comparison is Comparison.HELD_OUT else []

    @property
    def candidate_is_better(self) -> bool:
        """The candidate's mean Dice is at least the current model's on the comparison patients."""
        return self.candidate_scores.dice_mean >= self.current.dice_mean

    @property
    def classifier_is_better(self) -> bool | None:
        """The classifier candidate is no worse than the current one (:meth:`GateScores.no_worse_than`);
        None without a classifier candidate."""
        if self.candidate_gate is None or self.current_gate is None:
            return None
        return self.candidate_gate.no_worse_than(self.current_gate)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (read back with :meth:`from_json`)."""
        return {
            "format": RESULT_FORMAT,
            "candidate": str(self.candidate),
            "out": str(self.out),
            "parent": dict(self.parent),
            "corrections": str(self.corrections),
            "original_data": None if self.original_data is None else str(self.original_data),
            "trained_on": list(self.trained_on),
            "original_patients": self.original_patients,
            "compared_on": list(self.compared_on),
            "comparison": self.comparison.value,
            "current": self.current.to_json(),
            "candidate_scores": self.candidate_scores.to_json(),
            "epochs": self.epochs,
            "wall_s": round(self.wall_s, 1),
            "created": self.created,
            "classifier_candidate": None
            if self.classifier_candidate is None
            else str(self.classifier_candidate),
            "classifier_parent": None if self.classifier_parent is None else dict(self.classifier_parent),
            "current_gate": None if self.current_gate is None else self.current_gate.to_json(),
            "candidate_gate": None if self.candidate_gate is None else self.candidate_gate.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FinetuneResult:
        """The result of :meth:`to_json`.

        Raises:
            ValueError: for another format or a missing key.
        """
        if not isinstance(data, dict) or data.get("format") not in (RESULT_FORMAT, *_OLD_FORMATS):
            raise ValueError(f"not a {RESULT_FORMAT} result")

        def opt(key: str) -> Any:
            return data.get(key)

        try:
            cls_card, cls_parent = opt("classifier_candidate"), opt("classifier_parent")
            current_gate, candidate_gate = opt("current_gate"), opt("candidate_gate")
            return cls(
                candidate=Path(data["candidate"]),
                out=Path(data["out"]),
                parent={str(k): str(v) for k, v in data["parent"].items()},
                corrections=Path(data["corrections"]),
                original_data=None if data["original_data"] is None else Path(data["original_data"]),
                trained_on=[str(i) for i in data["trained_on"]],
                original_patients=int(data["original_patients"]),
                compared_on=[str(i) for i in data["compared_on"]],
                comparison=Comparison(data["comparison"]),
                current=ModelScores.from_json(data["current"]),
                candidate_scores=ModelScores.from_json(data["candidate_scores"]),
                epochs=int(data["epochs"]),
                wall_s=float(data["wall_s"]),
                created=str(data.get("created", "")),
                classifier_candidate=None if cls_card is None else Path(cls_card),
                classifier_parent=None
                if cls_parent is None
                else {str(k): str(v) for k, v in cls_parent.items()},
                current_gate=None if current_gate is None else GateScores.from_json(current_gate),
                candidate_gate=None if candidate_gate is None else GateScores.from_json(candidate_gate),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"incomplete {RESULT_FORMAT} result: {exc}") from None

    def write(self, path: str | Path) -> Path:
        """Write the result as JSON, atomically; returns the path."""
        path = Path(path)
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: str | Path) -> FinetuneResult:
        """Read a result file.

        Raises:
            DataError: naming the file when it cannot be read or is not a result.
        """
        path = Path(path)
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise DataError(
                path, f"cannot read the fine-tuning result ({exc}); run the fine-tuning again"
            ) from None


def _patient_id(path: Path) -> str:
    """The id :func:`brainseg_core.evaluation.evaluate` selects a patient by: folder name or file stem."""
    if path.is_dir():
        return path.name
    name = path.name
    for suffix in (".nii.gz", ".nii", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def find_corrected_patients(folder: str | Path) -> dict[str, Path]:
    """The patients of a corrections folder, by id (folder name or stack stem).

    Args:
        folder: the folder "Save corrections as training data" wrote to (any labelled dataset root
            in a layout :func:`brainseg_core.io.find_patients` reads).

    Returns:
        ``{patient_id: path}``, sorted by id.

    Raises:
        DataError: when the folder holds no patient, or two patients share an id.
    """
    from brainseg_core.io import find_patients

    folder = Path(folder)
    found: dict[str, Path] = {}
    for path in find_patients(folder):
        pid = _patient_id(path)
        if pid in found:
            raise DataError(path, f"patient id {pid} is also used by {found[pid]}; rename one of them")
        found[pid] = path
    if not found:
        raise DataError(folder, "holds no corrected patient; use File > Save corrections as training data")
    return dict(sorted(found.items()))


def split_corrected(
    patient_ids: Sequence[str], held_out_share: float, *, seed: int = 0
) -> tuple[list[str], list[str], Comparison]:
    """Which corrected patients to train on and which to compare on (by patient, reproducibly).

    Args:
        patient_ids: the corrected patients (unique).
        held_out_share: share held out, 0 <= share < 1.
        seed: shuffling seed (:func:`brainseg_core.training.data.split_patients`'s rule).

    Returns:
        ``(train_ids, compare_ids, comparison)``: with :attr:`Comparison.HELD_OUT` the two are
        disjoint (at least 1 held out, at least 2 trained on); with :attr:`Comparison.TRAINING`
        (fewer than :data:`MIN_PATIENTS_TO_HOLD_OUT` patients, or a share of 0) both are every
        patient.

    Raises:
        ValueError: for no patients, duplicates or a share out of range.
    """
    ids = sorted(patient_ids)
    if not ids:
        raise ValueError("no corrected patients")
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate corrected patient ids")
    if not 0.0 <= held_out_share < 1.0:
        raise ValueError(f"held-out share must be from 0 to below 1, got {held_out_share}")
    if len(ids) < MIN_PATIENTS_TO_HOLD_OUT or held_out_share == 0.0:
        return ids, list(ids), Comparison.TRAINING
    import numpy as np

    n_out = min(max(1, round(held_out_share * len(ids))), len(ids) - 2)
    order = np.random.default_rng(seed).permutation(len(ids))
    held = sorted(ids[i] for i in order[:n_out])
    return [i for i in ids if i not in set(held)], held, Comparison.HELD_OUT


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target``: a symbolic link, or a copy where links are not allowed (Windows)."""
    try:
        os.symlink(target.resolve(), link, target_is_directory=target.is_dir())
    except OSError:
        if target.is_dir():
            shutil.copytree(target, link)
        else:
            shutil.copy2(target, link)


def _stage_data(
    out: Path,
    corrected: dict[str, Path],
    train_ids: list[str],
    original_data: Path | None,
    max_original: int | None,
    seed: int,
) -> tuple[Path, int]:
    """Link the training patients into ``out/data``; returns the folder and the originals mixed in."""
    data = out / DATA_DIR
    data.mkdir(parents=True)
    for pid in train_ids:
        _link(corrected[pid], data / corrected[pid].name)
    n_original = 0
    if original_data is not None:
        from brainseg_core.io import find_patients

        taken = set(corrected)  # corrected copies replace the originals; held-out ones stay out
        originals = [p for p in find_patients(original_data) if _patient_id(p) not in taken]
        originals = [p for p in originals if p.resolve() != Path(original_data).resolve()]
        if max_original is not None and len(originals) > max_original:
            import numpy as np

            order = np.random.default_rng(seed).permutation(len(originals))[:max_original]
            originals = [originals[i] for i in sorted(order)]
        names = {p.name for p in data.iterdir()}
        for p in originals:
            if p.name in names:
                raise DataError(p, "has the same name as a corrected patient's folder; rename one of them")
            _link(p, data / p.name)
            names.add(p.name)
        n_original = len(originals)
    return data, n_original


def _scores(report: dict[str, Any], name: str, sha256: str) -> ModelScores:
    """Per-patient Dice and slice recall from :func:`brainseg_core.evaluation.evaluate`'s report."""
    dice: dict[str, float] = {}
    recall: dict[str, float | None] = {}
    tumour = found = 0
    for entry in report["patients"]:
        pid = str(entry["patient_id"])
        seg = entry["segment_all"]
        labels = [bool(v) for v in entry["labels"]]
        hits = [lab and d > 0 for lab, d in zip(labels, seg["slice_dice"], strict=True)]
        dice[pid] = float(seg["dice"])
        recall[pid] = sum(hits) / sum(labels) if any(labels) else None
        tumour += sum(labels)
        found += sum(hits)
    return ModelScores(name, sha256, dice, recall, tumour, found)


def _gate_scores(report: dict[str, Any], name: str, sha256: str) -> GateScores:
    """The classifier's scores at its gate, and the pair's Dice, from a report with a classifier."""
    threshold = float(report["classification"]["threshold"])
    recall: dict[str, float | None] = {}
    specificity: dict[str, float | None] = {}
    pipeline_dice: dict[str, float] = {}
    tp = fn = tn = fp = 0
    for entry in report["patients"]:
        pid = str(entry["patient_id"])
        labels = [bool(v) for v in entry["labels"]]
        passed = [float(p) >= threshold for p in entry.get("gate_score", entry["tumour_probability"])]
        p_tp = sum(lab and ok for lab, ok in zip(labels, passed, strict=True))
        p_fp = sum(ok and not lab for lab, ok in zip(labels, passed, strict=True))
        n_pos = sum(labels)
        n_neg = len(labels) - n_pos
        recall[pid] = _ratio(p_tp, n_pos)
        specificity[pid] = _ratio(n_neg - p_fp, n_neg)
        pipeline_dice[pid] = float(entry["pipeline"]["dice"])
        tp, fn, tn, fp = tp + p_tp, fn + n_pos - p_tp, tn + n_neg - p_fp, fp + p_fp
    auc = report["classification"].get("roc_auc")
    return GateScores(
        name=name,
        sha256=sha256,
        threshold=threshold,
        recall=recall,
        specificity=specificity,
        tp=tp,
        fn=fn,
        tn=tn,
        fp=fp,
        roc_auc=None if auc is None else float(auc),
        pipeline_dice=pipeline_dice,
    )


def fine_tune(
    segmenter: str | Path,
    corrections: str | Path,
    out: str | Path,
    *,
    classifier: str | Path | None = None,
    original_data: str | Path | None = None,
    settings: FinetuneSettings | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelArg = None,
    log: Callable[[str], None] | None = None,
    on_stage: Callable[[Stage], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``segmenter`` (and ``classifier``) on corrected patients and compare with the current ones.

    See the module docstring for the split, the training, the comparison and the cards.

    Args:
        segmenter: the current segmenter bundle (card, weights or folder).
        corrections: the corrected patients' folder (:func:`find_corrected_patients`).
        out: a new (or empty) folder for the candidates, their training runs and :data:`RESULT_FILE`.
        classifier: the current classifier bundle, fine-tuned too on the same patients and scored
            as the gate of its pair; None fine-tunes the segmenter only.
        original_data: the original training data root to mix in, or None.
        settings: how to fine-tune (default :class:`FinetuneSettings`; the same for both models).
        progress: ``progress(done, total)`` over the training steps (segmenter, then classifier)
            and the evaluation runs; the total is known once each training has read its data, so
            it may change a little when the classifier's training starts.
        cancel: a ``threading.Event`` or zero-argument callable; stops between steps.
        log: receives one line per event (data read, epoch summary, ...).
        on_stage: called as each :class:`Stage` begins.

    Returns:
        The :class:`FinetuneResult` (also written to ``out/`` :data:`RESULT_FILE`).

    Raises:
        ValueError: for invalid settings, ``out`` not empty, or a bundle of the wrong kind.
        DataError: for unusable corrections or original data.
        BundleError: when a current model cannot be read.
        Cancelled: when ``cancel`` is set (``out`` is removed).
    """
    from brainseg_core.model_card import read_card, resolve_card_path

    t0 = time.perf_counter()
    settings = settings or FinetuneSettings()
    settings.check()
    say = log or (lambda _m: None)
    stage = on_stage or (lambda _s: None)
    is_cancelled = cancel_checker(cancel)
    parent_path = resolve_card_path(segmenter)
    parent = read_card(parent_path)
    if parent.kind != ModelKind.SEGMENTER:
        raise ValueError(f"{parent_path}: is a {parent.kind}; fine-tuning on corrections needs the segmenter")
    cls_path = None if classifier is None else resolve_card_path(classifier)
    if cls_path is not None and (kind := read_card(cls_path).kind) != ModelKind.CLASSIFIER:
        raise ValueError(f"{cls_path}: is a {kind}, not a classifier; pass the slice gate as the classifier")
    corrections = Path(corrections).resolve()
    original = None if original_data is None else Path(original_data).resolve()
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: the fine-tuning folder is not empty; choose a new folder")
    stage(Stage.PREPARE)
    corrected = find_corrected_patients(corrections)
    train_ids, compare_ids, comparison = split_corrected(
        list(corrected), settings.held_out_share, seed=settings.seed
    )
    say(
        f"{len(corrected)} corrected patients: fine-tuning on {len(train_ids)}, comparing on "
        f"{len(compare_ids)} ({comparison.label})"
    )
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(
            (parent_path, cls_path),
            corrections,
            out,
            corrected,
            (train_ids, compare_ids, comparison),
            original,
            settings,
            progress=progress,
            is_cancelled=is_cancelled,
            say=say,
            stage=stage,
            t0=t0,
        )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def _train_config(
    kind: ModelKind,
    parent_path: Path,
    data: Path,
    run: Path,
    settings: FinetuneSettings,
    *,
    segmenter: Path | None = None,
) -> TrainConfig:
    """The trainer's settings to fine-tune the bundle at ``parent_path`` (its architecture and size).

    Args:
        kind: the bundle's kind.
        parent_path: the bundle to start from.
        data: the staged training data.
        run: the run folder.
        settings: how to fine-tune.
        segmenter: the segmenter candidate a classifier is fine-tuned beside: a gate on the
            segmenter's encoder (``resunet_gate``) continues from its head on this one's encoder.

    Returns:
        The (unresolved) training settings.
    """
    from brainseg_core.model_card import read_card
    from brainseg_core.training.config import RESUNET_ARCHS, Keep, TrainConfig, default_tumour_fraction

    card = read_card(parent_path)
    size = card.input_size
    crop = card.training.get("crop") if kind is ModelKind.SEGMENTER else None
    crop = crop if isinstance(crop, int) and crop % 16 == 0 and 16 <= crop <= size else None
    resunet = card.arch in RESUNET_ARCHS
    width_key = "base_filters" if resunet else "width"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return TrainConfig(
        kind=kind.value,
        data=data,
        out=run,
        arch=card.arch,
        width=card.arch_args.get(width_key) if resunet or card.arch == "plain_cnn" else None,
        depth=card.arch_args.get("depth") if resunet else None,
        context=card.context_slices,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        image_size=size,
        val_patients=0.0,
        seed=settings.seed,
        tumour_fraction=default_tumour_fraction(kind.value),
        device=settings.device,
        patience=0,
        name=f"{card.name}-ft-{stamp}",
        crop=crop,
        init_from=str(parent_path),
        encoder_from=str(segmenter) if segmenter is not None and card.arch == "resunet_gate" else None,
        keep=Keep.LAST,
    )


def _run(
    parents: tuple[Path, Path | None],
    corrections: Path,
    out: Path,
    corrected: dict[str, Path],
    split: tuple[list[str], list[str], Comparison],
    original: Path | None,
    settings: FinetuneSettings,
    *,
    progress: ProgressFn | None,
    is_cancelled: Callable[[], bool],
    say: Callable[[str], None],
    stage: Callable[[Stage], None],
    t0: float,
) -> FinetuneResult:
    """Stage the data, train, score both pairs, record provenance (see :func:`fine_tune`)."""
    from brainseg_core.bundle import load_bundle, update_card
    from brainseg_core.evaluation import evaluate
    from brainseg_core.model_card import read_card
    from brainseg_core.training.loop import train

    parent_path, cls_parent_path = parents
    train_ids, compare_ids, comparison = split
    data, n_original = _stage_data(
        out, corrected, train_ids, original, settings.max_original_patients, settings.seed
    )
    if original is not None:
        say(f"mixing in {n_original} original patients from {original}")
    n_eval = 2 * len(compare_ids)
    # steps of each training, known once it starts (the classifier's guessed as the segmenter's)
    steps: dict[ModelKind, int | None] = {
        ModelKind.SEGMENTER: 0,
        ModelKind.CLASSIFIER: None if cls_parent_path is not None else 0,
    }

    def train_steps() -> int:
        seg = steps[ModelKind.SEGMENTER] or 0
        cls = steps[ModelKind.CLASSIFIER]
        return seg + (seg if cls is None else cls)

    def report(done: int) -> None:
        if progress is not None:
            progress(done, train_steps() + n_eval)

    def fine_tune_one(
        kind: ModelKind, parent: Path, run: Path, segmenter: Path | None = None
    ) -> tuple[Path, int]:
        offset = 0 if kind is ModelKind.SEGMENTER else steps[ModelKind.SEGMENTER] or 0

        def on_step(done: int, total: int) -> None:
            steps[kind] = total
            report(offset + done)

        config = _train_config(kind, parent, data, run, settings, segmenter=segmenter)
        trained = train(config, log=say, progress=False, cancel=is_cancelled, step_progress=on_step)
        assert trained.card_path is not None
        if is_cancelled():
            raise Cancelled("fine-tuning cancelled")
        # a candidate keeps its parent's post-processing and gate (chosen on many more patients)
        update_card(trained.card_path, thresholds=dict(read_card(parent).thresholds))
        return trained.card_path, trained.epochs_run

    stage(Stage.TRAIN)
    seg_card, epochs = fine_tune_one(ModelKind.SEGMENTER, parent_path, out / RUN_DIR)
    cls_card: Path | None = None
    if cls_parent_path is not None:
        stage(Stage.TRAIN_CLASSIFIER)
        # a gate on the segmenter's encoder continues on the candidate's encoder (_train_config)
        cls_card, _ = fine_tune_one(ModelKind.CLASSIFIER, cls_parent_path, out / CLASSIFIER_RUN_DIR, seg_card)

    stage(Stage.EVALUATE)
    evaluated = 0

    def score(seg_path: Path, cls_path: Path | None) -> tuple[ModelScores, GateScores | None]:
        nonlocal evaluated
        seg_bundle = load_bundle(seg_path)
        cls_bundle = None if cls_path is None else load_bundle(cls_path)
        base = train_steps() + evaluated

        def one(done: int, _total: int) -> None:
            report(base + done)

        result = evaluate(
            corrections,
            classifier=cls_bundle,
            segmenter=seg_bundle,
            device=settings.device,
            patients=compare_ids,
            progress=one,
            cancel=is_cancelled,
        )
        evaluated += len(compare_ids)
        seg_scores = _scores(result, seg_bundle.card.name, seg_bundle.card.weights_sha256)
        if cls_bundle is None:
            return seg_scores, None
        return seg_scores, _gate_scores(result, cls_bundle.card.name, cls_bundle.card.weights_sha256)

    what = "both pairs of models" if cls_card is not None else "both models"
    say(f"comparing {what} on {len(compare_ids)} patients: {', '.join(compare_ids)}")
    current, current_gate = score(parent_path, cls_parent_path)
    candidate, candidate_gate = score(seg_card, cls_card)
    say(
        f"mean volume Dice: current {current.dice_mean:.3f}, candidate {candidate.dice_mean:.3f} "
        f"({comparison.label})"
    )
    if current_gate is not None and candidate_gate is not None:
        say(
            f"slice gate: recall {_fmt(current_gate.slice_recall)} -> {_fmt(candidate_gate.slice_recall)}, "
            f"specificity {_fmt(current_gate.slice_specificity)} -> "
            f"{_fmt(candidate_gate.slice_specificity)}, ROC AUC {_fmt(current_gate.roc_auc)} -> "
            f"{_fmt(candidate_gate.roc_auc)}; Dice with the gate {current_gate.pipeline_dice_mean:.3f} -> "
            f"{candidate_gate.pipeline_dice_mean:.3f}"
        )
    parent_ref = _ref(parent_path)
    cls_parent_ref = None if cls_parent_path is None else _ref(cls_parent_path)
    common = _Provenance(corrections, original, n_original, train_ids, compare_ids, comparison)
    seg_card_ref = _ref(seg_card)
    cls_card_ref = None if cls_card is None else _ref(cls_card)
    _record_provenance(
        seg_card,
        parent_ref=parent_ref,
        common=common,
        scores={"candidate": candidate.card_metrics(), "parent": current.card_metrics()},
        per_patient={"per_patient_dice": {"candidate": candidate.dice, "parent": current.dice}},
        metrics=candidate.card_metrics(),
        alongside=cls_card_ref,
    )
    if cls_card is not None and cls_parent_ref is not None:
        assert current_gate is not None and candidate_gate is not None
        _record_provenance(
            cls_card,
            parent_ref=cls_parent_ref,
            common=common,
            scores={"candidate": candidate_gate.card_metrics(), "parent": current_gate.card_metrics()},
            per_patient={
                "per_patient_recall": {"candidate": candidate_gate.recall, "parent": current_gate.recall},
                "per_patient_specificity": {
                    "candidate": candidate_gate.specificity,
                    "parent": current_gate.specificity,
                },
                "per_patient_pipeline_dice": {
                    "candidate": candidate_gate.pipeline_dice,
                    "parent": current_gate.pipeline_dice,
                },
            },
            metrics=candidate_gate.card_metrics(),
            alongside=seg_card_ref,
        )
    shutil.rmtree(data, ignore_errors=True)  # links (or copies) only; the run folders keep their logs
    result = FinetuneResult(
        candidate=seg_card,
        out=out,
        parent=parent_ref,
        corrections=corrections,
        original_data=original,
        trained_on=train_ids,
        original_patients=n_original,
        compared_on=compare_ids,
        comparison=comparison,
        current=current,
        candidate_scores=candidate,
        epochs=epochs,
        wall_s=round(time.perf_counter() - t0, 1),
        classifier_candidate=cls_card,
        classifier_parent=cls_parent_ref,
        current_gate=current_gate,
        candidate_gate=candidate_gate,
    )
    result.write(out / RESULT_FILE)
    return result


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ref(card_path: Path) -> dict[str, str]:
    """A bundle's ``{"name", "sha256", "path"}``."""
    from brainseg_core.model_card import read_card

    card = read_card(card_path)
    return {"name": card.name, "sha256": card.weights_sha256, "path": str(card_path)}


@dataclass(frozen=True)
class _Provenance:
    """What both candidates' cards record alike: the data and the split."""

    corrections: Path
    original: Path | None
    n_original: int
    train_ids: list[str]
    compare_ids: list[str]
    comparison: Comparison


def _record_provenance(
    card_path: Path,
    *,
    parent_ref: dict[str, str],
    common: _Provenance,
    scores: dict[str, dict[str, Any]],
    per_patient: dict[str, Any],
    metrics: dict[str, Any],
    alongside: dict[str, str] | None,
) -> None:
    """Write the fine-tune's provenance and the comparison into a candidate's card.

    Args:
        card_path: the candidate's card.
        parent_ref: the bundle it was fine-tuned from.
        common: the data and the split.
        scores: ``{"candidate": ..., "parent": ...}`` card metrics on the comparison patients.
        per_patient: per-patient values, by key.
        metrics: the candidate's card metrics (kept only when the comparison was held out).
        alongside: the other candidate fine-tuned in the same run, or None.
    """
    from brainseg_core.bundle import update_card
    from brainseg_core.jsonsafe import json_safe
    from brainseg_core.model_card import read_card

    c = common
    card = read_card(card_path)
    training = dict(card.training)
    training["data"] = str(c.corrections) + (
        f" + {c.n_original} patients of {c.original}" if c.original else ""
    )
    training["fine_tune"] = {
        "parent": parent_ref,
        "corrections": str(c.corrections),
        "corrected_patients_trained_on": c.train_ids,
        "held_out_patients": c.compare_ids if c.comparison is Comparison.HELD_OUT else [],
        "compared_on": c.compare_ids,
        "comparison": c.comparison.value,
        "comparison_label": c.comparison.label,
        "original_data": None if c.original is None else str(c.original),
        "original_patients": c.n_original,
        "fine_tuned_alongside": alongside,
        "scores": scores,
        **per_patient,
    }
    kept: dict[str, Any] = {}
    if c.comparison is Comparison.HELD_OUT:
        kept = {"scope": f"the {c.comparison.label}", **metrics}
    notes = (
        f"Fine-tuned from {parent_ref['name']} (sha256 {parent_ref['sha256'][:12]}…) on the reader's "
        f"corrections in {c.corrections}. {card.notes}"
    )
    update_card(card_path, training=json_safe(training), metrics=json_safe(kept), notes=notes)


def adopt(result: FinetuneResult, kinds: Collection[ModelKind] | None = None) -> dict[ModelKind, Path]:
    """Install the candidates into the user's model folder, make them the active models, tidy up.

    The registry's own check (a card metric no worse than the active model's) is skipped with
    ``force``: the cards' metrics come from different patients, while the reader has just compared
    the models on the same corrected patients and chosen. The output folder is removed once the
    chosen candidates are installed (a candidate not chosen is deleted with it).

    Args:
        result: a :func:`fine_tune` result whose candidates are still in its output folder.
        kinds: which candidates to install (:class:`ModelKind`); None: every candidate of the run.

    Returns:
        The installed card paths, by kind.

    Raises:
        ValueError: when ``kinds`` is empty or names a model the run did not fine-tune.
        BundleError: when a candidate fails verification or cannot be copied (the output folder is
            then kept, and a candidate installed before the failure stays installed).
    """
    from brainseg_core.registry import install_bundle

    available = result.candidates
    chosen = list(available) if kinds is None else [ModelKind(k) for k in kinds]
    if not chosen:
        raise ValueError("choose at least one candidate to adopt")
    missing = [k.value for k in chosen if k not in available]
    if missing:
        raise ValueError(f"this fine-tuning has no {' or '.join(missing)} candidate")
    installed = {
        kind: install_bundle(available[kind], overwrite=True, force=True)
        for kind in (ModelKind.CLASSIFIER, ModelKind.SEGMENTER)
        if kind in chosen
    }
    shutil.rmtree(result.out, ignore_errors=True)
    return installed


def discard(result: FinetuneResult | Path) -> None:
    """Delete the candidates and their fine-tuning folder (an installed copy is not touched).

    Args:
        result: the result, or the output folder of a run (e.g. a cancelled one).
    """
    out = result.out if isinstance(result, FinetuneResult) else Path(result)
    shutil.rmtree(out, ignore_errors=True)
