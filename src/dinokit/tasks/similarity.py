"""Cosine-similarity maps between a query point and dense descriptors (Amir et al. 2021).

A query point ``(x, y)`` in one image selects the descriptor of the patch whose
centre is nearest to it; its cosine similarity to every descriptor of every
image gives one heat map per image on the descriptor grid, and the best match
is the patch centre of the maximum. Coordinates follow
:mod:`dinokit.features.coords`: ``(x, y)`` pixels, top-left corner at
``(0, 0)``, in the *original* image unless a function says ``resized``.

:class:`SimilarityIndex` keeps the L2-normalised descriptors of several images
stacked in one matrix on the device, so a query costs a single
matrix-vector product however many images it is compared with; this is the
engine of ``dinokit similarity`` and of the interactive inspector.

Example::

    ex = Extractor("dino_vits8", stride=4)
    feats = ex.extract_many(["a.jpg", "b.jpg"], layers=9, facets="key", bin=True)
    index = SimilarityIndex.from_features(feats)
    maps = index.query(0, (120.0, 80.0))          # point in a.jpg, original pixels
    maps[1].best_xy                               # best match in b.jpg (x, y)
    maps[1].upsample()                            # (H, W) heat map over b.jpg
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..blocks.matching import normalize_descriptors, refine_peak
from ..errors import DinokitError
from ..features.coords import GridGeometry
from ..features.extractor import Extractor, Features, ImageInput, extractor_for_settings
from ..settings import SimilaritySettings

if TYPE_CHECKING:
    from ..features.binned_similarity import LogBinned

__all__ = [
    "SimilarityIndex",
    "SimilarityMap",
    "similarity_maps",
    "render_point",
    "save_similarity",
    "check_points",
]

Point = Union[Sequence[float], np.ndarray]


@dataclass
class SimilarityMap:
    """Cosine similarity of one query descriptor to every patch of one image.

    Attributes:
        scores: ``(rows, cols)`` float32 cosine similarities (``-inf`` where masked out).
        geometry: the image's :class:`GridGeometry`.
        best_index: flat grid index of the best match.
        best_score: its similarity.
        best_xy: best match ``(x, y)`` in original-image pixels (patch centre).
        best_xy_resized: the same point in resized-image pixels.
    """

    scores: np.ndarray
    geometry: GridGeometry
    best_index: int
    best_score: float
    best_xy: np.ndarray
    best_xy_resized: np.ndarray

    def upsample(self, to: str = "original") -> np.ndarray:
        """The heat map at every pixel of the original (or resized) image, ``(H, W)`` float32.

        Masked-out patches (``-inf``) are shown as the minimum finite score.
        """
        s = self.scores
        if not np.isfinite(s).all():
            finite = s[np.isfinite(s)]
            s = np.where(np.isfinite(s), s, finite.min() if finite.size else 0.0).astype(np.float32)
        return self.geometry.upsample(s, to)

    def refined_xy(self, window: int = 5, temperature: float = 0.02, original: bool = True) -> np.ndarray:
        """Sub-patch best match by soft-argmax around :attr:`best_index` (see :func:`refine_peak`)."""
        return refine_peak(self.scores, self.geometry, self.best_index, window, temperature, original)


class SimilarityIndex:
    """L2-normalised descriptors of several images, ready for point queries.

    Args:
        descriptors: one ``(T_i, D)`` tensor per image (same ``D``), row-major
            on the image's grid; a ``(1, T, D)`` tensor is accepted too. Or one
            :class:`~dinokit.features.binned_similarity.LogBinned` per image: the
            log-binned descriptors held implicitly (17x less memory, and a
            query costs two ``D``-dim products instead of one ``17 D``-dim one).
        geometries: one :class:`GridGeometry` per image (``T_i = rows * cols``).
        device: where the descriptors live (default: the first image's device).

    Plain descriptors are normalised once and stacked into one ``(sum T_i, D)``
    matrix, so :meth:`query` is one matrix-vector product for all images;
    log-binned ones are stacked per pooling level the same way.
    """

    def __init__(
        self,
        descriptors: Sequence[Union[Tensor, "LogBinned"]],
        geometries: Sequence[GridGeometry],
        device: Union[str, torch.device, None] = None,
    ) -> None:
        from ..features.binned_similarity import LogBinned

        if len(descriptors) == 0:
            raise DinokitError("no descriptors given")
        if len(descriptors) != len(geometries):
            raise DinokitError(f"{len(descriptors)} descriptor sets but {len(geometries)} geometries")
        binned = [isinstance(d, LogBinned) for d in descriptors]
        if any(binned) and not all(binned):
            raise DinokitError("give either plain or log-binned descriptors for all images, not a mix")
        mats = []
        for i, (d, g) in enumerate(zip(descriptors, geometries)):
            if not isinstance(d, LogBinned):
                d = torch.as_tensor(d)
                if d.dim() == 3 and d.shape[0] == 1:
                    d = d[0]
                if d.dim() != 2:
                    raise DinokitError(f"image {i}: descriptors must be (T, D), got shape {tuple(d.shape)}")
            elif d.grid != tuple(g.grid):
                raise DinokitError(f"image {i}: log-binned descriptors of a {d.grid} grid for a {g.grid} geometry")
            if d.shape[0] != g.num_patches:
                raise DinokitError(f"image {i}: {d.shape[0]} descriptors for a {g.grid[0]}x{g.grid[1]} grid")
            mats.append(d)
        dims = {m.shape[1] for m in mats}
        if len(dims) > 1:
            raise DinokitError(f"descriptors of different dimensions {sorted(dims)} cannot be compared")
        dev = torch.device(device) if device is not None else mats[0].device
        self.geometries: list[GridGeometry] = list(geometries)
        sizes = [m.shape[0] for m in mats]
        self.offsets: list[int] = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        self.binned: Optional[list[LogBinned]] = None
        self.matrix: Optional[Tensor] = None
        if all(binned):
            self.binned = [m.to(dev) for m in mats]
            self._stack_binned()
        else:
            self.matrix = normalize_descriptors(torch.cat([m.to(dev) for m in mats], 0))

    def _stack_binned(self) -> None:
        """Per pooling level, all images' maps in one matrix; per bin, where each position reads it."""
        assert self.binned is not None
        first = self.binned[0]
        if any(b.offsets != first.offsets for b in self.binned):
            raise DinokitError("log-binned descriptors of different hierarchies cannot be compared")
        self._levels = first.levels
        self._level_maps = [torch.cat([b.maps[k] for b in self.binned], 0) for k in range(len(first.maps))]
        self._slot_index = torch.cat([b.index + off for b, off in zip(self.binned, self.offsets)], 1)  # (S, sum T)
        self._inv_norms = 1.0 / torch.cat([b.norms() for b in self.binned]).clamp_min(1e-12)
        self._slots_of = first.slots_by_level

    @classmethod
    def from_features(
        cls,
        features: Union[Features, Sequence[Features]],
        layer: Optional[int] = None,
        facet: Optional[str] = None,
        device: Union[str, torch.device, None] = None,
    ) -> "SimilarityIndex":
        """Index the descriptors of ``(layer, facet)`` of one or many :class:`Features` (batched or not)."""
        feats = [features] if isinstance(features, Features) else list(features)
        descs: list[Tensor] = []
        geoms: list[GridGeometry] = []
        for f in feats:
            d = f.get(layer, facet)
            if f.settings.get("include_cls"):
                d = d[:, 1:]
            for b in range(d.shape[0]):
                descs.append(d[b])
                geoms.append(f.geometry[b])
        return cls(descs, geoms, device)

    @classmethod
    def from_images(
        cls,
        extractor: Union[Extractor, str, None],
        images: Sequence[ImageInput],
        settings: Optional[SimilaritySettings] = None,
        progress: bool = False,
        **overrides: Any,
    ) -> "SimilarityIndex":
        """Extract the settings' descriptors of images of any sizes and index them.

        The defaults are the reference similarity inspector's (layer 11 keys,
        no binning); the extractor's backbone runs at the settings' stride and
        load size (:func:`~dinokit.features.as_extractor`).
        """
        st = SimilaritySettings.resolve(settings, **overrides)
        extractor, st = extractor_for_settings(extractor, st, st.explicit(settings, overrides))
        feats = extractor.extract_many(list(images), progress=progress, layers=st.layer, facets=st.facet, bin=False)
        if not st.bin:
            return cls.from_features(feats, device=extractor.device)
        from ..features.binned_similarity import LogBinned

        return cls([LogBinned(f.get()[0], f.geometry[0].grid) for f in feats], [f.geometry[0] for f in feats],
                   extractor.device)

    @property
    def num_images(self) -> int:
        return len(self.geometries)

    @property
    def device(self) -> torch.device:
        return self.matrix.device if self.matrix is not None else self._inv_norms.device

    @property
    def dim(self) -> int:
        """Dimension of the (explicit) descriptors compared."""
        return int(self.matrix.shape[1]) if self.matrix is not None else self.binned[0].dim  # type: ignore[index]

    def descriptors(self, image: int) -> Tensor:
        """The normalised ``(T, D)`` descriptors of one image (a view; made explicit when log-binned)."""
        self._check_image(image)
        if self.matrix is not None:
            return self.matrix[self.offsets[image] : self.offsets[image + 1]]
        b = self.binned[image]  # type: ignore[index]
        return b.dense() * self._inv_norms[self.offsets[image] : self.offsets[image + 1], None]

    def _descriptor(self, image: int, index: int) -> Tensor:
        """The ``(D,)`` descriptor of one patch (explicit, not normalised when log-binned)."""
        if self.matrix is not None:
            return self.matrix[self.offsets[image] + index]
        return self.binned[image].rows(index)[0]  # type: ignore[index]

    def _cosine_all(self, q: Tensor) -> Tensor:
        """Cosine similarity of a normalised ``(D,)`` query to every patch of every image: ``(sum T,)``."""
        if self.matrix is not None:
            return self.matrix @ q
        from ..features.binned_similarity import binned_dot_products

        parts = q.reshape(1, len(self._levels), self._level_maps[0].shape[1])
        return binned_dot_products(self._level_maps, self._slot_index, self._slots_of, parts)[:, 0].mul_(self._inv_norms)

    def point_index(self, image: int, xy: Point, original: bool = True) -> int:
        """Flat grid index of the patch whose centre is nearest to ``(x, y)`` in ``image``."""
        self._check_image(image)
        pt = np.asarray(xy, dtype=np.float64).reshape(-1)
        if pt.shape != (2,) or not np.isfinite(pt).all():
            raise DinokitError(f"a query point is two finite numbers (x, y), got {xy!r}")
        g = self.geometries[image]
        h, w = g.original_size if original else g.resized_size
        if not (0 <= pt[0] <= w and 0 <= pt[1] <= h):
            raise DinokitError(f"point ({pt[0]:g}, {pt[1]:g}) lies outside image {image} ({w}x{h} pixels)")
        return int(g.xy_to_index(pt, original=original))

    def query(
        self,
        image: int,
        xy: Point,
        *,
        original: bool = True,
        targets: Optional[Sequence[int]] = None,
        masks: Optional[dict[int, Union[np.ndarray, Tensor]]] = None,
    ) -> list[SimilarityMap]:
        """Similarity maps of the descriptor at point ``xy`` of ``image`` over every target image.

        ``targets`` defaults to all images (the query image included, in index
        order); ``masks`` optionally restricts the best match of image ``i``
        to patches where ``masks[i]`` (``(rows, cols)`` or flat, bool) is true.
        """
        idx = self.point_index(image, xy, original)
        return self.query_descriptor(self._descriptor(image, idx), targets=targets, masks=masks)

    def query_index(self, image: int, index: int, **kwargs) -> list[SimilarityMap]:
        """Like :meth:`query` for a flat patch index of ``image``."""
        self._check_image(image)
        n = self.offsets[image + 1] - self.offsets[image]
        if not 0 <= index < n:
            raise DinokitError(f"patch index {index} out of range for image {image} ({n} patches)")
        return self.query_descriptor(self._descriptor(image, index), **kwargs)

    def query_descriptor(
        self,
        descriptor: Tensor,
        *,
        targets: Optional[Sequence[int]] = None,
        masks: Optional[dict[int, Union[np.ndarray, Tensor]]] = None,
    ) -> list[SimilarityMap]:
        """Similarity maps of an arbitrary ``(D,)`` descriptor (normalised here) over the target images."""
        q = normalize_descriptors(torch.as_tensor(descriptor).to(self.device).reshape(-1))
        if q.shape[0] != self.dim:
            raise DinokitError(f"query descriptor has {q.shape[0]} dims, the index {self.dim}")
        targets = list(range(self.num_images)) if targets is None else list(targets)
        for t in targets:
            self._check_image(t)
        if len(targets) == self.num_images or self.matrix is None:
            sims = self._cosine_all(q).cpu()  # one product for all images
            parts = [sims[self.offsets[t] : self.offsets[t + 1]] for t in targets]
        else:
            parts = [(self.descriptors(t) @ q).cpu() for t in targets]
        return [self._make_map(t, s, None if masks is None else masks.get(t)) for t, s in zip(targets, parts)]

    def similarity(self, a: int, b: int) -> Tensor:
        """Full ``(T_a, T_b)`` cosine-similarity matrix between two images (on the device)."""
        if self.matrix is None:
            from ..features.binned_similarity import binned_similarity_rows

            self._check_image(a)
            self._check_image(b)
            return binned_similarity_rows(self.binned[a], self.binned[b])  # type: ignore[index]
        return self.descriptors(a) @ self.descriptors(b).T

    def _make_map(self, image: int, sims: Tensor, mask) -> SimilarityMap:
        g = self.geometries[image]
        s = sims.float().clone()
        if mask is not None:
            m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask).reshape(-1).bool().cpu()
            if m.numel() != s.numel():
                raise DinokitError(f"mask of {m.numel()} values for image {image} with {s.numel()} patches")
            if m.any():
                s[~m] = -torch.inf
        best = int(torch.argmax(s))
        xy_r = g.index_to_xy(best)
        return SimilarityMap(
            scores=s.reshape(g.grid).numpy(),
            geometry=g,
            best_index=best,
            best_score=float(s[best]),
            best_xy=g.to_original(xy_r),
            best_xy_resized=xy_r,
        )

    def _check_image(self, image: int) -> None:
        if not 0 <= image < self.num_images:
            raise DinokitError(f"image {image} out of range: the index holds {self.num_images} images")


def similarity_maps(
    features: Union[Features, Sequence[Features]],
    image: int,
    xy: Point,
    *,
    original: bool = True,
    layer: Optional[int] = None,
    facet: Optional[str] = None,
    upsample: Optional[str] = None,
) -> tuple[list[SimilarityMap], Optional[list[np.ndarray]]]:
    """One-shot helper: maps of the point ``xy`` of image ``image`` over all images.

    Returns the :class:`SimilarityMap` list and, when ``upsample`` is
    ``"original"`` or ``"resized"``, the per-pixel heat maps (else ``None``).
    For repeated queries build a :class:`SimilarityIndex` once instead.
    """
    maps = SimilarityIndex.from_features(features, layer, facet).query(image, xy, original=original)
    ups = [m.upsample(upsample) for m in maps] if upsample else None
    return maps, ups


RESULT_FILE = "similarity.json"


def render_point(rgbs: list[np.ndarray], maps: Sequence[SimilarityMap], query_xy: Point,
                 settings: Optional[SimilaritySettings] = None, names: Optional[list[str]] = None) -> np.ndarray:
    """Side-by-side heat maps of one query, each panel titled and with its colour scale.

    The query image comes first with the query point ringed; every other
    image has its best match crossed. ``scale="image"`` colours each map over
    its own range (as the reference's inspector), ``"joint"`` over the range
    of all maps, so that colours compare across images.
    """
    from ..blocks.draw import caption, colorbar, draw_marker, heatmap_overlay, hstack, resize_image, vstack

    st = settings if settings is not None else SimilaritySettings()
    finite = [m.scores[np.isfinite(m.scores)] for m in maps]
    ranges = [(float(v.min()), float(v.max())) for v in finite]
    if st.scale == "joint":
        ranges = [(min(lo for lo, _ in ranges), max(hi for _, hi in ranges))] * len(maps)
    h = st.height if st.height is not None else int(np.clip(max(r.shape[0] for r in rgbs), 384, 512))
    font = float(np.clip(h / 700, 0.45, 0.7))
    marker = max(8, int(round(h / 40)))  # the same marker size on every panel
    columns = []
    for i, (rgb, m, (lo, hi)) in enumerate(zip(rgbs, maps, ranges)):
        panel, s = resize_image(heatmap_overlay(rgb, m.upsample("original"), alpha=st.alpha, cmap=st.cmap, vmin=lo,
                                                vmax=hi), height=h)
        if i == 0:
            panel = draw_marker(panel, np.asarray(query_xy, dtype=np.float64) * s, (255, 255, 255), marker, "ring")
            text = f"query ({query_xy[0]:.0f}, {query_xy[1]:.0f})"
        else:
            panel = draw_marker(panel, m.best_xy * s, (255, 255, 255), marker, "cross")
            text = f"best {m.best_score:.3f} at ({m.best_xy[0]:.0f}, {m.best_xy[1]:.0f})"
        title = [names[i], text] if names is not None else [text]
        columns.append(vstack([caption(panel.shape[1], "\n".join(title), font_scale=font), panel,
                               colorbar(panel.shape[1], lo, hi, st.cmap, label="cosine similarity", font_scale=font)]))
    canvas, _ = hstack(columns, height=None)
    return canvas


def save_similarity(index: SimilarityIndex, images: Sequence[Any], points: Sequence[Point], out_dir: Any,
                    settings: Optional[SimilaritySettings] = None, save_arrays: bool = False,
                    progress: bool = False) -> dict[str, Any]:
    """Heat maps of every query point of image 0 (``point<k>.png``), optionally the grid maps, and, last,
    ``similarity.json`` with the best matches; returns the JSON record."""
    from pathlib import Path

    from tqdm.auto import tqdm

    from ..features.image import open_image
    from ..io import save_image, save_json, save_tensors

    st = settings if settings is not None else SimilaritySettings()
    out, paths = Path(out_dir), [Path(p) for p in images]
    rgbs = [np.asarray(open_image(p)) for p in paths]
    names = [p.name for p in paths]
    records = []
    for k, (x, y) in enumerate(tqdm(points, desc="similarity", unit="point", disable=not progress), 1):
        maps = index.query(0, (x, y))
        save_image(out / f"point{k}.png", render_point(rgbs, maps, (x, y), st, names))
        if save_arrays:
            save_tensors(out / f"point{k}_maps.safetensors",
                         {f"image{i}": torch.from_numpy(m.scores.copy()) for i, m in enumerate(maps)},
                         metadata={"images": ",".join(str(p) for p in paths)})
        q_idx = index.point_index(0, (x, y))
        records.append({
            "point": k, "query": [x, y],
            "query_patch_center": index.geometries[0].index_to_xy(q_idx, original=True).tolist(),
            "matches": [{"image": str(p), "best_xy": m.best_xy.tolist(), "best_score": m.best_score,
                         "min_score": float(m.scores.min()), "grid_rows_cols": list(m.geometry.grid)}
                        for p, m in zip(paths, maps)],
        })
    record = {"coordinates": "(x, y) pixels of the original images, origin at the top-left corner",
              "settings": {**st.to_record(), "stride": index.geometries[0].stride}, "points": records}
    save_json(out / RESULT_FILE, record)
    return record


def check_points(image: Any, points: Sequence[Point]) -> None:
    """Refuse query points outside the first image, naming the file and its size."""
    from ..features.image import open_image

    w, h = open_image(image).size
    for x, y in points:
        if not (0 <= x <= w and 0 <= y <= h):
            raise DinokitError(f"{image}: point {x:g} {y:g} lies outside the image ({w}x{h} pixels)")
