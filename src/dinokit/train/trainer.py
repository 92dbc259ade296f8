"""The DINO trainer: configure a run, then fit it (fresh, resumed or fine-tuned) with checkpoints and a clean stop.

The work is split as in DINOv2's training code: :mod:`.builders` builds the
networks, optimiser, schedules and data, :mod:`.state` puts them together
into a :class:`TrainRun` (restored from a checkpoint when resuming),
:mod:`.loop` runs the steps and epochs, and :mod:`.checkpoint` saves them.

Reproducibility: every random draw derives from ``(seed, step)`` or
``(seed, epoch, image)``, so stopping (after an epoch, on SIGTERM or Ctrl-C)
and resuming gives the same weights, bit for bit, as an uninterrupted run on
the same hardware and number of processes.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any, Optional, Union

import torch

from ..errors import DinokitError
from .builders import DataInput, backbone_arch, build_networks, default_num_workers, params_groups
from .checkpoint import CHECKPOINT_NAME, BACKBONE_NAME, existing_outputs, load_checkpoint
from .config import TrainConfig
from ..distributed import DistInfo, setup, teardown
from .loop import StopRequest, cancel_last_layer_gradients, clip_gradients, ema_update, train_until
from .notices import warn_short_run
from .state import TrainRun, build_run, prepare_run_dir

PathLike = Union[str, os.PathLike]


class DinoTrainer:
    """Self-supervised DINO training of a ViT on a folder of images.

    Configure in the constructor, run with :meth:`fit`::

        trainer = DinoTrainer("images/", "runs/exp1", preset="small-data", arch="vit_small", epochs=100)
        trainer.fit()                      # or fit(resume=True) after a stop
        model = trainer.backbone_          # teacher backbone, a dinokit VisionTransformer
        trainer.backbone_path_             # runs/exp1/teacher_backbone.safetensors (use with --weights)

    Args:
        data: a folder of images (any depth, e.g. ImageFolder layout), a list of
            image files, or a list of PIL images.
        run_dir: where the checkpoint, the exported teacher backbone, the
            configuration and the metrics log (``metrics.jsonl``) go.
        config: a :class:`TrainConfig`; or leave ``None`` and give ``preset``
            plus any :class:`TrainConfig` field as a keyword.
        device: ``cpu``/``cuda``/``cuda:1``; default this process's GPU if any.
        progress: show a progress bar (loss, learning rate, teacher momentum).
        overwrite: start afresh even if ``run_dir`` holds an earlier run.

    After :meth:`fit`: ``student_``, ``teacher_`` (backbone + head),
    ``backbone_`` (teacher backbone, eval mode), ``backbone_path_``,
    ``checkpoint_path_``, ``history_`` (per-epoch records), ``step_``,
    ``epochs_done_``, ``finished_`` and ``interrupted_`` (signal name or ``None``).
    """

    def __init__(
        self,
        data: DataInput,
        run_dir: PathLike,
        config: Optional[TrainConfig] = None,
        *,
        preset: str = "paper",
        device: Union[str, torch.device, None] = None,
        progress: bool = True,
        overwrite: bool = False,
        **options: Any,
    ) -> None:
        if config is not None and options:
            config = config.replace(**options)
        self._explicit = dict(options) if config is None else None
        self.config = config if config is not None else TrainConfig.from_preset(preset, **options)
        self.data = data
        self.run_dir = Path(run_dir)
        self.device = device
        self.progress = progress
        self.overwrite = overwrite

    # ------------------------------------------------------------------ public
    def fit(self, resume: bool = False, stop_at_epoch: Optional[int] = None, stop_at_step: Optional[int] = None) -> "DinoTrainer":
        """Train until ``config.epochs`` (or ``stop_at_epoch`` / ``stop_at_step``, keeping the full schedules).

        ``resume=True`` continues from ``run_dir/checkpoint.pth`` (a new run
        starts if there is none). SIGINT/SIGTERM finish the current step,
        save and return with ``interrupted_`` set.
        """
        info = setup(self.device)
        try:
            return self._fit(info, resume, stop_at_epoch, stop_at_step)
        finally:
            teardown(info)

    # ------------------------------------------------------------------ internals
    def _load_state(self, info: DistInfo, resume: bool) -> Optional[dict[str, Any]]:
        """The checkpoint to resume from, if any; refuses to start over an earlier run without ``overwrite``."""
        ckpt_path = self.run_dir / CHECKPOINT_NAME
        if resume and ckpt_path.exists():
            return load_checkpoint(ckpt_path)
        if resume and info.is_main:
            print(f"dinokit: no checkpoint in {self.run_dir}; starting a new run", file=sys.stderr)
        elif not resume and existing_outputs(self.run_dir, (CHECKPOINT_NAME,)) and not self.overwrite:
            raise DinokitError(
                f"{self.run_dir}: already holds a training run; pass --resume to continue it or --overwrite to start again"
            )
        return None

    def _resolve_config(self, info: DistInfo, stored: Optional[dict[str, Any]]) -> TrainConfig:
        """The configuration to train with: a resumed run keeps its stored settings (only ``epochs`` may change)."""
        if stored is None:
            return self.config
        old = TrainConfig.from_dict(stored)
        if self._explicit is not None:
            new = old.replace(**{k: v for k, v in self._explicit.items() if v is not None}) if self._explicit else old
        else:
            new = self.config
        diffs = new.differences(old)
        if "epochs" in diffs and info.is_main:
            print(f"dinokit: note: epochs changed from {old.epochs} to {new.epochs}; the schedules are recomputed, "
                  "so the run differs from one trained for that many epochs from the start", file=sys.stderr)
        diffs = [d for d in diffs if d != "epochs"]
        if diffs:
            shown = ", ".join(f"{k}: {stored.get(k)!r} -> {new.to_dict()[k]!r}" for k in diffs)
            raise DinokitError(
                f"{self.run_dir / CHECKPOINT_NAME}: cannot resume with different settings ({shown}); "
                "use the original settings, or a new run directory"
            )
        return new

    def _fit(self, info: DistInfo, resume: bool, stop_at_epoch: Optional[int], stop_at_step: Optional[int]) -> "DinoTrainer":
        state = self._load_state(info, resume)
        self.config = self._resolve_config(info, state["config"] if state else None)
        if info.is_main:
            warn_short_run(self.config)
        run = build_run(self.data, self.run_dir, self.config, info, state)
        prepare_run_dir(run, fresh=state is None)
        end_step = run.total_steps
        if stop_at_epoch is not None:
            end_step = min(end_step, max(stop_at_epoch, 0) * run.niter)
        if stop_at_step is not None:
            end_step = min(end_step, max(stop_at_step, 0))
        train_until(run, end_step, self.progress)
        if run.interrupted and info.is_main:
            print(f"dinokit: stopped at step {run.step} of {run.total_steps} (epoch {run.step // run.niter + 1}); "
                  f"checkpoint saved in {run.checkpoint_path}; continue with --resume", file=sys.stderr)
        self._publish(run)
        return self

    def _publish(self, run: TrainRun) -> None:
        """Expose the run's results as the fitted attributes (``student_``, ``backbone_``, ``step_`` ...)."""
        self.run_ = run
        self.student_, self.teacher_ = run.student, run.teacher
        self.checkpoint_path_ = run.checkpoint_path
        self.backbone_path_ = run.run_dir / BACKBONE_NAME
        self.interrupted_: Optional[str] = run.interrupted
        self.history_ = run.history
        self.step_ = run.step
        self.dino_loss_ = run.dino_loss
        self.optimizer_ = run.optimizer
        self.epochs_done_ = run.step // run.niter
        self.finished_ = run.step >= run.total_steps
        backbone = copy.deepcopy(run.teacher.backbone).cpu()
        backbone.eval().requires_grad_(False)
        backbone.source = str(self.backbone_path_)  # type: ignore[attr-defined]
        backbone.spec = None  # type: ignore[attr-defined]
        self.backbone_ = backbone


def train_dino(
    data: DataInput,
    run_dir: PathLike,
    *,
    resume: bool = False,
    preset: str = "paper",
    device: Union[str, torch.device, None] = None,
    progress: bool = True,
    overwrite: bool = False,
    stop_at_epoch: Optional[int] = None,
    **options: Any,
) -> DinoTrainer:
    """Train (or resume) a DINO run in one call; returns the fitted :class:`DinoTrainer`."""
    trainer = DinoTrainer(data, run_dir, preset=preset, device=device, progress=progress, overwrite=overwrite, **options)
    return trainer.fit(resume=resume, stop_at_epoch=stop_at_epoch)


__all__ = [
    "DinoTrainer",
    "StopRequest",
    "backbone_arch",
    "build_networks",
    "cancel_last_layer_gradients",
    "clip_gradients",
    "default_num_workers",
    "ema_update",
    "params_groups",
    "train_dino",
]
