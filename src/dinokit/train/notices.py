"""Warnings about runs that silently do less than asked, and their one-line display in the CLI.

The library raises them with :func:`warnings.warn` (category
:class:`DinokitWarning`), so Python code can filter or turn them into errors;
the ``train`` and ``knn`` commands show each as one line on stderr,
``dinokit: warning: ...``, whether or not ``--quiet`` is given.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Any, Iterator

from .config import TrainConfig
from .schedules import teacher_temp_schedule


class DinokitWarning(UserWarning):
    """A setting or input that makes a computation do less than it seems to (a shortfall the user should know)."""


def warn(message: str, stacklevel: int = 3) -> None:
    """Issue ``message`` as a :class:`DinokitWarning` (one line, no trailing period needed)."""
    warnings.warn(message, DinokitWarning, stacklevel=stacklevel)


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


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show :class:`DinokitWarning` (every time, not once per place) as ``dinokit: warning: ...`` on stderr."""

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, DinokitWarning):
            print(f"dinokit: warning: {message}", file=sys.stderr, flush=True)
        else:
            previous(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        previous = warnings.showwarning
        warnings.showwarning = show
        warnings.simplefilter("always", DinokitWarning)
        yield


__all__ = ["DinokitWarning", "one_line_warnings", "short_run_problems", "warn", "warn_dropped_images", "warn_short_run"]
