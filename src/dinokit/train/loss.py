"""The DINO loss: cross-entropy between a centred, sharpened teacher and the student, over crop pairs.

The teacher sees only the global crops; every student crop is compared with
every teacher crop except the same view. The center is an exponential moving
average of the teacher's outputs, averaged over all processes when training
is distributed (as the reference does with ``all_reduce``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .schedules import teacher_temp_schedule


class DINOLoss(nn.Module):
    """Self-distillation loss with centering and sharpening.

    Args:
        out_dim: dimension of the head output (``K`` in the paper).
        ncrops: total number of crops per image (2 global + local ones).
        warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs: the
            teacher temperature rises linearly from the first to the second
            over that many epochs, then stays.
        nepochs: length of the run (size of the temperature schedule).
        student_temp: student temperature (0.1 in the paper).
        center_momentum: EMA rate of the center (0.9).
        num_global_crops: crops seen by the teacher (2).
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        ncrops: int,
        warmup_teacher_temp: float,
        teacher_temp: float,
        warmup_teacher_temp_epochs: int,
        nepochs: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        num_global_crops: int = 2,
    ) -> None:
        super().__init__()
        if ncrops < num_global_crops:
            raise ValueError(f"ncrops ({ncrops}) must be at least the number of global crops ({num_global_crops})")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.num_global_crops = num_global_crops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.teacher_temp_schedule: np.ndarray = teacher_temp_schedule(
            warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs
        )

    def teacher_temp(self, epoch: int) -> float:
        """Teacher temperature used during ``epoch`` (the last value after the schedule ends)."""
        sched = self.teacher_temp_schedule
        return float(sched[min(epoch, len(sched) - 1)])

    def forward(self, student_output: Tensor, teacher_output: Tensor, epoch: int) -> Tensor:
        """Loss for crop-major outputs: ``student_output`` is ``(ncrops*B, K)``, ``teacher_output`` ``(G*B, K)``.

        Updates the center with this batch's teacher outputs afterwards.
        """
        student_out = (student_output.float() / self.student_temp).chunk(self.ncrops)
        temp = self.teacher_temp(epoch)
        teacher_probs = F.softmax((teacher_output.float() - self.center) / temp, dim=-1)
        teacher_probs = teacher_probs.detach().chunk(self.num_global_crops)

        total = student_output.new_zeros((), dtype=torch.float32)
        n_terms = 0
        for iq, q in enumerate(teacher_probs):
            for v, s in enumerate(student_out):
                if v == iq:
                    continue
                total = total + torch.sum(-q * F.log_softmax(s, dim=-1), dim=-1).mean()
                n_terms += 1
        total = total / n_terms
        self.update_center(teacher_output)
        return total

    @torch.no_grad()
    def update_center(self, teacher_output: Tensor) -> None:
        """EMA of the batch mean of the teacher output, the mean taken over all processes."""
        batch_sum = teacher_output.float().sum(dim=0, keepdim=True)
        count = len(teacher_output)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            count *= dist.get_world_size()
        batch_center = batch_sum / count
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


__all__ = ["DINOLoss"]
