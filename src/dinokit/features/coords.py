"""Mapping between patch indices and pixel coordinates.

Convention used everywhere in dinokit: points are ``(x, y)`` in continuous
pixel coordinates, the image's top-left corner at ``(0, 0)`` (pixel ``(i, j)``
covers ``[j, j+1) x [i, i+1)``). A patch's location is its centre: patch
``(row, col)`` at stride ``s`` and patch size ``p`` spans
``[col*s, col*s + p)`` horizontally, so its centre is ``col*s + p/2``.
Grid indices are row-major: ``index = row * cols + col``.

Grid maps go back to pixels through :meth:`GridGeometry.upsample`, the one
grid-to-pixel rule: a pixel's centre is mapped to continuous grid
coordinates; ``bilinear`` interpolates between the four nearest patch centres,
``nearest`` takes the patch whose centre is closest and breaks exact ties
(a pixel centre halfway between two patch centres, which happens when the
stride is odd, e.g. patch 14 at stride 7) towards the later patch, i.e.
``floor(g + 0.5)``. At stride = patch size this is DINO's display: pixel
``y`` belongs to patch ``y // p``. Pixels past the outermost centres take the
border values.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Union

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

    def grid_to_pixels(self, grid_xy, original: bool = True) -> np.ndarray:
        """Continuous grid coordinates ``(col, row)`` to pixel ``(x, y)``: centre of patch = ``c*s + p/2``."""
        xy = np.asarray(grid_xy, dtype=np.float64) * self.stride + self.patch_size / 2.0
        return self.to_original(xy) if original else xy

    def upsample(self, values: Union[np.ndarray, Tensor], to: str = "original", mode: str = "bilinear") -> np.ndarray:
        """A ``(rows, cols)`` or ``(rows, cols, C)`` grid map at every pixel of the image (float32).

        ``to`` is ``"original"`` or ``"resized"``; ``mode`` ``"bilinear"`` or
        ``"nearest"`` (the tie rule is in the module docstring). Bilinear
        weights are applied separably, columns first, which gives exactly the
        values of the four-corner formula.
        """
        if to not in ("original", "resized"):
            raise ValueError(f"upsample to 'original' or 'resized', not {to!r}")
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"upsample mode is 'bilinear' or 'nearest', not {mode!r}")
        v = values.detach().float().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values, np.float32)
        rows, cols = self.grid
        channels = v.shape[-1] if v.ndim == 3 else None
        v = np.ascontiguousarray(v.reshape(rows, cols, -1), dtype=np.float32)
        (y0, y1, fy), (x0, x1, fx) = _pixel_axes(self, to, mode)
        if mode == "nearest":
            out = v[y0][:, x0]
        else:
            fx3 = fx[None, :, None]
            across = v[:, x0] * (1 - fx3) + v[:, x1] * fx3  # (rows, W, C)
            fy3 = fy[:, None, None]
            out = across[y0] * (1 - fy3) + across[y1] * fy3
        return np.ascontiguousarray(out[..., 0] if channels is None else out)


@lru_cache(maxsize=256)
def _pixel_axes(geo: GridGeometry, to: str, mode: str) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Per-axis source indices and weights of :meth:`GridGeometry.upsample` (cached per geometry)."""
    (h, w) = geo.original_size if to == "original" else geo.resized_size
    (h1, w1), (h0, w0) = geo.resized_size, geo.original_size
    sy, sx = (h1 / h0, w1 / w0) if to == "original" else (1.0, 1.0)
    return (_axis(h, geo.grid[0], geo.patch_size, geo.stride, sy, mode),
            _axis(w, geo.grid[1], geo.patch_size, geo.stride, sx, mode))


def _axis(n: int, cells: int, patch: int, stride: int, scale: float, mode: str) -> tuple[np.ndarray, ...]:
    g = ((np.arange(n, dtype=np.float64) + 0.5) * scale - patch / 2.0) / stride
    g = np.clip(g, 0, cells - 1)
    if mode == "nearest":
        i = np.minimum(np.floor(g + 0.5), cells - 1).astype(np.intp)
        return i, i, np.zeros(n, np.float32)
    i0 = np.minimum(np.floor(g), cells - 1).astype(np.intp)
    i1 = np.minimum(i0 + 1, cells - 1)
    return i0, i1, (g - i0).astype(np.float32)
