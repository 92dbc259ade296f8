"""Semi-supervised video object segmentation by label propagation: the DAVIS-2017 protocol of DINO (Caron et al.
2021, Sec. 4.2.2 and Table 5, their ``eval_video_segmentation.py``; after Jabri et al. 2020).

Given the annotated first frame, each later frame's labels are a weighted vote of the labels of a context:
the first frame and the ``n_last_frames`` (7) previous frames, whose labels are the soft predictions made
for them. The vote uses patch features (the last block's output after the final norm, CLS and registers
dropped), compared by cosine similarity within a square window of ``neighbourhood`` (12) patches around
the target patch; of all context patches only the ``topk`` (5) most similar keep their weight
``exp(cos / temperature)`` (temperature 0.1), normalised to sum to one. Frames are resized so the shorter
side is 480 pixels and the longer a multiple of 64 (bilinear, as the reference's ``cv2.resize``); the
first frame's mask is downsampled to the patch grid with nearest neighbour and one-hot encoded. A
frame's soft labels are upsampled bilinearly by the patch size, each label map min-max normalised, the
argmax taken and resized to the original frame with nearest neighbour.

The same propagation on raw pixels (each patch's RGB values minus their mean) is the weight-free
``rgb-patches`` baseline: it shows what the learned features add to the propagation machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import DinokitError
from ...models.config import input_normalization
from ..datasets.registry import PropagationSettings

_DEFAULTS = PropagationSettings()
PROPAGATION_DEFAULTS: dict[str, Any] = _DEFAULTS.to_record()
"""DINO's ``eval_video_segmentation.py`` defaults (:class:`~dinokit.eval.datasets.registry.PropagationSettings`)."""


def propagation_size(height: int, width: int, short_side: int = _DEFAULTS.short_side,
                     multiple: int = _DEFAULTS.multiple) -> tuple[int, int]:
    """``(height, width)`` a frame is resized to: the shorter side ``short_side``, the longer side
    ``short_side * long / short`` rounded down to a multiple of ``multiple``."""
    if short_side < 1 or multiple < 1:
        raise DinokitError(f"short side and multiple must be positive, got {short_side} and {multiple}")
    if height > width:
        long = int((short_side * height / width) // multiple * multiple)
        size = (long, short_side)
    else:
        long = int((short_side * width / height) // multiple * multiple)
        size = (short_side, long)
    if min(size) < 1:
        raise DinokitError(f"a {width}x{height} frame leaves no pixels at short side {short_side}")
    return size


def resize_frame(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an ``HxWx3`` uint8 frame to ``size = (H, W)`` (OpenCV's rule, as the reference)."""
    import cv2

    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def neighbourhood_mask(grid: tuple[int, int], radius: int, device: Any = None) -> Optional[torch.Tensor]:
    """``(N, N)`` bool: patch ``j`` lies in the ``(2 radius + 1)``-square window around patch ``i``
    (``None`` for ``radius <= 0``: no restriction)."""
    if radius <= 0:
        return None
    rows = torch.arange(grid[0], device=device).repeat_interleave(grid[1])
    cols = torch.arange(grid[1], device=device).repeat(grid[0])
    return ((rows[:, None] - rows[None, :]).abs() <= radius) & ((cols[:, None] - cols[None, :]).abs() <= radius)


def one_hot_labels(labels: np.ndarray, grid: tuple[int, int], num_labels: Optional[int] = None) -> torch.Tensor:
    """``(C, N)`` float one-hot of a label map downsampled to ``grid`` with nearest neighbour
    (void 255 becomes background); ``C`` is ``num_labels`` or the largest label + 1."""
    from PIL import Image

    lab = np.asarray(labels, dtype=np.uint8).copy()
    lab[lab == 255] = 0
    small = np.asarray(Image.fromarray(lab).resize((grid[1], grid[0]), Image.NEAREST), dtype=np.int64)
    c = int(num_labels) if num_labels is not None else int(lab.max()) + 1
    t = torch.from_numpy(small.reshape(-1))
    return F.one_hot(t, num_classes=max(c, 1)).T.float().contiguous()


def propagate(
    target: torch.Tensor,
    sources: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    neighbourhood: Optional[torch.Tensor],
    topk: int = _DEFAULTS.topk,
    temperature: float = _DEFAULTS.temperature,
    chunk_rows: int = 1024,
) -> torch.Tensor:
    """Soft labels ``(C, N)`` of ``target`` (``(N, D)``, L2-normalised rows) voted by the context frames
    ``sources`` (each ``(N, D)``, normalised) with soft labels ``labels`` (each ``(C, N)``).

    Each target patch keeps its ``topk`` largest weights ``exp(cos / temperature)`` over all context
    patches inside its window (ties with the k-th are kept, as in the reference) and averages their labels.
    """
    if not sources or len(sources) != len(labels):
        raise DinokitError(f"propagate: {len(sources)} context frames for {len(labels)} label maps")
    src = torch.cat(list(sources), dim=0)  # (K N, D)
    lab = torch.cat(list(labels), dim=1)  # (C, K N)
    k_ctx, n = len(sources), target.shape[0]
    out = torch.empty(lab.shape[0], n, dtype=lab.dtype, device=target.device)
    for s in range(0, n, chunk_rows):
        e = min(s + chunk_rows, n)
        aff = torch.exp(target[s:e] @ src.T / temperature)  # (rows, K N)
        if neighbourhood is not None:
            aff = aff * neighbourhood[s:e].repeat(1, k_ctx)
        kth = torch.topk(aff, k=min(topk, aff.shape[1]), dim=1).values[:, -1:]
        aff = torch.where(aff >= kth, aff, torch.zeros_like(aff))
        aff = aff / aff.sum(dim=1, keepdim=True)
        out[:, s:e] = lab @ aff.T
    return out


def soft_to_labels(soft: torch.Tensor, grid: tuple[int, int], patch_size: int, size: tuple[int, int]) -> np.ndarray:
    """``HxW`` uint8 labels from soft labels ``(C, N)``: bilinear upsampling by ``patch_size``, per-label
    min-max normalisation, argmax, nearest-neighbour resize to ``size = (H, W)``."""
    from PIL import Image

    c = soft.shape[0]
    up = F.interpolate(soft.reshape(1, c, *grid), scale_factor=patch_size, mode="bilinear", align_corners=False)[0]
    flat = up.reshape(c, -1)
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    keep = (hi > 0).reshape(c, 1, 1)
    span = (hi - lo).clamp_min(1e-12).reshape(c, 1, 1)
    up = torch.where(keep, (up - lo.reshape(c, 1, 1)) / span, up)
    lab = up.argmax(dim=0).to(torch.uint8).cpu().numpy()
    return np.asarray(Image.fromarray(lab).resize((size[1], size[0]), Image.NEAREST), dtype=np.uint8)


@dataclass
class FrameFeatures:
    """Normalised patch features ``(N, D)`` of one frame and their grid."""

    features: torch.Tensor
    grid: tuple[int, int]


def model_frame_features(net: Any, device: torch.device, dtype: Optional[torch.dtype] = None
                         ) -> Callable[[np.ndarray], FrameFeatures]:
    """Feature function of a backbone for :func:`propagate_sequence`: the last block's normalised patch tokens."""
    m, s = input_normalization(net)
    mean = torch.tensor(m, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(s, dtype=torch.float32).view(3, 1, 1)
    prefix = int(getattr(net, "num_prefix_tokens", 1))

    @torch.no_grad()
    def describe(rgb: np.ndarray) -> FrameFeatures:
        x = (torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0 - mean) / std
        x = x[None].to(device=device, dtype=dtype or torch.float32)
        tokens = net.get_intermediate_layers(x, n=1)[0][0, prefix:].float()
        grid = net.grid_size(rgb.shape[0], rgb.shape[1])
        if tokens.shape[0] != grid[0] * grid[1]:
            raise DinokitError(f"the model returned {tokens.shape[0]} patch tokens for a {grid[0]}x{grid[1]} grid")
        return FrameFeatures(F.normalize(tokens, dim=1), grid)

    return describe


def rgb_frame_features(patch_size: int) -> Callable[[np.ndarray], FrameFeatures]:
    """Feature function of the weight-free baseline: each ``patch_size`` patch's RGB values minus their mean."""

    def describe(rgb: np.ndarray) -> FrameFeatures:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()[None] / 255.0
        cols = F.unfold(x, kernel_size=patch_size, stride=patch_size)[0].T
        cols = cols - cols.mean(dim=1, keepdim=True)
        grid = (rgb.shape[0] // patch_size, rgb.shape[1] // patch_size)
        return FrameFeatures(F.normalize(cols, dim=1), grid)

    return describe


def propagate_sequence(
    frames: Sequence[np.ndarray],
    first_labels: np.ndarray,
    describe: Callable[[np.ndarray], FrameFeatures],
    patch_size: int,
    *,
    n_last_frames: int = _DEFAULTS.n_last_frames,
    neighbourhood: int = _DEFAULTS.neighbourhood,
    topk: int = _DEFAULTS.topk,
    temperature: float = _DEFAULTS.temperature,
) -> Iterator[np.ndarray]:
    """Labels of every frame of a sequence (original size, uint8), the first being ``first_labels``.

    ``frames`` are the resized ``HxWx3`` uint8 frames the features are computed on (a lazy sequence
    is fine); ``first_labels`` is the first frame's label map at the original size, which is also the
    size of every returned map. ``describe`` maps a resized frame to its :class:`FrameFeatures`.
    """
    if n_last_frames < 0 or topk < 1 or not temperature > 0:
        raise DinokitError(f"need n_last_frames >= 0, topk >= 1, temperature > 0; got {n_last_frames}, {topk}, "
                           f"{temperature}")
    size = tuple(np.asarray(first_labels).shape[:2])
    first = describe(frames[0])
    num_labels = int(np.asarray(first_labels)[np.asarray(first_labels) != 255].max(initial=0)) + 1
    seed = one_hot_labels(first_labels, first.grid, num_labels).to(first.features.device)
    nbr = neighbourhood_mask(first.grid, neighbourhood, first.features.device)
    recent: list[tuple[torch.Tensor, torch.Tensor]] = []
    yield np.asarray(first_labels, dtype=np.uint8)
    for t in range(1, len(frames)):
        cur = describe(frames[t])
        if cur.grid != first.grid:
            raise DinokitError(f"frame {t} has a {cur.grid} patch grid, the first frame {first.grid}")
        soft = propagate(cur.features, [first.features] + [f for f, _ in recent], [seed] + [s for _, s in recent],
                         nbr, topk, temperature)
        if n_last_frames:
            recent.append((cur.features, soft))
            if len(recent) > n_last_frames:
                recent.pop(0)
        yield soft_to_labels(soft, cur.grid, patch_size, size)  # type: ignore[arg-type]


__all__ = ["PROPAGATION_DEFAULTS", "FrameFeatures", "model_frame_features", "neighbourhood_mask", "one_hot_labels",
           "propagate", "propagate_sequence", "propagation_size", "resize_frame", "rgb_frame_features",
           "soft_to_labels"]
