"""Several processes (``torchrun``) sharing one output folder.

``torchrun --nproc_per_node N -m dinokit extract ...`` starts N processes;
:func:`join_group` joins their process group (NCCL on GPUs, gloo on the CPU)
and gives each its device (``cuda:LOCAL_RANK`` by default). Rank 0 checks and
writes the run record (:func:`start_shared_run`) while the others wait; each
process then takes a strided share of the pending items, and at the end
:func:`gather_finished` hands every process's finished items and failures to
rank 0, which records them. A plain launch is a group of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from ..devices import DeviceLike, select_device
from ..errors import DinokitError
from ..runs import ItemFailures, OutputFolder


@dataclass(frozen=True)
class Group:
    """This process's rank, the number of processes, its device, and whether it started the process group."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def shared(self) -> bool:
        return self.world_size > 1


def join_group(device: DeviceLike = None) -> Group:
    """Join the ``torchrun`` process group when there is one (``WORLD_SIZE`` > 1) and choose this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = select_device(device, world, local)
    if world <= 1:
        return Group(0, 1, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size(), dev)
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://",
                            world_size=world, rank=rank)
    return Group(rank, world, dev, True)


def leave_group(group: Group) -> None:
    """Leave the process group if :func:`join_group` started it."""
    if group.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def start_shared_run(group: Group, open_folder: Callable[[bool], OutputFolder]) -> OutputFolder:
    """``open_folder(write_record)`` on rank 0 first (the rerun check, the record), then on the others.

    A refusal on rank 0 (another run's results, an unwritable folder) is
    raised on every process with the same one-line message.
    """
    if not group.shared:
        return open_folder(True)
    state: list = [None]
    if group.rank == 0:
        try:
            folder = open_folder(True)
            state[0] = ("ok", folder.may_replace)
        except DinokitError as exc:
            state[0] = ("error", str(exc))
    dist.broadcast_object_list(state, src=0)
    kind, value = state[0]
    if kind == "error":
        raise DinokitError(value)
    if group.rank != 0:
        folder = open_folder(False)
        folder.may_replace = bool(value)
    return folder


def gather_finished(group: Group, folder: OutputFolder, finished: list[str], failures: ItemFailures) -> int:
    """Collect every process's finished items (recorded by rank 0) and failures; the number finished by all."""
    if not group.shared:
        return len(finished)
    parts: list = [None] * group.world_size
    dist.all_gather_object(parts, (list(finished), dict(failures.failed)))
    total = 0
    for rank, (names, failed) in enumerate(parts):
        total += len(names)
        if rank != 0 and group.rank == 0:
            folder.finish_many(names)
            failures.failed.update(failed)
    return total


__all__ = ["Group", "join_group", "leave_group", "start_shared_run", "gather_finished"]
