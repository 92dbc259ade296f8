"""Process groups of several processes launched with ``torchrun`` (training, extraction).

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous
address; :func:`setup` joins the group (NCCL on GPU, gloo on CPU) and picks
this process's device. A plain ``python``/``dinokit`` launch is a world of one.
One home for both users: ``dinokit train`` (DDP) and ``dinokit extract``
(files shared by rank, :mod:`dinokit.features.group`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from .devices import DeviceLike, select_device
from .errors import DinokitError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the group (rank, local rank, world size) and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: DeviceLike = None) -> DistInfo:
    """Join the ``torchrun`` process group if there is one and choose the device (:func:`select_device`).

    ``device=None`` means this process's GPU (``cuda:LOCAL_RANK`` under
    ``torchrun``, else the current one) when CUDA is present, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = select_device(device, world, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        if dist.is_available() and dist.is_initialized():
            return DistInfo(dist.get_rank(), local_rank, dist.get_world_size(), dev, False)
        return DistInfo(0, 0, 1, dev, False)
    if not dist.is_available():  # pragma: no cover - every supported build has it
        raise DinokitError("this PyTorch build has no torch.distributed; cannot run on several processes")
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), local_rank, dist.get_world_size(), dev, False)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank)
    return DistInfo(rank, local_rank, world, dev, True)


def teardown(info: DistInfo) -> None:
    """Leave the process group if :func:`setup` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: Optional[DistInfo]) -> torch.Tensor:
    """Sum ``t`` in place over all processes (no-op for one process)."""
    if info is not None and info.distributed:
        dist.all_reduce(t)
    return t


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """Send a picklable object from ``src`` to every process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


__all__ = ["DistInfo", "select_device", "setup", "teardown", "all_reduce_sum", "broadcast_object", "barrier"]
