"""Co-segmentation benchmark: Jaccard and precision of the paper's co-segmentation, set by set.

Protocol (Amir et al. 2021, Sec. 4.3; metrics of Rubinstein et al. 2013):
each set (an iCoseg group, an MSRC class, an Internet class, ...) is
co-segmented on its own with the paper's defaults (layer 11 ``key``
descriptors at stride 4 and load size 224, elbow 0.975, saliency votes 0.065
from 75% of the images, GrabCut refinement); each mask, resized to the
ground truth with nearest neighbour, is scored by Jaccard (IoU of the
foreground) and precision (pixel accuracy). Scores are averaged per set, then
over sets (per image in the JSON too). Images whose ground truth is empty (the
Internet dataset's noise images) are left out of Jaccard and kept in
precision, as in that dataset's evaluation (``skip_empty_jaccard``).

Baselines: ``centre-prior`` (a centred ellipse covering half of every
image: no model) and ``saliency`` (the same model's saliency maps, patches
above their image's mean, without any clustering: what co-segmentation adds
over saliency alone).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Sequence, Union

import numpy as np

from ...errors import DinokitError
from ..datasets import READERS, CosegSet
from ..metrics import CosegAccumulator, coseg_scores
from .base import Benchmark
from .report import BenchmarkResult, Column, plural
from .run_folder import RunFolder

DATASET_TITLES = {"icoseg": "iCoseg", "msrc": "MSRC", "internet": "Internet", "pascal-co": "PASCAL-CO",
                  "coseg": "co-segmentation"}
COSEG_DEFAULTS: dict[str, Any] = dict(
    load_size=224, stride=4, layer=11, facet="key", bin=False, thresh=0.065, elbow=0.975, votes_percentage=75.0,
    sample_interval=100, low_res_saliency_maps=True, max_clusters=14, seed=1234, kmeans_backend="auto",
    store_dtype="float16",
)
"""The co-segmentation's settings the set benchmarks expose (the paper's defaults)."""


class SetBenchmark(Benchmark):
    """Shared by the benchmarks that run a co-segmentation per set: its settings, cached features, baselines."""

    def __init__(self, root: Union[str, os.PathLike], output_dir: Union[str, os.PathLike], *, dataset: str,
                 max_images: Optional[int] = None, centre_prior_area: float = 0.5,
                 saliency_thresh: Optional[float] = None, **kwargs: Any) -> None:
        method = {k: kwargs.pop(k, v) for k, v in COSEG_DEFAULTS.items()}
        super().__init__(root, output_dir, dataset=dataset, **kwargs)
        self.coseg = method
        if max_images is not None and max_images < 2:
            raise DinokitError(f"max_images must be at least 2 (co-segmentation needs two images), got {max_images}")
        self.max_images = max_images
        self.centre_prior_area = float(centre_prior_area)
        self.saliency_thresh = None if saliency_thresh is None else float(saliency_thresh)

    def baseline_settings(self) -> dict[str, Any]:
        return {"centre_prior_area": self.centre_prior_area,
                "saliency_thresh": "mean saliency of the image" if self.saliency_thresh is None
                else self.saliency_thresh}

    def extractor(self) -> Any:
        if getattr(self, "extractor_", None) is None:
            from ...features import Extractor

            self.extractor_ = Extractor(self.backbone(), stride=self.coseg["stride"], load_size=self.coseg["load_size"],
                                        device=self.device, dtype=self.dtype)
        return self.extractor_

    def set_features(self, name: str, sources: Sequence[Any], folder: RunFolder, include_cls: bool = False) -> Any:
        """Features of a set's images, read from / written to ``OUT/cache/sets/<name>``."""
        from ...blocks.store import DescriptorStore
        from .descriptor_cache import cached_set_features

        directory = folder.cache_dir / "sets" / _safe(name)
        store = DescriptorStore("auto", dtype=self.coseg["store_dtype"], expected_images=len(sources))
        counter: dict[str, int] = {}
        feats = cached_set_features(
            self.extractor(), sources, directory, layer=self.coseg["layer"], facet=self.coseg["facet"],
            bin=self.coseg["bin"], include_cls=include_cls, low_res_saliency_maps=self.coseg["low_res_saliency_maps"],
            store=store, root=self.root, progress=self.progress, counter=counter)
        self.counts_["images_computed"] += counter.get("computed", 0)
        self.counts_["images_from_cache"] += counter.get("loaded", 0)
        return feats

    def drop_set_cache(self, name: str, folder: RunFolder) -> None:
        """Delete a finished set's cached features (unless ``keep_cache``)."""
        import shutil

        if not self.keep_cache:
            shutil.rmtree(folder.cache_dir / "sets" / _safe(name), ignore_errors=True)

    def coseg_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~dinokit.tasks.cosegmentation.CoSegmentation`."""
        kw = dict(self.coseg)
        kw.update(store="auto", progress=False, device=self.device, dtype=self.dtype)
        return kw

    def baseline_mask(self, method: str, feats: Any, index: int, size: tuple[int, int]) -> np.ndarray:
        """``centre-prior`` or ``saliency`` foreground of image ``index`` at ``size = (H, W)``."""
        from ..baselines import centre_prior_mask, saliency_mask

        if method == "centre-prior":
            return centre_prior_mask(size[0], size[1], self.centre_prior_area)
        if method == "saliency":
            grid = feats.items[index].grid
            return saliency_mask(np.asarray(feats.saliency[index]).reshape(grid), size, self.saliency_thresh)
        raise DinokitError(f"unknown baseline {method!r}")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.()" else "_" for c in name) or "set"


def warning_notes(warned: dict[str, list[str]], limit: int = 10) -> list[str]:
    """Table notes for the sets whose fit warned (e.g. no foreground cluster: empty masks)."""
    lines = [f"{name}: {msg}" for name, msgs in warned.items() for msg in msgs]
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more warnings in items.jsonl"]
    return lines


def fit_quietly(model: Any, feats: Any) -> tuple[Any, list[str]]:
    """``model.fit_features(feats)``, returning the warnings it raised instead of printing them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit_features(feats)
    return model, [str(w.message) for w in caught]


class CosegBenchmark(SetBenchmark):
    """Co-segmentation Jaccard and precision, set by set (see the module docstring).

    Args (besides :class:`~dinokit.eval.benchmark.base.Benchmark`'s):
        layout, sets: passed to :func:`~dinokit.eval.datasets.read_coseg`.
        max_images: at most this many images per set (the first by name); max_sets: the first sets only.
        refine: GrabCut refinement of the masks (the paper's; default on).
        remove_outliers, outliers_thresh: the co-segmentation's outlier removal (off, 0.7).
        skip_empty_jaccard: leave images whose ground truth is empty (the Internet dataset's noise
            images) out of Jaccard, as its evaluation does (default); precision still counts them.
        centre_prior_area, saliency_thresh: the baselines' parameters.
        load_size, stride, layer, facet, bin, thresh, elbow, votes_percentage, sample_interval,
        low_res_saliency_maps, max_clusters, seed, kmeans_backend, store_dtype: the co-segmentation's
        (:data:`COSEG_DEFAULTS`, the paper's).
    """

    kind = "cosegment"
    BASELINES = ("centre-prior", "saliency")
    DATASETS = tuple(DATASET_TITLES)

    def __init__(self, root: Union[str, os.PathLike], output_dir: Union[str, os.PathLike], dataset: str = "icoseg", *,
                 layout: str = "auto", sets: Optional[Sequence[str]] = None, max_sets: Optional[int] = None,
                 refine: bool = True, remove_outliers: bool = False, outliers_thresh: float = 0.7,
                 skip_empty_jaccard: bool = True, **kwargs: Any) -> None:
        super().__init__(root, output_dir, dataset=dataset, **kwargs)
        self.skip_empty_jaccard = bool(skip_empty_jaccard)
        self.layout = layout
        self.sets = None if sets is None else list(sets)
        if max_sets is not None and max_sets < 1:
            raise DinokitError(f"max_sets must be at least 1, got {max_sets}")
        self.max_sets = max_sets
        self.refine = bool(refine)
        self.remove_outliers = bool(remove_outliers)
        self.outliers_thresh = float(outliers_thresh)

    def method_settings(self) -> dict[str, Any]:
        return {"protocol": "co-segmentation of each set on its own; masks resized to the ground truth (nearest)",
                **self.coseg, "refine": self.refine, "remove_outliers": self.remove_outliers,
                "outliers_thresh": self.outliers_thresh,
                "jaccard_on_empty_ground_truth": "skipped" if self.skip_empty_jaccard else "scored (1 if the mask is "
                                                                                           "empty too, else 0)",
                "baselines": self.baseline_settings()}

    def dataset_options(self) -> dict[str, Any]:
        return {"layout": self.layout}

    def limits(self) -> dict[str, Any]:
        return {"sets": self.sets, "max_sets": self.max_sets, "max_images": self.max_images}

    def load_dataset(self) -> list[CosegSet]:
        sets = READERS[self.dataset](self.root, layout=self.layout, sets=self.sets)
        if self.max_sets is not None:
            sets = sets[: self.max_sets]
        if self.max_images is not None:
            sets = [CosegSet(s.name, s.items[: self.max_images], s.root) for s in sets]
        return sets

    def evaluate(self, sets: list[CosegSet], folder: RunFolder) -> BenchmarkResult:
        from tqdm.auto import tqdm

        from ...blocks.refine import upsample_mask
        from ...tasks.cosegmentation import CoSegmentation

        methods = ["model", *self.baselines]
        accs = {m: CosegAccumulator() for m in methods}
        skipped: list[str] = []
        warned: dict[str, list[str]] = {}
        for s in tqdm(sets, desc=f"{self.dataset} sets", unit="set", disable=not self.progress):
            if len(s) < 2:
                skipped.append(s.name)
                continue
            todo = [m for m in methods if folder.get(m, s.name) is None]
            if todo:
                feats = self.set_features(s.name, s.image_paths, folder, include_cls=self.remove_outliers)
                extra: dict[str, Any] = {}
                model = None
                if "model" in todo:
                    model = CoSegmentation(self.extractor(), **self.coseg_kwargs(), remove_outliers=self.remove_outliers,
                                           outliers_thresh=self.outliers_thresh)
                    model, fit_warnings = fit_quietly(model, feats)
                    extra = {"n_clusters": int(model.n_clusters_), "salient_labels": model.salient_labels_.tolist(),
                             "votes": model.votes_.tolist(), "warnings": fit_warnings,
                             "outliers": [it.name for it, ok in zip(model.items_, model.inliers_) if not ok]}
                scores: dict[str, list[dict[str, Any]]] = {m: [] for m in todo}
                for i, item in enumerate(s.items):
                    gt = item.load_mask()
                    for m in todo:
                        if m == "model":
                            pred = upsample_mask(model.mask(i, refine=self.refine), gt.shape)
                        else:
                            pred = self.baseline_mask(m, feats, i, gt.shape)
                        j, prec = coseg_scores(pred, gt, skip_empty_jaccard=self.skip_empty_jaccard)
                        scores[m].append({"name": item.name, "jaccard": j, "precision": prec,
                                          "empty_gt": not gt.any()})
                for m in todo:
                    folder.log(m, s.name, {"set": s.name, "images": scores[m], **(extra if m == "model" else {})})
                    self._scored(True)
                if model is not None:
                    model.close()
                feats.store.close()
                self.drop_set_cache(s.name, folder)
            for m in methods:
                rec = folder.get(m, s.name)
                if m not in todo:
                    self._scored(False)
                if rec.get("warnings"):
                    warned[s.name] = rec["warnings"]
                for r in rec["images"]:
                    accs[m].records.append({"set": s.name, "name": r["name"], "jaccard": _num(r["jaccard"]),
                                            "precision": _num(r["precision"])})
        return self._result(sets, accs, skipped, warned)

    def _result(self, sets: list[CosegSet], accs: dict[str, CosegAccumulator], skipped: list[str],
                warned: dict[str, list[str]]) -> BenchmarkResult:
        name = self.model_name()
        labels = {"model": (f"{name} (co-segmentation)", "model"),
                  "centre-prior": ("centre prior (baseline)", "centre"),
                  "saliency": (f"{name} saliency only (baseline)", "saliency")}
        rows, group_rows, details = [], [], {}
        for m, acc in accs.items():
            res = acc.result()
            rows.append({"method": m, "label": labels[m][0], "short": labels[m][1], "jaccard": res.jaccard,
                         "precision": res.precision, "jaccard_images": res.jaccard_images,
                         "precision_images": res.precision_images, "sets": len(res.per_set),
                         "images": len(res.per_image)})
            for set_name, v in res.per_set.items():
                group_rows.append({"set": set_name, "method": m, "jaccard": v["jaccard"],
                                   "precision": v["precision"], "images": v["images"]})
            details[m] = res.to_dict()
        n_images = sum(len(s) for s in sets if s.name not in skipped)
        title = (f"{DATASET_TITLES[self.dataset]} co-segmentation: {plural(len(sets) - len(skipped), 'set')}, "
                 f"{plural(n_images, 'image')}. "
                 f"Jaccard (J) and precision (P, pixel accuracy) in %, averaged per set then over sets.")
        c = self.coseg
        notes = [f"model: {self.model_info()['source'] or name}; load size {c['load_size']}, stride {c['stride']}, "
                 f"layer {c['layer']} {c['facet']}, thresh {c['thresh']}, elbow {c['elbow']}, votes "
                 f"{c['votes_percentage']:g}%, GrabCut={self.refine}"]
        if skipped:
            notes.append(f"skipped (fewer than 2 images): {', '.join(skipped)}")
        notes += warning_notes(warned)
        columns = [Column("jaccard", "J"), Column("precision", "P"), Column("jaccard_images", "J (per image)"),
                   Column("sets", "sets", "int"), Column("images", "images", "int")]
        return BenchmarkResult(
            benchmark=self.kind, dataset=self.dataset, title=title, columns=columns, rows=rows, group_name="set",
            group_columns=[Column("jaccard", "J"), Column("precision", "P")], group_rows=group_rows,
            details=details, notes=notes,
            info={"counts": {"sets": len(sets) - len(skipped), "images": n_images, "skipped_sets": skipped}})


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)
