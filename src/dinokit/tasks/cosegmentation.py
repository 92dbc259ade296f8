"""Co-segmentation of a set of images (Amir et al. 2021, "Deep ViT Features as Dense Visual Descriptors").

The method of the paper and its reference code:

1. key descriptors of layer 11 at stride 4 for every image, L2-normalised,
   plus a saliency map per image from the CLS attention of the last layer;
2. k-means on every ``sample_interval``-th descriptor for k = 1, 2, ... 14,
   assigning all descriptors, stopping at the first k whose mean squared
   distance is above ``elbow`` times the previous one (that k is kept);
3. each image votes for the clusters whose mean saliency in it is above
   ``thresh``; clusters with votes from at least ``votes_percentage`` percent
   of the images are foreground;
4. each image's foreground patches, upsampled to the image, seed GrabCut
   (:func:`~dinokit.blocks.refine.grabcut_refine`).

Optionally images whose CLS descriptor has cosine similarity below
``outliers_thresh`` to the mean CLS descriptor are left out and get an empty
mask.

Saliency: the default is the reference's low-resolution map
(``low_res_saliency_maps=True``): a second forward pass at half the load size
and stride 8, nearest-resized to the descriptor grid. The vote threshold
``thresh=0.065`` was tuned on these maps, so they keep the paper's behaviour,
and the pass is small (196 tokens against 3,025 for ViT-S/8 at 224 x 224,
stride 4: about 0.1 s of the 4 s an image takes on two CPU cores).
The reference chose it to save GPU memory, as its extractor built the full
tokens x tokens attention; dinokit's computes only the CLS row, so
``low_res_saliency_maps=False`` takes the saliency from the descriptors' own
pass at no cost; its maps are sharper, and min-max normalised over more
patches, which tends to lower the cluster means compared with ``thresh``.

Scale: descriptors are stored L2-normalised in float16, in RAM for small sets
and in a temporary file beyond ``memory_limit_gb``
(:class:`~dinokit.blocks.store.DescriptorStore`); k-means is fitted
on the sample and assigns in batches, several k per pass for large sets
(:func:`elbow_lookahead`; same result); GrabCut runs one image at a time.
1,000 images at load size 224 with ViT-S/8-sized descriptors (4.5 million,
3.3 GB in float16, on disk) peak at about 0.7 GB of RAM in
``benchmarks/cosegmentation.py``.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..blocks.kmeans import KMeans, elbow_search, split_labels
from ..blocks.refine import grabcut_refine, upsample_mask
from ..blocks.store import DescriptorStore
from ..devices import resolve_device
from ..errors import DinokitError
from ..features import Extractor
from ..features.extractor import extractor_for_settings
from ..features.binning import log_bin
from ..features.image import LoadedImage, folder_images, list_images, open_image
from ..io import unique_output_names
from ..settings import CoSegmentationSettings

ImageSource = Union[str, Path, Image.Image]

__all__ = [
    "CoSegmentation",
    "find_cosegmentation",
    "SetFeatures",
    "ImageItem",
    "extract_set",
    "find_outliers",
    "vote_salient_clusters",
    "first_stage_clustering",
    "FirstStage",
    "checkerboard_visualization",
    "images_of_set",
    "cosegment",
    "save_cosegmentation",
    "run_sets",
    "list_sets",
]


# --- extraction ---------------------------------------------------------------
@dataclass
class ImageItem:
    """One image of a set: a unique name, where to reload it from and its sizes ``(H, W)``."""

    name: str
    source: Any
    original_size: tuple[int, int]
    size: tuple[int, int]
    grid: tuple[int, int]
    augmentation: bool = False

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


@dataclass
class SetFeatures:
    """Descriptors (in a :class:`DescriptorStore`), saliency maps and CLS descriptors of a set of images."""

    items: list[ImageItem]
    store: DescriptorStore
    saliency: list[np.ndarray]
    cls: Optional[np.ndarray] = None
    load_size: Any = 224

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> list[int]:
        return list(self.store.counts)


def _low_res_saliency(sal_extractor: Extractor, source: Any, size: tuple[int, int], load_size: Any,
                      grid: tuple[int, int]) -> np.ndarray:
    """The reference's low-resolution saliency: half the load size, stride 8, nearest-resized to ``grid``."""
    low = (size[0] // 2, size[1] // 2) if load_size is not None else size
    src = source
    if isinstance(src, LoadedImage):  # start from the file, as the reference does, else from the pixels
        src = src.path if src.path is not None else Image.fromarray(src.rgb)
    img = sal_extractor.load(src, load_size=low)
    feats = sal_extractor.extract(img, [], [], saliency=True)
    sal = feats.saliency[0].cpu().numpy().astype(np.float32).reshape(feats.grid)
    resized = Image.fromarray(sal).resize((grid[1], grid[0]), Image.NEAREST)
    return np.asarray(resized, dtype=np.float32).reshape(-1)


def extract_set(
    extractor: Extractor,
    images: Sequence[Any],
    *,
    layer: int = 11,
    facet: str = "key",
    bin: bool = False,
    include_cls: bool = False,
    low_res_saliency_maps: bool = True,
    store: Optional[DescriptorStore] = None,
    names: Optional[Sequence[str]] = None,
    augmentation: Optional[Sequence[bool]] = None,
    progress: bool = False,
) -> SetFeatures:
    """Descriptors, saliency and (optionally) CLS descriptors of every image, one image at a time.

    ``images`` are paths, PIL images or :class:`LoadedImage`. Descriptors go
    L2-normalised into ``store`` (a new auto store by default).
    """
    from tqdm.auto import tqdm

    store = store if store is not None else DescriptorStore("auto", expected_images=len(images))
    names = list(names) if names is not None else unique_output_names(images)
    aug = list(augmentation) if augmentation is not None else [False] * len(images)
    sal_extractor = None
    if low_res_saliency_maps:
        sal_stride = 8 if extractor.patch_size % 8 == 0 else extractor.patch_size
        sal_extractor = extractor.derive(stride=sal_stride)
    items: list[ImageItem] = []
    saliency: list[np.ndarray] = []
    cls_rows: list[np.ndarray] = []
    for src, name, is_aug in tqdm(list(zip(images, names, aug)), desc="features", unit="img", disable=not progress):
        loaded = extractor.load(src)
        # bin and include_cls do not combine in one call: take the raw descriptors and bin them here.
        feats = extractor.extract(loaded, layer, facet, bin=bin and not include_cls, include_cls=include_cls,
                                  saliency=not low_res_saliency_maps)
        desc = feats.get()[0]
        if include_cls:
            cls_rows.append(desc[0].cpu().numpy().astype(np.float32))
            desc = desc[1:]
            if bin:
                desc = log_bin(desc[None], feats.grid)[0]
        store.append(desc)
        grid = feats.grid
        if low_res_saliency_maps:
            sal = _low_res_saliency(sal_extractor, src, loaded.size, extractor.load_size, grid)
        else:
            sal = feats.saliency[0].cpu().numpy().astype(np.float32)
        saliency.append(sal)
        source = loaded.path if loaded.path is not None else Image.fromarray(loaded.rgb)
        items.append(ImageItem(name, source, loaded.original_size, loaded.size, grid, is_aug))
    cls = np.stack(cls_rows) if cls_rows else None
    return SetFeatures(items, store, saliency, cls, extractor.load_size)


# --- clustering and voting ------------------------------------------------------
def find_outliers(cls_descriptors: np.ndarray, outliers_thresh: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Inlier flags and cosine similarities of each CLS descriptor ``(n, D)`` to their mean.

    An image is an inlier when its similarity is at least ``outliers_thresh`` (reference rule).
    """
    c = torch.as_tensor(np.asarray(cls_descriptors, dtype=np.float32))
    mean = c.mean(dim=0, keepdim=True)
    sim = torch.nn.functional.cosine_similarity(c, mean, dim=1).numpy()
    return sim >= outliers_thresh, sim


def vote_salient_clusters(
    labels_per_image: Sequence[np.ndarray],
    saliency_per_image: Sequence[np.ndarray],
    num_labels: int,
    thresh: float,
    votes_percentage: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Votes per cluster and the salient (foreground) clusters.

    Image ``i`` votes for cluster ``l`` when the mean saliency of its patches
    labelled ``l`` is above ``thresh``; a cluster is salient with at least
    ``ceil(n * votes_percentage / 100)`` votes from the ``n`` images given.
    """
    votes = np.zeros(num_labels, dtype=np.int64)
    for labels, sal in zip(labels_per_image, saliency_per_image):
        labels = np.asarray(labels).reshape(-1)
        sal = np.asarray(sal, dtype=np.float64).reshape(-1)
        sums = np.bincount(labels, weights=sal, minlength=num_labels)[:num_labels]
        counts = np.bincount(labels, minlength=num_labels)[:num_labels]
        present = counts > 0
        means = np.zeros(num_labels)
        means[present] = sums[present] / counts[present]
        votes += (present & (means > thresh)).astype(np.int64)
    needed = math.ceil(len(labels_per_image) * votes_percentage / 100)
    return votes, np.flatnonzero(votes >= needed)


def elbow_lookahead(store: DescriptorStore) -> int:
    """How many k the elbow search fits per pass over the descriptors (the result is the same for any).

    1, the reference's loop, for small sets, where a pass costs little next to a fit; 3 beyond 250,000
    descriptors (about 60 images at load size 224 and stride 4) or on disk, where each pass costs about
    as much as a fit (at 100 images: 23 s against 29 s for the elbow search, k = 9)."""
    return 3 if store.on_disk or store.total > 250_000 else 1


@dataclass
class FirstStage:
    """Result of the elbow clustering and voting over a set (the first stage of both methods)."""

    kmeans: KMeans
    labels: list[Optional[np.ndarray]]
    objectives: list[float]
    n_clusters_tried: list[int]
    votes: np.ndarray
    salient_labels: np.ndarray
    timings: dict = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return self.kmeans.n_clusters

    @property
    def background_labels(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.n_clusters), self.salient_labels)


def first_stage_clustering(
    feats: SetFeatures,
    settings: CoSegmentationSettings,
    *,
    include: Optional[Sequence[bool]] = None,
    kmeans_kwargs: Optional[dict] = None,
    progress: bool = False,
) -> FirstStage:
    """Elbow k-means over the descriptors of the included images, then saliency voting by the non-augmented ones
    (``settings``: elbow, max_clusters, sample_interval, thresh, votes_percentage)."""
    st = settings
    n = len(feats)
    include = list(include) if include is not None else [True] * n
    idx = [i for i in range(n) if include[i]]
    if not idx:
        raise DinokitError("no images left to cluster")
    kw = dict(kmeans_kwargs or {})
    t0 = time.perf_counter()
    sample = feats.store.sample(st.sample_interval, indices=idx)
    masks = [None if include[i] else np.zeros(feats.store.counts[i], bool) for i in range(n)]
    result = elbow_search(sample, feats.store.subset(masks), st.elbow, range(1, st.max_clusters + 1),
                          lookahead=elbow_lookahead(feats.store), progress=progress, **kw)
    t1 = time.perf_counter()
    flat = split_labels(result.labels, [feats.store.counts[i] for i in idx])
    labels: list[Optional[np.ndarray]] = [None] * n
    for i, lab in zip(idx, flat):
        labels[i] = lab
    voters = [i for i in idx if not feats.items[i].augmentation]
    votes, salient = vote_salient_clusters([labels[i] for i in voters], [feats.saliency[i] for i in voters],
                                           result.n_clusters, st.thresh, st.votes_percentage)
    t2 = time.perf_counter()
    return FirstStage(result.model, labels, result.objectives, result.n_clusters_tried, votes, salient,
                      {"elbow": t1 - t0, "voting": t2 - t1})


# --- drawing ----------------------------------------------------------------------
def checkerboard(height: int, width: int, edge: int = 10) -> np.ndarray:
    """The reference's grey checkerboard (squares of ``edge`` pixels, 255 and 191), ``H x W x 3`` uint8."""
    rows = (np.arange(height) // edge) % 2 == 0
    cols = (np.arange(width) // edge) % 2 == 1
    board = rows[:, None] ^ cols[None, :]
    grey = np.where(board, 255, 191).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def checkerboard_visualization(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Foreground pixels of ``rgb`` over a checkerboard background."""
    m = upsample_mask(mask, rgb.shape[:2])
    out = checkerboard(*rgb.shape[:2])
    out[m] = rgb[m]
    return out


def label_map_image(labels: np.ndarray, num_labels: int, size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """A label grid drawn with the shared palette (negative labels black), optionally resized (nearest)."""
    from ..blocks.draw import palette

    colors = np.array(palette(max(num_labels, 1)), dtype=np.uint8)
    lab = np.asarray(labels)
    out = np.zeros(lab.shape + (3,), np.uint8)
    ok = lab >= 0
    out[ok] = colors[lab[ok] % len(colors)]
    if size is not None and out.shape[:2] != tuple(size):
        out = np.asarray(Image.fromarray(out).resize((size[1], size[0]), Image.NEAREST))
    return out


def saliency_image(saliency: np.ndarray, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """A saliency grid coloured with jet in [0, 1] and resized (nearest) to ``size``."""
    from ..blocks.draw import apply_colormap

    rgb = apply_colormap(np.asarray(saliency, dtype=np.float32).reshape(grid), 0.0, 1.0, "jet")
    return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.NEAREST))


# --- the estimator ------------------------------------------------------------------
def images_of_set(inputs: Union[str, Path, Sequence[Any]]) -> list[Any]:
    """Image files of a set: a folder's images (:func:`~dinokit.features.image.folder_images`), explicit
    files, patterns, or in-memory images."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    out: list[Any] = []
    paths: list[Any] = []
    for item in inputs:
        if isinstance(item, (Image.Image, LoadedImage)):
            out.append(item)
            continue
        p = Path(item)
        if p.is_dir():
            paths.extend(folder_images(p))
        else:
            paths.append(item)
    if paths:
        out.extend(list_images(paths, recursive=False))
    return out


class CoSegmentation:
    """Co-segment a set of images: configure here, :meth:`fit` the set, then read :meth:`mask` / :meth:`masks`.

    Args mirror the reference's ``find_cosegmentation`` (same names and
    defaults; ``stride="auto"`` is half the patch size, the reference's 4 for
    its ViT-S/8) plus: ``extractor`` (an :class:`Extractor`, a model name or a
    weights file; its backbone is reused at ``stride``/``load_size``),
    ``weights``, ``max_clusters`` (14), ``seed`` (k-means seed, faiss's
    default 1234), ``kmeans_backend``, ``store``/``store_dtype``/
    ``offload_dir``/``memory_limit_gb`` (where and how descriptors are kept:
    float16 by default, ``store_dtype="float32"`` for the reference's exact
    numbers), ``device``, ``dtype``, ``progress``.

    Attributes after :meth:`fit`: ``items_`` (:class:`ImageItem` per image),
    ``inliers_`` and ``cls_similarity_`` (outlier removal), ``kmeans_``,
    ``n_clusters_``, ``objectives_`` (mean squared distance per k tried),
    ``labels_`` (cluster grid per image, ``None`` for outliers), ``saliency_``
    (saliency grid per image), ``votes_``, ``salient_labels_``, ``timings_``.
    """

    settings_class: type[CoSegmentationSettings] = CoSegmentationSettings
    method_label = "co-segmentation"
    min_images = 2

    def __init__(
        self,
        extractor: Union[Extractor, str, Path, None] = None,
        settings: Optional[CoSegmentationSettings] = None,
        *,
        weights: Union[str, Path, None] = None,
        offload_dir: Union[str, Path, None] = None,
        device: Union[str, torch.device, None] = None,
        dtype: Union[str, torch.dtype, None] = None,
        progress: bool = True,
        **overrides: Any,
    ) -> None:
        self.settings = self.settings_class.resolve(settings, **overrides)
        self._explicit = self.settings.explicit(settings, overrides)
        for f in fields(self.settings):  # scikit-learn style: every parameter is an attribute
            setattr(self, f.name, getattr(self.settings, f.name))
        self.extractor = extractor
        self.weights = weights
        self.offload_dir = offload_dir
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self._timing_lock = threading.Lock()

    # --- helpers shared with the part co-segmentation -------------------------
    def _extractor(self) -> Extractor:
        if not hasattr(self, "extractor_"):
            self.extractor_, self.settings = extractor_for_settings(
                self.extractor, self.settings, self._explicit, self.weights, device=self.device, dtype=self.dtype,
                progress=self.progress)
            self.stride, self.load_size = self.settings.stride, self.settings.load_size
        return self.extractor_

    def _kmeans_kwargs(self) -> dict:
        if hasattr(self, "extractor_"):
            device = self.extractor_.device
        else:
            device = resolve_device(self.device)
        return dict(seed=self.seed, backend=self.kmeans_backend, device=device)

    def _new_store(self, n: int) -> DescriptorStore:
        return DescriptorStore(self.store, dtype=self.store_dtype, directory=self.offload_dir,
                               memory_limit_bytes=self.memory_limit_gb * 2**30, expected_images=n)

    def _prepare(self, images: Any) -> list[Any]:
        sources = images_of_set(images)
        if len(sources) < self.min_images:
            if isinstance(images, (str, Path)):
                what = f"{images}: a set of {len(sources)} image" + (f" ({Path(sources[0]).name})" if sources else "")
            else:
                what = f"{', '.join(str(s) for s in sources[:1]) or 'the input'}: a set of {len(sources)} image"
            raise DinokitError(f"{what}; {self.method_label} needs at least {self.min_images} images of the same "
                               "kind of object")
        return sources

    # --- fitting ---------------------------------------------------------------
    def fit(self, images: Any) -> "CoSegmentation":
        """Extract, cluster and vote over a set (a folder, a list of files, or PIL images)."""
        sources = self._prepare(images)
        ex = self._extractor()
        t0 = time.perf_counter()
        feats = extract_set(ex, sources, layer=self.layer, facet=self.facet, bin=self.bin,
                            include_cls=self.remove_outliers, low_res_saliency_maps=self.low_res_saliency_maps,
                            store=self._new_store(len(sources)), progress=self.progress)
        return self.fit_features(feats, {"features": time.perf_counter() - t0})

    def fit_features(self, feats: SetFeatures, timings: Optional[dict] = None) -> "CoSegmentation":
        """Cluster and vote over already extracted features (what :meth:`fit` does after extraction)."""
        self.timings_ = dict(timings or {})
        self.features_ = feats
        self.items_ = feats.items
        n = len(feats)
        if self.remove_outliers:
            if feats.cls is None:
                raise DinokitError("remove_outliers needs the CLS descriptors (extract with include_cls=True)")
            self.inliers_, self.cls_similarity_ = find_outliers(feats.cls, self.outliers_thresh)
        else:
            self.inliers_, self.cls_similarity_ = np.ones(n, bool), None
        if not self.inliers_.any():
            raise DinokitError(f"every image is an outlier at outliers_thresh={self.outliers_thresh}; lower it")
        stage = first_stage_clustering(feats, self.settings, include=list(self.inliers_),
                                       kmeans_kwargs=self._kmeans_kwargs(), progress=self.progress)
        self._set_stage(stage)
        self.timings_.update(stage.timings)
        self.timings_["grabcut"] = 0.0
        if len(self.salient_labels_) == 0:
            warnings.warn(f"no cluster got votes from {self.votes_percentage:g}% of the images: the masks are empty "
                          f"(lower thresh={self.thresh} or votes_percentage)", stacklevel=2)
        return self

    def _set_stage(self, stage: FirstStage) -> None:
        self.stage_ = stage
        self.kmeans_ = stage.kmeans
        self.n_clusters_ = stage.n_clusters
        self.objectives_ = stage.objectives
        self.votes_ = stage.votes
        self.salient_labels_ = stage.salient_labels
        self.labels_ = [None if lab is None else lab.reshape(it.grid) for lab, it in zip(stage.labels, self.items_)]
        self.saliency_ = [s.reshape(it.grid) for s, it in zip(self.features_.saliency, self.items_)]

    def _check_fitted(self) -> None:
        if not hasattr(self, "stage_"):
            raise DinokitError("call fit() first")

    # --- results -------------------------------------------------------------------
    def coarse_mask(self, index: int) -> np.ndarray:
        """Foreground patches of image ``index`` on its descriptor grid (all false for outliers)."""
        self._check_fitted()
        lab = self.labels_[index]
        if lab is None:
            return np.zeros(self.items_[index].grid, bool)
        return np.isin(lab, self.salient_labels_)

    def image(self, index: int) -> np.ndarray:
        """The resized RGB image ``index`` (reloaded: images are not kept in memory)."""
        self._check_fitted()
        source = self.items_[index].source
        if isinstance(source, np.ndarray):  # already the resized RGB image
            return source
        return self._extractor().load(source).rgb

    def display_image(self, index: int) -> np.ndarray:
        """Image ``index`` for pictures: from the original file when there is one, its long side brought
        into 512..1024 pixels (:func:`display_size`), so that results are drawn at a size people can read."""
        self._check_fitted()
        it = self.items_[index]
        h, w = display_size(it.original_size)
        src = it.source
        if isinstance(src, (str, Path)):
            pil = open_image(src)
        elif isinstance(src, Image.Image):
            pil = src.convert("RGB")
        else:
            pil = Image.fromarray(self.image(index))
        return np.asarray(pil.resize((w, h), Image.LANCZOS) if pil.size != (w, h) else pil)

    def mask(self, index: int, refine: bool = True) -> np.ndarray:
        """The mask of image ``index`` at the load size, GrabCut-refined unless ``refine=False``."""
        return self.mask_with_info(index, refine)[0]

    def mask_with_info(self, index: int, refine: bool = True) -> tuple[np.ndarray, bool]:
        """``(mask, refined)``: ``refined`` is false for outliers and when GrabCut could not run."""
        coarse = self.coarse_mask(index)
        size = self.items_[index].size
        if not refine or not self.inliers_[index]:
            return upsample_mask(coarse, size), False
        t0 = time.perf_counter()
        res = grabcut_refine(self.image(index), coarse)
        with self._timing_lock:
            self.timings_["grabcut"] = self.timings_.get("grabcut", 0.0) + time.perf_counter() - t0
        return res.mask, res.refined

    def masks_with_info(self, refine: bool = True, workers: Optional[int] = None) -> Iterator[tuple[np.ndarray, bool]]:
        """``(mask, refined)`` of every image in order, GrabCut running on ``workers`` threads at once.

        OpenCV's GrabCut releases the GIL and each call seeds its own thread's
        generator, so the masks equal those computed one at a time. Default: one
        thread per CPU core (at most 16).
        """
        from concurrent.futures import ThreadPoolExecutor

        n = len(self.items_)
        workers = workers if workers is not None else min(16, os.cpu_count() or 1)
        if workers <= 1 or n < 2:
            yield from (self.mask_with_info(i, refine) for i in range(n))
            return
        with ThreadPoolExecutor(max_workers=min(workers, n)) as pool:
            yield from pool.map(lambda i: self.mask_with_info(i, refine), range(n))

    def masks(self, refine: bool = True) -> Iterator[np.ndarray]:
        """Masks of every image in order (GrabCut spread over the CPU cores)."""
        for mask, _ in self.masks_with_info(refine):
            yield mask

    def summary(self) -> dict:
        """JSON-friendly settings and outcome of the fit."""
        self._check_fitted()
        ex = getattr(self, "extractor_", None)
        return {
            "method": "cosegmentation",
            "settings": self.effective_settings(),
            "model": None if ex is None else {"patch_size": ex.patch_size, "stride": ex.stride,
                                              "saliency_heads": ex.default_saliency_heads()},
            "n_images": len(self.items_),
            "images": [it.name for it in self.items_ if not it.augmentation],
            "n_clusters": self.n_clusters_,
            "objectives": self.objectives_,
            "votes": self.votes_.tolist(),
            "salient_labels": self.salient_labels_.tolist(),
            "outliers": [it.name for it, ok in zip(self.items_, self.inliers_) if not ok],
            "cls_similarity": None if self.cls_similarity_ is None else self.cls_similarity_.tolist(),
            "descriptors_on_disk": self.features_.store.on_disk,
            "timings": dict(self.timings_),
        }

    def effective_settings(self) -> dict:
        """The method's settings as recorded with its outputs (the output-only mask size left out)."""
        record = self.settings.to_record()
        record.pop("mask_size", None)
        return record

    def close(self) -> None:
        """Free the stored descriptors (and their temporary file)."""
        if hasattr(self, "features_"):
            self.features_.store.close()


def find_cosegmentation(images: Any, extractor: Union[Extractor, str, Path, None] = None, **kwargs: Any) -> list[np.ndarray]:
    """Binary masks (at the load size) of a set of images; ``kwargs`` as :class:`CoSegmentation`."""
    model = CoSegmentation(extractor, **kwargs).fit(images)
    try:
        return list(model.masks())
    finally:
        model.close()


# --- writing results -------------------------------------------------------------------
DONE_FILE = "done.json"


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return upsample_mask(mask, size)


def display_size(size: tuple[int, int], shortest_long_side: int = 512, longest_long_side: int = 1024) -> tuple[int, int]:
    """``(H, W)`` of a picture of an image of ``size``: the original, its long side brought into the range."""
    h, w = size
    long = max(h, w)
    scale = min(max(long, shortest_long_side), longest_long_side) / long
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map to ``size`` ``(H, W)`` (pixel centres)."""
    h0, w0 = labels.shape[:2]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h0 / size[0]).astype(np.intp), h0 - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w0 / size[1]).astype(np.intp), w0 - 1)
    return labels[rows][:, cols]


def mask_output_size(item: ImageItem, mask_size: str) -> tuple[int, int]:
    if mask_size not in ("original", "load"):
        raise DinokitError(f"mask_size must be 'original' or 'load', got {mask_size!r}")
    return item.original_size if mask_size == "original" else item.size


def set_is_done(output_dir: Union[str, Path], method: str) -> bool:
    """Whether ``output_dir`` holds a finished run of ``method`` (its ``done.json`` is written last)."""
    done = Path(output_dir) / DONE_FILE
    if not done.is_file():
        return False
    import json

    try:
        info = json.loads(done.read_text())
    except (OSError, ValueError):
        return False
    if info.get("method") != method:
        raise DinokitError(f"{output_dir}: already holds {info.get('method', 'other')} results; choose another output folder")
    return True


def save_cosegmentation(
    model: CoSegmentation,
    output_dir: Union[str, Path],
    *,
    mask_size: str = "original",
    save_intermediate: bool = False,
    progress: bool = True,
) -> dict:
    """Write ``<name>_mask.png`` (0/255) and ``<name>_vis.png`` per image, the saliency and clustering maps with
    ``save_intermediate``, then ``done.json`` (settings and outcome) last."""
    from tqdm.auto import tqdm

    from ..io import save_image, save_json

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    refined = []
    masks = model.masks_with_info()
    for i, it in enumerate(tqdm(model.items_, desc="grabcut", unit="img", disable=not progress)):
        mask, ok = next(masks)
        refined.append(bool(ok))
        save_image(out / f"{it.name}_mask.png", _resize_mask(mask, mask_output_size(it, mask_size)).astype(np.uint8) * 255)
        rgb = model.display_image(i)
        vis = checkerboard_visualization(rgb, _resize_mask(mask, rgb.shape[:2]))
        if not mask.any():  # say why the picture is all checkerboard
            from ..blocks.draw import write_note

            if not model.inliers_[i]:
                why = f"outlier: CLS similarity {model.cls_similarity_[i]:.2f} < {model.outliers_thresh:g}"
            elif not len(model.salient_labels_):
                why = "no foreground: no cluster won the votes"
            else:
                why = "no foreground in this image"
            vis = write_note(vis, why)
        save_image(out / f"{it.name}_vis.png", vis)
        if save_intermediate:
            save_image(out / f"{it.name}_saliency.png", saliency_image(model.saliency_[i], it.grid, it.size))
            labels = model.labels_[i] if model.labels_[i] is not None else np.full(it.grid, -1)
            save_image(out / f"{it.name}_clustering.png", label_map_image(labels, model.n_clusters_, it.size))
    info = model.summary()
    info["grabcut_refined"] = dict(zip([it.name for it in model.items_], refined))
    info["mask_size"] = mask_size
    save_json(out / DONE_FILE, info)
    return info


def cosegment(
    images: Any,
    output_dir: Union[str, Path],
    extractor: Union[Extractor, str, Path, None] = None,
    *,
    overwrite: bool = False,
    mask_size: str = "original",
    save_intermediate: bool = False,
    **kwargs: Any,
) -> Optional[dict]:
    """Co-segment one set and write its results to ``output_dir``; returns ``done.json``'s content, or
    ``None`` when the set was already finished (rerun with ``overwrite=True``)."""
    return fit_and_save_set(CoSegmentation, save_cosegmentation, "cosegmentation", images, output_dir, extractor,
                            overwrite=overwrite, mask_size=mask_size, save_intermediate=save_intermediate, **kwargs)


def fit_and_save_set(
    estimator: Any,
    save: Any,
    method: str,
    images: Any,
    output_dir: Union[str, Path],
    extractor: Union[Extractor, str, Path, None],
    *,
    overwrite: bool,
    mask_size: str,
    save_intermediate: bool,
    **kwargs: Any,
) -> Optional[dict]:
    """Shared body of :func:`cosegment` and ``part_cosegment``: skip a finished set, else fit, save, release."""
    if not overwrite and set_is_done(output_dir, method):
        return None
    model = estimator(extractor, **kwargs)
    try:
        model.fit(images)
        return save(model, output_dir, mask_size=mask_size, save_intermediate=save_intermediate,
                    progress=model.progress)
    finally:
        model.close()


def list_sets(root: Union[str, Path], exclude: Sequence[Union[str, Path]] = ()) -> list[Path]:
    """Sub-folders of ``root`` (sorted), each one image set; hidden folders, the ``exclude`` folders and
    dinokit's own output folders are left out."""
    from ..runs import is_output_folder

    root = Path(root)
    if not root.is_dir():
        raise DinokitError(f"{root}: not a folder")
    skip = {Path(e).resolve() for e in exclude}
    sets = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and p.resolve() not in skip and not is_output_folder(p))
    if not sets:
        raise DinokitError(f"{root}: has no sub-folders (each sub-folder of --sets-root is one image set)")
    return sets


def run_sets(
    root: Union[str, Path],
    output_dir: Union[str, Path],
    run_one: Callable[..., Optional[dict]],
    *,
    sets_progress: bool = True,
    log: Callable[[str], None] = print,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run ``run_one(set_dir, output_dir / set_name, **kwargs)`` for every sub-folder of ``root``.

    A set that fails with a :class:`DinokitError` (no images, a single image,
    ...) is reported and skipped; the others still run. Returns, per set,
    the result, ``"skipped"`` (already done) or the error message.
    """
    from tqdm.auto import tqdm

    results: dict[str, Any] = {}
    for set_dir in tqdm(list_sets(root), desc="sets", unit="set", disable=not sets_progress):
        try:
            res = run_one(set_dir, Path(output_dir) / set_dir.name, **kwargs)
        except DinokitError as exc:
            log(f"set {set_dir.name}: skipped: {exc}")
            results[set_dir.name] = f"error: {exc}"
            continue
        if res is None:
            log(f"set {set_dir.name}: already done, skipped (use --overwrite to redo)")
            results[set_dir.name] = "skipped"
        else:
            results[set_dir.name] = res
    return results
