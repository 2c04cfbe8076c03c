"""One training epoch: the epoch's seeded draws, then augment, forward, backward and step per batch.

Reproducibility: every epoch's sampling and augmentation come from generators seeded by
``(seed, epoch)`` (:func:`seed_for`), and the global torch seed is reset from them too, so a run
resumed after epoch ``e`` draws exactly what the uninterrupted run drew in epoch ``e + 1``.
Each process of a distributed run takes a disjoint shard of the epoch's draws.

A step: gather the batch by index on the device, :func:`~brainseg_core.training.data.augment`
it (and cut segmenter patches with :func:`~brainseg_core.training.data.crop_batch` when
``crop`` is set), set the scheduled learning rate, forward under autocast in channels-last,
backward, clip the gradient norm and step AdamW.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from brainseg_core.errors import Cancelled
from brainseg_core.inference.device import autocast
from brainseg_core.models.encoder_gate import ResUNetGate
from brainseg_core.progress import ProgressFn, cancel_checker
from brainseg_core.training.budget import TimeBudget
from brainseg_core.training.config import TrainConfig
from brainseg_core.training.data import SliceSet, augment, crop_batch, epoch_indices
from brainseg_core.training.distributed import DistInfo, mean_across
from brainseg_core.training.learner import GRAD_CLIP, Learner
from brainseg_core.training.schedule import StepPlan

#: Salts of the per-epoch seeds: global torch seed, sampling, augmentation (+ rank).
_GLOBAL, _SAMPLING, _AUGMENTATION = 1, 2, 3


def seed_for(seed: int, epoch: int, salt: int) -> int:
    """The seed of one generator of one epoch (a fixed function of the run's seed and the epoch)."""
    return (seed * 1_000_003 + epoch * 7919 + salt) % (2**63 - 1)


@dataclass
class EpochResult:
    """What one epoch of one process did.

    Attributes:
        steps: optimiser steps taken.
        end_step: the run's step count after the epoch.
        train_loss: mean training loss of the epoch's steps, averaged over the processes.
        first_loss: loss of the epoch's first step (NaN if it took none).
        train_s: wall time of the epoch's steps.
        out_of_time: the time budget stopped the epoch early.
    """

    steps: int
    end_step: int
    train_loss: float
    first_loss: float
    train_s: float
    out_of_time: bool


def train_epoch(
    learner: Learner,
    train_set: SliceSet,
    *,
    labels_cpu: torch.Tensor,
    cfg: TrainConfig,
    plan: StepPlan,
    epoch: int,
    step: int,
    dist_info: DistInfo,
    budget: TimeBudget,
    cancel: threading.Event | Callable[[], bool] | None = None,
    progress: bool = False,
    step_progress: ProgressFn | None = None,
) -> EpochResult:
    """Train one epoch (at most ``plan.steps_per_epoch`` steps, none past ``plan.total_steps``).

    Args:
        learner: model, loss and optimiser.
        train_set: the training slices, on the training device.
        labels_cpu: ``train_set.labels`` on the CPU (for the epoch's draws).
        cfg: the run's settings (seed, kind, crop, peak learning rate, epochs).
        plan: the step plan (schedule and epoch length).
        epoch: this epoch's number, from 1.
        step: the run's step count before the epoch.
        dist_info: this process's place in the run.
        budget: the run's time budget (checked between steps in a one-process run).
        cancel: stops the epoch between steps with :class:`~brainseg_core.errors.Cancelled`.
        progress: show a tqdm bar (rank 0 only).
        step_progress: ``step_progress(step, total_steps)`` after each optimiser step (the run's
            step count and its planned total, which a time budget may re-plan between epochs).

    Returns:
        The :class:`EpochResult`.

    Raises:
        Cancelled: when ``cancel`` is set.
    """
    from tqdm import tqdm

    device = learner.device
    torch.manual_seed(seed_for(cfg.seed, epoch, _GLOBAL))
    gen = torch.Generator().manual_seed(seed_for(cfg.seed, epoch, _SAMPLING))
    idx = epoch_indices(labels_cpu, length=plan.epoch_len, tumour_fraction=cfg.tumour_fraction, generator=gen)
    shard = idx[dist_info.rank :: dist_info.world][: plan.shard_len].to(device)
    aug_gen = torch.Generator(device=device).manual_seed(
        seed_for(cfg.seed, epoch, _AUGMENTATION + dist_info.rank)
    )
    learner.net.train()
    bs, spe = plan.batch_size, plan.steps_per_epoch
    loss_sum = torch.zeros((), device=device)
    n_steps = 0
    first_loss = float("nan")
    out_of_time = False
    pbar = tqdm(
        total=spe,
        desc=f"epoch {epoch}/{cfg.epochs}",
        unit="batch",
        leave=False,
        disable=not (progress and dist_info.main),
        dynamic_ncols=True,
    )
    t_epoch = time.perf_counter()
    for i in range(spe):
        if step >= plan.total_steps:
            break
        if cancel_checker(cancel)():
            pbar.close()
            raise Cancelled("training cancelled; resume continues from the last completed epoch")
        if dist_info.world == 1 and n_steps > 0 and budget.used_up():
            out_of_time = True
            break
        loss = _step(learner, train_set, shard[i * bs : (i + 1) * bs], cfg, plan, step, aug_gen)
        step += 1
        n_steps += 1
        loss_sum += loss.detach()
        if n_steps == 1:
            first_loss = float(loss.item())
        pbar.update(1)
        if step_progress is not None:
            step_progress(step, plan.total_steps)
        if n_steps % 10 == 0 or n_steps == spe:
            rate = n_steps * bs * dist_info.world / max(1e-9, time.perf_counter() - t_epoch)
            pbar.set_postfix(loss=f"{(loss_sum / n_steps).item():.4f}", slices_s=f"{rate:.0f}")
    pbar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = time.perf_counter() - t_epoch
    train_loss = float(mean_across(loss_sum / max(1, n_steps), dist_info).item())
    return EpochResult(n_steps, step, train_loss, first_loss, train_s, out_of_time)


def _step(
    learner: Learner,
    train_set: SliceSet,
    batch: torch.Tensor,
    cfg: TrainConfig,
    plan: StepPlan,
    step: int,
    aug_gen: torch.Generator,
) -> torch.Tensor:
    """One optimiser step on the slices ``batch`` (indices into ``train_set``); returns the loss."""
    seg = cfg.segmenter
    # An encoder gate learns where the tumour is: its targets are the (augmented) masks on its grid.
    gate = learner.model if isinstance(learner.model, ResUNetGate) else None
    x, m = augment(
        train_set.images[batch],
        train_set.masks[batch] if seg or gate is not None else None,
        aug_gen,
        cfg.augmentation,
    )
    if cfg.crop is not None and m is not None:
        x, m = crop_batch(x, m, cfg.crop, aug_gen)
    x = x.contiguous(memory_format=torch.channels_last)
    lr = plan.lr(step, cfg.lr)
    opt = learner.optimizer
    for g in opt.param_groups:
        g["lr"] = lr
    with autocast(learner.device, learner.amp):
        logits = learner.net(x, cells=True) if gate is not None else learner.net(x)
    if seg:
        target = m
    elif gate is not None:
        assert m is not None
        target = gate.cell_targets(m)
    else:
        target = train_set.labels[batch][:, None]
    loss = learner.loss_fn(logits, target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(learner.model.parameters(), GRAD_CLIP)
    opt.step()
    return loss
