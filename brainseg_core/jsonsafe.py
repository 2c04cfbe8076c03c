"""One home for turning results into strict JSON values (cards, logs, reports).

Python's ``json`` writes NaN and infinity as bare ``NaN``/``Infinity`` (not JSON) and cannot
write numpy scalars or paths; every writer of metrics in BrainSeg goes through :func:`json_safe`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_safe"]


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps`` writes as strict JSON.

    Dicts (keys as strings), lists and tuples are converted recursively; NaN and infinite floats
    become None; numpy scalars become Python numbers or bools; paths become strings; anything
    else is returned as it is.

    Args:
        obj: a value made of dicts, lists, numbers, strings, paths and numpy scalars.

    Returns:
        The JSON-ready value.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj
