"""Baselines that need no pretrained weights, shown under the model in every benchmark table.

They tell what the features add over what the image layout and raw pixels
already give:

* correspondences: :func:`identity_points` (a keypoint maps to the same
  relative position in the other image) and :func:`rgb_patch_descriptors`
  (raw pixel patches on the model's grid, matched by normalised
  cross-correlation: the nearest neighbour in pixel space);
* co-segmentation and video: :func:`centre_prior_mask` (a centred ellipse
  covering a fixed share of the image) and :func:`saliency_mask` (the
  model's saliency thresholded, without any clustering: this one uses the
  model, to show what co-segmentation adds over saliency alone);
* parts: :func:`grid_parts` (the image cut into a grid of as many cells as
  parts).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DinokitError
from ..features.coords import GridGeometry
from ..features.image import LoadSize, preprocess
from .datasets.registry import BaselineSettings

__all__ = ["identity_points", "rgb_patch_descriptors", "centre_prior_mask", "saliency_mask", "grid_parts"]


def identity_points(points: Any, size_a: Sequence[int], size_b: Sequence[int]) -> np.ndarray:
    """Points ``(N, 2)`` ``(x, y)`` of image A moved to the same relative position in B.

    ``size_a``/``size_b`` are ``(width, height)``: ``(x * wb / wa, y * hb / ha)``.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    scale = np.array([size_b[0] / size_a[0], size_b[1] / size_a[1]], dtype=np.float64)
    return pts * scale


def rgb_patch_descriptors(
    image: Any, patch_size: int = 8, stride: int = 4, load_size: LoadSize = 224
) -> tuple[torch.Tensor, GridGeometry]:
    """Raw-pixel descriptors on a ViT's patch grid: ``(T, 3 * p * p)`` and the grid geometry.

    The image is resized like the model's input (``load_size``) and ImageNet
    normalised; each ``patch_size`` x ``patch_size`` patch (every ``stride``
    pixels) becomes its pixel values minus their mean, so cosine similarity
    of two descriptors is the normalised cross-correlation of the patches.
    """
    if patch_size < 1 or stride < 1:
        raise DinokitError(f"patch size and stride must be positive, got {patch_size} and {stride}")
    loaded = preprocess(image, load_size)
    h, w = loaded.size
    if h < patch_size or w < patch_size:
        raise DinokitError(f"{loaded.path or 'image'}: {w}x{h} pixels is smaller than one {patch_size}-pixel patch")
    cols = F.unfold(loaded.tensor[None], kernel_size=patch_size, stride=stride)[0].T  # (T, 3 p p)
    cols = cols - cols.mean(dim=1, keepdim=True)
    grid = ((h - patch_size) // stride + 1, (w - patch_size) // stride + 1)
    return cols.contiguous(), GridGeometry(grid, patch_size, stride, (h, w), loaded.original_size)


def centre_prior_mask(height: int, width: int, area: float = BaselineSettings().centre_prior_area) -> np.ndarray:
    """``(H, W)`` bool: a centred ellipse with the image's aspect ratio covering ``area`` of the image."""
    if not 0.0 < area <= math.pi / 4:
        raise DinokitError(f"centre prior area must be in (0, {math.pi / 4:.3f}] (the inscribed ellipse), got {area}")
    s = math.sqrt(4.0 * area / math.pi)  # axes as a fraction of the sides
    y = (np.arange(height) + 0.5 - height / 2.0) / (s * height / 2.0)
    x = (np.arange(width) + 0.5 - width / 2.0) / (s * width / 2.0)
    return (y[:, None] ** 2 + x[None, :] ** 2) <= 1.0


def saliency_mask(saliency: Any, size: Sequence[int], thresh: Optional[float] = None) -> np.ndarray:
    """``(H, W)`` bool foreground from a saliency grid ``(rows, cols)``: patches above ``thresh``
    (default: the image's mean saliency), resized to ``size = (H, W)`` with nearest neighbour."""
    from ..blocks.refine import upsample_mask

    sal = np.asarray(saliency, dtype=np.float32)
    if sal.ndim != 2:
        raise DinokitError(f"saliency must be a 2-D grid, got shape {sal.shape}")
    t = float(sal.mean()) if thresh is None else float(thresh)
    return upsample_mask(sal > t, (int(size[0]), int(size[1])))


def grid_parts(height: int, width: int, num_parts: int) -> np.ndarray:
    """``(H, W)`` int32 labels ``0 .. num_parts - 1``: the image cut into ``rows x cols = num_parts`` equal cells,
    ``rows`` the largest divisor of ``num_parts`` not above its square root (4 parts: 2 x 2)."""
    if num_parts < 1:
        raise DinokitError(f"num_parts must be at least 1, got {num_parts}")
    rows = max(d for d in range(1, int(math.isqrt(num_parts)) + 1) if num_parts % d == 0)
    cols = num_parts // rows
    if width < height:
        rows, cols = cols, rows  # more cells along the longer side
    r = np.minimum((np.arange(height) * rows) // height, rows - 1)
    c = np.minimum((np.arange(width) * cols) // width, cols - 1)
    return (r[:, None] * cols + c[None, :]).astype(np.int32)
