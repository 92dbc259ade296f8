"""Everything a DINO run holds while it trains, built fresh or restored from a checkpoint.

:func:`build_run` puts the parts of :mod:`.builders` together into one
:class:`TrainRun`; :func:`restore_progress` continues it from a checkpoint
(weights, optimiser and AdamW moments, center, step, running epoch loss);
:func:`prepare_run_dir` writes the run directory's configuration and cleans
what a fresh run replaces.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..io import save_json
from ..models import ArchConfig
from .batch_augment import BatchMultiCrop
from .builders import (
    DataInput,
    Schedules,
    backbone_arch,
    build_data,
    build_loss,
    build_networks,
    build_optimizer,
    build_schedules,
    check_crop_sizes,
    default_num_workers,
    place_networks,
)
from .checkpoint import CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME, MetricsLog, existing_outputs, read_metrics
from .config import TrainConfig
from .data import EpochSampler, MultiCropDataset
from ..distributed import DistInfo, barrier
from .head import MultiCropWrapper
from .loss import DINOLoss


@dataclass
class TrainRun:
    """The state of one training process: data, networks, optimiser, loss, schedules and progress."""

    config: TrainConfig
    info: DistInfo
    run_dir: Path
    arch: ArchConfig
    dataset: MultiCropDataset
    sampler: EpochSampler
    num_workers: int
    student: MultiCropWrapper
    teacher: MultiCropWrapper
    ddp_student: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    dino_loss: DINOLoss
    schedules: Schedules
    metrics: MetricsLog
    batch_augment: Optional[BatchMultiCrop] = None
    step: int = 0
    epoch_loss: list = field(default_factory=lambda: [0.0, 0])
    history: list[dict[str, Any]] = field(default_factory=list)
    interrupted: Optional[str] = None

    @property
    def niter(self) -> int:
        """Steps per epoch."""
        return self.sampler.batches_per_epoch

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.niter

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def use_amp(self) -> bool:
        return self.scaler is not None

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME


def build_run(
    data: DataInput, run_dir: Path, config: TrainConfig, info: DistInfo, state: Optional[dict[str, Any]] = None
) -> TrainRun:
    """Build every part of a run; with a checkpoint ``state``, restore it so training continues exactly."""
    dataset, sampler, batch_aug = build_data(data, config, info)
    niter = sampler.batches_per_epoch
    device = info.device
    if state is not None:
        arch = ArchConfig.from_metadata(state["arch"], str(run_dir / CHECKPOINT_NAME))
        student, teacher = build_networks(config, arch)
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
    else:
        arch, init_state = backbone_arch(config)
        student, teacher = build_networks(config, arch, init_state)
    check_crop_sizes(config, arch)
    student, teacher, ddp_student = place_networks(student, teacher, config, info)
    use_amp = bool(config.amp and device.type == "cuda")
    run = TrainRun(
        config=config, info=info, run_dir=run_dir, arch=arch, dataset=dataset, sampler=sampler,
        num_workers=config.num_workers if config.num_workers is not None else default_num_workers(device),
        student=student, teacher=teacher, ddp_student=ddp_student, optimizer=build_optimizer(student),
        scaler=torch.amp.GradScaler("cuda") if use_amp else None, dino_loss=build_loss(config, device),
        schedules=build_schedules(config, niter, info.world_size),
        metrics=MetricsLog(run_dir / METRICS_NAME, enabled=info.is_main), batch_augment=batch_aug,
    )
    if state is not None:
        restore_progress(run, state)
    return run


def restore_progress(run: TrainRun, state: dict[str, Any]) -> None:
    """Optimiser, center, AMP scaler and position of a checkpoint.

    With another number of processes or steps per epoch the run restarts at
    the beginning of the epoch it was in (the mid-epoch position would not
    mean the same images).
    """
    niter, info = run.niter, run.info
    run.optimizer.load_state_dict(state["optimizer"])
    run.dino_loss.load_state_dict(state["dino_loss"])
    if run.scaler is not None and state.get("fp16_scaler"):
        run.scaler.load_state_dict(state["fp16_scaler"])
    run.step = int(state["step"])
    same_layout = int(state.get("world_size", 1)) == info.world_size and int(state.get("niter_per_epoch", niter)) == niter
    if not same_layout:
        run.step = int(state.get("epoch", 0)) * niter
        if info.is_main:
            print("dinokit: note: the number of processes or batches per epoch changed; "
                  f"resuming at the start of epoch {run.step // niter + 1}", file=sys.stderr)
    else:
        run.epoch_loss = list(state.get("epoch_loss", [0.0, 0]))
    run.history = [r for r in read_metrics(run.run_dir / METRICS_NAME)
                   if r.get("type") == "epoch" and r["step"] <= run.step]


def prepare_run_dir(run: TrainRun, fresh: bool) -> None:
    """Main process: create the run directory, drop a replaced run's outputs (or later log lines), write config.json."""
    if run.info.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            for old in existing_outputs(run.run_dir):
                old.unlink()
        else:
            run.metrics.truncate_after(run.step)
        save_json(run.run_dir / CONFIG_NAME, {"config": run.config.to_dict(), "arch": run.arch.to_metadata(),
                                              "world_size": run.info.world_size, "images": len(run.dataset),
                                              "iterations_per_epoch": run.niter})
    barrier(run.info)


__all__ = ["TrainRun", "build_run", "prepare_run_dir", "restore_progress"]
