"""The inspector's state: the images, the descriptors per setting, and the answers the page asks for.

An :class:`InspectorSession` holds the images given on the command line
(loaded once), an extractor, and one :class:`DescriptorView` per descriptor
setting (layer, facet, binning, stride) in a small LRU cache. The current
view answers point queries (similarity heat maps through
:class:`~dinokit.tasks.similarity.SimilarityIndex`), saliency, PCA and
correspondences. New settings are computed by one background thread while
the current view keeps answering; :meth:`InspectorSession.status` reports the
progress. All public methods are thread-safe.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..blocks.draw import COLORMAPS, palette
from ..errors import DinokitError
from ..features.extractor import resolve_stride
from ..settings import CorrespondenceSettings, InspectorSettings
from ..features import FACETS, Extractor, GridGeometry, ImageDescriptors, LoadedImage, open_image
from ..features.binned_similarity import LogBinned
from ..tasks.similarity import SimilarityIndex
from .render import data_url, display_jpeg, encode_png, heatmap_jpeg, heatmap_png

__all__ = ["ViewSettings", "DescriptorView", "InspectorImage", "InspectorSession", "NotReady", "SCALES"]

SCALES = ("image", "joint")  # heat-map colour range: per image (the reference's imshow) or shared by all images
DEFAULT_MAX_PATCHES = 16384  # per image; bounds memory and time of one setting (stride 4 at 512 px is ~15k)


class NotReady(DinokitError):
    """No descriptors yet: the first setting is still being computed (or failed)."""


@dataclass(frozen=True)
class ViewSettings:
    """Which descriptors a view holds: block ``layer`` (0-based), ``facet``, log-binning, patch ``stride``."""

    layer: int
    facet: str
    bin: bool
    stride: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InspectorImage:
    """One image given on the command line: its preprocessed input and a JPEG for display."""

    name: str
    path: Optional[Path]
    loaded: LoadedImage
    display: bytes
    display_size: tuple[int, int]  # (w, h) of the JPEG

    @property
    def original_size(self) -> tuple[int, int]:
        """``(height, width)`` of the image file."""
        return self.loaded.original_size

    @property
    def resized_size(self) -> tuple[int, int]:
        """``(height, width)`` of the model input."""
        return self.loaded.size


@dataclass
class DescriptorView:
    """Descriptors of every image for one :class:`ViewSettings`.

    ``index`` holds the L2-normalised descriptors (one matrix for all images),
    or the implicit log-binned ones; ``norms[i]`` the original row norms, so
    the raw descriptors the PCA task expects are ``index.descriptors(i) * norms[i]``
    (:meth:`raw_descriptors`);
    ``saliency[i]`` is image ``i``'s ``(T,)`` CLS-attention saliency.
    """

    settings: ViewSettings
    index: SimilarityIndex
    norms: list[Tensor]
    saliency: list[Tensor]
    id: int
    seconds: float
    cache: dict = field(default_factory=dict)

    @property
    def geometries(self) -> list[GridGeometry]:
        return self.index.geometries

    def raw_descriptors(self, image: int) -> Tensor:
        """Image ``image``'s ``(T, D)`` descriptors as extracted (un-normalised; explicit when log-binned)."""
        if self.index.binned is not None:
            return self.index.binned[image].dense()
        return self.index.descriptors(image) * self.norms[image][:, None]

    def describe(self, image: int) -> ImageDescriptors:
        """Image ``image``'s record as the tasks take it (raw descriptors, saliency, geometry, binning)."""
        if self.index.binned is not None:
            binned = self.index.binned[image]
            return ImageDescriptors(binned.maps[0],  # level 0 of the binning is the raw descriptors
                                    self.saliency[image], self.geometries[image], None, binned)
        return ImageDescriptors(self.raw_descriptors(image), self.saliency[image], self.geometries[image])


class _Cancelled(Exception):
    pass


def _hex(color: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in color)


class InspectorSession:
    """The images, descriptors and answers behind the inspector page.

    Args:
        images: image files (the only images the server will ever show).
        extractor: an :class:`Extractor` (its model, device, dtype and load
            size are used; its stride is the default stride).
        layer, facet, bin, stride: the first descriptor setting (the
            reference similarity inspector's: layer 11 keys, no binning).
        cache_size: descriptor settings kept in memory (the current one included).
        max_patches: largest descriptor grid allowed per image (a stride that
            would exceed it is refused).
        display_size: longest side of the JPEGs sent to the page.

    Nothing is computed in ``__init__``; call :meth:`compute` (blocking) or
    :meth:`request` (background thread).
    """

    def __init__(
        self,
        images: Sequence[Union[str, Path]],
        extractor: Extractor,
        settings: Optional[InspectorSettings] = None,
        *,
        cache_size: int = 3,
        max_patches: int = DEFAULT_MAX_PATCHES,
        display_size: int = 768,
        **overrides: Any,
    ) -> None:
        st = InspectorSettings.resolve(settings, **overrides)
        if "stride" not in st.explicit(settings, overrides):
            st = st.replace(stride=extractor.stride)  # the extractor's own stride, as for every task
        if not images:
            raise DinokitError("give at least one image to inspect")
        if cache_size < 1:
            raise DinokitError(f"cache_size must be at least 1, got {cache_size}")
        if max_patches < 1:
            raise DinokitError(f"max_patches must be positive, got {max_patches}")
        self.extractor = extractor
        self.cache_size = int(cache_size)
        self.max_patches = int(max_patches)
        self.images: list[InspectorImage] = []
        for p in images:
            path = Path(p)
            pil = open_image(path)
            loaded = extractor.load(path)
            jpeg, size = display_jpeg(pil, display_size)
            self.images.append(InspectorImage(path.name, path, loaded, jpeg, size))
        self.initial = self.validate(layer=st.layer, facet=st.facet, bin=st.bin,
                                     stride=resolve_stride(st.stride, extractor.patch_size))
        self._extractors: dict[int, Extractor] = {extractor.stride: extractor}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._views: OrderedDict[ViewSettings, DescriptorView] = OrderedDict()
        self._current: Optional[ViewSettings] = None
        self._target: Optional[ViewSettings] = None
        self._computing: Optional[ViewSettings] = None
        self._progress = (0, 0)
        self._started = 0.0
        self._error: Optional[str] = None
        self._worker: Optional[threading.Thread] = None
        self._closed = False
        self._next_id = 1

    # --- settings ---------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self.extractor.depth

    @property
    def patch_size(self) -> int:
        return self.extractor.patch_size

    def strides(self) -> list[int]:
        """Strides allowed for these images: divisors of the patch size within ``max_patches``."""
        p = self.patch_size
        return [s for s in range(1, p + 1) if p % s == 0 and self._max_grid(s) <= self.max_patches]

    def _max_grid(self, stride: int) -> int:
        p = self.patch_size
        sizes = [im.resized_size for im in self.images]
        return max(((h - p) // stride + 1) * ((w - p) // stride + 1) for h, w in sizes)

    def validate(self, *, layer: Any, facet: Any, bin: Any, stride: Any) -> ViewSettings:
        """Check a descriptor setting; raise :class:`DinokitError` naming the bad value."""
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise DinokitError(f"layer must be an integer, got {layer!r}")
        if not -self.depth <= int(layer) < self.depth:
            raise DinokitError(f"layer {layer} does not exist: the model has {self.depth} blocks (0..{self.depth - 1})")
        if facet not in FACETS:
            raise DinokitError(f"unknown facet {facet!r}; choose from {', '.join(FACETS)}")
        if not isinstance(bin, (bool, np.bool_)):
            raise DinokitError(f"bin must be true or false, got {bin!r}")
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)):
            raise DinokitError(f"stride must be an integer, got {stride!r}")
        resolve_stride(int(stride), self.patch_size)
        n = self._max_grid(int(stride))
        if n > self.max_patches:
            raise DinokitError(f"stride {stride} gives {n} patches for the largest image; at most {self.max_patches} "
                               f"are allowed (use a larger stride)")
        return ViewSettings(int(layer) % self.depth, str(facet), bool(bin), int(stride))

    def _extractor(self, stride: int) -> Extractor:
        if stride not in self._extractors:
            self._extractors[stride] = self.extractor.derive(stride=stride)
        return self._extractors[stride]

    # --- computing descriptors ----------------------------------------------------
    @torch.no_grad()
    def _compute(self, s: ViewSettings, on_image: Callable[[int], None]) -> DescriptorView:
        t0 = time.perf_counter()
        ex = self._extractor(s.stride)
        descs, norms, sal, geoms = [], [], [], []
        for i, im in enumerate(self.images):
            f = ex.extract(im.loaded, s.layer, s.facet, bin=False, saliency=True)
            d = f.get()[0]
            if s.bin:  # held implicitly: 17x less memory and faster queries (binned_similarity)
                d = LogBinned(d, f.geometry[0].grid)
                norms.append(d.norms().clamp_min(1e-12))
            else:
                norms.append(d.norm(dim=-1).clamp_min(1e-12))
            descs.append(d)
            sal.append(f.saliency[0])
            geoms.append(f.geometry[0])
            on_image(i + 1)
        index = SimilarityIndex(descs, geoms)
        del descs
        with self._lock:
            view_id = self._next_id
            self._next_id += 1
        return DescriptorView(s, index, norms, sal, view_id, time.perf_counter() - t0)

    def _store(self, view: DescriptorView, make_current: bool) -> None:
        """Cache ``view`` (caller holds the lock), evicting the least recently used other settings."""
        self._views[view.settings] = view
        self._views.move_to_end(view.settings)
        if make_current:
            self._current = view.settings
        keep = {view.settings, self._current}
        for old in [k for k in self._views if k not in keep][: max(0, len(self._views) - self.cache_size)]:
            del self._views[old]

    def compute(self, settings: Optional[ViewSettings] = None, progress: bool = False) -> DescriptorView:
        """Compute ``settings`` (default: the initial ones) in this thread and make them current."""
        from tqdm.auto import tqdm

        s = settings or self.initial
        with self._lock:
            if s in self._views:
                self._current = s
                self._changed.notify_all()
                return self._views[s]
        with tqdm(total=len(self.images), desc="descriptors", unit="img", disable=not progress) as bar:
            view = self._compute(s, lambda n: bar.update(1))
        with self._lock:
            self._store(view, make_current=True)
            self._error = None
            self._changed.notify_all()
        return view

    def request(self, settings: ViewSettings) -> dict[str, Any]:
        """Make ``settings`` current: at once when cached, else computed by the background thread.

        A later request replaces a pending one (the computation in progress
        stops after its current image). Returns :meth:`status`.
        """
        with self._lock:
            if self._closed:
                raise DinokitError("the inspector session is closed")
            if settings in self._views:
                self._current = settings
                self._views.move_to_end(settings)
                self._target = None
                self._error = None
            elif settings != self._target:
                self._target = settings
                self._started = time.perf_counter()
                self._error = None
                if self._worker is None:
                    self._worker = threading.Thread(target=self._work, name="dinokit-inspect-compute", daemon=True)
                    self._worker.start()
            self._changed.notify_all()
            return self.status()

    def _work(self) -> None:
        while True:
            with self._lock:
                s = self._target
                if s is None or self._closed:
                    self._worker = None
                    self._computing = None
                    self._changed.notify_all()
                    return
                self._computing = s
                self._progress = (0, len(self.images))
                self._changed.notify_all()

            def on_image(done: int, s: ViewSettings = s) -> None:
                with self._lock:
                    self._progress = (done, len(self.images))
                    self._changed.notify_all()
                    if self._target != s or self._closed:
                        raise _Cancelled

            try:
                view = self._compute(s, on_image)
            except _Cancelled:
                continue
            except Exception as exc:  # reported to the page, the server keeps running
                with self._lock:
                    if self._target == s:
                        self._target = None
                        what = f"layer {s.layer} {s.facet} (bin={s.bin}, stride {s.stride})"
                        self._error = f"computing {what} failed: {exc}"
                    self._computing = None
                    self._changed.notify_all()
                continue
            with self._lock:
                current = self._target == s
                self._store(view, make_current=current)
                self._computing = None
                if current:
                    self._target = None
                self._changed.notify_all()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until no computation is pending; ``False`` on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._target is not None or self._computing is not None:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def status(self) -> dict[str, Any]:
        """JSON-ready state: ``ready`` / ``computing`` / ``error`` / ``empty``, settings, progress."""
        with self._lock:
            busy = self._target is not None
            state = "computing" if busy else ("error" if self._error else ("ready" if self._current else "empty"))
            cur = self._views.get(self._current) if self._current is not None else None
            n = len(self.images)
            done, total = self._progress if busy and self._computing == self._target else (n if cur else 0, n)
            return {
                "state": state,
                "ready": cur is not None,
                "version": cur.id if cur else 0,
                "settings": cur.settings.to_dict() if cur else None,
                "seconds": round(cur.seconds, 3) if cur else None,
                "target": self._target.to_dict() if self._target else None,
                "progress": {"done": done, "total": total},
                "elapsed": round(time.perf_counter() - self._started, 2) if busy else None,
                "error": self._error,
                "cached": [v.to_dict() for v in self._views],
            }

    def view(self) -> DescriptorView:
        """The current :class:`DescriptorView` (raises :class:`NotReady` before the first one exists)."""
        with self._lock:
            if self._current is None:
                raise NotReady(self._error or "descriptors are still being computed")
            return self._views[self._current]

    def close(self, timeout: Optional[float] = 30.0) -> None:
        """Stop the background computation and drop the descriptors.

        The computation stops after its current image; ``timeout`` bounds the
        wait for it (the thread is a daemon and never keeps the process alive).
        """
        with self._lock:
            self._closed = True
            self._target = None
            worker = self._worker
            self._changed.notify_all()
        if worker is not None:
            worker.join(timeout=timeout)
        with self._lock:
            self._views.clear()
            self._current = None

    # --- answers -----------------------------------------------------------------
    def _check_image(self, image: int) -> InspectorImage:
        if not 0 <= image < len(self.images):
            n = len(self.images)
            raise DinokitError(f"image {image} does not exist: {n} image(s) are open (0..{n - 1})")
        return self.images[image]

    @staticmethod
    def _check_cmap(cmap: str) -> None:
        if cmap not in COLORMAPS:
            raise DinokitError(f"unknown colormap {cmap!r}; choose from {', '.join(COLORMAPS)}")

    def query(
        self, image: int, x: float, y: float, *, cmap: str = "jet", scale: str = "image", scores: bool = False
    ) -> dict[str, Any]:
        """Heat maps of the descriptor at ``(x, y)`` (original pixels of ``image``) over every image.

        Each map is the cosine similarity on the descriptor grid, upsampled to
        the resized image (values at patch centres), coloured with ``cmap``
        over its own range (``scale="image"``) or the range of all maps
        (``"joint"``), as a JPEG data URL; with its best match in original
        pixels, and with ``scores`` the ``(rows, cols)`` grid values too.
        """
        t0 = time.perf_counter()
        im = self._check_image(image)
        self._check_cmap(cmap)
        if scale not in SCALES:
            raise DinokitError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
        h, w = im.original_size
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x <= w and 0 <= y <= h):
            raise DinokitError(f"point ({x:g}, {y:g}) lies outside image {image} ({w}x{h} pixels)")
        view = self.view()
        idx = view.index.point_index(image, (x, y))
        maps = view.index.query_index(image, idx)
        t1 = time.perf_counter()
        ups = [view.geometries[i].upsample(m.scores, "resized") for i, m in enumerate(maps)]
        if scale == "joint":
            lo, hi = min(float(m.scores.min()) for m in maps), max(float(m.scores.max()) for m in maps)
            ranges = [(lo, hi)] * len(maps)
        else:
            ranges = [(float(m.scores.min()), float(m.scores.max())) for m in maps]
        out = []
        for i, (m, u, (lo, hi)) in enumerate(zip(maps, ups, ranges)):
            out.append({
                "image": i,
                "best_xy": [float(v) for v in m.best_xy],
                "best_score": float(m.best_score),
                "grid": list(m.geometry.grid),
                "size": [int(u.shape[0]), int(u.shape[1])],
                "vmin": lo,
                "vmax": hi,
                "heatmap": data_url(heatmap_jpeg(u, cmap, lo, hi), "image/jpeg"),
            })
            if scores:
                out[-1]["scores"] = np.round(m.scores.astype(np.float64), 5).tolist()
        t2 = time.perf_counter()
        g = view.geometries[image]
        return {
            "version": view.id,
            "settings": view.settings.to_dict(),
            "query": {"image": image, "xy": [float(x), float(y)], "patch_index": idx,
                      "patch_xy": [float(v) for v in g.index_to_xy(idx, original=True)]},
            "maps": out,
            "timing_ms": {"similarity": round((t1 - t0) * 1e3, 3), "render": round((t2 - t1) * 1e3, 3)},
        }

    def _cached(self, view: DescriptorView, key: tuple, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in view.cache:
                return view.cache[key]
        value = make()
        with self._lock:
            if len(view.cache) > 64:
                view.cache.clear()
            view.cache[key] = value
        return value

    def saliency(self, *, cmap: str = "jet") -> dict[str, Any]:
        """Every image's CLS-attention saliency (last block, min-max scaled to [0, 1]) as coloured PNGs."""
        self._check_cmap(cmap)
        view = self.view()

        def make() -> dict[str, Any]:
            maps = []
            for i, (s, g) in enumerate(zip(view.saliency, view.geometries)):
                up = view.geometries[i].upsample(s, "resized")
                maps.append({"image": i, "grid": list(g.grid), "size": list(up.shape),
                             "heatmap": data_url(heatmap_png(up, cmap, 0.0, 1.0))})
            return {"version": view.id, "settings": view.settings.to_dict(), "maps": maps}

        return self._cached(view, ("saliency", cmap), make)

    def pca(self, *, components: int = 4, show: Optional[str] = None) -> dict[str, Any]:
        """Joint PCA of all images' descriptors (the pca task): the last three components as RGB, or one.

        ``show`` is ``"rgb"`` or a component number ``"1"`` .. ``str(components)`` (default: the RGB, or
        the first component with fewer than 3).
        """
        from ..tasks.pca import component_images, pca_descriptors

        if isinstance(components, bool) or not isinstance(components, int) or not 1 <= components <= 16:
            raise DinokitError(f"components must be between 1 and 16, got {components!r}")
        choices = ["rgb"] + [str(k) for k in range(1, components + 1)]
        show = show if show is not None else ("rgb" if components >= 3 else "1")
        if show not in choices:
            raise DinokitError(f"show must be one of {', '.join(choices)}, got {show!r}")
        if show == "rgb" and components < 3:
            raise DinokitError("an RGB view needs at least 3 components")
        view = self.view()

        def fit() -> list:
            descs = [view.raw_descriptors(i) for i in range(view.index.num_images)]
            return pca_descriptors(descs, view.geometries, components, joint=True)

        def make() -> dict[str, Any]:
            results = self._cached(view, ("pca-fit", components), fit)
            maps = []
            for i, r in enumerate(results):
                grays, rgb = component_images(r, to="resized", mode="nearest")
                pic = rgb if show == "rgb" else grays[int(show) - 1]
                maps.append({"image": i, "grid": list(r.geometry.grid), "size": list(pic.shape[:2]),
                             "picture": data_url(encode_png(pic))})
            ratio = [float(v) for v in results[0].explained_variance_ratio]
            return {"version": view.id, "settings": view.settings.to_dict(), "components": components, "show": show,
                    "explained_variance_ratio": ratio, "maps": maps}

        return self._cached(view, ("pca", components, show), make)

    def correspondences(self, a: int = 0, b: int = 1, *, num_pairs: Optional[int] = None,
                        thresh: Optional[float] = None) -> dict[str, Any]:
        """Correspondences between images ``a`` and ``b`` by the correspondences task, on the current descriptors.

        Best buddies on the foreground (saliency > ``thresh``), k-means to
        ``num_pairs`` (Amir et al. 2021); points in original pixels, one colour per pair.
        """
        from ..tasks.correspondences import select_correspondences

        self._check_image(a)
        self._check_image(b)
        if a == b:
            raise DinokitError("correspondences need two different images")
        paper = CorrespondenceSettings()
        num_pairs = paper.num_pairs if num_pairs is None else num_pairs
        thresh = paper.thresh if thresh is None else thresh
        if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or not 1 <= num_pairs <= 100:
            raise DinokitError(f"num_pairs must be between 1 and 100, got {num_pairs!r}")
        if not (np.isfinite(thresh) and 0.0 <= thresh < 1.0):
            raise DinokitError(f"the saliency threshold must be in [0, 1), got {thresh}")
        view = self.view()

        def make() -> dict[str, Any]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an empty result is reported in the answer
                da, db = view.describe(a), view.describe(b)
                res = select_correspondences(da.matching, db.matching, da.saliency, db.saliency, da.geometry,
                                             db.geometry, num_pairs=num_pairs, thresh=thresh, seed=paper.seed)
            colors = palette(len(res))
            pairs = [{"a": [float(v) for v in res.points_a[k]], "b": [float(v) for v in res.points_b[k]],
                      "similarity": float(res.similarity[k]), "color": _hex(colors[k])} for k in range(len(res))]
            return {"version": view.id, "settings": view.settings.to_dict(), "a": a, "b": b, "num_pairs": num_pairs,
                    "thresh": thresh, "num_best_buddies": res.num_best_buddies, "pairs": pairs}

        return self._cached(view, ("corr", a, b, num_pairs, float(thresh)), make)

    def info(self) -> dict[str, Any]:
        """What the page needs to lay itself out: images, sizes, allowed settings."""
        ex = self.extractor
        spec = getattr(ex.model, "spec", None)
        return {
            "images": [{"index": i, "name": im.name, "width": im.original_size[1], "height": im.original_size[0],
                        "resized": [im.resized_size[1], im.resized_size[0]], "url": f"/api/image/{i}"}
                       for i, im in enumerate(self.images)],
            "model": {"name": getattr(spec, "name", None), "patch_size": self.patch_size, "depth": self.depth,
                      "heads": ex.num_heads, "device": str(ex.device), "load_size": ex.load_size},
            "choices": {"layers": list(range(self.depth)), "facets": list(FACETS), "strides": self.strides(),
                        "colormaps": list(COLORMAPS), "scales": list(SCALES)},
            "initial": self.initial.to_dict(),
        }
