"""Set-up of a DINO run, one builder per part: networks, optimiser, schedules, data.

As in DINOv2's training code (a meta-architecture, ``build_optimizer`` and
``build_schedulers`` beside ``do_train``), the pieces are built here and the
loop in :mod:`.loop` only uses them. None of these builders draws from the
global random generator, so building in any order keeps runs reproducible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import DinokitError
from ..models import ArchConfig, VisionTransformer, arch_preset, load_model
from .augment import MultiCropAugmentation
from .batch_augment import BatchMultiCrop
from .config import TrainConfig
from .data import EpochSampler, MultiCropDataset
from ..distributed import DistInfo
from .head import DINOHead, MultiCropWrapper
from .loss import DINOLoss
from .notices import warn_dropped_images
from .schedules import cosine_schedule

PathLike = Union[str, os.PathLike]
DataInput = Union[PathLike, Sequence[PathLike], Sequence[Image.Image]]


# --------------------------------------------------------------------------- networks
def backbone_arch(config: TrainConfig) -> tuple[ArchConfig, Optional[dict[str, torch.Tensor]]]:
    """Architecture of the backbone and, when fine-tuning, the weights to start from."""
    if config.init_model is not None or config.init_weights is not None:
        init = load_model(config.init_model, config.init_weights, num_heads=config.num_heads, progress=False)
        return init.cfg, {k: v.detach().clone() for k, v in init.state_dict().items()}
    overrides = {k: getattr(config, k) for k in ("embed_dim", "depth", "num_heads", "img_size") if getattr(config, k) is not None}
    return arch_preset(config.arch, patch_size=config.patch_size, **overrides), None


def build_networks(
    config: TrainConfig, arch: ArchConfig, init_state: Optional[dict[str, torch.Tensor]] = None
) -> tuple[MultiCropWrapper, MultiCropWrapper]:
    """Student (with drop-path) and teacher (a copy of the student, no gradients), each backbone + DINO head."""
    gen_state = torch.get_rng_state()
    torch.manual_seed(config.seed)
    try:
        student_bb = VisionTransformer(arch, drop_path_rate=config.drop_path_rate)
        student_bb.init_weights(config.seed)
        if init_state is not None:
            student_bb.load_state_dict(init_state, strict=True)
        teacher_bb = VisionTransformer(arch)

        def head(norm_last: bool) -> DINOHead:
            return DINOHead(arch.embed_dim, config.out_dim, config.use_bn_in_head, norm_last,
                            config.head_nlayers, config.head_hidden_dim, config.head_bottleneck_dim)

        student = MultiCropWrapper(student_bb, head(config.norm_last_layer))
        teacher = MultiCropWrapper(teacher_bb, head(True))
    finally:
        torch.set_rng_state(gen_state)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return student, teacher


def check_crop_sizes(config: TrainConfig, arch: ArchConfig) -> None:
    """Every crop must hold at least one patch."""
    smallest = min(config.global_size, config.local_size if config.local_crops_number else config.global_size)
    if smallest < arch.patch_size:
        raise DinokitError(
            f"crops of {smallest} px are smaller than one {arch.patch_size}x{arch.patch_size} patch; "
            "raise --local-size / --global-size"
        )


def place_networks(
    student: MultiCropWrapper, teacher: MultiCropWrapper, config: TrainConfig, info: DistInfo
) -> tuple[MultiCropWrapper, MultiCropWrapper, nn.Module]:
    """Move both networks to the device (synchronised batch norm across GPUs) and wrap the student in DDP.

    Returns ``(student, teacher, ddp_student)``; ``ddp_student`` is the
    student itself for a single process. As the reference, the teacher stays
    in training mode (it has no drop-path, so this only matters for batch
    norm in the head, which then uses the batch's statistics like the student's).
    """
    device = info.device
    if config.use_bn_in_head and info.distributed and device.type == "cuda":
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
        teacher = nn.SyncBatchNorm.convert_sync_batchnorm(teacher)
    student.to(device).train()
    teacher.to(device).train()
    if not info.distributed:
        return student, teacher, student
    ddp = nn.parallel.DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)
    return student, teacher, ddp


# --------------------------------------------------------------------------- optimisation
def params_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Two AdamW groups as the reference: weights decayed, biases and 1-D parameters (norms, tokens) not."""
    regularized, not_regularized = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or param.ndim == 1:
            not_regularized.append(param)
        else:
            regularized.append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


def build_optimizer(student: nn.Module) -> torch.optim.AdamW:
    """AdamW over :func:`params_groups`; learning rate and weight decay are set by the schedules at every step."""
    return torch.optim.AdamW(params_groups(student))


def build_loss(config: TrainConfig, device: torch.device) -> DINOLoss:
    """The DINO loss with its center, on ``device``."""
    return DINOLoss(
        config.out_dim, config.ncrops, config.warmup_teacher_temp, config.teacher_temp,
        config.warmup_teacher_temp_epochs, config.epochs, config.student_temp, config.center_momentum,
    ).to(device)


@dataclass(frozen=True)
class Schedules:
    """One value per iteration of the whole run: learning rate, weight decay and teacher momentum."""

    lr: np.ndarray
    wd: np.ndarray
    momentum: np.ndarray

    def at(self, step: int) -> dict[str, float]:
        """The three values of iteration ``step`` (0-based), as logged."""
        return {"lr": float(self.lr[step]), "wd": float(self.wd[step]), "momentum": float(self.momentum[step])}


def build_schedules(config: TrainConfig, niter: int, world_size: int) -> Schedules:
    """The reference's cosine schedules; the peak learning rate scales with the total batch (``lr * batch / 256``)."""
    total_batch = config.batch_size * world_size
    return Schedules(
        lr=cosine_schedule(config.lr * total_batch / 256.0, config.min_lr, config.epochs, niter, config.warmup_epochs),
        wd=cosine_schedule(config.weight_decay, config.weight_decay_end, config.epochs, niter),
        momentum=cosine_schedule(config.momentum_teacher, 1.0, config.epochs, niter),
    )


# --------------------------------------------------------------------------- data
def use_batch_augment(config: TrainConfig, device: torch.device) -> bool:
    """Whether crops are drawn on the device in batches: ``config.batch_augment``, by default only on CUDA."""
    return bool(config.batch_augment) if config.batch_augment is not None else device.type == "cuda"


def build_data(
    data: DataInput, config: TrainConfig, info: DistInfo
) -> tuple[MultiCropDataset, EpochSampler, Optional[BatchMultiCrop]]:
    """The dataset, this process's epoch sampler and, when crops are made on the device, the batch augmenter.

    With a batch augmenter the dataset yields decoded source images (its
    :attr:`~BatchMultiCrop.source`), else each image's PIL-made crops.

    Every step takes a whole batch on every process, so the images beyond the
    last whole batch are left out of each epoch: the main process warns.
    """
    augmentation = MultiCropAugmentation(
        global_size=config.global_size,
        local_size=config.local_size,
        local_crops_number=config.local_crops_number,
        global_crops_scale=tuple(config.global_crops_scale),
        local_crops_scale=tuple(config.local_crops_scale),
    )
    batch_aug = BatchMultiCrop(augmentation) if use_batch_augment(config, info.device) else None
    dataset = MultiCropDataset(data, batch_aug.source if batch_aug else augmentation, seed=config.seed)
    sampler = EpochSampler(len(dataset), config.batch_size, config.seed, info.rank, info.world_size)
    if sampler.batches_per_epoch == 0:
        raise DinokitError(
            f"{data if isinstance(data, (str, os.PathLike)) else 'data'}: {len(dataset)} images are fewer "
            f"than one batch ({config.batch_size} per process x {info.world_size} process(es)); lower --batch-size"
        )
    if info.is_main:
        warn_dropped_images(len(dataset), config.batch_size, info.world_size)
    return dataset, sampler, batch_aug


def default_num_workers(device: torch.device) -> int:
    """Data-loader workers when the user gives none: several on GPU, none on CPU.

    On CPU the step already uses every core and augmentation is under 10 % of
    it, so a worker only contends with the step (benchmarks/train.py, vit_tiny on
    2 cores: 9.6 images/s with augmentation in the main process, 7.1 with one
    overlapping worker).
    """
    cpus = os.cpu_count() or 1
    return min(8, max(cpus - 1, 0)) if device.type == "cuda" else 0


__all__ = [
    "Schedules",
    "backbone_arch",
    "build_data",
    "build_loss",
    "build_networks",
    "build_optimizer",
    "build_schedules",
    "check_crop_sizes",
    "default_num_workers",
    "params_groups",
    "place_networks",
    "use_batch_augment",
]
