"""The trainer behind ``brainseg-train``: :func:`train`, for both model kinds.

:func:`train` runs the pieces of :mod:`brainseg_core.training` in order:

1. :mod:`.config`: the settings, resolved and checked (on ``--resume``, the run-defining ones come
   from the checkpoint).
2. :mod:`.data`: every patient is read once, normalised per volume and kept as one float16 tensor
   on the training device; split by patient (``val_patients``: a fraction drawn with ``seed``, or
   explicit ids, or the held-out fold of ``folds``), the validation ids written to
   ``OUT/val_patients.txt`` and into the card.
3. :mod:`.learner`: the model (initialised from ``seed``, or from ``--init-from``), its loss and
   AdamW; :mod:`.schedule`: the step plan and the learning rate (warm-up, cosine decay);
   :mod:`.distributed`: one process, or one per device under ``torchrun``.
4. Epochs (:mod:`.epoch`): an epoch is ``len(training slices)`` draws. Segmenter: a share
   ``tumour_fraction`` (0.7 by default) of the draws from tumour slices and the rest from
   tumour-free ones, so it learns to leave empty slices empty as well as to outline tumours.
   Classifier: natural frequencies and a class-balanced loss. Every epoch's sampling and
   augmentation come from generators seeded by ``(seed, epoch)``, so a resumed run continues with
   the same draws, and the same seed and data give the same split and the same first-batch loss
   (on one device; GPU kernels may still differ in the last bits).
5. After each epoch (rank 0): validation on the validation patients (:mod:`.validation`) every
   ``val_every`` epochs and after the last; the best epoch's weights are kept (or the last ones
   with ``keep="last"``); the checkpoint (:mod:`.checkpoint`) and ``metrics.jsonl`` are rewritten
   and a line is logged (:mod:`.reporting`). Training stops after ``epochs``, after ``patience``
   validations without improvement, or when the time budget (:mod:`.budget`) is used up (the
   current epoch is cut short and validated); with a budget the step plan is re-planned after
   every epoch from the measured speed, so the learning rate reaches its floor when it runs out.
6. The end (rank 0): the kept weights' thresholds chosen on the validation patients and a
   segmenter's held-out probabilities saved (:mod:`.validation`), the bundle ``NAME.safetensors``
   + ``NAME.json`` written with its recipe (:mod:`.recipe`), ``learning_curves.png`` drawn, and
   the bundle installed if asked.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brainseg_core.crossval import OUT_OF_FOLD_FILE
from brainseg_core.jsonsafe import json_safe
from brainseg_core.model_card import read_card
from brainseg_core.out_of_fold import stamp_out_of_fold
from brainseg_core.progress import ProgressFn
from brainseg_core.training import checkpoint, reporting
from brainseg_core.training.budget import TimeBudget
from brainseg_core.training.config import Keep, TrainConfig
from brainseg_core.training.data import (
    Split,
    find_labelled_patients,
    fold_patients,
    load_slices,
    make_split,
    read_patient_list,
)
from brainseg_core.training.distributed import DistInfo, broadcast, setup_distributed, shutdown, wrap_model
from brainseg_core.training.epoch import EpochResult, train_epoch
from brainseg_core.training.learner import Learner, build_learner
from brainseg_core.training.recipe import Timings, training_summary, write_bundle
from brainseg_core.training.schedule import StepPlan
from brainseg_core.training.validation import final_evaluation, selection_value, validate

__all__ = ["TrainConfig", "TrainResult", "train"]

#: What ``cancel`` may be: an event, a zero-argument callable returning True to stop, or None.
Cancel = threading.Event | Callable[[], bool] | None


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        card_path: the bundle's card (None on ranks other than 0).
        best_epoch: epoch whose weights were kept.
        epochs_run: epochs completed (in total, over resumes).
        metrics: validation metrics of the saved model (thresholds applied).
        thresholds: the card's thresholds.
        stop_reason: why training ended.
        history: the per-epoch log records.
    """

    card_path: Path | None
    best_epoch: int
    epochs_run: int
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    stop_reason: str
    history: list[dict[str, Any]] = field(default_factory=list)


def train(
    config: TrainConfig,
    *,
    log: Callable[[str], None] = print,
    progress: bool = True,
    cancel: Cancel = None,
    step_progress: ProgressFn | None = None,
) -> TrainResult:
    """Train a classifier or a segmenter and write its bundle (see the module docstring).

    Args:
        config: the run's settings.
        log: receives one line per event (data loaded, epoch summary, ...).
        progress: show tqdm bars (rank 0 only).
        cancel: a ``threading.Event`` or zero-argument callable; when set, training stops between
            steps with :class:`~brainseg_core.errors.Cancelled` (the last epoch's checkpoint
            stays, ``resume`` continues from it).
        step_progress: the core's progress protocol for callers without a terminal:
            ``step_progress(step, total_steps)`` after each optimiser step (rank 0 only; the total
            may change between epochs when a time budget re-plans the run).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: for invalid settings, or ``out`` holding a checkpoint without ``resume``.
        DataError: for unusable data, or a checkpoint ``resume`` cannot read.
        Cancelled: when ``cancel`` is set.
    """
    from brainseg_core.inference.device import resolve_precision

    t_start = time.perf_counter()
    cfg = config.resolved()
    saved = _resume_or_refuse(cfg)
    if saved is not None:
        cfg = cfg.with_saved(saved.config)
    dist_info, device = setup_distributed(cfg.device)
    amp = resolve_precision(cfg.precision, device)
    say = log if dist_info.main else _silent
    _tune_cuda(device)

    split = _load_split(cfg, saved, device, dist_info=dist_info, progress=progress, say=say)
    t_loaded = time.perf_counter()
    say(
        f"{len(split.train_ids)} training patients ({len(split.train)} slices, {split.train.n_tumour} with "
        f"tumour), {len(split.val_ids)} validation patients ({len(split.val)} slices, {split.val.n_tumour} "
        f"with tumour); loaded in {t_loaded - t_start:.1f} s; device {reporting.describe_device(device)}"
    )
    if dist_info.main:
        checkpoint.checkpoint_dir(cfg.out).mkdir(parents=True, exist_ok=True)
        reporting.write_val_patients(cfg.out, split.val_ids)

    init_from = Path(cfg.init_from) if saved is None and cfg.init_from is not None else None
    learner = build_learner(cfg, split.train, device=device, amp=amp, init_from=init_from)
    if init_from is not None:
        say(f"initialised from {cfg.init_from}")
        if cfg.encoder_from is not None:
            say(f"stem and encoder from {cfg.encoder_from}")
    plan = StepPlan.for_run(
        len(split.train), world=dist_info.world, batch_size=cfg.batch_size, epochs=cfg.epochs
    )
    run = _Run(
        cfg, split, learner, plan, dist_info, TimeBudget.minutes(cfg.time_budget_min, start=t_start), say
    )
    if saved is not None:
        run.restore(saved)
        del saved  # its copy of the weights and optimiser state is no longer needed
    learner.net = wrap_model(learner.model, dist_info, device)
    run.train_epochs(
        cancel=cancel, progress=progress, step_progress=step_progress if dist_info.main else None
    )
    result = run.finish(Timings(load_s=t_loaded - t_start, wall_s=time.perf_counter() - t_start))
    shutdown(dist_info)
    return result


def _silent(_msg: str) -> None:
    """The log of ranks other than 0."""


def _tune_cuda(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _resume_or_refuse(cfg: TrainConfig) -> checkpoint.Checkpoint | None:
    """The checkpoint to resume from, or None for a fresh run in a folder without one.

    Raises:
        ValueError: with ``resume`` and no checkpoint, or without ``resume`` and one.
        DataError: for a checkpoint that cannot be resumed.
    """
    if cfg.resume:
        return checkpoint.load_last(cfg.out)
    if checkpoint.has_checkpoint(cfg.out):
        raise ValueError(
            f"{cfg.out} already holds a training checkpoint; pass --resume to continue it, or choose "
            "another --out folder"
        )
    return None


def _load_split(
    cfg: TrainConfig,
    saved: checkpoint.Checkpoint | None,
    device: torch.device,
    *,
    dist_info: DistInfo,
    progress: bool,
    say: Callable[[str], None],
) -> Split:
    """Read every patient and split them as ``cfg`` (or the resumed run) says."""
    from tqdm import tqdm

    patients = find_labelled_patients(cfg.data)
    say(f"reading {len(patients)} patients from {cfg.data} at {cfg.image_size}x{cfg.image_size} ...")
    bar = tqdm(total=len(patients), desc="loading", unit="patient", disable=not (progress and dist_info.main))
    data = load_slices(
        patients,
        size=cfg.image_size,
        workers=min(8, os.cpu_count() or 1),
        progress=lambda done, total: bar.update(1),
        warn=say,
        series=cfg.series,
        context=cfg.context,
    )
    bar.close()
    val: float | list[str]
    if saved is not None:
        # the resumed run's own patients (none: it trained on every patient)
        val = saved.val_patients or 0.0
    elif cfg.folds is not None and cfg.fold is not None:
        val = fold_patients(data.patient_ids, folds=cfg.folds, fold=cfg.fold, seed=cfg.seed)
    elif isinstance(cfg.val_patients, float):
        val = cfg.val_patients
    else:
        val = read_patient_list(Path(cfg.val_patients))
    return make_split(data, val, seed=cfg.seed, device=device)


class _Run:
    """The state of one run between its start and its bundle: counters, history, stop decision."""

    def __init__(
        self,
        cfg: TrainConfig,
        split: Split,
        learner: Learner,
        plan: StepPlan,
        dist_info: DistInfo,
        budget: TimeBudget,
        say: Callable[[str], None],
    ) -> None:
        self.cfg, self.split, self.learner, self.plan = cfg, split, learner, plan
        self.dist_info, self.budget, self.say = dist_info, budget, say
        self.progress = checkpoint.Progress()
        self.history: list[dict[str, Any]] = []
        self.stop_reason = "epochs"
        self.labels_cpu = split.train.labels.cpu()
        # this process's own speed (not counting resumed epochs), for re-planning to the budget
        self.run_train_s = 0.0
        self.run_steps = 0
        self.last_val_s = 0.0

    @property
    def val_batch_size(self) -> int:
        """Slices per forward pass when predicting the validation patients."""
        return max(1, 2 * self.cfg.batch_size)

    def restore(self, saved: checkpoint.Checkpoint) -> None:
        """Continue from a checkpoint: weights, optimiser, schedule, counters and history."""
        self.learner.model.load_state_dict(saved.model)
        self.learner.optimizer.load_state_dict(saved.optimizer)
        self.plan.warmup = saved.warmup
        self.progress = saved.progress
        self.history = reporting.read_history(self.cfg.out, up_to_epoch=self.progress.epoch)
        p = self.progress
        if p.epoch >= self.cfg.epochs:
            self.stop_reason = "epochs (already reached)"
        self.say(f"resuming after epoch {p.epoch} (step {p.step}); best so far epoch {p.best_epoch}")

    def train_epochs(
        self, *, cancel: Cancel, progress: bool, step_progress: ProgressFn | None = None
    ) -> None:
        """Train epoch after epoch until the plan, the patience or the budget says stop."""
        cfg, p, plan = self.cfg, self.progress, self.plan
        while p.epoch < cfg.epochs and p.step < plan.total_steps:
            p.epoch += 1
            ep = train_epoch(
                self.learner,
                self.split.train,
                labels_cpu=self.labels_cpu,
                cfg=cfg,
                plan=plan,
                epoch=p.epoch,
                step=p.step,
                dist_info=self.dist_info,
                budget=self.budget,
                cancel=cancel,
                progress=progress,
                step_progress=step_progress,
            )
            if ep.out_of_time:
                self.stop_reason = "time budget"
            p.step = ep.end_step
            slices = ep.steps * plan.batch_size * self.dist_info.world
            p.train_time_s += ep.train_s
            p.slices_seen += slices
            self.run_train_s += ep.train_s
            self.run_steps += ep.steps
            stop = self._after_epoch(ep, slices) if self.dist_info.main else False
            stop_f, total_f = broadcast(
                [float(stop), float(plan.total_steps)], self.dist_info, self.learner.device
            )
            plan.total_steps = int(total_f)
            if stop_f:
                break
            if p.step >= plan.total_steps and p.epoch < cfg.epochs:
                self.stop_reason = "time budget"

    def _after_epoch(self, ep: EpochResult, slices: int) -> bool:
        """Rank 0 after an epoch: validate if due, checkpoint, log, and decide whether to stop."""
        cfg, p, plan = self.cfg, self.progress, self.plan
        last_epoch = (
            p.epoch >= cfg.epochs
            or p.step >= plan.total_steps
            or self.stop_reason == "time budget"
            or self.budget.used_up()
        )
        validated = bool(self.split.val_ids) and (last_epoch or p.epoch % cfg.val_every == 0)
        metrics: dict[str, Any] = {}
        val_s, improved = 0.0, False
        if validated:
            metrics, val_s, improved = self._validate_epoch()
        record = reporting.epoch_record(
            epoch=p.epoch,
            step=p.step,
            lr=plan.lr(max(0, p.step - 1), cfg.lr),
            train_loss=ep.train_loss,
            first_batch_loss=ep.first_loss,
            metrics=metrics,
            best=improved,
            train_time_s=ep.train_s,
            val_time_s=val_s,
            slices=slices,
            elapsed_s=self.budget.elapsed(),
        )
        self.history.append(json_safe(record))
        checkpoint.save_last(
            cfg.out,
            model=self.learner.model,
            optimizer=self.learner.optimizer,
            progress=p,
            warmup=plan.warmup,
            val_patients=self.split.val_ids,
            config=cfg.to_plain(),
        )
        reporting.write_history(cfg.out, self.history)
        self.say(
            reporting.epoch_line(
                record, cfg.kind, validated=validated, marked_best=improved and cfg.keep == Keep.BEST
            )
        )
        return self._should_stop(ep)

    def _validate_epoch(self) -> tuple[dict[str, Any], float, bool]:
        """Validate the current weights; keep them if they improve. Returns (metrics, time, improved)."""
        cfg, p, learner = self.cfg, self.progress, self.learner
        t_val = time.perf_counter()
        metrics, thresholds = validate(
            learner.model,
            self.split.val,
            learner.loss_fn,
            kind=cfg.kind,
            batch_size=self.val_batch_size,
            amp=learner.amp,
        )
        val_s = time.perf_counter() - t_val
        self.last_val_s = val_s
        value = selection_value(cfg.kind, metrics)
        improved = cfg.keep == Keep.LAST or value > p.best_value + 1e-6
        if improved:
            p.best_value, p.best_epoch, p.since_best = value, p.epoch, 0
            p.best_metrics, p.best_thresholds = metrics, thresholds
            checkpoint.save_best(
                cfg.out, learner.model, epoch=p.epoch, metrics=metrics, thresholds=thresholds
            )
        else:
            p.since_best += 1
        return metrics, val_s, improved

    def _should_stop(self, ep: EpochResult) -> bool:
        """Stop for the budget or the patience; else re-plan the steps the budget affords."""
        cfg, p, plan, budget = self.cfg, self.progress, self.plan, self.budget
        budget.keep_for_final(self.last_val_s)
        if self.stop_reason == "time budget" or budget.used_up():
            self.stop_reason = "time budget"
            return True
        if cfg.patience and p.since_best >= cfg.patience:
            self.stop_reason = f"no improvement for {cfg.patience} epochs"
            return True
        if budget.seconds is not None and self.run_steps > 0:
            per_step = (self.run_train_s / self.run_steps) + self.last_val_s / max(
                1, ep.steps * cfg.val_every
            )
            plan.total_steps = min(plan.max_steps, budget.affordable_steps(p.step, per_step))
            if p.step >= plan.total_steps:
                self.stop_reason = "time budget"
                return True
        return False

    def finish(self, timings: Timings) -> TrainResult:
        """Rank 0: choose the thresholds with the kept weights, write the bundle, report, install."""
        cfg, p, learner = self.cfg, self.progress, self.learner
        card_path: Path | None = None
        metrics: dict[str, Any] = dict(p.best_metrics)
        thresholds: dict[str, Any] = dict(p.best_thresholds)
        if self.dist_info.main:
            if cfg.keep == Keep.LAST:
                p.best_epoch = p.epoch
            elif (best := checkpoint.load_best_weights(cfg.out)) is not None:
                learner.model.load_state_dict(best)
            metrics, thresholds = final_evaluation(
                learner.model,
                self.split.val,
                learner.loss_fn,
                kind=cfg.kind,
                batch_size=self.val_batch_size,
                amp=learner.amp,
                min_area_candidates=cfg.min_area_candidates,
                out_of_fold=cfg.out / OUT_OF_FOLD_FILE,
            )
            metrics["epoch"] = p.best_epoch
            training = training_summary(
                cfg,
                split=self.split,
                progress=p,
                stop_reason=self.stop_reason,
                plan=self.plan,
                processes=self.dist_info.world,
                amp=learner.amp,
                device=reporting.describe_device(learner.device),
                timings=timings,
            )
            card_path = write_bundle(
                learner.model, cfg, thresholds=thresholds, training=training, metrics=metrics
            )
            oof = cfg.out / OUT_OF_FOLD_FILE
            if self.split.val.patient_ids:  # which weights made it (see out_of_fold)
                stamp_out_of_fold(oof, read_card(card_path).weights_sha256)
            else:  # nothing held out: a file here is an earlier run's, not this model's
                oof.unlink(missing_ok=True)
            self._report(card_path)
        return TrainResult(
            card_path=card_path,
            best_epoch=p.best_epoch,
            epochs_run=p.epoch,
            metrics=json_safe(metrics),
            thresholds=thresholds,
            stop_reason=self.stop_reason,
            history=self.history,
        )

    def _report(self, card_path: Path) -> None:
        cfg = self.cfg
        if self.history:
            reporting.plot_curves(self.history, cfg.kind, cfg.out / reporting.CURVES_FILE)
        self.say(reporting.summary_table(self.history, cfg.kind))
        self.say(f"stopped: {self.stop_reason}; best epoch {self.progress.best_epoch}; bundle {card_path}")
        if cfg.install:
            from brainseg_core.registry import install_bundle

            # raises InstallRefused (naming the bundle, which stays in ``out``) when it is worse
            installed = install_bundle(card_path, force=cfg.force_install)
            self.say(f"installed into the user's model folder: {installed}")
