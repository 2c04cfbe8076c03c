"""Where and in what precision the networks run: :class:`Device` and :class:`Precision`.

Free of torch, so the command-line tools can list the choices in ``--help`` without loading it;
:mod:`brainseg_core.inference.device` resolves them on this machine.
"""

from __future__ import annotations

import enum

__all__ = ["DEVICES", "PRECISIONS", "Device", "Precision"]


class Device(enum.StrEnum):
    """Where the networks run (``cuda:N`` names one card of several)."""

    AUTO = "auto"
    """CUDA, then Apple MPS, then the CPU."""
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class Precision(enum.StrEnum):
    """Autocast precision of the forward passes."""

    AUTO = "auto"
    """bf16 on CUDA cards and CPUs that compute it natively, fp16 on older cards, else fp32."""
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


DEVICES: tuple[str, ...] = tuple(d.value for d in Device)
PRECISIONS: tuple[str, ...] = tuple(p.value for p in Precision)
