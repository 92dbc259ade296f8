"""Several processes (``torchrun``) sharing one output folder.

``torchrun --nproc_per_node N -m dinokit extract ...`` starts N processes;
:func:`dinokit.distributed.setup` joins their process group (NCCL on GPUs,
gloo on the CPU) and gives each its device (``cuda:LOCAL_RANK`` by default). Rank 0 checks and
writes the run record (:func:`start_shared_run`) while the others wait; each
process then takes a strided share of the pending items, and at the end
:func:`gather_finished` hands every process's finished items and failures to
rank 0, which records them. A plain launch is a group of one.
"""

from __future__ import annotations

from typing import Callable

import torch.distributed as dist

from ..distributed import DistInfo
from ..errors import DinokitError
from ..runs import ItemFailures, OutputFolder


def start_shared_run(group: DistInfo, open_folder: Callable[[bool], OutputFolder]) -> OutputFolder:
    """``open_folder(write_record)`` on rank 0 first (the rerun check, the record), then on the others.

    A refusal on rank 0 (another run's results, an unwritable folder) is
    raised on every process with the same one-line message.
    """
    if not group.distributed:
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


def gather_finished(group: DistInfo, folder: OutputFolder, finished: list[str], failures: ItemFailures) -> int:
    """Collect every process's finished items (recorded by rank 0) and failures; the number finished by all."""
    if not group.distributed:
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


__all__ = ["start_shared_run", "gather_finished"]
