"""Saliency maps from the CLS token's attention (Amir et al. 2021).

The saliency of a patch is the CLS token's attention to it in one block,
averaged over chosen heads and min-max normalised per image. Only the CLS row
is ever computed, never a tokens x tokens matrix.

Register tokens (DINOv2 with registers) are not part of the image: they are
taken out of the CLS row's softmax, i.e. each head's row is renormalised over
the keys a register-free model has (CLS and patches), and then, as in the
reference, the CLS column is dropped. For a model without registers this is
exactly the reference (``attn[:, heads, 0, 1:]`` of the softmax over all
tokens). Why renormalise rather than just drop the register columns: the
registers can take much of a head's mass, and the head average would then
weight heads by how little they look at the registers, a weighting the
reference hardly has (the CLS token's attention to itself in the last block
is small: under 1% on average for the trained DINO ViT-Ti/16 of the shared
data, so the reference's head average is in effect an equal-weight average of
the heads' patch distributions). Renormalising over the patches alone
(dropping the CLS share as well) was rejected because it would change the
result for models without registers.
"""

from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor

from ..errors import DinokitError


class SaliencyHeadsError(DinokitError, ValueError):
    """Head indices that the model does not have (a :class:`ValueError` too)."""


def cls_patch_attention(cls_attn: Tensor, num_prefix_tokens: int = 1) -> Tensor:
    """The CLS token's attention to the patches, ``(..., N) -> (..., T)``, with registers out of the softmax.

    ``cls_attn`` is the CLS row of a block's softmax over all ``N`` tokens
    (CLS, then ``num_prefix_tokens - 1`` registers, then the ``T`` patches).
    Each row is divided by its mass on CLS plus patches, which equals a
    softmax restricted to those keys; without registers the patch columns are
    returned unchanged.
    """
    patches = cls_attn[..., num_prefix_tokens:]
    if num_prefix_tokens <= 1:
        return patches
    kept = cls_attn[..., :1] + patches.sum(dim=-1, keepdim=True)
    return patches / kept.clamp_min(1e-30)


def saliency_from_cls_attention(
    cls_attn: Tensor, num_prefix_tokens: int = 1, heads: Optional[Sequence[int]] = None, normalize: bool = True
) -> Tensor:
    """Turn CLS attention ``(B, heads, N)`` into a per-patch saliency ``(B, T)``.

    Prefix tokens are dropped and registers taken out of the softmax (see
    :func:`cls_patch_attention`); ``heads=None`` averages all heads.
    """
    if heads is not None:
        n = cls_attn.shape[1]
        bad = [h for h in heads if not -n <= h < n]
        if bad:
            raise SaliencyHeadsError(f"saliency heads {bad} out of range for a {n}-head model (heads 0..{n - 1})")
        if not len(heads):
            raise SaliencyHeadsError("saliency heads: the list is empty")
        cls_attn = cls_attn[:, list(heads)]
    sal = cls_patch_attention(cls_attn, num_prefix_tokens).mean(dim=1)
    if normalize:
        lo = sal.min(dim=1, keepdim=True).values
        hi = sal.max(dim=1, keepdim=True).values
        sal = (sal - lo) / (hi - lo).clamp_min(1e-12)
    return sal
