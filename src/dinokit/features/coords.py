"""Mapping between patch indices and pixel coordinates.

Convention used everywhere in dinokit: points are ``(x, y)`` in continuous
pixel coordinates, the image's top-left corner at ``(0, 0)`` (pixel ``(i, j)``
covers ``[j, j+1) x [i, i+1)``). A patch's location is its centre: patch
``(row, col)`` at stride ``s`` and patch size ``p`` spans
``[col*s, col*s + p)`` horizontally, so its centre is ``col*s + p/2``.
Grid indices are row-major: ``index = row * cols + col``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class GridGeometry:
    """Geometry of one image's descriptor grid: patch size, stride and image sizes ``(H, W)``."""

    grid: tuple[int, int]
    patch_size: int
    stride: int
    resized_size: tuple[int, int]
    original_size: tuple[int, int]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def centers(self) -> Tensor:
        """``(T, 2)`` patch centres ``(x, y)`` in resized-image pixels, row-major."""
        rows, cols = self.grid
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        half = self.patch_size / 2.0
        return torch.stack([c.flatten() * self.stride + half, r.flatten() * self.stride + half], dim=1).double()

    def index_to_xy(self, index, original: bool = False) -> np.ndarray:
        """Patch centre(s) ``(x, y)`` of flat grid indices, in resized (or original) pixels."""
        idx = np.asarray(index, dtype=np.int64)
        rows, cols = self.grid
        if idx.size and (idx.min() < 0 or idx.max() >= rows * cols):
            raise IndexError(f"patch index out of range for a {rows}x{cols} grid")
        half = self.patch_size / 2.0
        xy = np.stack([(idx % cols) * self.stride + half, (idx // cols) * self.stride + half], axis=-1).astype(np.float64)
        return self.to_original(xy) if original else xy

    def xy_to_index(self, xy, original: bool = False) -> np.ndarray:
        """Flat index of the patch whose centre is nearest to each point ``(x, y)``."""
        pts = np.asarray(xy, dtype=np.float64)
        if original:
            pts = self.to_resized(pts)
        rows, cols = self.grid
        half = self.patch_size / 2.0
        col = np.clip(np.rint((pts[..., 0] - half) / self.stride), 0, cols - 1).astype(np.int64)
        row = np.clip(np.rint((pts[..., 1] - half) / self.stride), 0, rows - 1).astype(np.int64)
        return row * cols + col

    def _scale(self) -> np.ndarray:
        (h1, w1), (h0, w0) = self.resized_size, self.original_size
        return np.array([w0 / w1, h0 / h1], dtype=np.float64)

    def to_original(self, xy) -> np.ndarray:
        """Resized-image points ``(x, y)`` to original-image pixels."""
        return np.asarray(xy, dtype=np.float64) * self._scale()

    def to_resized(self, xy) -> np.ndarray:
        """Original-image points ``(x, y)`` to resized-image pixels."""
        return np.asarray(xy, dtype=np.float64) / self._scale()
