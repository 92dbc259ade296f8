"""Synthetic descriptor sets with a planted foreground (and planted parts) for the co-segmentation tests."""

from __future__ import annotations

from typing import Optional

import numpy as np

from dinokit.blocks.store import DescriptorStore, l2_normalize
from dinokit.tasks.cosegmentation import ImageItem, SetFeatures

PATCH = 8
# label codes of the planted regions
BG_A, BG_B, DISTRACTOR = 0, 1, 2
PART0 = 3  # parts are PART0 + j


def make_set(
    n_images: int = 6,
    grid: tuple[int, int] = (10, 12),
    n_parts: int = 1,
    dim: int = 32,
    noise: float = 0.04,
    seed: int = 0,
    distractor_in: tuple[int, ...] = (),
    outliers: tuple[int, ...] = (),
    augmentation: Optional[list[bool]] = None,
) -> tuple[SetFeatures, list[np.ndarray]]:
    """A set of images on a ``grid`` of patches: background left/right halves (two prototypes), a
    foreground box (split into ``n_parts`` vertical bands, one prototype each) at a different place in
    every image, optionally a salient distractor blob in some images. Returns the features and, per
    image, the planted label grid."""
    rng = np.random.default_rng(seed)
    protos = l2_normalize(rng.standard_normal((PART0 + n_parts, dim)))
    colours = rng.integers(0, 256, size=(PART0 + n_parts, 3))
    rows, cols = grid
    store = DescriptorStore("memory")
    saliency, items, truths, cls = [], [], [], []
    for i in range(n_images):
        lab = np.full(grid, BG_A)
        lab[:, cols // 2 :] = BG_B
        h, w = rows // 2 + 1, max(n_parts * 2, cols // 2)
        top = int(rng.integers(0, rows - h + 1))
        left = int(rng.integers(0, cols - w + 1))
        band = np.array_split(np.arange(w), n_parts)
        for j, b in enumerate(band):
            lab[top : top + h, left + b[0] : left + b[-1] + 1] = PART0 + j
        if i in distractor_in:  # a 2x2 salient blob in a background corner
            r0 = 0 if top >= 2 else rows - 2
            c0 = 0 if left >= 2 else cols - 2
            lab[r0 : r0 + 2, c0 : c0 + 2] = DISTRACTOR
        desc = protos[lab.reshape(-1)] + noise * rng.standard_normal((rows * cols, dim))
        store.append(desc.astype(np.float32))
        sal = np.where(lab.reshape(-1) >= DISTRACTOR, 0.9, 0.01) + 0.01 * rng.random(rows * cols)
        saliency.append(sal.astype(np.float32))
        size = (rows * PATCH, cols * PATCH)
        rgb = np.repeat(np.repeat(colours[lab], PATCH, 0), PATCH, 1).astype(np.float32)
        rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
        aug = bool(augmentation[i]) if augmentation is not None else False
        items.append(ImageItem(f"img{i}", rgb, size, size, grid, aug))
        c = np.ones(16) + 0.1 * rng.standard_normal(16)
        cls.append(-c if i in outliers else c)
        truths.append(lab)
    return SetFeatures(items, store, saliency, np.stack(cls).astype(np.float32), None), truths


def same_partition(found: np.ndarray, planted: np.ndarray) -> bool:
    """``found`` equals ``planted`` up to renaming the labels (a one-to-one map)."""
    pairs = set(zip(np.ravel(found).tolist(), np.ravel(planted).tolist()))
    return len(pairs) == len(np.unique(found)) == len(np.unique(planted))
