"""Inference: classifier-gated segmentation of patient volumes on the best available device.

See :mod:`brainseg_core.inference.pipeline` for the pipeline and its results and
:mod:`brainseg_core.inference.device` for device choice, precision and out-of-memory fallback.
"""

from brainseg_core.compute import Device, Precision
from brainseg_core.inference.device import resolve_device, resolve_precision
from brainseg_core.inference.pipeline import Pipeline
from brainseg_core.results import (
    PatientResult,
    ReviewReason,
    SliceResult,
    keep_largest_component,
    label_components,
    missing_segmentations,
    remove_small_components,
    rethreshold,
    threshold_slice,
)

__all__ = [
    "Device",
    "PatientResult",
    "Pipeline",
    "Precision",
    "ReviewReason",
    "SliceResult",
    "keep_largest_component",
    "label_components",
    "missing_segmentations",
    "remove_small_components",
    "resolve_device",
    "resolve_precision",
    "rethreshold",
    "threshold_slice",
]
