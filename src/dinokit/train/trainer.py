"""The DINO training loop: student, EMA teacher, multi-crop batches, checkpoints, clean stop and resume.

One step, as in the reference ``train_one_epoch``: the teacher sees the two
global crops, the student every crop; the DINO loss is back-propagated
through the student only (gradients clipped per parameter, last layer's
gradients dropped during the first ``freeze_last_layer`` epochs), AdamW
steps with the scheduled learning rate and weight decay, and the teacher
becomes an exponential moving average of the student with the scheduled
momentum.

Reproducibility: every random draw derives from ``(seed, step)`` or
``(seed, epoch, image)``, so stopping (after an epoch, on SIGTERM or Ctrl-C)
and resuming gives the same weights, bit for bit, as an uninterrupted run on
the same hardware and number of processes.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from ..errors import DinokitError, ImageError
from ..io import atomic_path, save_json
from ..models import ArchConfig, VisionTransformer, arch_preset, load_model, save_backbone
from .augment import MultiCropAugmentation, normalize_batch
from .checkpoint import (
    BACKBONE_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    MetricsLog,
    existing_outputs,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
)
from .config import TrainConfig
from .data import EpochSampler, MultiCropDataset, collate_crops, describe_loader_error, sample_seed
from .distributed import DistInfo, all_reduce_sum, barrier, setup, teardown
from .head import DINOHead, MultiCropWrapper
from .loss import DINOLoss
from .schedules import cosine_schedule

PathLike = Union[str, os.PathLike]
DataInput = Union[PathLike, Sequence[PathLike], Sequence[Image.Image]]


# --------------------------------------------------------------------------- building blocks
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


@torch.no_grad()
def clip_gradients(model: nn.Module, clip: float) -> None:
    """Scale each parameter's gradient to norm at most ``clip`` (per parameter, as the reference)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads) if hasattr(torch, "_foreach_norm") else [g.norm(2) for g in grads]
    coefs = [torch.clamp(clip / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, coefs)


def cancel_last_layer_gradients(model: nn.Module, epoch: int, freeze_last_layer: int) -> None:
    """Drop the head's last-layer gradients during the first ``freeze_last_layer`` epochs."""
    if epoch >= freeze_last_layer:
        return
    for name, p in model.named_parameters():
        if "last_layer" in name:
            p.grad = None


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher = m * teacher + (1 - m) * student`` over all parameters."""
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)


class StopRequest:
    """Turns SIGINT / SIGTERM into a flag checked between steps; a second Ctrl-C aborts at once."""

    def __init__(self, enabled: bool = True) -> None:
        self.signal_name: Optional[str] = None
        self._enabled = enabled and threading.current_thread() is threading.main_thread()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        self._pid = os.getpid()
        if self._enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            # A forked data-loader worker inherits this handler; a Ctrl-C reaches the whole process group, and
            # the main process stops the workers itself once it has saved.
            return
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print(f"\ndinokit: {self.signal_name} received: finishing this step and saving a checkpoint "
              "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


def ignore_stop_signals(worker_id: int) -> None:
    """Data-loader worker set-up: SIGINT and SIGTERM are the main process's business.

    A Ctrl-C, ``kill -TERM -PGID`` or a job scheduler's stop reaches every
    process of the group. PyTorch's workers would die of it, and the main
    process would then fail in the middle of a step; ignoring the signal lets
    the main process finish the step, save and shut the workers down itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def default_num_workers(device: torch.device) -> int:
    """Data-loader workers when the user gives none: several on GPU, none on CPU.

    On CPU the step already uses every core and augmentation is under 10 % of
    it, so a worker only contends with the step (benchmarks/train.py, vit_tiny on
    2 cores: 9.6 images/s with augmentation in the main process, 7.1 with one
    overlapping worker).
    """
    cpus = os.cpu_count() or 1
    return min(8, max(cpus - 1, 0)) if device.type == "cuda" else 0


# --------------------------------------------------------------------------- the trainer
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
    def _resolve_config(self, info: DistInfo, stored: Optional[dict[str, Any]]) -> TrainConfig:
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
        run_dir = self.run_dir
        ckpt_path = run_dir / CHECKPOINT_NAME
        main = info.is_main
        state: Optional[dict[str, Any]] = None
        if resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path)
        elif resume and main:
            print(f"dinokit: no checkpoint in {run_dir}; starting a new run", file=sys.stderr)
        elif not resume and existing_outputs(run_dir, (CHECKPOINT_NAME,)) and not self.overwrite:
            raise DinokitError(
                f"{run_dir}: already holds a training run; pass --resume to continue it or --overwrite to start again"
            )
        cfg = self._resolve_config(info, state["config"] if state else None)
        self.config = cfg
        device = info.device

        # data
        augmentation = MultiCropAugmentation(
            global_size=cfg.global_size,
            local_size=cfg.local_size,
            local_crops_number=cfg.local_crops_number,
            global_crops_scale=tuple(cfg.global_crops_scale),
            local_crops_scale=tuple(cfg.local_crops_scale),
        )
        dataset = MultiCropDataset(self.data, augmentation, seed=cfg.seed)
        sampler = EpochSampler(len(dataset), cfg.batch_size, cfg.seed, info.rank, info.world_size)
        niter = sampler.batches_per_epoch
        if niter == 0:
            raise DinokitError(
                f"{self.data if isinstance(self.data, (str, os.PathLike)) else 'data'}: {len(dataset)} images are fewer "
                f"than one batch ({cfg.batch_size} per process x {info.world_size} process(es)); lower --batch-size"
            )
        num_workers = cfg.num_workers if cfg.num_workers is not None else default_num_workers(device)

        # networks, optimiser, loss, schedules
        if state is not None:
            arch = ArchConfig.from_metadata(state["arch"], str(ckpt_path))
            student, teacher = build_networks(cfg, arch)
            student.load_state_dict(state["student"])
            teacher.load_state_dict(state["teacher"])
        else:
            arch, init_state = backbone_arch(cfg)
            student, teacher = build_networks(cfg, arch, init_state)
        smallest = min(cfg.global_size, cfg.local_size if cfg.local_crops_number else cfg.global_size)
        if smallest < arch.patch_size:
            raise DinokitError(
                f"crops of {smallest} px are smaller than one {arch.patch_size}x{arch.patch_size} patch; "
                "raise --local-size / --global-size"
            )
        if cfg.use_bn_in_head and info.distributed and device.type == "cuda":
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
            teacher = nn.SyncBatchNorm.convert_sync_batchnorm(teacher)
        student.to(device).train()
        # As the reference: the teacher stays in training mode (it has no drop-path, so this only matters for
        # batch norm in the head, which then normalises with the batch's statistics like the student's).
        teacher.to(device).train()
        if info.distributed:
            ddp_student: nn.Module = nn.parallel.DistributedDataParallel(
                student, device_ids=[device.index] if device.type == "cuda" else None
            )
        else:
            ddp_student = student

        optimizer = torch.optim.AdamW(params_groups(student))
        use_amp = bool(cfg.amp and device.type == "cuda")
        scaler = torch.amp.GradScaler("cuda") if use_amp else None
        dino_loss = DINOLoss(
            cfg.out_dim, cfg.ncrops, cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs,
            cfg.epochs, cfg.student_temp, cfg.center_momentum,
        ).to(device)
        total_batch = cfg.batch_size * info.world_size
        lr_schedule = cosine_schedule(cfg.lr * total_batch / 256.0, cfg.min_lr, cfg.epochs, niter, cfg.warmup_epochs)
        wd_schedule = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, cfg.epochs, niter)
        momentum_schedule = cosine_schedule(cfg.momentum_teacher, 1.0, cfg.epochs, niter)
        total_steps = cfg.epochs * niter

        start_step = 0
        epoch_loss = [0.0, 0]
        history: list[dict[str, Any]] = []
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            dino_loss.load_state_dict(state["dino_loss"])
            if scaler is not None and state.get("fp16_scaler"):
                scaler.load_state_dict(state["fp16_scaler"])
            start_step = int(state["step"])
            same_layout = int(state.get("world_size", 1)) == info.world_size and int(state.get("niter_per_epoch", niter)) == niter
            if not same_layout:
                start_step = int(state.get("epoch", 0)) * niter
                if main:
                    print("dinokit: note: the number of processes or batches per epoch changed; "
                          f"resuming at the start of epoch {start_step // niter + 1}", file=sys.stderr)
            else:
                epoch_loss = list(state.get("epoch_loss", [0.0, 0]))
            history = [r for r in read_metrics(run_dir / METRICS_NAME) if r.get("type") == "epoch" and r["step"] <= start_step]

        metrics = MetricsLog(run_dir / METRICS_NAME, enabled=main)
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if state is None:
                for old in existing_outputs(run_dir):
                    old.unlink()
            else:
                metrics.truncate_after(start_step)
            save_json(run_dir / CONFIG_NAME, {"config": cfg.to_dict(), "arch": arch.to_metadata(),
                                              "world_size": info.world_size, "images": len(dataset),
                                              "iterations_per_epoch": niter})
        barrier(info)

        end_step = total_steps
        if stop_at_epoch is not None:
            end_step = min(end_step, max(stop_at_epoch, 0) * niter)
        if stop_at_step is not None:
            end_step = min(end_step, max(stop_at_step, 0))

        self.student_, self.teacher_ = student, teacher
        self.checkpoint_path_ = ckpt_path
        self.backbone_path_ = run_dir / BACKBONE_NAME
        self.interrupted_: Optional[str] = None
        self.history_ = history
        self.step_ = start_step
        self.dino_loss_ = dino_loss
        self.optimizer_ = optimizer

        def checkpoint(step: int, epochs_done: int) -> None:
            if not main:
                return
            save_checkpoint(ckpt_path, {
                "student": student.state_dict(),
                "teacher": teacher.state_dict(),
                "optimizer": optimizer.state_dict(),
                "fp16_scaler": scaler.state_dict() if scaler is not None else None,
                "dino_loss": dino_loss.state_dict(),
                "epoch": epochs_done,
                "step": step,
                "epoch_loss": list(epoch_loss),
                "niter_per_epoch": niter,
                "world_size": info.world_size,
                "config": cfg.to_dict(),
                "arch": arch.to_metadata(),
            })
            save_backbone(teacher.backbone, run_dir / BACKBONE_NAME,
                          extra={"dinokit_train_step": str(step), "dinokit_train_epochs": str(epochs_done)})
            if cfg.saveckp_freq and step % niter == 0 and epochs_done % cfg.saveckp_freq == 0:
                with atomic_path(run_dir / f"checkpoint{epochs_done:04d}.pth") as tmp:
                    shutil.copyfile(ckpt_path, tmp)

        step = start_step
        with StopRequest() as stop:
            while step < end_step and not self.interrupted_:
                epoch, start_batch = divmod(step, niter)
                dataset.set_epoch(epoch)
                sampler.set_epoch(epoch, start_batch)
                # The loader draws its workers' base seed from the global generator: make that reproducible too.
                torch.manual_seed(sample_seed(cfg.seed, step, -1 - info.rank) % (2**63))
                loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=num_workers,
                                    collate_fn=collate_crops, drop_last=True, pin_memory=device.type == "cuda",
                                    worker_init_fn=ignore_stop_signals if num_workers else None)
                epoch_end = min((epoch + 1) * niter, end_step)
                bar = _progress(self.progress and main, niter, start_batch, f"epoch {epoch + 1}/{cfg.epochs}")
                t_epoch = time.perf_counter()
                t_data = 0.0
                n_images = 0
                t0 = time.perf_counter()
                try:
                    for crops in loader:
                        t_data += time.perf_counter() - t0
                        loss_value = self._step(
                            step, epoch, crops, ddp_student, student, teacher, dino_loss, optimizer, scaler, use_amp,
                            lr_schedule, wd_schedule, momentum_schedule, info,
                        )
                        epoch_loss[0] += loss_value
                        epoch_loss[1] += 1
                        n_images += cfg.batch_size * info.world_size
                        step += 1
                        self.step_ = step
                        rec = {"type": "step", "step": step, "epoch": epoch, "loss": loss_value,
                               "lr": float(lr_schedule[step - 1]), "wd": float(wd_schedule[step - 1]),
                               "momentum": float(momentum_schedule[step - 1]),
                               "teacher_temp": dino_loss.teacher_temp(epoch)}
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{rec['lr']:.2e}", mom=f"{rec['momentum']:.4f}")
                        if cfg.log_every and (step % cfg.log_every == 0 or step == epoch_end):
                            metrics.write(rec)
                        if self._stop_now(stop, info):
                            self.interrupted_ = stop.signal_name or "signal"
                            break
                        if step >= epoch_end:
                            break
                        t0 = time.perf_counter()
                except (RuntimeError, ImageError) as exc:
                    message = describe_loader_error(exc)
                    if message:
                        raise ImageError(message) from None
                    raise
                finally:
                    if bar is not None:
                        bar.close()
                epoch_done = step % niter == 0
                epochs_completed = step // niter
                if epoch_done:
                    elapsed = time.perf_counter() - t_epoch
                    rec = {"type": "epoch", "step": step, "epoch": epoch,
                           "loss": epoch_loss[0] / max(epoch_loss[1], 1),
                           "lr": float(lr_schedule[step - 1]), "wd": float(wd_schedule[step - 1]),
                           "momentum": float(momentum_schedule[step - 1]),
                           "teacher_temp": dino_loss.teacher_temp(epoch),
                           "seconds": elapsed, "data_seconds": t_data,
                           "images_per_second": n_images / elapsed if elapsed > 0 else None}
                    metrics.write(rec)
                    self.history_.append(rec)
                    epoch_loss = [0.0, 0]
                checkpoint(step, epochs_completed)
                barrier(info)
        if self.interrupted_ and main:
            print(f"dinokit: stopped at step {step} of {total_steps} (epoch {step // niter + 1}); checkpoint saved "
                  f"in {ckpt_path}; continue with --resume", file=sys.stderr)
        self.epochs_done_ = step // niter
        self.finished_ = step >= total_steps
        backbone = copy.deepcopy(teacher.backbone).cpu()
        backbone.eval().requires_grad_(False)
        backbone.source = str(self.backbone_path_)  # type: ignore[attr-defined]
        backbone.spec = None  # type: ignore[attr-defined]
        self.backbone_ = backbone
        return self

    def _stop_now(self, stop: StopRequest, info: DistInfo) -> bool:
        # Every process must stop at the same step, so the flag is agreed on through an all-reduce.
        if not info.distributed:
            return stop.requested
        flag = torch.tensor([1.0 if stop.requested else 0.0], device=info.device)
        all_reduce_sum(flag, info)
        if flag.item() > 0 and stop.signal_name is None:
            stop.signal_name = "signal on another process"
        return bool(flag.item() > 0)

    def _step(
        self, it: int, epoch: int, crops: list[torch.Tensor], ddp_student: nn.Module, student: MultiCropWrapper,
        teacher: MultiCropWrapper, dino_loss: DINOLoss, optimizer: torch.optim.Optimizer,
        scaler: Optional[torch.amp.GradScaler], use_amp: bool, lr_schedule: np.ndarray, wd_schedule: np.ndarray,
        momentum_schedule: np.ndarray, info: DistInfo,
    ) -> float:
        cfg = self.config
        device = info.device
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = float(lr_schedule[it])
            if i == 0:
                group["weight_decay"] = float(wd_schedule[it])
        # Drop-path masks come from the global generator: seed it per step (and process).
        torch.manual_seed(sample_seed(cfg.seed, it, info.rank) % (2**63))
        mean, std = student.backbone.cfg.mean, student.backbone.cfg.std
        images = [normalize_batch(c.to(device, non_blocking=True), mean, std) for c in crops]
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            teacher_output = teacher(images[:2])
            student_output = ddp_student(images)
            loss = dino_loss(student_output, teacher_output, epoch)
        reduced = loss.detach().float().reshape(1).clone()
        all_reduce_sum(reduced, info)
        loss_value = float(reduced.item()) / info.world_size
        if not math.isfinite(loss_value):
            raise DinokitError(
                f"the loss became {loss_value} at step {it + 1} (epoch {epoch + 1}); training diverged. "
                "Try a lower --lr, --teacher-temp 0.04 or --no-amp; the last checkpoint is intact"
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            if cfg.clip_grad:
                clip_gradients(student, cfg.clip_grad)
            cancel_last_layer_gradients(student, epoch, cfg.freeze_last_layer)
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            if cfg.clip_grad:
                scaler.unscale_(optimizer)
                clip_gradients(student, cfg.clip_grad)
            cancel_last_layer_gradients(student, epoch, cfg.freeze_last_layer)
            scaler.step(optimizer)
            scaler.update()
        ema_update(teacher, student, float(momentum_schedule[it]))
        return loss_value


def _progress(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=True)


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
    "ema_update",
    "params_groups",
    "train_dino",
]
