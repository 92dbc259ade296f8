"""Per-iteration schedules of DINO training (learning rate, weight decay, teacher momentum and temperature).

Each schedule is a plain float64 array with one value per iteration (or per
epoch for the teacher temperature), computed once before training, exactly as
``utils.cosine_scheduler`` and ``DINOLoss`` of the reference build them.
"""

from __future__ import annotations

import numpy as np


def cosine_schedule(
    base_value: float,
    final_value: float,
    epochs: int,
    niter_per_ep: int,
    warmup_epochs: int = 0,
    start_warmup_value: float = 0.0,
) -> np.ndarray:
    """Linear warm-up from ``start_warmup_value`` to ``base_value``, then a half cosine down to ``final_value``.

    Returns ``epochs * niter_per_ep`` values. The warm-up covers
    ``warmup_epochs * niter_per_ep`` iterations (both end points included, as
    ``np.linspace``); the cosine part starts at ``base_value`` and approaches,
    without reaching, ``final_value`` on the last iteration.
    """
    if epochs < 0 or niter_per_ep < 0 or warmup_epochs < 0:
        raise ValueError("epochs, niter_per_ep and warmup_epochs must be non-negative")
    total = epochs * niter_per_ep
    warmup_iters = min(warmup_epochs * niter_per_ep, total)
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_iters > 0 else np.array([])
    iters = np.arange(total - warmup_iters)
    n = max(len(iters), 1)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / n))
    return np.concatenate((warmup, cosine)).astype(np.float64)


def teacher_temp_schedule(
    warmup_teacher_temp: float, teacher_temp: float, warmup_epochs: int, epochs: int
) -> np.ndarray:
    """One teacher temperature per epoch: linear from ``warmup_teacher_temp`` to ``teacher_temp``, then constant.

    A warm-up longer than the run is cut at ``epochs`` (the reference would fail).
    """
    warm = min(max(warmup_epochs, 0), epochs)
    return np.concatenate(
        (np.linspace(warmup_teacher_temp, teacher_temp, warm), np.full(epochs - warm, teacher_temp))
    ).astype(np.float64)


__all__ = ["cosine_schedule", "teacher_temp_schedule"]
