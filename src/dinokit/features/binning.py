"""Log-binning of dense descriptors (Amir et al. 2021), vectorised.

Each position's descriptor becomes the concatenation of 1 + 8 * hierarchy
bins: its 3x3 neighbourhood, then the 8 neighbours at distance 3**k of the
3**k x 3**k average-pooled map, for k = 1 .. hierarchy - 1. Neighbours outside
the grid take the value at the nearest grid position, exactly as the reference.

Implementation: the reference clamps each neighbour's index, which is the same
as replicate-padding each pooled map; every bin is then a shifted window of
the padded map, and all of a level's windows are one strided view. Everything
stays channels-last (the descriptors' own layout, where average pooling is also
fastest), and the result is written once into a single output buffer
(optionally the caller's, ``out=``) in four large copies (default hierarchy), so the time is
that of writing the output. The values are copies of the reference's pooled
values: the output is bit-for-bit identical.
"""

from __future__ import annotations

from typing import Optional

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


def log_bin(desc: Tensor, grid: tuple[int, int], hierarchy: int = 2, out: Optional[Tensor] = None) -> Tensor:
    """Log-bin descriptors ``(B, T, D)`` on a ``rows x cols`` grid into ``(B, T, (1 + 8h) * D)``.

    Channel ``slot * D + d`` holds bin ``slot`` (order of :func:`bin_offsets`)
    of channel ``d``. ``out``, if given, is a contiguous tensor of the result's
    shape and dtype that receives the result (reusing one buffer across many
    images avoids allocating fresh memory for every call).
    """
    B, T, D = desc.shape
    rows, cols = grid
    if rows * cols != T:
        raise ValueError(f"{T} descriptors do not fill a {rows}x{cols} grid")
    if hierarchy < 1:
        raise ValueError(f"hierarchy must be >= 1, got {hierarchy}")
    slots = 1 + 8 * hierarchy
    if out is None:
        out = desc.new_empty(B, T, slots * D)
    elif (out.shape != (B, T, slots * D) or out.dtype != desc.dtype or out.device != desc.device
          or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous {desc.dtype} tensor of shape {(B, T, slots * D)} on {desc.device}")
    dst = out.view(B, rows, cols, slots, D)
    x = desc.reshape(B, rows, cols, D)
    if not x.is_contiguous():  # e.g. a batch with the CLS row sliced off
        x = x.contiguous()
    nchw = x.permute(0, 3, 1, 2)  # channels-last memory, as average pooling prefers
    for k in range(hierarchy):
        ks = 3**k
        level = nchw if k == 0 else F.avg_pool2d(nchw, ks, stride=1, padding=ks // 2, count_include_pad=False)
        padded = F.pad(level, (ks, ks, ks, ks), mode="replicate").permute(0, 2, 3, 1)  # B, rows+2ks, cols+2ks, D
        # win[b, y, x, i, j] = padded[b, y + i*ks, x + j*ks]: the 3x3 neighbours at distance ks (a view)
        win = padded.unfold(1, 2 * ks + 1, 1).unfold(2, 2 * ks + 1, 1)[..., ::ks, ::ks].permute(0, 1, 2, 4, 5, 3)
        # few large copies (each is one parallel region): 1 for the 3x3 level, 3 per ring level
        if k == 0:
            dst[:, :, :, :9].unflatten(3, (3, 3)).copy_(win)
        else:
            first = 9 + 8 * (k - 1)
            dst[:, :, :, first : first + 3].copy_(win[:, :, :, 0])  # the row above
            dst[:, :, :, first + 3 : first + 5].copy_(win[:, :, :, 1, ::2])  # left and right
            dst[:, :, :, first + 5 : first + 8].copy_(win[:, :, :, 2])  # the row below
    return out
