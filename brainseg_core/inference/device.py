"""Where and how the networks run: device choice, autocast precision and out-of-memory fallback.

- :func:`resolve_device` turns ``"auto"`` into CUDA, then Apple MPS, then the CPU.
- :func:`resolve_precision` picks the autocast dtype: on CUDA bf16 where the card supports it, else
  fp16; on the CPU and MPS fp32 (bf16 on request; see the note on the CPU below).
- :func:`forward_batch_size` caps the slices per forward pass on the CPU (see
  :data:`CPU_FORWARD_BATCH`).
- :class:`ExecutionPlan` holds the device, batch size and autocast dtype in use, and
  :func:`run_batched` runs a forward function over a batch in chunks: a CUDA/MPS out-of-memory
  error halves the chunk size (down to 1) and retries, and at 1 slice the plan falls back to the
  CPU with a warning instead of crashing. The retry logic only looks at ``plan.device.type``, so
  it is tested on machines without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from brainseg_core.compute import DEVICES, PRECISIONS, Device, Precision

logger = logging.getLogger(__name__)


# CPU precision for "auto": bf16 where the CPU has native bf16, else fp32. bench/pipeline.py
# (ResUNet-16 + ResNet-18, 256x256, 2 threads) measured bf16 autocast at 1.7-2.8x the fp32
# throughput on an AVX512-BF16 CPU. Single-pixel mask probabilities move by up to 0.06-0.2 (mask
# Dice bf16 vs fp32 0.998-0.9996 on 5 patients), but brainseg-eval on the 16 validation patients
# gave the same per-patient Dice (0.8137), tumour-slice recall (0.971) and AUC (0.980) as fp32.
# CPUs without native bf16 emulate it slowly, so they stay on fp32; precision="fp32" forces it.

#: Most slices per forward pass on the CPU. Measured (2 threads, channels_last, slices/s at batch
#: 1/2/4/8/16): ResUNet-16 fp32 44/42/36/28/17, bf16 59/93/64/55/36; ResNet-18 fp32 35/41/46/47/45,
#: bf16 80/120/162/147/165. Large batches overflow the caches; 2 is best or close for both.
CPU_FORWARD_BATCH = 2

_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def forward_batch_size(device: torch.device, batch_size: int) -> int:
    """Slices per forward pass for ``batch_size`` on ``device`` (capped on the CPU)."""
    return min(batch_size, CPU_FORWARD_BATCH) if device.type == "cpu" else batch_size


def resolve_device(device: Device | str | torch.device = Device.AUTO) -> torch.device:
    """Choose the device to run the networks on.

    Args:
        device: ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"`` (``"cuda:1"``
            for a given card), ``"mps"``, or a ``torch.device``.

    Returns:
        The ``torch.device``.

    Raises:
        ValueError: for an unknown name, or an accelerator that this machine or this torch build
            does not have (the message says to use ``auto`` or ``cpu``).
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = str(device.value if isinstance(device, Device) else device).strip().lower()
    else:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    kind = name.split(":")[0]
    if kind not in DEVICES or (kind in ("auto", "cpu", "mps") and ":" in name):
        raise ValueError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available here; use 'auto' or 'cpu'")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return dev
    if kind == "mps" and not _mps_available():
        raise ValueError("device 'mps' requested but Apple MPS is not available here; use 'auto' or 'cpu'")
    return torch.device(kind)


def resolve_precision(precision: Precision | str, device: torch.device) -> torch.dtype | None:
    """Choose the autocast dtype for ``precision`` on ``device``.

    Args:
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``. ``"auto"`` means bf16 on CUDA
            cards that support it, fp16 on older CUDA cards, bf16 on CPUs with native bf16
            instructions (:func:`cpu_has_native_bf16`), fp32 on other CPUs and on MPS.
            ``bench/pipeline.py`` measured bf16 on such a CPU at 2.4x the fp32 speed; on the 16
            validation patients it gave the same per-patient Dice, recall and AUC as fp32 to
            three decimals (single-pixel probabilities move by up to ~0.06).
        device: the device the networks run on.

    Returns:
        ``torch.bfloat16`` / ``torch.float16`` to run under autocast, or None for plain fp32.

    Raises:
        ValueError: for an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    precision = Precision(precision)
    if precision == Precision.AUTO:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        precision = Precision.BF16 if device.type == "cpu" and cpu_has_native_bf16() else Precision.FP32
    return _DTYPES[precision]


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 natively (x86 AVX512-BF16 or AMX-BF16, read on Linux).

    Without those instructions bf16 autocast is emulated and slower than fp32, so "auto" keeps fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return cpuinfo_has_bf16(f.read())
    except OSError:
        return False


def cpuinfo_has_bf16(cpuinfo: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists a native bf16 instruction set."""
    return bool(set(cpuinfo.split()) & {"avx512_bf16", "amx_bf16"})


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """An autocast context for ``dtype`` on ``device`` (a no-op context for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an out-of-memory error: ``torch.cuda.OutOfMemoryError``, or a ``RuntimeError``
    saying "out of memory" (CUDA, MPS) or "not enough memory" (the CPU allocator)."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "not enough memory" in text)


def _release_cached_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and _mps_available():
        torch.mps.empty_cache()


@dataclass
class ExecutionPlan:
    """The device, chunk size and autocast dtype in use; :func:`run_batched` updates it on OOM.

    Attributes:
        device: where the forward passes run.
        batch_size: slices per forward pass (halved on out-of-memory, never below 1).
        autocast_dtype: autocast dtype, None for fp32.
        precision: the requested precision name, re-resolved for the CPU after a fallback.
        requested_batch_size: the batch size asked for, restored (within
            :func:`forward_batch_size`) after a fallback to the CPU; defaults to ``batch_size``.
    """

    device: torch.device
    batch_size: int
    autocast_dtype: torch.dtype | None
    precision: Precision | str = Precision.AUTO
    requested_batch_size: int = 0

    def fall_back_to_cpu(self) -> None:
        """Switch to the CPU: its forward batch size and the precision re-resolved for it."""
        cpu = torch.device("cpu")
        self.device = cpu
        self.batch_size = forward_batch_size(cpu, self.requested_batch_size)
        self.autocast_dtype = resolve_precision(self.precision, cpu)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.requested_batch_size < 1:
            self.requested_batch_size = self.batch_size


def run_batched(
    forward: Callable[[torch.Tensor, ExecutionPlan], torch.Tensor],
    x: torch.Tensor,
    plan: ExecutionPlan,
    *,
    on_fallback: Callable[[torch.device], None] | None = None,
) -> torch.Tensor:
    """Run ``forward`` over ``x`` in chunks of ``plan.batch_size``, surviving out-of-memory errors.

    On an out-of-memory error the chunk is retried at half its size, rounded up
    (``plan.batch_size`` keeps the smaller size for later calls). If one slice still does not fit
    on an accelerator, the plan moves to the CPU at the requested batch size (capped by
    :func:`forward_batch_size`):
    ``on_fallback(cpu)`` is called (to move the models), a ``RuntimeWarning`` is issued and
    logged, and the work goes on there.

    Args:
        forward: ``forward(chunk, plan)`` runs a chunk of ``x`` (on the CPU) on ``plan.device`` and
            returns a CPU tensor whose first dimension matches the chunk.
        x: inputs, first dimension = slices.
        plan: the execution plan, updated in place on out-of-memory.
        on_fallback: called with the CPU device before work continues there.

    Returns:
        The concatenated outputs, in the order of ``x``.

    Raises:
        Exception: whatever ``forward`` raises other than out-of-memory, and an out-of-memory
            error of one slice on the CPU.
    """
    outs: list[torch.Tensor] = []
    i = 0
    while i < len(x):
        n = min(plan.batch_size, len(x) - i)
        failed = False
        try:
            outs.append(forward(x[i : i + n], plan))
        except Exception as exc:
            if not is_out_of_memory(exc) or (n == 1 and plan.device.type == "cpu"):
                raise
            failed = True
        if not failed:
            i += n
            continue
        # Handled outside the except block so the failed attempt's tensors can be freed.
        _release_cached_memory(plan.device)
        if n > 1:
            plan.batch_size = (n + 1) // 2
            logger.info("out of memory on %s at batch %d; retrying with %d", plan.device, n, plan.batch_size)
            continue
        old = plan.device
        plan.fall_back_to_cpu()
        if on_fallback is not None:
            on_fallback(plan.device)
        msg = f"out of memory on {old} even for one slice; continuing on the CPU (slower)"
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    if not outs:
        return x.new_empty((0,))
    return torch.cat(outs)
