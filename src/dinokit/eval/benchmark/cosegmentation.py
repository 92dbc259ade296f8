"""Co-segmentation benchmark: Jaccard and precision of the paper's co-segmentation, set by set.

Protocol (Amir et al. 2021, Sec. 4.3; metrics of Rubinstein et al. 2013):
each set (an iCoseg group, an MSRC class, an Internet class, ...) is
co-segmented on its own with the paper's co-segmentation settings
(:class:`~dinokit.settings.CoSegmentationSettings`, unchanged: see
``PROTOCOL_SETTINGS``) and GrabCut refinement; each mask, resized to the
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
from ...settings import CoSegmentationSettings
from ..datasets import CosegSet
from ..datasets.registry import BaselineSettings, benchmark
from ..metrics import CosegAccumulator, coseg_scores
from .base import Benchmark, take_options
from .report import BenchmarkResult, Column, plural
from .run_folder import RunFolder


class SetBenchmark(Benchmark):
    """Shared by the benchmarks that run a co-segmentation per set: cached features, baselines.

    ``self.settings`` is a :class:`~dinokit.settings.CoSegmentationSettings` (or its subclass
    :class:`~dinokit.settings.PartSettings`); every field the protocol uses is recorded with the run.
    """

    def __init__(self, root: Union[str, os.PathLike], output_dir: Union[str, os.PathLike], *, dataset: str,
                 max_images: Optional[int] = None, baseline: Optional[BaselineSettings] = None,
                 **kwargs: Any) -> None:
        self.baseline = take_options(BaselineSettings, baseline, kwargs)  # or centre_prior_area=, saliency_thresh=
        super().__init__(root, output_dir, dataset=dataset, **kwargs)
        if max_images is not None and max_images < 2:
            raise DinokitError(f"max_images must be at least 2 (co-segmentation needs two images), got {max_images}")
        self.max_images = max_images
        self.centre_prior_area, self.saliency_thresh = self.baseline.centre_prior_area, self.baseline.saliency_thresh

    def baseline_settings(self) -> dict[str, Any]:
        return {"centre_prior_area": self.centre_prior_area,
                "saliency_thresh": "mean saliency of the image" if self.saliency_thresh is None
                else self.saliency_thresh}

    def set_features(self, name: str, sources: Sequence[Any], folder: RunFolder, include_cls: bool = False) -> Any:
        """Features of a set's images, read from / written to ``OUT/cache/sets/<name>``."""
        from ...blocks.store import DescriptorStore
        from .descriptor_cache import cached_set_features

        st = self.settings
        store = DescriptorStore(st.store, dtype=st.store_dtype, memory_limit_bytes=st.memory_limit_gb * 2**30,
                                expected_images=len(sources))
        counter: dict[str, int] = {}
        feats = cached_set_features(
            self.extractor(), sources, folder.set_cache_dir(name), layer=st.layer, facet=st.facet, bin=st.bin,
            include_cls=include_cls, low_res_saliency_maps=st.low_res_saliency_maps, store=store, root=self.root, progress=self.progress, counter=counter)
        self.counts_["images_computed"] += counter.get("computed", 0)
        self.counts_["images_from_cache"] += counter.get("loaded", 0)
        return feats

    def drop_set_cache(self, name: str, folder: RunFolder) -> None:
        """Delete a finished set's cached features (unless ``keep_cache``)."""
        import shutil

        if not self.keep_cache:
            shutil.rmtree(folder.set_cache_dir(name), ignore_errors=True)

    def estimator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments (besides the settings) of the co-segmentation estimators."""
        return dict(progress=False, device=self.device, dtype=self.dtype)

    def baseline_mask(self, method: str, feats: Any, index: int, size: tuple[int, int]) -> np.ndarray:
        """``centre-prior`` or ``saliency`` foreground of image ``index`` at ``size = (H, W)``."""
        from ..baselines import centre_prior_mask, saliency_mask

        if method == "centre-prior":
            return centre_prior_mask(size[0], size[1], self.centre_prior_area)
        if method == "saliency":
            grid = feats.items[index].grid
            return saliency_mask(np.asarray(feats.saliency[index]).reshape(grid), size, self.saliency_thresh)
        raise DinokitError(f"unknown baseline {method!r}")


def coseg_note(c: dict[str, Any]) -> str:
    """The co-segmentation settings a table note names (from a settings record)."""
    return (f"load size {c['load_size']}, stride {c['stride']}, layer {c['layer']} {c['facet']}, "
            f"thresh {c['thresh']}, elbow {c['elbow']}, votes {c['votes_percentage']:g}%")


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
        settings: :class:`~dinokit.settings.CoSegmentationSettings` (keyword overrides such as
            ``layer=9`` change single fields; ``mask_size`` does not apply).
        layout, sets: passed to :func:`~dinokit.eval.datasets.read_coseg`.
        max_images: at most this many images per set (the first by name); max_sets: the first sets only.
        refine: GrabCut refinement of the masks (the paper's; default on).
        skip_empty_jaccard: leave images whose ground truth is empty (the Internet dataset's noise
            images) out of Jaccard, as its evaluation does (default); precision still counts them.
        centre_prior_area, saliency_thresh: the baselines' parameters.
    """

    kind = "cosegment"
    BASELINES = benchmark(kind).baselines
    PROTOCOL_SETTINGS = CoSegmentationSettings()  # Sec. 4.3 is the task's own protocol: no departure

    def __init__(self, root: Union[str, os.PathLike], output_dir: Union[str, os.PathLike], dataset: str = "icoseg",
                 settings: Optional[CoSegmentationSettings] = None, *, layout: str = "auto",
                 sets: Optional[Sequence[str]] = None, max_sets: Optional[int] = None, refine: bool = True,
                 skip_empty_jaccard: bool = True, **kwargs: Any) -> None:
        super().__init__(root, output_dir, dataset=dataset, settings=settings, **kwargs)
        self.skip_empty_jaccard = bool(skip_empty_jaccard)
        self.layout = layout
        self.sets = None if sets is None else list(sets)
        if max_sets is not None and max_sets < 1:
            raise DinokitError(f"max_sets must be at least 1, got {max_sets}")
        self.max_sets = max_sets
        self.refine = bool(refine)

    def method_settings(self) -> dict[str, Any]:
        return {"protocol": "co-segmentation of each set on its own; masks resized to the ground truth (nearest)",
                **self.settings_record(), "refine": self.refine,
                "jaccard_on_empty_ground_truth": "skipped" if self.skip_empty_jaccard else "scored (1 if the mask is "
                                                                                           "empty too, else 0)",
                "baselines": self.baseline_settings()}

    def reader_values(self) -> dict[str, Any]:
        return {"layout": self.layout, "sets": self.sets}

    def limits(self) -> dict[str, Any]:
        return {"sets": self.sets, "max_sets": self.max_sets, "max_images": self.max_images}

    def load_dataset(self) -> list[CosegSet]:
        sets = self.read_dataset()
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
                feats = self.set_features(s.name, s.image_paths, folder, include_cls=self.settings.remove_outliers)
                extra: dict[str, Any] = {}
                model = None
                if "model" in todo:
                    model = CoSegmentation(self.extractor(), self.settings, **self.estimator_kwargs())
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
        title = (f"{self.entry.title} co-segmentation: {plural(len(sets) - len(skipped), 'set')}, "
                 f"{plural(n_images, 'image')}. "
                 f"Jaccard (J) and precision (P, pixel accuracy) in %, averaged per set then over sets.")
        notes = [f"model: {self.model_info()['source'] or name}; {coseg_note(self.settings_record())}, "
                 f"GrabCut={self.refine}"]
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
