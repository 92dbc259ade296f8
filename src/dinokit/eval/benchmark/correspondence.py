"""Semantic-correspondence benchmark: PCK of dense point matching (Amir et al. 2021, Sec. 4.2).

Protocol: for every annotated source keypoint of a pair, the descriptor of
the patch whose centre is nearest to it is compared with every patch of the
target (cosine similarity); the best target patch's centre, in original
pixels, is the prediction. A prediction is correct when it lies within
``alpha * L`` of the true target keypoint, ``L`` the longer side of the
target's bounding box (PF-WILLOW: the keypoints' box; SPair-71k and CUB: the
annotated box) or of the target image (PF-PASCAL's usual convention).
PCK is averaged per pair, then over pairs (per keypoint in the JSON too).

The method's settings are the paper's correspondence settings
(:class:`~dinokit.settings.CorrespondenceSettings`, unchanged: see
``PROTOCOL_SETTINGS``); the stride ``auto`` is half the patch size. Baselines: ``identity`` (the
keypoint at the same relative position in the target) and ``rgb-patches``
(raw pixel patches on the same grid, matched by normalised cross-correlation).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from ...errors import DinokitError
from ...settings import CorrespondenceSettings
from ..datasets import CorrespondencePair, image_size
from ..datasets.registry import MatchingSettings, benchmark
from ..metrics import DEFAULT_ALPHAS, PCKAccumulator, pck
from .base import Benchmark, spread, take_options
from .descriptor_cache import ImageDescriptorCache
from .report import BenchmarkResult, Column, plural
from .run_folder import RunFolder



class CorrespondenceBenchmark(Benchmark):
    """PCK of dense matching on PF-WILLOW, SPair-71k, PF-PASCAL or CUB (see the module docstring).

    Args (besides :class:`~dinokit.eval.benchmark.base.Benchmark`'s):
        settings: :class:`~dinokit.settings.CorrespondenceSettings` (load_size, stride, layer, facet,
            bin, saliency_heads, thresh; the drawing and k-means fields do not apply); keyword overrides
            such as ``layer=11`` change single fields.
        split: SPair/PF-PASCAL/CUB split (``test``).
        matching: :class:`~dinokit.eval.datasets.registry.MatchingSettings`; keyword overrides
            foreground (match into target patches with saliency above the settings' ``thresh``),
            refine, window, temperature (sub-patch soft-argmax) and cache_dtype (precision of the
            cached descriptors) change single fields.
        alphas: PCK thresholds (0.05, 0.1, 0.15); pck_by: ``bbox`` or ``image`` (the registry's dataset default).
        categories: keep only these categories; max_pairs: at most this many pairs,
            spread evenly over the categories (the first pairs of each).
        max_images_per_category: keep only the pairs between the first N images of each category
            (for PF-WILLOW all N (N - 1) ordered pairs): a subset that passes few images through the model.
        max_pairs_per_category, pairs_file, seed: CUB pair selection (CUB has no official list).
    """

    kind = "correspondence"
    BASELINES = benchmark(kind).baselines
    PROTOCOL_SETTINGS = CorrespondenceSettings()  # Sec. 4.2 is the task's own protocol: no departure

    def __init__(
        self,
        root: Union[str, os.PathLike],
        output_dir: Union[str, os.PathLike],
        dataset: str = "pf-willow",
        settings: Optional[CorrespondenceSettings] = None,
        *,
        split: str = "test",
        matching: Optional[MatchingSettings] = None,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        pck_by: Optional[str] = None,
        categories: Optional[Sequence[str]] = None,
        max_pairs: Optional[int] = None,
        max_images_per_category: Optional[int] = None,
        max_pairs_per_category: Optional[int] = None,
        pairs_file: Optional[Union[str, os.PathLike]] = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        self.matching = m = take_options(MatchingSettings, matching, kwargs)
        super().__init__(root, output_dir, dataset=dataset, settings=settings, **kwargs)
        self.split = split
        self.foreground, self.refine, self.window, self.temperature = m.foreground, m.refine, m.window, m.temperature
        self.cache_dtype = m.cache_dtype
        self.alphas = tuple(float(a) for a in alphas)
        if not self.alphas or any(not 0 < a for a in self.alphas):
            raise DinokitError(f"PCK alphas must be positive, got {list(alphas)}")
        self.pck_by = pck_by or self.entry.pck_by
        if self.pck_by not in ("bbox", "image"):
            raise DinokitError(f"pck_by must be 'bbox' or 'image', got {self.pck_by!r}")
        self.categories = None if categories is None else list(categories)
        if max_pairs is not None and max_pairs < 1:
            raise DinokitError(f"max_pairs must be at least 1, got {max_pairs}")
        self.max_pairs = max_pairs
        if max_images_per_category is not None and max_images_per_category < 2:
            raise DinokitError(f"max_images_per_category must be at least 2, got {max_images_per_category}")
        self.max_images_per_category = max_images_per_category
        self.max_pairs_per_category = max_pairs_per_category
        self.pairs_file = None if pairs_file is None else str(pairs_file)
        self.seed = int(seed)

    # --- settings --------------------------------------------------------------------
    def method_settings(self) -> dict[str, Any]:
        return {
            "protocol": "dense matching: nearest patch of each source keypoint, argmax of cosine similarity "
                        "over the target",
            **self.settings_record(), **self.matching.to_record(), "alphas": list(self.alphas), "pck_by": self.pck_by,
        }

    def reader_values(self) -> dict[str, Any]:
        return {"split": self.split, "pairs_file": self.pairs_file, "max_pairs_per_category":
                self.max_pairs_per_category, "seed": self.seed, "categories": self.categories}

    def limits(self) -> dict[str, Any]:
        return {"categories": self.categories, "max_pairs": self.max_pairs,
                "max_images_per_category": self.max_images_per_category}

    # --- data --------------------------------------------------------------------------
    def load_dataset(self) -> list[CorrespondencePair]:
        pairs = self.read_dataset()
        if self.categories is not None:
            missing = set(self.categories) - {p.category for p in pairs}
            if missing:
                raise DinokitError(f"{self.root}: no pairs of categor{'y' if len(missing) == 1 else 'ies'} "
                                   f"{', '.join(sorted(missing))}")
            pairs = [p for p in pairs if p.category in self.categories]
        if self.max_images_per_category is not None:
            first: dict[str, list[str]] = {}
            for p in pairs:
                seen = first.setdefault(p.category, [])
                for path in (str(p.src_path), str(p.trg_path)):
                    if path not in seen:
                        seen.append(path)
            keep = {c: set(v[: self.max_images_per_category]) for c, v in first.items()}
            pairs = [p for p in pairs if {str(p.src_path), str(p.trg_path)} <= keep[p.category]]
        return spread(pairs, self.max_pairs, key=lambda p: p.category)

    # --- evaluation ----------------------------------------------------------------------
    def _finder(self) -> Any:
        from ...tasks.correspondences import CorrespondenceFinder

        return CorrespondenceFinder(self.extractor(), self.settings, cache_size=0, progress=self.progress)

    def evaluate(self, pairs: list[CorrespondencePair], folder: RunFolder) -> BenchmarkResult:
        from tqdm.auto import tqdm

        self.finder_ = finder = self._finder()
        methods = ["model", *self.baselines]
        cache = ImageDescriptorCache(finder, folder.cache_dir / "descriptors", self.root, self.cache_dtype)
        for p in pairs:
            if folder.get("model", p.key) is None and len(p.src_kps):
                cache.expect([p.src_path, p.trg_path])
        rgb_cache: dict[str, Any] = {}
        sizes: dict = {}
        accs = {m: PCKAccumulator(self.alphas) for m in methods}
        bar = tqdm(pairs, desc=f"{self.dataset} pairs", unit="pair", disable=not self.progress)
        for pair in bar:
            length = pair.pck_length(self.pck_by)
            for m in methods:
                rec = folder.get(m, pair.key)
                if rec is None:
                    pred = self._predict(m, pair, cache, rgb_cache, sizes)
                    scores = pck(pred, pair.trg_kps, length, self.alphas) if len(pred) else {}
                    rec = folder.log(m, pair.key, {
                        "category": pair.category, "reference_length": length, "points": len(pred),
                        "pred": np.round(pred, 4).tolist(), "pck": {str(a): v for a, v in scores.items()}})
                    self._scored(True)
                else:
                    self._scored(False)
                pred = np.asarray(rec["pred"], dtype=np.float64).reshape(-1, 2)
                accs[m].add(pred, pair.trg_kps, float(rec["reference_length"]), pair.category, pair.key)
            if len(rgb_cache) > 16:
                rgb_cache.clear()
        self.counts_["images_computed"] += cache.computed
        self.counts_["images_from_cache"] += cache.loaded
        return self._result(pairs, accs)

    def _predict(self, method: str, pair: CorrespondencePair, cache: ImageDescriptorCache,
                 rgb_cache: dict, sizes: dict) -> np.ndarray:
        from ...tasks.correspondences import match_points
        from ..baselines import identity_points, rgb_patch_descriptors

        if not len(pair.src_kps):
            return np.zeros((0, 2))
        if method == "model":
            da, db = cache.get(pair.src_path), cache.get(pair.trg_path)
            mask = db.saliency > self.settings.thresh if self.foreground else None
            res = match_points(da.matching, da.geometry, db.matching, db.geometry, pair.src_kps, mask_b=mask,
                               refine=self.refine, window=self.window, temperature=self.temperature)
            cache.release(pair.src_path, delete=not self.keep_cache)
            cache.release(pair.trg_path, delete=not self.keep_cache)
            return res.points
        if method == "identity":
            wa = pair.src_size or image_size(pair.src_path, sizes)
            wb = pair.trg_size or image_size(pair.trg_path, sizes)
            return identity_points(pair.src_kps, wa, wb)
        if method == "rgb-patches":
            ex = self.finder_.extractor
            for p in (pair.src_path, pair.trg_path):
                if str(p) not in rgb_cache:
                    rgb_cache[str(p)] = rgb_patch_descriptors(p, ex.patch_size, ex.stride, ex.load_size)
            (a, ga), (b, gb) = rgb_cache[str(pair.src_path)], rgb_cache[str(pair.trg_path)]
            return match_points(a, ga, b, gb, pair.src_kps).points
        raise DinokitError(f"unknown method {method!r}")

    # --- tables --------------------------------------------------------------------------
    def _labels(self) -> dict[str, tuple[str, str]]:
        st = self.settings_record()
        desc = f"{self.model_name()} (layer {st['layer']} {st['facet']}{', binned' if st['bin'] else ''}, " \
               f"stride {st['stride']})"
        return {"model": (desc, "model"), "identity": ("identity (baseline)", "identity"),
                "rgb-patches": ("RGB patches (baseline)", "rgb")}

    def _result(self, pairs: list[CorrespondencePair], accs: dict[str, PCKAccumulator]) -> BenchmarkResult:
        labels = self._labels()
        primary = 0.1 if 0.1 in self.alphas else self.alphas[len(self.alphas) // 2]
        columns = [Column(f"pck@{a:g}", f"PCK@{a:g}") for a in self.alphas] + [Column("pairs", "pairs", "int")]
        rows, group_rows, details = [], [], {}
        for m, acc in accs.items():
            res = acc.result()
            row: dict[str, Any] = {"method": m, "label": labels[m][0], "short": labels[m][1]}
            row.update({f"pck@{a:g}": res.per_image[a] for a in self.alphas})
            row.update({f"pck@{a:g}_points": res.per_point[a] for a in self.alphas})
            row.update({f"pck@{a:g}_category_mean": res.category_mean[a] for a in self.alphas})
            row.update(pairs=res.num_pairs, points=res.num_points)
            rows.append(row)
            for cat, agg in res.per_category.items():
                g = {"category": cat, "method": m}
                g.update({f"pck@{a:g}": agg["per_image"][a] for a in self.alphas})
                g.update({f"pck@{a:g}_points": agg["per_point"][a] for a in self.alphas})
                g.update(pairs=agg["pairs"], points=agg["points"])
                group_rows.append(g)
            details[m] = res.to_dict()
        n_points = rows[0]["points"] if rows else 0
        n_cats = len({p.category for p in pairs})
        box = "image" if self.pck_by == "image" else self.entry.box
        title = (f"{self.entry.title}: {plural(len(pairs), 'pair')} in "
                 f"{plural(n_cats, 'category', 'categories')}, {plural(n_points, 'keypoint')}. "
                 f"PCK@alpha (%): keypoints within alpha x the longer side of {box}, averaged per pair.")
        st = self.settings_record()
        notes = [f"model: {self.model_info()['source'] or self.model_name()}; load size {st['load_size']}, "
                 f"stride {st['stride']}, layer {st['layer']} {st['facet']}, bin={st['bin']}, "
                 f"foreground={self.foreground}, refine={self.refine}"]
        return BenchmarkResult(
            benchmark=self.kind, dataset=self.dataset, title=title, columns=columns, rows=rows,
            group_name="category", group_columns=[Column(f"pck@{primary:g}", f"PCK@{primary:g}")],
            group_rows=group_rows, details=details, notes=notes,
            info={"counts": {"pairs": len(pairs), "keypoints": n_points, "categories": n_cats,
                             "images": len({str(p.src_path) for p in pairs} | {str(p.trg_path) for p in pairs})}},
        )
