"""Sparse point correspondences and dense point matching (Amir et al. 2021, Sec. 4.2).

The paper's pipeline for two images A and B:

1. log-binned ``key`` descriptors of layer 9 (stride 4, load size 224) and the
   CLS-attention saliency, from one forward pass per image;
2. best buddies: pairs ``(i, j)`` with ``j = argmax_j' sim(i, j')`` and
   ``i = argmax_i' sim(i', j)`` under cosine similarity;
3. keep pairs whose A point is foreground (saliency > 0.05) and -- the
   reference's rule for B -- whose A point is the nearest neighbour of *some*
   foreground patch of B;
4. k-means (k = number of pairs wanted) on the L2-normalised concatenation of
   the two descriptors of each pair, and from every cluster the pair with the
   highest mean saliency.

The similarity of all of A to all of B is computed in row chunks of matrix
products on the device, so memory stays bounded for large grids and no
per-token loop is ever run. Log-binned descriptors are never formed for the
search: :mod:`dinokit.features.binned_similarity` gets the same similarities from
the unbinned maps with several times fewer multiply-adds (about 6.5x on
the 55 x 80 grids of the paper's setting).

Coordinates are ``(x, y)`` pixels (see :mod:`dinokit.features.coords`); a
point is the centre of its patch, ``(col * stride + patch / 2, row * stride +
patch / 2)`` in the resized image, scaled to the original image's pixels.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..blocks.kmeans import kmeans_plusplus
from ..blocks.matching import Descriptors, as_matrix, best_buddies, normalize_descriptors, refine_peak, rows_per_chunk
from ..errors import DinokitError
from ..features.binned_similarity import LogBinned
from ..features.coords import GridGeometry
from ..features.extractor import Extractor, ImageInput, extractor_for_settings
from ..features.descriptors import ImageDescriptors
from ..settings import CorrespondenceSettings

__all__ = [
    "Correspondences",
    "DenseMatches",

    "CorrespondenceFinder",
    "select_correspondences",
    "find_correspondences",
    "match_points",
    "draw_correspondences",
    "save_correspondences",
    "shortfall_reason",
    "RESULT_FILE",
    "pair_folders",
]

@dataclass
class Correspondences:
    """Corresponding points between image A and image B.

    All point arrays are ``(K, 2)`` float64 ``(x, y)``: ``points_a`` /
    ``points_b`` in the original images' pixels, ``*_resized`` in the resized
    (model input) images. ``indices_*`` are flat grid indices, ``similarity``
    the cosine similarity of each pair and ``saliency_*`` the saliency of each
    point. Pairs are sorted by decreasing mean saliency.
    """

    points_a: np.ndarray
    points_b: np.ndarray
    points_a_resized: np.ndarray
    points_b_resized: np.ndarray
    indices_a: np.ndarray
    indices_b: np.ndarray
    similarity: np.ndarray
    saliency_a: np.ndarray
    saliency_b: np.ndarray
    geometry_a: GridGeometry
    geometry_b: GridGeometry
    num_best_buddies: int
    num_mutual: int
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices_a.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: points (original and resized pixels), scores, grids and settings."""
        def geo(g: GridGeometry) -> dict[str, Any]:
            return {"original_size_hw": list(g.original_size), "resized_size_hw": list(g.resized_size),
                    "grid_rows_cols": list(g.grid), "patch_size": g.patch_size, "stride": g.stride}

        pairs = [
            {
                "a": [float(v) for v in self.points_a[i]],
                "b": [float(v) for v in self.points_b[i]],
                "a_resized": [float(v) for v in self.points_a_resized[i]],
                "b_resized": [float(v) for v in self.points_b_resized[i]],
                "similarity": float(self.similarity[i]),
                "saliency_a": float(self.saliency_a[i]),
                "saliency_b": float(self.saliency_b[i]),
            }
            for i in range(len(self))
        ]
        return {
            "coordinates": "(x, y) pixels, origin at the top-left corner of the image; 'a'/'b' in the original "
                           "images, '*_resized' in the resized model inputs",
            "num_pairs": len(self),
            "num_best_buddies": self.num_best_buddies,
            "num_mutual_nearest_neighbours": self.num_mutual,
            "pairs": pairs,
            "geometry_a": geo(self.geometry_a),
            "geometry_b": geo(self.geometry_b),
            "settings": self.settings,
        }


def select_correspondences(
    desc_a: Descriptors,
    desc_b: Descriptors,
    saliency_a: Tensor,
    saliency_b: Tensor,
    geometry_a: GridGeometry,
    geometry_b: GridGeometry,
    *,
    num_pairs: int,
    thresh: float,
    seed: int = 0,
    n_init: int = 10,
    chunk_size: Optional[int] = None,
    timings: Optional[dict[str, float]] = None,
) -> Correspondences:
    """The paper's correspondence selection from descriptors and saliency ``(T,)`` of two images.

    Descriptors are ``(T, D)`` tensors or :class:`LogBinned` (the fast path for binned ones).

    Best buddies restricted to the foreground (saliency > ``thresh``), then
    k-means with ``min(num_pairs, #best buddies)`` clusters on the
    L2-normalised concatenated descriptor pairs, keeping in every cluster the
    pair of highest mean saliency. Fewer best buddies than ``num_pairs``
    returns all of them; none returns an empty result with a warning.
    """
    if num_pairs < 1:
        raise DinokitError(f"num_pairs must be at least 1, got {num_pairs}")
    with torch.no_grad():
        res = _select(desc_a, desc_b, saliency_a, saliency_b, geometry_a, geometry_b, num_pairs, thresh, seed, n_init,
                      chunk_size, timings)
    if len(res) == 0:
        warnings.warn("no best buddies on the foreground of both images: no correspondences found", RuntimeWarning,
                      stacklevel=2)
    return res


def _select(desc_a, desc_b, saliency_a, saliency_b, geometry_a, geometry_b, num_pairs, thresh, seed, n_init,
            chunk_size, timings) -> Correspondences:
    a = as_matrix(desc_a, "image A")
    b = as_matrix(desc_b, "image B").to(a.device)
    sal_a = torch.as_tensor(saliency_a).reshape(-1).float().to(a.device)
    sal_b = torch.as_tensor(saliency_b).reshape(-1).float().to(a.device)
    for name, d, s, g in (("A", a, sal_a, geometry_a), ("B", b, sal_b, geometry_b)):
        if d.shape[0] != g.num_patches or s.shape[0] != g.num_patches:
            raise DinokitError(f"image {name}: {d.shape[0]} descriptors and {s.shape[0]} saliency values "
                               f"for a {g.grid[0]}x{g.grid[1]} grid")
    t0 = _now(a.device)
    bbs = best_buddies(a, b, sal_a > thresh, sal_b > thresh, chunk_size)
    t1 = _now(a.device)
    idx_a, idx_b = bbs.indices_a, bbs.indices_b
    n_bb = len(bbs)
    settings = dict(num_pairs=num_pairs, thresh=thresh, seed=seed)
    if n_bb == 0:
        keep = torch.zeros(0, dtype=torch.long, device=a.device)
    elif n_bb <= num_pairs:
        keep = torch.arange(n_bb, device=a.device)
    else:
        pairs = torch.cat([a[idx_a], b[idx_b]], dim=1)
        pairs = pairs / pairs.norm(dim=1, keepdim=True).clamp_min(1e-12)
        labels, _, _ = kmeans_plusplus(pairs, num_pairs, seed=seed, n_init=n_init)
        rank = (sal_a[idx_a] + sal_b[idx_b]) / 2
        keep_list = []
        for c in range(num_pairs):
            members = torch.nonzero(labels == c, as_tuple=False).flatten()
            if members.numel():  # first member with the highest rank, as the reference's strict '>' scan
                keep_list.append(int(members[int(torch.argmax(rank[members]))]))
        keep = torch.tensor(keep_list, dtype=torch.long, device=a.device)
    if keep.numel():
        order = torch.argsort(-((sal_a[idx_a[keep]] + sal_b[idx_b[keep]]) / 2), stable=True)
        keep = keep[order]
    t2 = _now(a.device)
    if timings is not None:
        timings["similarity"] = timings.get("similarity", 0.0) + (t1 - t0)
        timings["clustering"] = timings.get("clustering", 0.0) + (t2 - t1)
    ia = idx_a[keep].cpu().numpy()
    ib = idx_b[keep].cpu().numpy()
    ra, rb = geometry_a.index_to_xy(ia), geometry_b.index_to_xy(ib)
    return Correspondences(
        points_a=geometry_a.to_original(ra).reshape(-1, 2),
        points_b=geometry_b.to_original(rb).reshape(-1, 2),
        points_a_resized=ra.reshape(-1, 2),
        points_b_resized=rb.reshape(-1, 2),
        indices_a=ia,
        indices_b=ib,
        similarity=bbs.similarity[keep].cpu().numpy(),
        saliency_a=sal_a[idx_a[keep]].cpu().numpy(),
        saliency_b=sal_b[idx_b[keep]].cpu().numpy(),
        geometry_a=geometry_a,
        geometry_b=geometry_b,
        num_best_buddies=n_bb,
        num_mutual=int(bbs.mutual.sum()),
        settings=settings,
    )


@dataclass
class DenseMatches:
    """Best locations in B of query points of A.

    ``points`` ``(N, 2)`` are ``(x, y)`` in B's original pixels (patch centres,
    or sub-patch soft-argmax when refined); ``points_resized`` the same in the
    resized image; ``indices`` the best patches of B; ``scores`` their cosine
    similarity; ``query_indices`` the patches of A the queries fell in.
    """

    points: np.ndarray
    points_resized: np.ndarray
    indices: np.ndarray
    scores: np.ndarray
    query_indices: np.ndarray


@torch.no_grad()
def match_points(
    desc_a: Descriptors,
    geometry_a: GridGeometry,
    desc_b: Descriptors,
    geometry_b: GridGeometry,
    points_a: Union[np.ndarray, Sequence[Sequence[float]]],
    *,
    original: bool = True,
    mask_b: Optional[Tensor] = None,
    refine: bool = False,
    window: int = 5,
    temperature: float = 0.02,
    chunk_size: Optional[int] = None,
) -> DenseMatches:
    """For each query point ``(x, y)`` of A, the best location in B (for PCK evaluation).

    The query's descriptor is that of the patch whose centre is nearest to it;
    its match is the argmax of cosine similarity over B (restricted to
    ``mask_b`` when given and not empty), reported at the patch centre or,
    with ``refine``, by soft-argmax in a ``window`` around the peak.
    ``original`` says whether the query and answer points are in original
    (default) or resized pixels.
    """
    a, b = as_matrix(desc_a, "image A"), as_matrix(desc_b, "image B")
    pts = np.asarray(points_a, dtype=np.float64).reshape(-1, 2)
    q_idx = geometry_a.xy_to_index(pts, original=original).reshape(-1)
    q = a[torch.as_tensor(q_idx, device=a.device)]
    if isinstance(b, LogBinned):
        b = b.to(q.device)
        cos = b.cosine_to
    else:
        b = normalize_descriptors(b).to(q.device)
        cos = lambda rows_q: normalize_descriptors(rows_q) @ b.T  # noqa: E731
    mask = None
    if mask_b is not None:
        mask = torch.as_tensor(mask_b, device=q.device).reshape(-1).bool()
        if mask.shape[0] != b.shape[0]:
            raise DinokitError(f"mask of B has {mask.shape[0]} values for {b.shape[0]} patches")
        if not mask.any():
            mask = None
    rows = rows_per_chunk(b.shape[0], chunk_size)
    best_idx, best_val, maps = [], [], []
    for start in range(0, q.shape[0], rows):
        s = cos(q[start : start + rows])
        if mask is not None:
            s = s.masked_fill(~mask, -torch.inf)
        v, i = s.max(dim=1)
        best_idx.append(i)
        best_val.append(v)
        if refine:
            maps.append(s.cpu())
    idx = torch.cat(best_idx).cpu().numpy() if best_idx else np.zeros(0, dtype=np.int64)
    val = torch.cat(best_val).cpu().numpy() if best_val else np.zeros(0, dtype=np.float32)
    if refine and len(idx):
        all_maps = torch.cat(maps)
        resized = np.stack([refine_peak(all_maps[n], geometry_b, int(idx[n]), window, temperature, original=False)
                            for n in range(len(idx))])
    else:
        resized = geometry_b.index_to_xy(idx).reshape(-1, 2)
    out = geometry_b.to_original(resized) if original else resized
    return DenseMatches(out.reshape(-1, 2), resized.reshape(-1, 2), idx, val, q_idx)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class CorrespondenceFinder:
    """Correspondences between image pairs with one loaded model (the paper's defaults).

    Args:
        extractor: an :class:`Extractor` (used as it is, derived for the
            stride, load size or saliency heads given explicitly:
            :func:`~dinokit.features.extractor.extractor_for_settings`), a
            model name or weights file, or ``None`` (``weights``, else the
            default model).
        settings: :class:`~dinokit.settings.CorrespondenceSettings` (default:
            the paper's: layer 9 log-binned keys, stride "auto", load size
            224, 10 pairs, saliency threshold 0.05); ``overrides`` change
            single fields (``num_pairs=5``).
        n_init: k-means restarts.
        chunk_size: rows of A per similarity chunk (default: about 16M entries).
        cache_size: images whose descriptors are kept (by path) for reuse.

    ``timings`` accumulates seconds per stage (``load``, ``forward``,
    ``binning``, ``similarity``, ``clustering``) over all calls.
    """

    def __init__(
        self,
        extractor: Union[Extractor, str, Any, None] = None,
        settings: Optional[CorrespondenceSettings] = None,
        *,
        weights: Optional[str] = None,
        n_init: int = 10,
        chunk_size: Optional[int] = None,
        cache_size: int = 2,
        device: Union[str, torch.device, None] = None,
        dtype: Union[str, torch.dtype, None] = None,
        progress: bool = True,
        **overrides: Any,
    ) -> None:
        st = CorrespondenceSettings.resolve(settings, **overrides)
        self.extractor, self.settings = extractor_for_settings(
            extractor, st, st.explicit(settings, overrides), weights, device=device, dtype=dtype, progress=progress)
        st = self.settings
        self.num_pairs = st.num_pairs
        self.layer = self.extractor.layer_index(st.layer)
        self.facet = st.facet
        self.bin = st.bin
        self.thresh = st.thresh
        self.saliency_heads = st.saliency_heads
        self.seed = st.seed
        self.n_init = int(n_init)
        self.chunk_size = chunk_size
        self.cache_size = int(cache_size)
        self.timings: dict[str, float] = {}
        self._cache: OrderedDict[str, ImageDescriptors] = OrderedDict()

    @torch.no_grad()
    def describe(self, image: ImageInput) -> ImageDescriptors:
        """Descriptors and saliency of one image from a single forward pass (cached by path)."""
        key = str(image) if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__") else None
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        out = self.extractor.describe(image, self.layer, self.facet, bin=self.bin,
                                      saliency_heads=self.saliency_heads, timings=self.timings)
        if key is not None and self.cache_size > 0:
            self._cache[key] = out
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def find(self, image_a: ImageInput, image_b: ImageInput) -> Correspondences:
        """Correspondences between two images (paths, PIL images or :class:`LoadedImage`)."""
        da, db = self.describe(image_a), self.describe(image_b)
        res = select_correspondences(
            da.matching, db.matching, da.saliency, db.saliency, da.geometry, db.geometry,
            num_pairs=self.num_pairs, thresh=self.thresh, seed=self.seed, n_init=self.n_init,
            chunk_size=self.chunk_size, timings=self.timings,
        )
        res.settings.update(self.effective_settings())
        return res

    def match(
        self,
        image_a: ImageInput,
        image_b: ImageInput,
        points_a: Union[np.ndarray, Sequence[Sequence[float]]],
        *,
        foreground: bool = False,
        refine: bool = False,
        window: int = 5,
        temperature: float = 0.02,
    ) -> DenseMatches:
        """Dense matching of query points ``(x, y)`` (original pixels of A) into B; see :func:`match_points`.

        ``foreground`` restricts matches to B's patches with saliency above ``thresh``.
        """
        da, db = self.describe(image_a), self.describe(image_b)
        mask = db.saliency > self.thresh if foreground else None
        return match_points(da.matching, da.geometry, db.matching, db.geometry, points_a, mask_b=mask,
                            refine=refine, window=window, temperature=temperature, chunk_size=self.chunk_size)

    def effective_settings(self) -> dict[str, Any]:
        """The parameters that shaped a result, with stride and saliency heads resolved (for provenance)."""
        ex = self.extractor
        return dict(num_pairs=self.num_pairs, load_size=ex.load_size, layer=self.layer, facet=self.facet,
                    bin=self.bin, thresh=self.thresh, stride=ex.stride, patch_size=ex.patch_size,
                    saliency_heads=list(self.saliency_heads) if self.saliency_heads is not None else
                    (list(ex.default_saliency_heads()) if ex.default_saliency_heads() is not None else None),
                    seed=self.seed, n_init=self.n_init)


def find_correspondences(
    image_a: ImageInput,
    image_b: ImageInput,
    extractor: Union[Extractor, str, Any, None] = None,
    settings: Optional[CorrespondenceSettings] = None,
    **kwargs: Any,
) -> Correspondences:
    """One-call version of the reference ``find_correspondences``; arguments as :class:`CorrespondenceFinder`.

    Loads the model each call unless ``extractor`` is an :class:`Extractor`;
    for many pairs use :class:`CorrespondenceFinder`.
    """
    return CorrespondenceFinder(extractor, settings, **kwargs).find(image_a, image_b)


def draw_correspondences(
    rgb_a: np.ndarray,
    rgb_b: np.ndarray,
    result: Correspondences,
    *,
    resized: bool = False,
    height: Optional[int] = None,
    max_side: Optional[int] = 1024,
    min_side: Optional[int] = 512,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pictures of a result: ``(side_by_side, image_a_with_points, image_b_with_points)``.

    ``rgb_*`` are the original images (or the resized ones with
    ``resized=True``). For drawing, each image is scaled so that its longest
    side lies between ``min_side`` (small images are enlarged, so markers and
    numbers stay legible) and ``max_side``; ``None`` turns a limit off. Points
    are numbered 1..K in the result's order and share a colour across the two
    images; an empty result is said on the pictures.
    """
    from ..blocks.draw import draw_matches, draw_points, palette, resize_image, write_note

    pa = result.points_a_resized if resized else result.points_a
    pb = result.points_b_resized if resized else result.points_b

    def fit(rgb: np.ndarray) -> tuple[np.ndarray, float]:
        return resize_image(rgb, longest=max(max(rgb.shape[:2]), min_side or 0), max_side=max_side)

    img_a, sa = fit(rgb_a)
    img_b, sb = fit(rgb_b)
    colors = palette(len(result))
    side = draw_matches(img_a, img_b, pa * sa, pb * sb, colors=colors, height=height)
    pic_a, pic_b = draw_points(img_a, pa * sa, colors), draw_points(img_b, pb * sb, colors)
    if len(result) == 0:
        note = "no correspondences: no best buddies on the foreground of both images"
        side, pic_a, pic_b = write_note(side, note), write_note(pic_a, "no correspondences"), \
            write_note(pic_b, "no correspondences")
    return side, pic_a, pic_b


RESULT_FILE = "correspondences.json"


def save_correspondences(result: Correspondences, image_a: Any, image_b: Any, out_dir: Any, *,
                         max_side: int = 1024, min_side: int = 512, overwrite: bool = True) -> dict[str, Any]:
    """Write ``pair.png`` (side by side, numbered), ``A_<stem>.png``, ``B_<stem>.png`` and, last,
    ``correspondences.json`` into ``out_dir``; returns the JSON record."""
    from pathlib import Path

    from ..features.image import open_image
    from ..io import save_image, save_json

    out, a, b = Path(out_dir), Path(image_a), Path(image_b)
    rgb_a, rgb_b = np.asarray(open_image(a)), np.asarray(open_image(b))
    side, pa, pb = draw_correspondences(rgb_a, rgb_b, result, max_side=max_side or None, min_side=min_side or None)
    save_image(out / "pair.png", side, overwrite)
    save_image(out / f"A_{a.stem}.png", pa, overwrite)
    save_image(out / f"B_{b.stem}.png", pb, overwrite)
    info = {"image_a": str(a), "image_b": str(b), **result.to_dict()}
    save_json(out / RESULT_FILE, info, overwrite)
    return info


def shortfall_reason(result: Correspondences, wanted: int) -> Optional[str]:
    """Why fewer correspondences than ``wanted`` came back (None when all did)."""
    if len(result) >= wanted:
        return None
    return (f"{len(result)} of {wanted} correspondences: only {result.num_best_buddies} best buddies lie on the "
            "foreground of both images (lower --thresh, or a smaller --stride for more patches)")


def pair_folders(root: Any, exclude: Sequence[Any] = ()) -> list[tuple[str, Any, Any]]:
    """``(name, image A, image B)`` for every subfolder of ``root`` holding exactly two images (A first by name).

    Hidden folders, the ``exclude`` folders and dinokit's own output folders are left out.
    """
    from pathlib import Path

    from ..features.image import IMAGE_SUFFIXES
    from ..runs import is_output_folder

    root = Path(root)
    if not root.is_dir():
        raise DinokitError(f"{root}: no such folder")
    skip = {Path(e).resolve() for e in exclude}
    subs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                  and d.resolve() not in skip and not is_output_folder(d))
    if not subs:
        raise DinokitError(f"{root}: has no pair subfolders")
    out = []
    for d in subs:
        found = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if len(found) != 2:
            raise DinokitError(f"{d}: holds {len(found)} image(s); a pair folder needs exactly 2")
        out.append((d.name, found[0], found[1]))
    return out
