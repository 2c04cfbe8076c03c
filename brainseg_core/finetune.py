"""Learn from the reader's corrections: fine-tune the segmenter on corrected patients, then compare.

:func:`fine_tune` takes the current segmenter bundle and a folder of corrected patients (what
:func:`brainseg_core.export.export_training_data` writes: ``<patient>/<patient>_<n>.tif`` +
``_mask.tif``), and:

1. **Splits by patient** (never by slice): a share of the corrected patients is held out
   (:func:`split_corrected`: the sorted ids shuffled with ``numpy.random.default_rng(seed)``, at
   least one held out and at least two left to train on). With fewer than
   :data:`MIN_PATIENTS_TO_HOLD_OUT` corrected patients (or a share of 0) nothing is held out: the
   candidate is trained on every corrected patient and the two models are compared on those same
   patients, labelled :attr:`Comparison.TRAINING` ("not held out": the candidate has seen them, so
   its numbers are optimistic). The result says which one it is.
2. **Fine-tunes** with the one trainer (:func:`brainseg_core.training.loop.train` with
   ``init_from`` = the current bundle, a fresh schedule, no validation split and the last weights
   kept) on the training patients, mixed with the original training data when its folder is given
   (the corrected patients replace their original copies, and no held-out patient enters training
   under any name). The trainer reads one data root, so the chosen patients are linked (copied
   where links are not allowed) into ``OUT/data``.
3. **Evaluates** the candidate and the current model on the comparison patients with
   :func:`brainseg_core.evaluation.evaluate` (the segmenter on every slice, each model with its
   card's thresholds; the candidate keeps its parent's thresholds): per-patient volume Dice, and
   slice recall = the share of ground-truth tumour slices whose mask overlaps the truth.
4. **Records** provenance in the candidate's card: ``training.fine_tune`` names the parent bundle
   (name, sha256, path), the corrections folder, the patients trained on and held out, the
   original data and both models' scores; ``metrics`` holds the candidate's held-out scores (none
   when nothing was held out, so a registry listing never ranks it by optimistic numbers).

The candidate stays in ``OUT`` until the caller installs it (:func:`adopt`) or deletes it
(:func:`discard`); nothing is installed here. A failure or cancel removes ``OUT``.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from brainseg_core.atomic import atomic_write
from brainseg_core.errors import Cancelled, DataError
from brainseg_core.progress import CancelArg, ProgressFn, cancel_checker

__all__ = [
    "MIN_PATIENTS_TO_HOLD_OUT",
    "RESULT_FILE",
    "Comparison",
    "FinetuneResult",
    "FinetuneSettings",
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
RESULT_FORMAT = "brainseg-finetune-result/1"
#: Sub-folders of the output folder: the linked training data and the trainer's run.
DATA_DIR, RUN_DIR = "data", "run"


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
    TRAIN = "train"
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


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`fine_tune` produced (also written as :data:`RESULT_FILE`).

    Attributes:
        candidate: the candidate bundle's card (in the output folder, not installed).
        out: the output folder (delete it to discard the candidate).
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

    @property
    def held_out(self) -> list[str]:
        """The held-out patients (empty when nothing could be held out)."""
        return list(self.compared_on) if self.comparison is Comparison.HELD_OUT else []

    @property
    def candidate_is_better(self) -> bool:
        """The candidate's mean Dice is at least the current model's on the comparison patients."""
        return self.candidate_scores.dice_mean >= self.current.dice_mean

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
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FinetuneResult:
        """The result of :meth:`to_json`.

        Raises:
            ValueError: for another format or a missing key.
        """
        if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
            raise ValueError(f"not a {RESULT_FORMAT} result")
        try:
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


def fine_tune(
    segmenter: str | Path,
    corrections: str | Path,
    out: str | Path,
    *,
    original_data: str | Path | None = None,
    settings: FinetuneSettings | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelArg = None,
    log: Callable[[str], None] | None = None,
    on_stage: Callable[[Stage], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``segmenter`` on corrected patients and compare it with the current model.

    See the module docstring for the split, the training, the comparison and the card.

    Args:
        segmenter: the current segmenter bundle (card, weights or folder).
        corrections: the corrected patients' folder (:func:`find_corrected_patients`).
        out: a new (or empty) folder for the candidate, its training run and :data:`RESULT_FILE`.
        original_data: the original training data root to mix in, or None.
        settings: how to fine-tune (default :class:`FinetuneSettings`).
        progress: ``progress(done, total)`` over training steps then evaluation runs (the total
            is known once the data are read).
        cancel: a ``threading.Event`` or zero-argument callable; stops between steps.
        log: receives one line per event (data read, epoch summary, ...).
        on_stage: called as each :class:`Stage` begins.

    Returns:
        The :class:`FinetuneResult` (also written to ``out/`` :data:`RESULT_FILE`).

    Raises:
        ValueError: for invalid settings, ``out`` not empty, or a bundle that is not a segmenter.
        DataError: for unusable corrections or original data.
        BundleError: when the current segmenter cannot be read.
        Cancelled: when ``cancel`` is set (``out`` is removed).
    """
    from brainseg_core.bundle import read_card, resolve_card_path

    t0 = time.perf_counter()
    settings = settings or FinetuneSettings()
    settings.check()
    say = log or (lambda _m: None)
    stage = on_stage or (lambda _s: None)
    is_cancelled = cancel_checker(cancel)
    parent_path = resolve_card_path(segmenter)
    parent = read_card(parent_path)
    if parent.kind != "segmenter":
        raise ValueError(f"{parent_path}: is a {parent.kind}; fine-tuning on corrections needs the segmenter")
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
            parent_path,
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


def _run(
    parent_path: Path,
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
    """Stage the data, train, score both models, record provenance (see :func:`fine_tune`)."""
    from brainseg_core.bundle import load_bundle, read_card, update_card
    from brainseg_core.evaluation import evaluate
    from brainseg_core.training.config import Keep, TrainConfig, default_tumour_fraction
    from brainseg_core.training.loop import train

    train_ids, compare_ids, comparison = split
    parent_card = read_card(parent_path)
    data, n_original = _stage_data(
        out, corrected, train_ids, original, settings.max_original_patients, settings.seed
    )
    if original is not None:
        say(f"mixing in {n_original} original patients from {original}")
    n_eval = 2 * len(compare_ids)
    state = {"total_steps": 0}

    def on_step(done: int, total: int) -> None:
        state["total_steps"] = total
        if progress is not None:
            progress(done, total + n_eval)

    crop = parent_card.training.get("crop")
    size = parent_card.input_size
    crop = crop if isinstance(crop, int) and crop % 16 == 0 and 16 <= crop <= size else None
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    config = TrainConfig(
        kind="segmenter",
        data=data,
        out=out / RUN_DIR,
        arch=parent_card.arch,
        width=parent_card.arch_args.get("base_filters"),
        depth=parent_card.arch_args.get("depth"),
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        lr=settings.lr,
        image_size=size,
        val_patients=0.0,
        seed=settings.seed,
        tumour_fraction=default_tumour_fraction("segmenter"),
        device=settings.device,
        patience=0,
        name=f"{parent_card.name}-ft-{stamp}",
        crop=crop,
        init_from=str(parent_path),
        keep=Keep.LAST,
    )
    stage(Stage.TRAIN)
    trained = train(config, log=say, progress=False, cancel=is_cancelled, step_progress=on_step)
    assert trained.card_path is not None
    if is_cancelled():
        raise Cancelled("fine-tuning cancelled")

    stage(Stage.EVALUATE)
    steps = state["total_steps"]
    evaluated = 0

    def score(card_path: Path) -> ModelScores:
        nonlocal evaluated
        bundle = load_bundle(card_path)
        base = evaluated

        def one(done: int, _total: int) -> None:
            if progress is not None:
                progress(steps + base + done, steps + n_eval)

        report = evaluate(
            corrections,
            classifier=None,
            segmenter=bundle,
            device=settings.device,
            patients=compare_ids,
            progress=one,
            cancel=is_cancelled,
        )
        evaluated += len(compare_ids)
        return _scores(report, bundle.card.name, bundle.card.weights_sha256)

    # the candidate keeps its parent's post-processing (chosen on many more patients)
    update_card(trained.card_path, thresholds=dict(parent_card.thresholds))
    say(f"comparing both models on {len(compare_ids)} patients: {', '.join(compare_ids)}")
    current = score(parent_path)
    candidate = score(trained.card_path)
    say(
        f"mean volume Dice: current {current.dice_mean:.3f}, candidate {candidate.dice_mean:.3f} "
        f"({comparison.label})"
    )
    parent_ref = {"name": parent_card.name, "sha256": parent_card.weights_sha256, "path": str(parent_path)}
    _record_provenance(
        trained.card_path,
        parent_ref=parent_ref,
        corrections=corrections,
        original=original,
        n_original=n_original,
        train_ids=train_ids,
        compare_ids=compare_ids,
        comparison=comparison,
        current=current,
        candidate=candidate,
    )
    shutil.rmtree(data, ignore_errors=True)  # links (or copies) only; the run folder keeps its logs
    result = FinetuneResult(
        candidate=trained.card_path,
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
        epochs=trained.epochs_run,
        wall_s=round(time.perf_counter() - t0, 1),
    )
    result.write(out / RESULT_FILE)
    return result


def _record_provenance(
    card_path: Path,
    *,
    parent_ref: dict[str, str],
    corrections: Path,
    original: Path | None,
    n_original: int,
    train_ids: list[str],
    compare_ids: list[str],
    comparison: Comparison,
    current: ModelScores,
    candidate: ModelScores,
) -> None:
    """Write the fine-tune's provenance and the comparison into the candidate's card."""
    from brainseg_core.bundle import read_card, update_card
    from brainseg_core.jsonsafe import json_safe

    card = read_card(card_path)
    training = dict(card.training)
    training["data"] = str(corrections) + (f" + {n_original} patients of {original}" if original else "")
    training["fine_tune"] = {
        "parent": parent_ref,
        "corrections": str(corrections),
        "corrected_patients_trained_on": train_ids,
        "held_out_patients": compare_ids if comparison is Comparison.HELD_OUT else [],
        "compared_on": compare_ids,
        "comparison": comparison.value,
        "comparison_label": comparison.label,
        "original_data": None if original is None else str(original),
        "original_patients": n_original,
        "scores": {"candidate": candidate.card_metrics(), "parent": current.card_metrics()},
        "per_patient_dice": {"candidate": candidate.dice, "parent": current.dice},
    }
    metrics: dict[str, Any] = {}
    if comparison is Comparison.HELD_OUT:
        metrics = {"scope": f"the {comparison.label}", **candidate.card_metrics()}
    notes = (
        f"Fine-tuned from {parent_ref['name']} (sha256 {parent_ref['sha256'][:12]}…) on the reader's "
        f"corrections in {corrections}. {card.notes}"
    )
    update_card(card_path, training=json_safe(training), metrics=json_safe(metrics), notes=notes)


def adopt(result: FinetuneResult) -> Path:
    """Install the candidate into the user's model folder, make it the active segmenter, tidy up.

    The registry's own check (a card metric no worse than the active model's) is skipped with
    ``force``: the two cards' metrics come from different patients, while the reader has just
    compared both models on the same corrected patients and chosen. The output folder is removed
    once the copy is installed.

    Args:
        result: a :func:`fine_tune` result whose candidate is still in its output folder.

    Returns:
        The installed card's path.

    Raises:
        BundleError: when the candidate fails verification or cannot be copied.
    """
    from brainseg_core.registry import install_bundle

    installed = install_bundle(result.candidate, overwrite=True, force=True)
    shutil.rmtree(result.out, ignore_errors=True)
    return installed


def discard(result: FinetuneResult | Path) -> None:
    """Delete a candidate and its fine-tuning folder (an installed copy is not touched).

    Args:
        result: the result, or the output folder of a run (e.g. a cancelled one).
    """
    out = result.out if isinstance(result, FinetuneResult) else Path(result)
    shutil.rmtree(out, ignore_errors=True)
