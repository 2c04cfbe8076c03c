"""How long work talks to its caller: progress callbacks and cancellation, one protocol for all.

Every long operation in BrainSeg (analysis, export, evaluation, training) takes
``progress(done, total)`` and ``cancel``: a :class:`threading.Event` or a zero-argument callable
returning True to stop. :func:`cancel_checker` turns either into one predicate; work checks it
between steps and raises :class:`brainseg_core.errors.Cancelled`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeAlias

__all__ = ["CancelArg", "ProgressFn", "cancel_checker"]

#: ``progress(done, total)``: called with ``(0, total)`` first and after each step.
ProgressFn: TypeAlias = Callable[[int, int], None]
#: What ``cancel=`` accepts: an event, a zero-argument callable returning True to stop, or None.
CancelArg: TypeAlias = threading.Event | Callable[[], bool] | None


def cancel_checker(cancel: CancelArg) -> Callable[[], bool]:
    """Turn a ``cancel`` argument into a zero-argument predicate.

    Args:
        cancel: a ``threading.Event``, a zero-argument callable returning True to stop, or None
            (never cancelled).

    Returns:
        A function returning True once the work should stop.

    Raises:
        TypeError: for anything else.
    """
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError(f"cancel must be a threading.Event or a callable returning bool, got {type(cancel)}")
