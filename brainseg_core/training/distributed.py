"""Processes of a training run: one, or several under ``torchrun`` (DistributedDataParallel).

With ``torchrun`` there is one process per device (NCCL on CUDA, Gloo on the CPU); each rank trains
on a disjoint shard of every epoch's draws, and rank 0 validates, decides when to stop and writes
every file. A plain run is the one-process case of the same code.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the run.

    Attributes:
        world: number of processes.
        rank: this process's rank, 0 <= rank < world.
        local_rank: its rank on this machine (its CUDA device index).
    """

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the process that validates and writes)."""
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group ``torchrun`` describes (if any) and pick this process's device.

    Args:
        device_name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns:
        ``(dist_info, device)``; under ``torchrun`` on CUDA the device is ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: for an unknown or unavailable device.
    """
    from brainseg_core.inference.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist_info = DistInfo(world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", dist_info.local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            backend = "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
    return dist_info, device


def wrap_model(model: nn.Module, dist_info: DistInfo, device: torch.device) -> nn.Module:
    """The module the training step calls: ``model`` itself, or its DistributedDataParallel wrapper."""
    if dist_info.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast(values: list[float], dist_info: DistInfo, device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every rank (``values`` itself in a one-process run)."""
    if dist_info.world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def mean_across(value: torch.Tensor, dist_info: DistInfo) -> torch.Tensor:
    """The mean of ``value`` over the ranks (``value`` itself in a one-process run)."""
    if dist_info.world == 1:
        return value
    import torch.distributed as dist

    v = value.clone()
    dist.all_reduce(v)
    return v / dist_info.world


def shutdown(dist_info: DistInfo) -> None:
    """Wait for every rank, then leave the process group (nothing in a one-process run).

    The group is left even when the wait fails: a Gloo group still alive when the interpreter
    shuts down can abort the process from its worker threads.
    """
    if dist_info.world > 1:
        import torch.distributed as dist

        with contextlib.suppress(Exception):
            dist.barrier()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
