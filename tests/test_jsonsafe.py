"""json_safe: strict JSON out of metrics that hold NaN, numpy scalars and paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from brainseg_core.jsonsafe import json_safe


def test_nan_numpy_and_paths_become_strict_json() -> None:
    value = {
        1: [np.float32(0.5), float("nan"), np.float64(math.inf), np.int64(3), np.bool_(True)],
        "p": Path("/a/b"),
        "t": (1, "x", None),
    }
    out = json_safe(value)
    assert out == {"1": [0.5, None, None, 3, True], "p": "/a/b", "t": [1, "x", None]}
    assert type(out["1"][3]) is int and type(out["1"][4]) is bool
    json.loads(json.dumps(out, allow_nan=False))  # strict: would raise on NaN
