"""Warnings about training runs that silently do less than asked.

They are :class:`~dinokit.errors.DinokitWarning` s, so Python code can filter
or turn them into errors; the commands show each as one line on stderr
(:func:`~dinokit.errors.one_line_warnings`), with or without ``--quiet``.
"""

from __future__ import annotations

from ..errors import DinokitWarning, one_line_warnings, warn
from .config import TrainConfig
from .schedules import teacher_temp_schedule


def warn_dropped_images(num_images: int, batch_size: int, world_size: int = 1) -> int:
    """Warn when whole batches leave images out of every epoch; returns how many are left out."""
    per_step = batch_size * world_size
    dropped = num_images % per_step
    if not dropped or num_images < per_step:
        return dropped
    procs = f" x {world_size} processes" if world_size > 1 else ""
    fits = [b for b in range(max(1, batch_size // 2), 2 * batch_size + 1)
            if b * world_size <= num_images and num_images % (b * world_size) == 0]
    if fits:
        best = min(fits, key=lambda b: (abs(b - batch_size), -b))
        times = f" (times {world_size} processes)" if world_size > 1 else ""
        fix = f"use a --batch-size that{times} divides {num_images}, e.g. {best}"
    else:
        fix = f"use a number of images that is a multiple of {per_step}, or another --batch-size"
    warn(f"{num_images} images in batches of {batch_size}{procs}: each epoch leaves out {dropped} "
         f"image{'s' if dropped != 1 else ''} (other ones each epoch, the order is reshuffled); to train on all "
         f"of them every epoch, {fix}")
    return dropped


def short_run_problems(config: TrainConfig) -> list[str]:
    """Messages for warm-ups and a frozen last layer that do not fit in ``config.epochs``.

    The schedules squeeze a warm-up longer than the run into the run (the
    reference would fail), which changes what the option means; say so.
    """
    cfg, out = config, []
    if cfg.warmup_epochs > cfg.epochs:
        out.append(f"warmup_epochs={cfg.warmup_epochs} is longer than the run (epochs={cfg.epochs}): the learning "
                   "rate rises over the whole run, reaches its peak only at the last step and never decays; "
                   "lower --warmup-epochs")
    if cfg.warmup_teacher_temp_epochs > cfg.epochs:
        temps = teacher_temp_schedule(cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs,
                                      cfg.epochs)
        out.append(f"warmup_teacher_temp_epochs={cfg.warmup_teacher_temp_epochs} is longer than the run "
                   f"(epochs={cfg.epochs}): the teacher temperature goes from {temps[0]:g} to {temps[-1]:g} over "
                   f"{cfg.epochs} epoch(s) instead; lower --warmup-teacher-temp-epochs")
    if cfg.freeze_last_layer >= cfg.epochs:
        out.append(f"freeze_last_layer={cfg.freeze_last_layer} covers the whole run (epochs={cfg.epochs}): the head's "
                   "last layer is never trained; lower --freeze-last-layer")
    return out


def warn_short_run(config: TrainConfig) -> None:
    """Warn once per problem found by :func:`short_run_problems`."""
    for message in short_run_problems(config):
        warn(message)


__all__ = ["DinokitWarning", "one_line_warnings", "short_run_problems", "warn", "warn_dropped_images", "warn_short_run"]
