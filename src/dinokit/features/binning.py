"""Log-binning of dense descriptors (Amir et al. 2021), vectorised.

Each position's descriptor becomes the concatenation of 1 + 8 * hierarchy
bins: its 3x3 neighbourhood, then the 8 neighbours at distance 3**k of the
3**k x 3**k average-pooled map, for k = 1 .. hierarchy - 1. Neighbours outside
the grid take the value at the nearest grid position, exactly as the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bin_offsets(hierarchy: int = 2) -> list[tuple[int, int, int]]:
    """``(level, dy, dx)`` of every bin, in the reference's channel order."""
    out = []
    for k in range(hierarchy):
        ks = 3**k
        for dy in (-ks, 0, ks):
            for dx in (-ks, 0, ks):
                if k != 0 and dy == 0 and dx == 0:
                    continue
                out.append((k, dy, dx))
    return out


def log_bin(desc: Tensor, grid: tuple[int, int], hierarchy: int = 2) -> Tensor:
    """Log-bin descriptors ``(B, T, D)`` on a ``rows x cols`` grid into ``(B, T, (1 + 8h) * D)``.

    Channel ``slot * D + d`` holds bin ``slot`` (order of :func:`bin_offsets`)
    of channel ``d``.
    """
    B, T, D = desc.shape
    rows, cols = grid
    if rows * cols != T:
        raise ValueError(f"{T} descriptors do not fill a {rows}x{cols} grid")
    x = desc.transpose(1, 2).reshape(B, D, rows, cols)
    pooled = []
    for k in range(hierarchy):
        win = 3**k
        p = x if win == 1 else F.avg_pool2d(x, win, stride=1, padding=win // 2, count_include_pad=False)
        pooled.append(p.permute(0, 2, 3, 1))  # B, rows, cols, D
    offsets = bin_offsets(hierarchy)
    out = desc.new_empty(B, rows, cols, len(offsets), D)
    r = torch.arange(rows, device=desc.device)
    c = torch.arange(cols, device=desc.device)
    for slot, (k, dy, dx) in enumerate(offsets):
        ri = (r + dy).clamp_(0, rows - 1)
        ci = (c + dx).clamp_(0, cols - 1)
        out[:, :, :, slot] = pooled[k].index_select(1, ri).index_select(2, ci)
    return out.reshape(B, T, len(offsets) * D)
