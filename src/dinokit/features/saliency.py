"""Saliency maps from the CLS token's attention (Amir et al. 2021).

The saliency of a patch is the CLS token's attention to it in one block,
averaged over chosen heads and min-max normalised per image. Only the CLS row
is ever computed, never a tokens x tokens matrix.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor


def saliency_from_cls_attention(
    cls_attn: Tensor, num_prefix_tokens: int = 1, heads: Optional[Sequence[int]] = None, normalize: bool = True
) -> Tensor:
    """Turn CLS attention ``(B, heads, N)`` into a per-patch saliency ``(B, T)``.

    Prefix tokens (CLS, registers) are dropped; ``heads=None`` averages all heads.
    """
    if heads is not None:
        n = cls_attn.shape[1]
        bad = [h for h in heads if not -n <= h < n]
        if bad:
            raise ValueError(f"saliency heads {bad} out of range for a {n}-head model")
        cls_attn = cls_attn[:, list(heads)]
    sal = cls_attn[:, :, num_prefix_tokens:].mean(dim=1)
    if normalize:
        lo = sal.min(dim=1, keepdim=True).values
        hi = sal.max(dim=1, keepdim=True).values
        sal = (sal - lo) / (hi - lo).clamp_min(1e-12)
    return sal
