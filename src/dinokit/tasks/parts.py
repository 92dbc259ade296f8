"""Part co-segmentation (Amir et al. 2021): common object parts across a set of images.

Two stages, as in the paper's reference code:

1. the co-segmentation's first stage (elbow k-means over all descriptors,
   saliency votes) separates foreground from background clusters;
2. k-means with ``num_parts`` clusters on every ``sample_interval``-th
   foreground descriptor gives the parts. Every patch gets the squared
   distance to each part centre and the minimum distance to the background
   centres of stage 1; those energies, upsampled to the image, are smoothed
   with a dense CRF (Gaussian sxy 3 / compat 50, bilateral sxy 5 / srgb 13 /
   compat 15, 10 iterations) and the argmin label is the part (or background).

With ``three_stages`` the second stage uses the elbow rule (``elbow_second_stage``
0.94) instead, only the clusters present in *every* image after the CRF are
kept as object (the others are distractors), and those patches are clustered
again into ``num_parts``; background then is every stage-1 background centre
plus every non-common stage-2 centre.

``num_crop_augmentations`` adds, per image, that many random 95% crops of the
image and of its mirror image (seeded): their descriptors join the clustering
but they do not vote and get no output.

The fitted :class:`PartModel` (part and background centres) labels any image,
which is how a video gets temporally consistent parts
(:mod:`dinokit.tasks.video`). Labels are ``-1`` for background and ``0 ..
num_parts - 1`` for parts.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..blocks.kmeans import KMeans, elbow_search, squared_distances
from ..blocks.refine import crf_from_distances, upsample_energies
from ..blocks.store import l2_normalize
from ..errors import DinokitError
from ..features import Extractor
from ..io import unique_output_names
from ..settings import PartSettings
from .cosegmentation import (
    CoSegmentation,
    SetFeatures,
    checkerboard,
    elbow_lookahead,
    extract_set,
    first_stage_clustering,
    fit_and_save_set,
)

__all__ = ["PartModel", "PartCoSegmentation", "find_part_cosegmentation", "crop_flip_augmentations",
           "PART_COLORS", "part_colors", "parts_visualization", "parts_overlay", "part_legend", "with_legend",
           "label_png", "BACKGROUND",
           "part_cosegment", "save_part_cosegmentation"]

BACKGROUND = -1
# The reference's part colours (red, yellow, blue, lime, darkviolet, magenta, cyan, brown).
PART_COLORS = ((255, 0, 0), (255, 255, 0), (0, 0, 255), (0, 255, 0), (148, 0, 211), (255, 0, 255),
               (0, 255, 255), (165, 42, 42))
# Squared distance used for "background" when no background centre exists (unit vectors are at most 4 apart).
_FAR = 4.0


def part_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` part colours: the reference's eight, then the shared palette."""
    from ..blocks.draw import palette

    out = list(PART_COLORS[:n])
    if n > len(out):
        out += palette(n + len(PART_COLORS))[len(PART_COLORS):][: n - len(out)]
    return out


@dataclass
class PartModel:
    """Fitted part and background centres; :meth:`segment` labels any image's descriptors."""

    part_centroids: np.ndarray
    background_centroids: np.ndarray

    @property
    def num_parts(self) -> int:
        return int(self.part_centroids.shape[0])

    def distances(self, descriptors: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """``(rows, cols, num_parts + 1)`` squared distances to each part and to the nearest background centre."""
        x = l2_normalize(descriptors)
        d_parts = squared_distances(x, self.part_centroids)
        if len(self.background_centroids):
            d_bg = squared_distances(x, self.background_centroids).min(axis=1, keepdims=True)
        else:
            d_bg = np.full((x.shape[0], 1), _FAR, np.float32)
        return np.concatenate([d_parts, d_bg], axis=1).reshape(grid[0], grid[1], -1)

    def segment(self, rgb: np.ndarray, descriptors: np.ndarray, grid: tuple[int, int], crf: bool = True) -> np.ndarray:
        """Labels ``(H, W)`` of the image ``rgb``: parts ``0..P-1``, background ``-1``.

        ``crf=False`` skips the dense CRF (nearest patch label, upsampled).
        """
        d = self.distances(descriptors, grid)
        if crf:
            lab = crf_from_distances(rgb, d)
        else:
            lab = upsample_energies(d, rgb.shape[:2]).argmin(axis=-1)
        lab = lab.astype(np.int32)
        lab[lab == self.num_parts] = BACKGROUND
        return lab


def crop_flip_augmentations(rgb: np.ndarray, n: int, rng: np.random.Generator, name: str = "image") -> list[tuple[str, Image.Image]]:
    """The reference's augmentations: ``n`` random 95% crops of the image and ``n`` of its mirror image."""
    h, w = rgb.shape[:2]
    ch, cw = int(h * 0.95), int(w * 0.95)
    flipped = np.ascontiguousarray(rgb[:, ::-1])
    out = []
    for i in range(n):
        for tag, src in (("aug", rgb), ("flip_aug", flipped)):
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            out.append((f"{name}_{tag}_{i}", Image.fromarray(np.ascontiguousarray(src[top : top + ch, left : left + cw]))))
    return out


def _downsample_labels(labels: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(labels.astype(np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(grid), mode="nearest")[0, 0].numpy().astype(np.int32)


class PartCoSegmentation(CoSegmentation):
    """Part co-segmentation of a set of images; configure here, :meth:`fit`, then :meth:`parts`.

    Takes every :class:`~dinokit.tasks.cosegmentation.CoSegmentation` argument
    (outlier removal excepted, as in the reference) plus the reference's
    ``num_parts`` (4), ``num_crop_augmentations`` (0), ``three_stages``
    (False), ``elbow_second_stage`` (0.94), and ``crf`` (True: smooth with the
    dense CRF).

    Attributes after :meth:`fit`, besides the first stage's: ``part_model_``
    (:class:`PartModel`), ``second_stage_n_clusters_``,
    ``second_stage_objectives_``, ``common_labels_`` (three stages).
    """

    settings_class = PartSettings
    method_label = "part co-segmentation"

    # --- fitting ------------------------------------------------------------------
    def fit(self, images: Any) -> "PartCoSegmentation":
        """Extract (with augmentations), find the foreground, then the parts."""
        sources = self._prepare(images)
        ex = self._extractor()
        t0 = time.perf_counter()
        names = None
        aug_flags = [False] * len(sources)
        if self.num_crop_augmentations:
            names = unique_output_names(sources)
            rng = np.random.default_rng(self.seed)
            extra = []
            for src, name in zip(sources, names):
                extra += crop_flip_augmentations(ex.load(src).rgb, self.num_crop_augmentations, rng, name)
            sources = list(sources) + [im for _, im in extra]
            names = names + [n for n, _ in extra]
            aug_flags += [True] * len(extra)
        feats = extract_set(ex, sources, layer=self.layer, facet=self.facet, bin=self.bin,
                            low_res_saliency_maps=self.low_res_saliency_maps, store=self._new_store(len(sources)),
                            names=names, augmentation=aug_flags, progress=self.progress)
        return self.fit_features(feats, {"features": time.perf_counter() - t0})

    def fit_features(self, feats: SetFeatures, timings: Optional[dict] = None) -> "PartCoSegmentation":
        """Find the foreground and the parts from already extracted features."""
        self.timings_ = dict(timings or {})
        self.features_ = feats
        self.items_ = feats.items
        n = len(feats)
        self.inliers_, self.cls_similarity_ = np.ones(n, bool), None
        stage = first_stage_clustering(feats, self.settings, kmeans_kwargs=self._kmeans_kwargs(),
                                       progress=self.progress)
        self._set_stage(stage)
        self.timings_.update(stage.timings)
        t1 = time.perf_counter()
        self._fit_parts()
        self.timings_["parts"] = time.perf_counter() - t1
        return self

    def _sample(self, masks: Sequence[np.ndarray], what: str, needed: int) -> np.ndarray:
        sample = self.features_.store.sample(self.sample_interval, masks=masks)
        if sample.shape[0] < needed:
            raise DinokitError(
                f"only {sample.shape[0]} {what} descriptors sampled, fewer than the {needed} clusters asked for "
                f"(lower sample_interval, thresh or votes_percentage, or num_parts)")
        return sample

    def _fit_parts(self) -> None:
        store = self.features_.store
        kw = self._kmeans_kwargs()
        fg = [np.isin(lab, self.salient_labels_).reshape(-1) for lab in self.labels_]
        if not self.salient_labels_.size:
            raise DinokitError(
                f"no foreground found: no cluster got votes from {self.votes_percentage:g}% of the images "
                f"(lower thresh={self.thresh} or votes_percentage)")
        bg1 = self.kmeans_.cluster_centers_[self.stage_.background_labels]
        if self.three_stages:
            sample = self._sample(fg, "foreground", 1)
            res = elbow_search(sample, store.subset(fg), self.elbow_second_stage, range(1, self.max_clusters + 1),
                               lookahead=elbow_lookahead(store), progress=self.progress, **kw)
            second = res.model
            self.second_stage_objectives_ = res.objectives
        else:
            sample = self._sample(fg, "foreground", self.num_parts)
            second = KMeans(self.num_parts, **kw).fit(sample)
            self.second_stage_objectives_ = None
        self.second_stage_kmeans_ = second
        self.second_stage_n_clusters_ = second.n_clusters
        model = PartModel(second.cluster_centers_, bg1)
        self.common_labels_ = None
        if self.three_stages:
            smoothed = []
            for i, it in enumerate(self.items_):
                lab = model.segment(self.image(i), store.get(i), it.grid, crf=self.crf)
                smoothed.append(_downsample_labels(lab, it.grid).reshape(-1))
            votes = np.zeros(second.n_clusters, np.int64)
            originals = [i for i, it in enumerate(self.items_) if not it.augmentation]
            for i in originals:
                present = np.unique(smoothed[i][smoothed[i] >= 0])
                votes[present] += 1
            common = np.flatnonzero(votes == len(originals))
            self.second_stage_votes_ = votes
            self.common_labels_ = common
            if not common.size:
                raise DinokitError("three_stages: no second-stage cluster appears in every image; "
                                   "run with two stages or a higher elbow_second_stage")
            masks = [np.isin(s, common) for s in smoothed]
            sample = self._sample(masks, "common-part", self.num_parts)
            third = KMeans(self.num_parts, **kw).fit(sample)
            non_common = np.setdiff1d(np.arange(second.n_clusters), common)
            bg = np.concatenate([bg1, second.cluster_centers_[non_common]], axis=0)
            model = PartModel(third.cluster_centers_, bg)
            self.third_stage_kmeans_ = third
        self.part_model_ = model

    # --- results -----------------------------------------------------------------------
    def parts(self, index: int) -> np.ndarray:
        """Part labels ``(H, W)`` of image ``index`` at the load size (``-1`` background)."""
        self._check_fitted()
        it = self.items_[index]
        t0 = time.perf_counter()
        lab = self.part_model_.segment(self.image(index), self.features_.store.get(index), it.grid, crf=self.crf)
        self.timings_["crf"] = self.timings_.get("crf", 0.0) + time.perf_counter() - t0
        return lab

    def iter_parts(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, labels)`` for every original image (augmentations skipped), one at a time."""
        for i, it in enumerate(self.items_):
            if not it.augmentation:
                yield i, self.parts(i)

    def predict(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """Part labels of a new image with the fitted parts: ``(labels (H, W), resized RGB)``."""
        self._check_fitted()
        ex = self._extractor()
        loaded = ex.load(image)
        feats = ex.extract(loaded, self.layer, self.facet, bin=self.bin)
        return self.part_model_.segment(loaded.rgb, feats.get()[0].cpu().numpy(), feats.grid, crf=self.crf), loaded.rgb

    def summary(self) -> dict:
        s = super().summary()
        s.update(method="part_cosegmentation", num_parts=self.part_model_.num_parts,
                 second_stage_n_clusters=self.second_stage_n_clusters_,
                 second_stage_objectives=self.second_stage_objectives_,
                 common_labels=None if self.common_labels_ is None else self.common_labels_.tolist(),
                 n_augmentations=int(sum(it.augmentation for it in self.items_)))
        for k in ("outliers", "cls_similarity"):
            s.pop(k, None)
        return s


def find_part_cosegmentation(images: Any, extractor: Union[Extractor, str, Path, None] = None, **kwargs: Any) -> list[np.ndarray]:
    """Part labels (load size, ``-1`` background) of every image of a set; ``kwargs`` as :class:`PartCoSegmentation`."""
    model = PartCoSegmentation(extractor, **kwargs).fit(images)
    try:
        return [lab for _, lab in model.iter_parts()]
    finally:
        model.close()


# --- drawing -------------------------------------------------------------------------
def parts_visualization(rgb: np.ndarray, labels: np.ndarray, num_parts: int, alpha: float = 0.5) -> np.ndarray:
    """Parts coloured over the image (``alpha``), background over the reference's checkerboard."""
    colors = np.array(part_colors(max(num_parts, 1)), dtype=np.float32)
    out = checkerboard(*rgb.shape[:2])
    fg = labels >= 0
    mixed = rgb[fg].astype(np.float32) * (1 - alpha) + colors[labels[fg]] * alpha
    out[fg] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return out


def part_legend(width: int, num_parts: int) -> np.ndarray:
    """A white strip ``width`` pixels wide with a swatch per part and its value in the label PNG (part + 1),
    wrapped over as many rows as needed."""
    import cv2

    colors = part_colors(max(num_parts, 1))
    scale = float(np.clip(width / 700.0, 0.5, 0.7))
    (_, th), base = cv2.getTextSize("0", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    box, gap, pad = th + base, 10, 4
    entries = [("0 = background", None)] + [(f"{j + 1}", colors[j]) for j in range(num_parts)]
    widths = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] + (box + 4 if c is not None else 0)
              for t, c in entries]
    rows, x = [[]], pad
    for (t, c), w in zip(entries, widths):
        if rows[-1] and x + w > width - pad:
            rows.append([])
            x = pad
        rows[-1].append((t, c, x))
        x += w + gap
    row_h = box + 2 * pad
    strip = np.full((row_h * len(rows), width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        y0 = r * row_h + pad
        for t, c, x0 in row:
            if c is not None:
                cv2.rectangle(strip, (x0, y0), (x0 + box - 1, y0 + box - 1), tuple(int(v) for v in c), -1)
                cv2.rectangle(strip, (x0, y0), (x0 + box - 1, y0 + box - 1), (60, 60, 60), 1)
                x0 += box + 4
            cv2.putText(strip, t, (x0, y0 + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (40, 40, 40), 1, cv2.LINE_AA)
    return strip


_shared_legend = functools.lru_cache(maxsize=8)(part_legend)  # one legend per width for all frames of a video


def with_legend(image: np.ndarray, num_parts: int) -> np.ndarray:
    """``image`` with :func:`part_legend` below it."""
    return np.concatenate([image, _shared_legend(int(image.shape[1]), int(num_parts))], axis=0)


def parts_overlay(rgb: np.ndarray, labels: np.ndarray, num_parts: int, alpha: float = 0.5) -> np.ndarray:
    """Parts coloured over the image, background left as is (for videos)."""
    colors = np.array(part_colors(max(num_parts, 1)), dtype=np.float32)
    out = rgb.copy()
    fg = labels >= 0
    out[fg] = np.clip(np.rint(rgb[fg].astype(np.float32) * (1 - alpha) + colors[labels[fg]] * alpha), 0, 255).astype(np.uint8)
    return out


def label_png(labels: np.ndarray, num_parts: int, size: Optional[tuple[int, int]] = None) -> Image.Image:
    """A palette PNG image whose pixel values are ``label + 1`` (0 = background), coloured like the parts."""
    values = np.ascontiguousarray((np.asarray(labels) + 1).astype(np.uint8))
    img = Image.frombytes("P", (values.shape[1], values.shape[0]), values.tobytes())
    pal = [0, 0, 0]
    for c in part_colors(max(num_parts, 1)):
        pal += list(c)
    img.putpalette(pal + [0] * (768 - len(pal)))
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), Image.NEAREST)
    return img


# --- writing results ---------------------------------------------------------------------
def save_part_cosegmentation(
    model: PartCoSegmentation,
    output_dir: Union[str, Path],
    *,
    mask_size: str = "original",
    save_intermediate: bool = False,
    progress: bool = True,
) -> dict:
    """Write ``<name>_parts.png`` (palette PNG, value = part + 1, 0 = background) and ``<name>_vis.png``
    (parts over the image, background over a checkerboard, a legend of the values below) per original
    image, saliency and clustering maps with ``save_intermediate``, ``done.json`` last."""
    from tqdm.auto import tqdm

    from ..io import save_image, save_json
    from .cosegmentation import DONE_FILE, mask_output_size, label_map_image, resize_labels, saliency_image

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_parts = model.part_model_.num_parts
    originals = [i for i, it in enumerate(model.items_) if not it.augmentation]
    for i in tqdm(originals, desc="parts", unit="img", disable=not progress):
        it = model.items_[i]
        labels = model.parts(i)
        save_image(out / f"{it.name}_parts.png", label_png(labels, n_parts, mask_output_size(it, mask_size)))
        rgb = model.display_image(i)
        vis = parts_visualization(rgb, resize_labels(labels, rgb.shape[:2]), n_parts)
        save_image(out / f"{it.name}_vis.png", with_legend(vis, n_parts))
        if save_intermediate:
            save_image(out / f"{it.name}_saliency.png", saliency_image(model.saliency_[i], it.grid, it.size))
            save_image(out / f"{it.name}_clustering.png", label_map_image(model.labels_[i], model.n_clusters_, it.size))
    info = model.summary()
    info["mask_size"] = mask_size
    save_json(out / DONE_FILE, info)
    return info


def part_cosegment(
    images: Any,
    output_dir: Union[str, Path],
    extractor: Union[Extractor, str, Path, None] = None,
    *,
    overwrite: bool = False,
    mask_size: str = "original",
    save_intermediate: bool = False,
    **kwargs: Any,
) -> Optional[dict]:
    """Part co-segment one set into ``output_dir``; ``None`` when it was already finished."""
    return fit_and_save_set(PartCoSegmentation, save_part_cosegmentation, "part_cosegmentation", images, output_dir,
                            extractor, overwrite=overwrite, mask_size=mask_size, save_intermediate=save_intermediate,
                            **kwargs)
