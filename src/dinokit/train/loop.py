"""The DINO training loop: one step, one epoch, and epochs until done or stopped.

One step, as in the reference ``train_one_epoch``: the teacher sees the two
global crops, the student every crop; the DINO loss is back-propagated
through the student only (gradients clipped per parameter, last layer's
gradients dropped during the first ``freeze_last_layer`` epochs), AdamW
steps with the scheduled learning rate and weight decay, and the teacher
becomes an exponential moving average of the student with the scheduled
momentum. A checkpoint is written after every epoch and when stopped.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import DinokitError, ImageError
from .augment import normalize_batch
from .batch_augment import collate_sources
from .checkpoint import save_run
from .data import collate_crops, describe_loader_error, sample_seed
from ..distributed import DistInfo, all_reduce_sum, barrier
from .state import TrainRun


# --------------------------------------------------------------------------- parts of a step
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


def device_crops(run: TrainRun, it: int, batch: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    """The step's multi-crop batches made on the device from the loader's source images (seeded by step and rank)."""
    canvas, sizes = batch
    gen = torch.Generator().manual_seed(sample_seed(run.config.seed, it, -(1 << 20) - run.info.rank) % (2**63))
    assert run.batch_augment is not None
    return run.batch_augment(canvas.to(run.device, non_blocking=True), sizes, gen)


def dino_forward(run: TrainRun, it: int, epoch: int, crops: list[torch.Tensor]) -> torch.Tensor:
    """Set this step's learning rate and weight decay, then the loss of teacher (global crops) vs. student (all)."""
    for i, group in enumerate(run.optimizer.param_groups):
        group["lr"] = float(run.schedules.lr[it])
        if i == 0:
            group["weight_decay"] = float(run.schedules.wd[it])
    # Drop-path masks come from the global generator: seed it per step (and process).
    torch.manual_seed(sample_seed(run.config.seed, it, run.info.rank) % (2**63))
    if run.batch_augment is not None:
        crops = device_crops(run, it, crops)
    mean, std = run.student.backbone.cfg.mean, run.student.backbone.cfg.std
    images = [normalize_batch(c.to(run.device, non_blocking=True), mean, std) for c in crops]
    with torch.autocast(device_type=run.device.type, dtype=torch.float16, enabled=run.use_amp):
        teacher_output = run.teacher(images[:2])
        student_output = run.ddp_student(images)
        return run.dino_loss(student_output, teacher_output, epoch)


def dino_update(run: TrainRun, loss: torch.Tensor, it: int, epoch: int) -> None:
    """Back-propagate, clip, freeze the last layer if due, step AdamW (through the AMP scaler) and update the teacher."""
    cfg, scaler, student = run.config, run.scaler, run.student
    run.optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if cfg.clip_grad:
            clip_gradients(student, cfg.clip_grad)
        cancel_last_layer_gradients(student, epoch, cfg.freeze_last_layer)
        run.optimizer.step()
    else:
        scaler.scale(loss).backward()
        if cfg.clip_grad:
            scaler.unscale_(run.optimizer)
            clip_gradients(student, cfg.clip_grad)
        cancel_last_layer_gradients(student, epoch, cfg.freeze_last_layer)
        scaler.step(run.optimizer)
        scaler.update()
    ema_update(run.teacher, student, float(run.schedules.momentum[it]))


def train_step(run: TrainRun, it: int, epoch: int, crops: list[torch.Tensor]) -> float:
    """One optimisation step on a batch of crops; returns the loss averaged over processes."""
    loss = dino_forward(run, it, epoch, crops)
    reduced = loss.detach().float().reshape(1).clone()
    all_reduce_sum(reduced, run.info)
    loss_value = float(reduced.item()) / run.info.world_size
    if not math.isfinite(loss_value):
        raise DinokitError(
            f"the loss became {loss_value} at step {it + 1} (epoch {epoch + 1}); training diverged. "
            "Try a lower --lr, --teacher-temp 0.04 or --no-amp; the last checkpoint is intact"
        )
    dino_update(run, loss, it, epoch)
    return loss_value


# --------------------------------------------------------------------------- stopping
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


def stop_now(stop: StopRequest, info: DistInfo) -> bool:
    """Whether to stop after this step; every process must stop at the same step, so they agree by all-reduce."""
    if not info.distributed:
        return stop.requested
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=info.device)
    all_reduce_sum(flag, info)
    if flag.item() > 0 and stop.signal_name is None:
        stop.signal_name = "signal on another process"
    return bool(flag.item() > 0)


# --------------------------------------------------------------------------- epochs
@dataclass
class EpochTiming:
    """Wall-clock seconds of an epoch (``start`` is a ``perf_counter`` time), data wait and images trained on."""

    start: float = field(default_factory=time.perf_counter)
    data_seconds: float = 0.0
    images: int = 0


def make_loader(run: TrainRun) -> DataLoader:
    """The data loader for the rest of the current epoch (sampler and dataset already set to it)."""
    # The loader draws its workers' base seed from the global generator: make that reproducible too.
    torch.manual_seed(sample_seed(run.config.seed, run.step, -1 - run.info.rank) % (2**63))
    return DataLoader(run.dataset, batch_size=run.config.batch_size, sampler=run.sampler, num_workers=run.num_workers,
                      collate_fn=collate_sources if run.batch_augment is not None else collate_crops, drop_last=True, pin_memory=run.device.type == "cuda",
                      worker_init_fn=ignore_stop_signals if run.num_workers else None)


def log_step(run: TrainRun, epoch: int, loss_value: float, epoch_end: int, bar: Any) -> None:
    """Count the step in the epoch loss, the progress bar and (every ``log_every`` steps) the metrics log."""
    run.epoch_loss[0] += loss_value
    run.epoch_loss[1] += 1
    rec = {"type": "step", "step": run.step, "epoch": epoch, "loss": loss_value,
           **run.schedules.at(run.step - 1), "teacher_temp": run.dino_loss.teacher_temp(epoch)}
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{rec['lr']:.2e}", mom=f"{rec['momentum']:.4f}")
    every = run.config.log_every
    if every and (run.step % every == 0 or run.step == epoch_end):
        run.metrics.write(rec)


def train_epoch(run: TrainRun, end_step: int, stop: StopRequest, progress: bool) -> EpochTiming:
    """Steps from ``run.step`` to the end of its epoch (or ``end_step``, or a stop request)."""
    epoch, start_batch = divmod(run.step, run.niter)
    run.dataset.set_epoch(epoch)
    run.sampler.set_epoch(epoch, start_batch)
    loader = make_loader(run)
    epoch_end = min((epoch + 1) * run.niter, end_step)
    bar = _progress(progress and run.info.is_main, run.niter, start_batch, f"epoch {epoch + 1}/{run.config.epochs}")
    timing = EpochTiming()
    t0 = time.perf_counter()
    try:
        for crops in loader:
            timing.data_seconds += time.perf_counter() - t0
            loss_value = train_step(run, run.step, epoch, crops)
            timing.images += run.config.batch_size * run.info.world_size
            run.step += 1
            log_step(run, epoch, loss_value, epoch_end, bar)
            if stop_now(stop, run.info):
                run.interrupted = stop.signal_name or "signal"
                break
            if run.step >= epoch_end:
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
    return timing


def close_epoch(run: TrainRun, epoch: int, timing: EpochTiming) -> None:
    """At an epoch's end: write its record (mean loss, schedules, speed), keep it in the history, reset the loss."""
    if run.step % run.niter != 0:
        return
    elapsed = time.perf_counter() - timing.start
    rec = {"type": "epoch", "step": run.step, "epoch": epoch,
           "loss": run.epoch_loss[0] / max(run.epoch_loss[1], 1),
           **run.schedules.at(run.step - 1), "teacher_temp": run.dino_loss.teacher_temp(epoch),
           "seconds": elapsed, "data_seconds": timing.data_seconds,
           "images_per_second": timing.images / elapsed if elapsed > 0 else None}
    run.metrics.write(rec)
    run.history.append(rec)
    run.epoch_loss = [0.0, 0]


def train_until(run: TrainRun, end_step: int, progress: bool = True) -> None:
    """Epochs until ``end_step`` or SIGINT/SIGTERM (then ``run.interrupted`` is set), saving after each."""
    with StopRequest() as stop:
        while run.step < end_step and not run.interrupted:
            epoch = run.step // run.niter
            timing = train_epoch(run, end_step, stop, progress)
            close_epoch(run, epoch, timing)
            save_run(run)
            barrier(run.info)


def _progress(enabled: bool, total: int, initial: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=True)


__all__ = [
    "EpochTiming",
    "StopRequest",
    "cancel_last_layer_gradients",
    "clip_gradients",
    "close_epoch",
    "device_crops",
    "dino_forward",
    "dino_update",
    "ema_update",
    "ignore_stop_signals",
    "make_loader",
    "stop_now",
    "train_epoch",
    "train_step",
    "train_until",
]
