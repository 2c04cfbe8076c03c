"""``brainseg --self-test``: check an installation end to end without a window.

Loads the models the viewer would use (sha256 verified), runs the inference pipeline on the bundled
sample patient and compares the predicted masks with the sample's ground truth. Prints a short
report and returns 0, or prints why it failed and returns 1. Never imports Qt, so it runs on a
headless machine, in CI and inside a frozen build.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from brainseg_core.resources import resource_path

#: Below this Dice on the sample patient the models are considered broken (the sample's tumour is
#: large and clear; working models score far above it).
MIN_DICE = 0.5


if TYPE_CHECKING:
    from brainseg_core.bundle import ModelBundle


class SelfTestError(Exception):
    """A self-test step failed; the message says which and why."""


def sample_patient() -> Path:
    """The bundled sample patient folder (the only folder in ``resources/sample``).

    Returns:
        Path of ``resources/sample/<patient_id>``.

    Raises:
        SelfTestError: the sample is missing from this installation.
    """
    root = resource_path("sample")
    patients = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not patients:
        raise SelfTestError(f"{root}: the sample patient is missing; reinstall BrainSeg")
    return patients[0]


def _describe(kind: str, bundle: ModelBundle) -> str:
    from brainseg_core.registry import model_choice, shipped_models_dir

    card = bundle.card
    path = Path(bundle.path)
    origin = "shipped" if path.resolve().is_relative_to(shipped_models_dir().resolve()) else "user-installed"
    how = {"default": "shipped models chosen", None: "newest available"}.get(
        model_choice().get(kind), "pinned"
    )
    return (
        f"  {kind + ':':<12}{card.name} ({card.arch}, {origin}, {how}), "
        f"sha256 {card.weights_sha256[:12]} ok  [{path}]"
    )


def _load_models() -> tuple[ModelBundle | None, ModelBundle]:
    from brainseg_core.errors import BrainSegError
    from brainseg_core.registry import list_bundles, resolve_models, shipped_models_dir, user_models_dir

    if not list_bundles("segmenter"):
        raise SelfTestError(
            f"no models: no segmenter bundle in {shipped_models_dir()} (shipped) or {user_models_dir()} "
            "(user); reinstall BrainSeg or train one with brainseg-train"
        )
    try:
        return resolve_models()
    except (BrainSegError, OSError) as err:
        raise SelfTestError(f"the models do not load: {err}") from err


def run_self_test(out: TextIO | None = None) -> int:
    """Run the self-test and print its report.

    Args:
        out: where to print the report; default ``sys.stdout`` (failures go to ``sys.stderr``).

    Returns:
        0 when every step passed, 1 otherwise.
    """
    out = out or sys.stdout
    from brainseg_core import __version__

    print(f"BrainSeg {__version__} self-test", file=out)
    try:
        _self_test(out)
    except SelfTestError as err:
        print(f"self-test FAILED: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a self-test reports every failure instead of crashing
        traceback.print_exc(file=sys.stderr)
        print(f"self-test FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print("self-test passed", file=out)
    return 0


def _self_test(out: TextIO) -> None:
    t0 = time.perf_counter()
    import numpy as np

    from brainseg_core.inference.pipeline import Pipeline
    from brainseg_core.io import open_volume
    from brainseg_core.metrics import dice

    classifier, segmenter = _load_models()
    if classifier is not None:
        print(_describe("classifier", classifier), file=out)
    else:
        print(f"  {'classifier:':<12}none (every slice is segmented)", file=out)
    print(_describe("segmenter", segmenter), file=out)
    t_loaded = time.perf_counter()

    volume = open_volume(sample_patient())
    if volume.masks is None:
        raise SelfTestError(f"{volume.source}: the sample has no ground-truth masks; reinstall BrainSeg")
    truth = volume.masks
    h, w = volume.shape
    print(f"  {'sample:':<12}{volume.patient_id}, {volume.n_slices} slices {h}x{w}", file=out)

    t_infer = time.perf_counter()
    result = Pipeline(classifier, segmenter, device="auto").analyse(volume)
    t_done = time.perf_counter()
    if len(result.slices) != volume.n_slices:
        raise SelfTestError(
            f"pipeline returned {len(result.slices)} slice results for {volume.n_slices} slices"
        )

    predicted = np.stack([s.mask for s in result.slices])
    found = predicted.reshape(len(predicted), -1).any(axis=1)
    actual = truth.reshape(len(truth), -1).any(axis=1)
    score = dice(predicted, truth)
    print(f"  {'device:':<12}{result.device}", file=out)
    print(
        f"  {'tumour:':<12}{result.tumour_slices} slices found (ground truth {int(actual.sum())}: "
        f"{int((found & actual).sum())} detected, {int((found & ~actual).sum())} false alarms)",
        file=out,
    )
    print(f"  {'dice:':<12}{score:.3f} vs the sample's masks (pass >= {MIN_DICE})", file=out)
    print(
        f"  {'time:':<12}loading {t_loaded - t0:.1f} s, inference {t_done - t_infer:.1f} s, "
        f"total {time.perf_counter() - t0:.1f} s",
        file=out,
    )
    if score < MIN_DICE:
        raise SelfTestError(
            f"Dice {score:.3f} on the sample patient is below {MIN_DICE}: the models or the preprocessing "
            "of this installation are broken"
        )
