"""The wall-time budget of a run (``--time-budget``).

The budget counts from the start of :func:`~brainseg_core.training.loop.train` (data loading
included). A reserve is kept for the work after the last epoch: the final validation, the threshold
choice and the out-of-fold predictions take about four validation passes, so the reserve is
``4 x (last validation time) + 5 s``, measured as the run goes. After every epoch the step plan is
cut to the steps the remaining time affords at the measured speed; within an epoch a one-process
run stops between steps once the budget (less the reserve) is used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: Validation passes the end of a run takes (final validation, thresholds, out-of-fold file).
FINAL_PASSES = 4
#: Seconds kept on top of them for writing the files.
FINAL_WRITE_S = 5.0


@dataclass
class TimeBudget:
    """Wall time left to a run.

    Attributes:
        seconds: the budget (None: unlimited).
        start: ``time.perf_counter()`` at the start of the run.
        reserve_s: time kept for the end of the run (see the module docstring).
    """

    seconds: float | None
    start: float = field(default_factory=time.perf_counter)
    reserve_s: float = 0.0

    @classmethod
    def minutes(cls, minutes: float | None, *, start: float) -> TimeBudget:
        """A budget of ``minutes`` (None or 0: unlimited) counted from ``start``."""
        return cls(minutes * 60 if minutes else None, start)

    def elapsed(self) -> float:
        """Seconds since the start of the run."""
        return time.perf_counter() - self.start

    def used_up(self) -> bool:
        """Whether the budget, less the reserve, is spent (never without a budget)."""
        return self.seconds is not None and self.elapsed() > self.seconds - self.reserve_s

    def keep_for_final(self, validation_s: float) -> None:
        """Set the reserve from the last validation's duration."""
        self.reserve_s = FINAL_PASSES * validation_s + FINAL_WRITE_S

    def affordable_steps(self, step: int, seconds_per_step: float) -> int:
        """The step count the run can reach: ``step`` plus what the time left affords.

        Args:
            step: steps taken so far.
            seconds_per_step: measured cost of one more step (training and its share of
                validation).

        Returns:
            The affordable total; with no budget, no limit is computed (call only with one).
        """
        assert self.seconds is not None
        left = self.seconds - self.reserve_s - self.elapsed()
        return step + max(0, int(left / seconds_per_step))
