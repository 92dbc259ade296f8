"""Matching descriptors: chunked cosine similarity, nearest neighbours and best buddies.

The similarity of all of A to all of B is computed in row chunks of matrix
products on the descriptors' device, so memory stays bounded for large grids
and no per-token loop ever runs. Log-binned descriptors
(:class:`~dinokit.features.binned_similarity.LogBinned`) are matched through
structured products that never build the binned vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import DinokitError
from ..features.binned_similarity import LogBinned, binned_row_chunks
from ..features.coords import GridGeometry

__all__ = [
    "Descriptors",
    "as_matrix",
    "rows_per_chunk",
    "NearestNeighbours",
    "BestBuddies",
    "normalize_descriptors",
    "similarity_chunks",
    "cosine_similarity",
    "nearest_neighbours",
    "best_buddies",
    "refine_peak",
]

DEFAULT_CHUNK_ELEMENTS = 1 << 24  # similarity entries held at once (64 MB in float32)


def rows_per_chunk(n_cols: int, chunk_size: Optional[int]) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return int(chunk_size)
    return max(1, DEFAULT_CHUNK_ELEMENTS // max(n_cols, 1))


Descriptors = Union[Tensor, LogBinned]


def as_matrix(desc, name: str):
    if isinstance(desc, LogBinned):
        return desc
    d = torch.as_tensor(desc)
    while d.dim() > 2 and d.shape[0] == 1:
        d = d[0]
    if d.dim() != 2:
        raise DinokitError(f"{name}: descriptors must be (T, D), got shape {tuple(d.shape)}")
    return d


def similarity_chunks(a: Descriptors, b: Descriptors, chunk_size: Optional[int] = None):
    """Yield ``(start, stop, cos)``: cosine similarities of rows ``start:stop`` of A to all of B.

    ``a`` and ``b`` are ``(T, D)`` tensors or :class:`LogBinned` (both binned:
    the fast structured product; one binned: it is made explicit).
    ``chunk_size`` is the number of A rows per chunk (default: about 16M
    similarity entries per chunk).
    """
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    if isinstance(a, LogBinned) and isinstance(b, LogBinned):
        rows = rows_per_chunk(b.num_tokens, chunk_size)
        yield from binned_row_chunks(a, b.to(a.device), rows * b.num_tokens if chunk_size is not None else None)
        return
    a = normalize_descriptors(a.dense() if isinstance(a, LogBinned) else a)
    b = normalize_descriptors(b.dense() if isinstance(b, LogBinned) else b).to(a.device)
    if a.shape[1] != b.shape[1]:
        raise DinokitError(f"descriptors of different dimensions ({a.shape[1]} and {b.shape[1]}) cannot be compared")
    rows = rows_per_chunk(b.shape[0], chunk_size)
    for start in range(0, a.shape[0], rows):
        yield start, min(start + rows, a.shape[0]), a[start : start + rows] @ b.T


def cosine_similarity(a: Descriptors, b: Descriptors, chunk_size: Optional[int] = None) -> Tensor:
    """Cosine similarity of every row of ``a`` ``(Ta, D)`` to every row of ``b`` ``(Tb, D)``: ``(Ta, Tb)``.

    Computed in row chunks (see :func:`similarity_chunks`). Use
    :func:`nearest_neighbours` when only the maxima are needed: it never holds
    the whole matrix.
    """
    parts = [s for _, _, s in similarity_chunks(a, b, chunk_size)]
    return torch.cat(parts, 0)


@dataclass
class NearestNeighbours:
    """Nearest neighbours both ways under cosine similarity.

    ``nn_1[i]`` is the patch of B closest to patch ``i`` of A (similarity
    ``sim_1[i]``); ``nn_2[j]`` the patch of A closest to patch ``j`` of B.
    Ties go to the lowest index, as ``torch.max`` on the full matrix.
    """

    sim_1: Tensor
    nn_1: Tensor
    sim_2: Tensor
    nn_2: Tensor

    @property
    def mutual(self) -> Tensor:
        """``(Ta,)`` bool: ``nn_2[nn_1[i]] == i`` (best buddies)."""
        return self.nn_2[self.nn_1] == torch.arange(self.nn_1.shape[0], device=self.nn_1.device)


@torch.no_grad()
def nearest_neighbours(a: Descriptors, b: Descriptors, chunk_size: Optional[int] = None) -> NearestNeighbours:
    """Row and column maxima of the ``a`` x ``b`` cosine-similarity matrix, in bounded memory.

    The matrix is produced ``chunk_size`` rows of ``a`` at a time (see
    :func:`similarity_chunks`); row maxima give ``nn_1`` directly and column
    maxima are merged across chunks.
    """
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise DinokitError("nearest neighbours need at least one descriptor in each image")
    device = a.device
    sim_1, nn_1 = [], []
    sim_2 = torch.full((b.shape[0],), -torch.inf, device=device)
    nn_2 = torch.zeros(b.shape[0], dtype=torch.long, device=device)
    for start, _, s in similarity_chunks(a, b, chunk_size):
        v, i = s.max(dim=1)
        sim_1.append(v)
        nn_1.append(i)
        cv, ci = s.max(dim=0)
        better = cv > sim_2  # strict: an earlier chunk keeps ties, like a global argmax
        sim_2 = torch.where(better, cv, sim_2)
        nn_2 = torch.where(better, ci + start, nn_2)
    return NearestNeighbours(torch.cat(sim_1), torch.cat(nn_1), sim_2, nn_2)


@dataclass
class BestBuddies:
    """Best-buddy pairs between A and B after the foreground filter.

    ``indices_a[k]`` and ``indices_b[k]`` are flat grid indices of pair ``k``
    (in increasing ``indices_a`` order), ``similarity[k]`` its cosine
    similarity; ``mask`` is the ``(Ta,)`` final selection over A and
    ``mutual`` the mask before the foreground filter.
    """

    indices_a: Tensor
    indices_b: Tensor
    similarity: Tensor
    mask: Tensor
    mutual: Tensor
    neighbours: NearestNeighbours

    def __len__(self) -> int:
        return int(self.indices_a.shape[0])


@torch.no_grad()
def best_buddies(
    desc_a: Descriptors,
    desc_b: Descriptors,
    fg_a: Optional[Tensor] = None,
    fg_b: Optional[Tensor] = None,
    chunk_size: Optional[int] = None,
) -> BestBuddies:
    """Mutual nearest neighbours of two descriptor sets, optionally restricted to the foreground.

    ``fg_a`` / ``fg_b`` are boolean ``(Ta,)`` / ``(Tb,)`` masks. A pair
    ``(i, nn_1[i])`` is kept when ``fg_a[i]`` and -- exactly as the reference
    implementation -- when ``i`` is the nearest A-neighbour of at least one
    foreground patch of B (B's foreground carried into A's index space
    through ``nn_2``).
    """
    nn = nearest_neighbours(desc_a, desc_b, chunk_size)
    mutual = nn.mutual
    mask = mutual.clone()
    ta = mutual.shape[0]
    if fg_a is not None:
        fg_a = torch.as_tensor(fg_a, device=mask.device).reshape(-1).bool()
        if fg_a.shape[0] != ta:
            raise DinokitError(f"foreground mask of A has {fg_a.shape[0]} values for {ta} patches")
        mask &= fg_a
    if fg_b is not None:
        fg_b = torch.as_tensor(fg_b, device=mask.device).reshape(-1).bool()
        if fg_b.shape[0] != nn.nn_2.shape[0]:
            raise DinokitError(f"foreground mask of B has {fg_b.shape[0]} values for {nn.nn_2.shape[0]} patches")
        reached = torch.zeros(ta, dtype=torch.bool, device=mask.device)
        reached[nn.nn_2[fg_b]] = True
        mask &= reached
    idx_a = torch.nonzero(mask, as_tuple=False).flatten()
    return BestBuddies(idx_a, nn.nn_1[idx_a], nn.sim_1[idx_a], mask, mutual, nn)


@torch.no_grad()


def normalize_descriptors(desc: Tensor, eps: float = 1e-12) -> Tensor:
    """L2-normalise descriptors along the last dimension (float32); zero rows stay zero."""
    desc = desc.float()
    return desc / desc.norm(dim=-1, keepdim=True).clamp_min(eps)


def refine_peak(
    scores: Union[np.ndarray, Tensor],
    geometry: GridGeometry,
    index: Optional[int] = None,
    window: int = 5,
    temperature: float = 0.02,
    original: bool = True,
) -> np.ndarray:
    """Sub-patch location of a similarity peak: soft-argmax in a ``window x window`` neighbourhood.

    ``scores`` is the ``(rows, cols)`` (or flat) map; ``index`` the flat
    argmax (computed when ``None``). Weights are ``softmax(scores / temperature)``
    over the window; the result is the weighted mean of patch centres,
    ``(x, y)`` in original (or resized) pixels.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    s = torch.as_tensor(np.asarray(scores) if not isinstance(scores, Tensor) else scores).detach().double().cpu()
    rows, cols = geometry.grid
    s = s.reshape(rows, cols)
    if index is None:
        index = int(torch.argmax(s))
    r0, c0 = divmod(int(index), cols)
    k = window // 2
    r_lo, r_hi = max(r0 - k, 0), min(r0 + k + 1, rows)
    c_lo, c_hi = max(c0 - k, 0), min(c0 + k + 1, cols)
    patch = s[r_lo:r_hi, c_lo:c_hi]
    finite = torch.isfinite(patch)
    logits = torch.where(finite, patch / temperature, torch.full_like(patch, -torch.inf))
    w = torch.softmax(logits.flatten(), 0).reshape(patch.shape)
    rr, cc = torch.meshgrid(torch.arange(r_lo, r_hi, dtype=torch.float64), torch.arange(c_lo, c_hi, dtype=torch.float64), indexing="ij")
    gxy = np.array([float((w * cc).sum()), float((w * rr).sum())])
    return geometry.grid_to_pixels(gxy, original)
