"""Device choice, precision and the out-of-memory retry / CPU fallback (simulated, no GPU needed)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from brainseg_core.inference import Pipeline, resolve_device, resolve_precision
from brainseg_core.inference.device import (
    CPU_FORWARD_BATCH,
    ExecutionPlan,
    cpu_has_native_bf16,
    cpuinfo_has_bf16,
    forward_batch_size,
    is_out_of_memory,
    run_batched,
)
from brainseg_core.thresholds import Thresholds
from tests.support import make_volume


def _oom() -> Exception:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_resolve_precision() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("fp16", torch.device("cuda")) is torch.float16
    assert resolve_precision("auto", torch.device("mps")) is None
    expected_cpu = torch.bfloat16 if cpu_has_native_bf16() else None
    assert resolve_precision("auto", cpu) is expected_cpu
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int8", cpu)


def test_cpu_forward_batch_is_capped() -> None:
    assert forward_batch_size(torch.device("cpu"), 16) == CPU_FORWARD_BATCH
    assert forward_batch_size(torch.device("cpu"), 1) == 1
    assert forward_batch_size(torch.device("cuda"), 16) == 16


def test_is_out_of_memory() -> None:
    assert is_out_of_memory(_oom())
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_halves_the_batch_until_it_fits() -> None:
    calls: list[int] = []

    def forward(chunk: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
        calls.append(len(chunk))
        if len(chunk) > 3:
            raise _oom()
        return chunk * 2

    x = torch.arange(10.0)
    plan = ExecutionPlan(torch.device("cpu"), 16, None)
    out = run_batched(forward, x, plan)
    torch.testing.assert_close(out, x * 2)
    assert calls == [10, 5, 3, 3, 3, 1]
    assert plan.batch_size == 3 and plan.device.type == "cpu"


def test_other_errors_propagate_unchanged() -> None:
    def forward(chunk: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
        raise RuntimeError("Given groups=1, weight of size [4, 3, 3, 3]")

    with pytest.raises(RuntimeError, match="groups=1"):
        run_batched(forward, torch.zeros(4), ExecutionPlan(torch.device("cpu"), 4, None))


def test_one_slice_that_does_not_fit_on_the_cpu_raises() -> None:
    def forward(chunk: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
        raise _oom()

    plan = ExecutionPlan(torch.device("cpu"), 4, None)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_batched(forward, torch.zeros(4), plan)
    assert plan.batch_size == 1


def test_falls_back_to_cpu_when_one_slice_does_not_fit_on_the_gpu() -> None:
    devices: list[str] = []
    moved: list[torch.device] = []

    def forward(chunk: torch.Tensor, plan: ExecutionPlan) -> torch.Tensor:
        devices.append(plan.device.type)
        if plan.device.type == "cuda":  # every size fails on the "GPU"
            raise _oom()
        assert plan.autocast_dtype == resolve_precision("auto", plan.device)  # re-resolved for the CPU
        return chunk + 1

    # torch.device("cuda") is only a descriptor: no GPU is touched by run_batched itself.
    plan = ExecutionPlan(torch.device("cuda"), 8, torch.float16, precision="auto")
    with pytest.warns(RuntimeWarning, match="continuing on the CPU"):
        out = run_batched(forward, torch.arange(6.0), plan, on_fallback=moved.append)
    torch.testing.assert_close(out, torch.arange(6.0) + 1)
    # 6, 3, 2, 1 on the 'GPU', then the CPU at its own forward batch size
    assert devices == ["cuda"] * 4 + ["cpu"] * -(-6 // CPU_FORWARD_BATCH)
    assert moved == [torch.device("cpu")]
    assert plan.device.type == "cpu" and plan.batch_size == CPU_FORWARD_BATCH


def _patch_forward(module: torch.nn.Module, fails) -> list[tuple[int, str]]:
    calls: list[tuple[int, str]] = []
    original = module.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append((len(x), x.device.type))
        if fails(x):
            raise _oom()
        return original(x)

    module.forward = forward
    return calls


def test_pipeline_survives_oom_with_identical_results(cls_bundle, seg_bundle) -> None:
    volume = make_volume(n=7, size=32)
    kwargs = {"device": "cpu", "segment_all": True, "batch_size": 8, "precision": "fp32"}
    reference = Pipeline(cls_bundle, seg_bundle, **kwargs).analyse(volume)
    calls = _patch_forward(seg_bundle.model, lambda x: len(x) > 1)
    pipe = Pipeline(cls_bundle, seg_bundle, **kwargs)
    pipe._plan.batch_size = 8  # as on a GPU (the CPU caps forward passes at CPU_FORWARD_BATCH)
    result = pipe.analyse(volume)
    assert [n for n, _ in calls] == [7, 4, 2, 1, 1, 1, 1, 1, 1, 1]
    assert pipe._plan.batch_size == 1
    for a, b in zip(result.slices, reference.slices, strict=True):
        np.testing.assert_allclose(a.mask_probability, b.mask_probability, atol=1e-5)


def test_pipeline_falls_back_to_cpu(cls_bundle, seg_bundle) -> None:
    """Integration: the pipeline's fallback hook moves the models and the result says 'cpu'.

    The 'GPU' is simulated with the meta device: every forward pass that receives meta tensors
    raises a CUDA out-of-memory error, as a full card would.
    """
    volume = make_volume(n=5, size=32)
    reference = Pipeline(cls_bundle, seg_bundle, device="cpu", batch_size=4, precision="fp32").analyse(volume)
    cls_calls = _patch_forward(cls_bundle.model, lambda x: x.device.type == "meta")
    pipe = Pipeline(cls_bundle, seg_bundle, device="cpu", batch_size=4, precision="fp32")
    pipe._plan.device, pipe._plan.batch_size = torch.device("meta"), 4
    moved: list[torch.device] = []
    place = pipe._place
    pipe._place = lambda dev: (moved.append(dev), place(dev))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pipe.analyse(volume)
    assert any("continuing on the CPU" in str(w.message) for w in caught)
    assert moved == [torch.device("cpu")]
    # batch 1 of 4 slices: 4, 2, 1 on the 'GPU', then the CPU; batch 2 (1 slice) on the CPU
    assert [d for _, d in cls_calls] == ["meta"] * 3 + ["cpu"] * (-(-4 // CPU_FORWARD_BATCH) + 1)
    assert result.device == "cpu" and pipe.device.type == "cpu"
    assert [s.tumour_probability for s in result.slices] == [s.tumour_probability for s in reference.slices]
    assert [s.area_px for s in result.slices] == [s.area_px for s in reference.slices]


def test_auto_device_agrees_with_cpu_fp32(cls_bundle, seg_bundle) -> None:
    """On a GPU machine this runs the CUDA path (autocast, channels_last); elsewhere the CPU's."""
    volume = make_volume(n=5, size=32)
    reference = Pipeline(
        cls_bundle, seg_bundle, device="cpu", precision="fp32", thresholds=Thresholds(gate=0.0)
    )
    ref = reference.analyse(volume)
    pipe = Pipeline(cls_bundle, seg_bundle, device="auto", thresholds=Thresholds(gate=0.0), batch_size=2)
    result = pipe.analyse(volume)
    assert result.device == str(resolve_device("auto")) == str(pipe.device)
    tol = 0.0 if pipe._plan.autocast_dtype is None else 3e-2  # bf16/fp16 autocast on a GPU
    for a, b in zip(result.slices, ref.slices, strict=True):
        assert a.segmented and b.segmented
        assert abs(a.tumour_probability - b.tumour_probability) <= tol + 1e-6
        np.testing.assert_allclose(a.mask_probability, b.mask_probability, atol=tol + 1e-5)


def test_cpu_bf16_is_close_to_fp32(cls_bundle, seg_bundle) -> None:
    volume = make_volume(n=4, size=32)
    kwargs = {"device": "cpu", "thresholds": Thresholds(gate=0.0)}
    ref = Pipeline(cls_bundle, seg_bundle, precision="fp32", **kwargs).analyse(volume)
    pipe = Pipeline(cls_bundle, seg_bundle, precision="bf16", **kwargs)
    assert pipe._plan.autocast_dtype is torch.bfloat16
    result = pipe.analyse(volume)
    for a, b in zip(result.slices, ref.slices, strict=True):
        assert abs(a.tumour_probability - b.tumour_probability) < 3e-2
        np.testing.assert_allclose(a.mask_probability, b.mask_probability, atol=3e-2)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("fpu avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True), ("fpu avx2 avx512f", False)],
)
def test_cpu_bf16_detection_reads_the_cpu_flags(flags: str, expected: bool) -> None:
    assert cpuinfo_has_bf16(f"processor : 0\nflags : {flags}\n") is expected
