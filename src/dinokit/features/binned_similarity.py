"""Cosine similarity of log-binned descriptors without forming them.

A log-binned descriptor (:func:`dinokit.features.log_bin`) is the
concatenation of 17 ``D``-dimensional bins, each the raw or 3x3-pooled
descriptor at a fixed offset ``(dy, dx)`` from the position (clamped at the
grid border). The dot product of two binned descriptors is therefore a sum of
17 dot products of *unbinned* maps at shifted positions:

    <bin(a)_i, bin(b)_j> = sum over bins s of  G_level(s)[i + delta_s, j + delta_s]

with ``G_level = A_level @ B_level.T`` the ``D``-dimensional similarity of the
raw (or pooled) maps. Computing two ``D``-dim matrix products and summing
shifted copies gives exactly the binned similarity (float rounding aside)
with far fewer multiply-adds than the ``17 D``-dim product: 17 / 2 times
fewer, less the border padding below (about 6.5x on 55 x 80 grids). The maps
are padded by replicating their border (which is what clamping the offsets
does), so every shifted copy is a strided view of the padded product: no
gathers. :class:`LogBinned` holds the padded maps of one image;
:func:`binned_row_chunks` yields the similarity chunk by chunk.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DinokitError
from .binning import bin_offsets

__all__ = ["LogBinned", "binned_similarity_rows", "binned_row_chunks"]

DEFAULT_CHUNK_ELEMENTS = 1 << 24


class LogBinned:
    """Log-binned descriptors of one image, held implicitly as raw and pooled maps.

    Args:
        raw: ``(T, D)`` unbinned descriptors in row-major grid order.
        grid: ``(rows, cols)`` with ``rows * cols == T``.
        hierarchy: levels of binning (2 gives the paper's 17 bins).

    ``rows(idx)`` (or indexing) returns explicit binned rows identical to
    :func:`~dinokit.features.log_bin`; :meth:`dense` all of them.
    """

    def __init__(self, raw: Tensor, grid: tuple[int, int], hierarchy: int = 2) -> None:
        raw = torch.as_tensor(raw)
        if raw.dim() == 3 and raw.shape[0] == 1:
            raw = raw[0]
        rows, cols = grid
        if raw.dim() != 2 or raw.shape[0] != rows * cols:
            raise DinokitError(f"{tuple(raw.shape)} descriptors do not fill a {rows}x{cols} grid")
        raw = raw.float()
        self.grid = (int(rows), int(cols))
        self.hierarchy = int(hierarchy)
        T, D = raw.shape
        x = raw.T.reshape(1, D, rows, cols)
        self.maps: list[Tensor] = [raw.contiguous()]
        for k in range(1, hierarchy):
            win = 3**k
            pooled = F.avg_pool2d(x, win, stride=1, padding=win // 2, count_include_pad=False)
            self.maps.append(pooled.reshape(D, T).T.contiguous())
        self.offsets = bin_offsets(hierarchy)
        self.levels = [k for k, _, _ in self.offsets]
        # replicate-padded maps, level k padded by its largest offset 3**k: (rows + 2p) * (cols + 2p) x D.
        # Padding by replication is exactly the reference's clamping of out-of-grid offsets.
        self.pads = [3**k for k in range(hierarchy)]
        self.padded: list[Tensor] = []
        sq_norms = torch.zeros(rows, cols, device=raw.device)
        for k, (m, p) in enumerate(zip(self.maps, self.pads)):
            img = m.T.reshape(1, D, rows, cols)
            padded = F.pad(img, (p, p, p, p), mode="replicate")
            self.padded.append(padded.reshape(D, -1).T.contiguous())
            sq = padded.pow(2).sum(1)[0]  # (rows + 2p, cols + 2p)
            for k2, dy, dx in self.offsets:
                if k2 == k:
                    sq_norms += sq[p + dy : p + dy + rows, p + dx : p + dx + cols]
        self.sq_norms = sq_norms.reshape(-1)
        self._index: Optional[Tensor] = None

    @property
    def index(self) -> Tensor:
        """``(slots, T)``: the flat position each bin of each position reads (clamped at the border)."""
        if self._index is None:
            rows, cols = self.grid
            r = torch.arange(rows, device=self.device)
            c = torch.arange(cols, device=self.device)
            idx = []
            for _, dy, dx in self.offsets:
                ri = (r + dy).clamp(0, rows - 1)
                ci = (c + dx).clamp(0, cols - 1)
                idx.append((ri[:, None] * cols + ci[None, :]).reshape(-1))
            self._index = torch.stack(idx)
        return self._index

    @property
    def slots_by_level(self) -> list[list[int]]:
        """For each pooling level, the bins (slots) that read it."""
        return [[s for s, k in enumerate(self.levels) if k == level] for level in range(len(self.maps))]

    @property
    def num_tokens(self) -> int:
        return self.maps[0].shape[0]

    @property
    def dim(self) -> int:
        """Dimension of the explicit binned descriptor."""
        return len(self.offsets) * self.maps[0].shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_tokens, self.dim)

    @property
    def device(self) -> torch.device:
        return self.maps[0].device

    def to(self, device: Union[str, torch.device]) -> "LogBinned":
        """The same descriptors on ``device`` (``self`` when already there)."""
        if torch.device(device) == self.device:
            return self
        out = object.__new__(LogBinned)
        out.grid, out.hierarchy, out.offsets, out.levels = self.grid, self.hierarchy, self.offsets, self.levels
        out.maps = [m.to(device) for m in self.maps]
        out.pads = self.pads
        out.padded = [m.to(device) for m in self.padded]
        out._index = None
        out.sq_norms = self.sq_norms.to(device)
        return out

    def rows(self, idx: Union[Tensor, slice, int]) -> Tensor:
        """Explicit binned descriptors ``(n, 17 D)`` of the chosen positions (channel ``slot * D + d``)."""
        if isinstance(idx, int):
            idx = torch.tensor([idx], device=self.device)
        elif isinstance(idx, Tensor):
            idx = idx.to(self.device)
        parts = [self.maps[k][self.index[s][idx]] for s, k in enumerate(self.levels)]
        return torch.stack(parts, dim=1).reshape(parts[0].shape[0], -1)

    __getitem__ = rows

    def dense(self) -> Tensor:
        """All explicit binned descriptors ``(T, 17 D)`` (equal to ``log_bin``)."""
        return self.rows(slice(None))

    def norms(self) -> Tensor:
        """``(T,)`` L2 norms of the binned descriptors."""
        return self.sq_norms.sqrt()

    def cosine_to(self, queries: Tensor) -> Tensor:
        """Cosine similarity ``(N, T)`` of explicit binned query descriptors ``(N, 17 D)`` to every position.

        One ``D``-dim product per level (all bins of the level at once) and
        bin-wise gathers; used for a few query points (dense matching), where
        it avoids materialising ``(T, 17 D)``.
        """
        q = torch.as_tensor(queries).float().to(self.device)
        d = self.maps[0].shape[1]
        if q.dim() != 2 or q.shape[1] != self.dim:
            raise DinokitError(f"queries must be (N, {self.dim}), got {tuple(q.shape)}")
        qn = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
        out = binned_dot_products(self.maps, self.index, self.slots_by_level, qn.reshape(q.shape[0], len(self.offsets), d))
        return (out / self.norms().clamp_min(1e-12)[:, None]).T


def binned_dot_products(level_maps: Sequence[Tensor], index: Tensor, slots_by_level: Sequence[Sequence[int]],
                        parts: Tensor) -> Tensor:
    """Dot products ``(T, N)`` of implicit log-binned descriptors with ``N`` explicit ones, split by bin.

    ``level_maps[k]`` is ``(T', D)``, the level-``k`` map that bin ``s`` of
    position ``t`` reads at row ``index[s, t]``; ``parts`` is ``(N, bins, D)``.
    One ``D``-dim product per level (all of its bins at once), then a gather
    per bin, summed in bin order.
    """
    n, d = parts.shape[0], parts.shape[2]
    out: Optional[Tensor] = None
    for level, slots in enumerate(slots_by_level):
        prod = level_maps[level] @ parts[:, slots].reshape(n * len(slots), d).T  # (T', N * bins)
        prod = prod.view(prod.shape[0], n, len(slots))
        for j, s in enumerate(slots):
            v = prod[:, :, j].index_select(0, index[s])
            out = v if out is None else out.add_(v)
    assert out is not None
    return out


def binned_row_chunks(a: LogBinned, b: LogBinned, chunk_elements: Optional[int] = None):
    """Yield ``(start, stop, cos)``: cosine similarities of A's tokens ``start:stop`` to all of B.

    Chunks are whole grid rows of A; memory stays near ``chunk_elements``
    similarity entries (default about 16M) plus the padded borders.
    """
    if a.offsets != b.offsets:
        raise DinokitError("log-binned descriptors of different hierarchies cannot be compared")
    if a.maps[0].shape[1] != b.maps[0].shape[1]:
        raise DinokitError(f"descriptors of different dimensions ({a.dim} and {b.dim}) cannot be compared")
    rows_a, cols_a = a.grid
    rows_b, cols_b = b.grid
    tb = b.num_tokens
    budget = chunk_elements if chunk_elements is not None else DEFAULT_CHUNK_ELEMENTS
    pmax = max(a.pads)
    padded_tb = (rows_b + 2 * pmax) * (cols_b + 2 * pmax)
    per_row = cols_a * tb + (cols_a + 2 * pmax) * padded_tb  # result + one padded product block
    g = max(1, budget // max(per_row, 1))
    inv_a = 1.0 / a.norms().clamp_min(1e-12)
    inv_b = 1.0 / b.norms().clamp_min(1e-12).to(a.device)
    padded_b = [m.to(a.device) for m in b.padded]
    by_level = [[(dy, dx) for k2, dy, dx in a.offsets if k2 == k] for k in range(len(a.maps))]
    for r0 in range(0, rows_a, g):
        r1 = min(r0 + g, rows_a)
        n = r1 - r0
        out = None
        for k, p in enumerate(a.pads):
            cpa, rpb, cpb = cols_a + 2 * p, rows_b + 2 * p, cols_b + 2 * p
            # padded rows r0 .. r1 + 2p of A hold every row a bin of grid rows r0 .. r1 reads
            block = a.padded[k][r0 * cpa : (r1 + 2 * p) * cpa] @ padded_b[k].T
            block = block.view(n + 2 * p, cpa, rpb, cpb)
            for dy, dx in by_level[k]:
                part = block[p + dy : p + dy + n, p + dx : p + dx + cols_a, p + dy : p + dy + rows_b,
                             p + dx : p + dx + cols_b]
                if out is None:
                    out = part.contiguous()
                else:
                    out.add_(part)
            del block
        assert out is not None
        out = out.view(n * cols_a, tb)
        start, stop = r0 * cols_a, r1 * cols_a
        out.mul_(inv_a[start:stop, None]).mul_(inv_b[None, :])
        yield start, stop, out


def binned_similarity_rows(a: LogBinned, b: LogBinned, chunk_elements: Optional[int] = None) -> Tensor:
    """The full ``(T_a, T_b)`` cosine-similarity matrix of two log-binned descriptor sets."""
    return torch.cat([s for _, _, s in binned_row_chunks(a, b, chunk_elements)], 0)
