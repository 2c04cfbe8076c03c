"""How many steps a run takes and the learning rate at each: the step plan and the schedule.

An epoch is ``len(training slices)`` draws, shared by the processes; each process takes
``steps_per_epoch`` steps of ``batch_size`` slices. The learning rate warms up linearly over
``min(1 epoch, 5 %)`` of the planned steps, then decays along a cosine to
:data:`FINAL_LR_FRACTION` of the peak. With a time budget the plan's length (``total_steps``) is
re-planned after every epoch (:mod:`brainseg_core.training.budget`), so the learning rate reaches
its floor when the budget runs out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The cosine decay ends at this fraction of the peak learning rate.
FINAL_LR_FRACTION = 0.01


def lr_at(step: int, *, peak: float, total: int, warmup: int) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up, then cosine to ``FINAL_LR_FRACTION``.

    Args:
        step: optimiser step about to be taken.
        peak: peak learning rate.
        total: planned number of steps.
        warmup: warm-up steps.

    Returns:
        The learning rate.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, total - warmup)
    p = min(1.0, (step - warmup) / span)
    return peak * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * p)))


@dataclass
class StepPlan:
    """The steps of a run.

    Attributes:
        epoch_len: draws per epoch (all processes together): the number of training slices.
        shard_len: draws per epoch of one process.
        batch_size: slices per step of one process (at most ``shard_len``).
        steps_per_epoch: steps per epoch of one process.
        max_steps: steps of ``epochs`` full epochs.
        warmup: warm-up steps of the learning-rate schedule.
        total_steps: steps planned now (``max_steps``, or fewer when a time budget cuts the run).
    """

    epoch_len: int
    shard_len: int
    batch_size: int
    steps_per_epoch: int
    max_steps: int
    warmup: int
    total_steps: int

    @classmethod
    def for_run(cls, n_slices: int, *, world: int, batch_size: int, epochs: int) -> StepPlan:
        """The plan of ``epochs`` epochs over ``n_slices`` training slices.

        Args:
            n_slices: training slices.
            world: number of processes sharing each epoch.
            batch_size: requested slices per step and process.
            epochs: most epochs.

        Returns:
            The plan (``total_steps`` = ``max_steps``).

        Raises:
            ValueError: if there are fewer slices than processes.
        """
        shard_len = n_slices // world
        if shard_len < 1:
            raise ValueError(f"{n_slices} training slices cannot be shared by {world} processes")
        bs = min(batch_size, shard_len)
        spe = shard_len // bs
        max_steps = epochs * spe
        warmup = max(1, min(spe, round(0.05 * max_steps)))
        return cls(n_slices, shard_len, bs, spe, max_steps, warmup, max_steps)

    def lr(self, step: int, peak: float) -> float:
        """The learning rate of ``step`` under the current plan (:func:`lr_at`)."""
        return lr_at(step, peak=peak, total=self.total_steps, warmup=self.warmup)

    def describe(self) -> str:
        """The schedule as the model card records it."""
        return f"linear warm-up {self.warmup} steps, cosine to {FINAL_LR_FRACTION} x lr"
