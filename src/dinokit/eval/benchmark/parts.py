"""Part benchmark: NMI and ARI of part co-segmentation on PASCAL-Part (pixels) and CUB (keypoints).

Protocol: the images of one category form a set, part co-segmented on its
own with the paper's settings (:class:`~dinokit.tasks.parts.PartCoSegmentation` with
:class:`~dinokit.settings.PartSettings`, unchanged: the co-segmentation's first stage,
then ``num_parts`` parts, dense CRF).
Labels (parts and background) are resized to the original image with nearest
neighbour and compared with the ground truth on the object only, as in the
unsupervised part-discovery literature:

* ``pascal-part``: every pixel of the category's objects that carries a part
  annotation; ground-truth labels are the category's part names (``head``,
  ``torso``, ``lfleg`` ...); object pixels without a part are ignored;
* ``cub``: the visible keypoints (15 named parts); the predicted label at
  each keypoint against the keypoint's id.

A predicted background label on the object counts as one more cluster. NMI
(arithmetic normalisation) and ARI are pooled over a category's images (part
ids are shared within a set), then averaged over categories; per-image means
are in the JSON too. When the part co-segmentation finds no foreground in a
set, every pixel is predicted background (and scores 0).

Baseline: ``grid`` (each image cut into a grid of ``num_parts`` cells).
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional, Sequence, Union

import numpy as np

from ...errors import DatasetError, DinokitError
from ...settings import PartSettings
from ..datasets.registry import PART_GROUPINGS, benchmark
from ..metrics import PartAccumulator, sample_labels
from .cosegmentation import SetBenchmark, fit_quietly, warning_notes
from .report import BenchmarkResult, Column, mean, plural
from .run_folder import RunFolder


_COARSE = (  # PASCAL-Part names of animals and people -> head / torso / limbs / tail
    ("head", ("head", "ear", "eye", "ebrow", "nose", "muzzle", "mouth", "beak", "hair", "horn")),
    ("torso", ("torso", "neck")),
    ("limbs", ("leg", "pa", "ho", "foot", "arm", "hand")),
    ("tail", ("tail",)),
)


def _check_grouping(grouping: str) -> None:
    if grouping not in PART_GROUPINGS:
        raise DinokitError(f"part grouping must be one of {', '.join(PART_GROUPINGS)}, got {grouping!r}")


def part_group(name: str, grouping: str = PART_GROUPINGS[0]) -> str:
    """The ground-truth label a PASCAL-Part part name is scored as.

    ``annotated``: the name itself. ``instances`` (default): numbered instances of one part merged
    (``wheel_1``, ``wheel_2`` -> ``wheel``), since an unsupervised method cannot tell which wheel is
    which. ``coarse``: also the parts of animals and people merged into head, torso, limbs and tail
    (``lfleg``, ``rbpa`` -> ``limbs``; ``leye``, ``muzzle`` -> ``head``); other names as ``instances``.
    """
    _check_grouping(grouping)
    if grouping == "annotated":
        return name
    base = re.sub(r"_\d+$", "", name)
    if grouping == "coarse":
        for group, keys in _COARSE:
            if base == group or any(base.endswith(k) for k in keys):
                return group
    return base


class PartSet:
    """A category's images for the part benchmark: items (PartImage or KeypointImage) and the part label map."""

    def __init__(self, name: str, items: list[Any], parts: Optional[dict[str, int]] = None) -> None:
        self.name, self.items, self.parts = name, items, parts or {}

    def __len__(self) -> int:
        return len(self.items)


class PartsBenchmark(SetBenchmark):
    """Part co-segmentation NMI and ARI per category (see the module docstring).

    Args (besides :class:`~dinokit.eval.benchmark.cosegmentation.SetBenchmark`'s):
        split: CUB split (``test``).
        categories: categories to evaluate (default: every category with at least two images
            and, for PASCAL-Part, at least two annotated part names); max_categories: the first ones only;
            max_images: at most this many images per category (the first).
        part_grouping: how PASCAL-Part names become ground-truth labels (:func:`part_group`; ``instances``).
        settings: :class:`~dinokit.settings.PartSettings` (keyword overrides such as ``num_parts=6``
            change single fields; ``mask_size`` does not apply).
    """

    kind = "parts"
    BASELINES = benchmark(kind).baselines
    PROTOCOL_SETTINGS = PartSettings()  # Sec. 4.1's part co-segmentation as the task runs it: no departure

    def __init__(self, root: Union[str, os.PathLike], output_dir: Union[str, os.PathLike],
                 dataset: str = "pascal-part", settings: Optional[PartSettings] = None, *, split: str = "test",
                 categories: Optional[Sequence[str]] = None, max_categories: Optional[int] = None,
                 part_grouping: str = PART_GROUPINGS[0], **kwargs: Any) -> None:
        super().__init__(root, output_dir, dataset=dataset, settings=settings, **kwargs)
        self.split = split
        self.categories = None if categories is None else list(categories)
        if max_categories is not None and max_categories < 1:
            raise DinokitError(f"max_categories must be at least 1, got {max_categories}")
        self.max_categories = max_categories
        _check_grouping(part_grouping)
        self.part_grouping = part_grouping

    def method_settings(self) -> dict[str, Any]:
        return {"protocol": "part co-segmentation of each category's images as one set; NMI/ARI on "
                            + ("annotated part pixels of the objects" if self.pixels else "visible keypoints"),
                **self.settings_record(), "nmi_average": "arithmetic",
                **({"part_grouping": self.part_grouping} if self.pixels else {})}

    @property
    def pixels(self) -> bool:
        """Whether the dataset's parts are pixel masks (else keypoints), from its registry entry."""
        return self.entry.scored_on == "pixels"

    def reader_values(self) -> dict[str, Any]:
        return {"split": self.split, "categories": self.categories}

    def limits(self) -> dict[str, Any]:
        return {"categories": self.categories, "max_categories": self.max_categories, "max_images": self.max_images}

    # --- data ---------------------------------------------------------------------------
    def load_dataset(self) -> list[PartSet]:
        if not self.pixels:
            groups: dict[str, list[Any]] = {}
            for im in self.read_dataset():
                groups.setdefault(im.category, []).append(im)
            sets = [PartSet(c, v) for c, v in sorted(groups.items())]
        else:
            sets = self._pixel_sets()
        if self.categories is not None:
            order = {c: i for i, c in enumerate(self.categories)}
            missing = set(self.categories) - {s.name for s in sets}
            if missing:
                raise DatasetError(f"{self.root}: no images of categor{'y' if len(missing) == 1 else 'ies'} "
                                   f"{', '.join(sorted(missing))}")
            sets = sorted((s for s in sets if s.name in order), key=lambda s: order[s.name])
        else:
            sets = [s for s in sets if len(s) >= 2 and (not self.pixels or len(set(s.parts.values())) >= 2)]
        if self.max_categories is not None:
            sets = sets[: self.max_categories]
        if self.max_images is not None:
            sets = [PartSet(s.name, s.items[: self.max_images], s.parts) for s in sets]
        if not sets:
            raise DatasetError(f"{self.root}: no category with at least two annotated images")
        return sets

    def _pixel_sets(self) -> list[PartSet]:
        from tqdm.auto import tqdm

        images = self.read_dataset()
        members: dict[str, list[Any]] = {}
        names: dict[str, set[str]] = {}
        for it in tqdm(images, desc="annotations", unit="img", disable=not self.progress, leave=False):
            ann = it.load()
            for o in ann.objects:
                if it not in members.setdefault(o.category, []):
                    members[o.category].append(it)
                names.setdefault(o.category, set()).update(o.parts)
        out = []
        for c in sorted(members):
            group = {n: part_group(n, self.part_grouping) for n in sorted(names[c])}
            label = {g: i + 1 for i, g in enumerate(sorted(set(group.values())))}
            out.append(PartSet(c, members[c], {n: label[g] for n, g in group.items()}))
        return out

    # --- evaluation -------------------------------------------------------------------------
    def _gt(self, pset: PartSet, item: Any) -> tuple[Any, tuple[int, int]]:
        """Ground truth of one image and its ``(H, W)``: a label map (PASCAL-Part) or (points, ids) (CUB)."""
        if not self.pixels:
            from ..datasets import image_size

            w, h = image_size(item.path)
            vis = item.visible
            return (item.keypoints[vis], np.flatnonzero(vis) + 1), (h, w)
        ann = item.load()
        return ann.label_map(pset.parts, categories=[pset.name]), (ann.size[1], ann.size[0])

    def _samples(self, gt: Any, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(true, predicted)`` labels of the scored samples of one image."""
        if not self.pixels:
            pts, ids = gt
            pred = sample_labels(labels, pts) if len(pts) else np.zeros(0, np.int64)
            return np.asarray(ids, np.int64), np.asarray(pred, np.int64)
        keep = (gt != 0) & (gt != 255)
        return gt[keep].astype(np.int64), labels[keep].astype(np.int64)

    def _fit(self, feats: Any, sources: list[Any]) -> tuple[Any, list[str]]:
        from ...tasks.parts import PartCoSegmentation

        model = PartCoSegmentation(self.extractor(), self.settings, **self.estimator_kwargs())
        try:
            if self.settings.num_crop_augmentations:  # augmentations are drawn per run: no feature cache
                import warnings

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    model.fit(sources)
                return model, [str(w.message) for w in caught]
            return fit_quietly(model, feats)
        except DinokitError as exc:
            model.close()
            return None, [str(exc)]

    def evaluate(self, sets: list[PartSet], folder: RunFolder) -> BenchmarkResult:
        from tqdm.auto import tqdm

        from ..baselines import grid_parts

        methods = ["model", *self.baselines]
        accs: dict[str, dict[str, PartAccumulator]] = {m: {} for m in methods}
        warned: dict[str, list[str]] = {}
        for pset in tqdm(sets, desc=f"{self.dataset} categories", unit="set", disable=not self.progress):
            if len(pset) < 2:
                raise DinokitError(f"category {pset.name}: {len(pset)} image(s); part co-segmentation needs at least 2")
            todo = [m for m in methods if folder.get(m, pset.name) is None]
            if todo:
                sources = [getattr(it, "image_path", None) or it.path for it in pset.items]
                feats = None
                model, fit_warnings = None, []
                if "model" in todo:
                    if not self.settings.num_crop_augmentations:
                        feats = self.set_features(pset.name, sources, folder)
                    model, fit_warnings = self._fit(feats, sources)
                out: dict[str, list[dict[str, Any]]] = {m: [] for m in todo}
                for i, item in enumerate(pset.items):
                    gt, size = self._gt(pset, item)
                    for m in todo:
                        if m == "model":
                            labels = np.full(size, -1, np.int32) if model is None else _resize_labels(model.parts(i), size)
                        else:
                            labels = grid_parts(size[0], size[1], self.settings.num_parts)
                        t, p = self._samples(gt, labels)
                        out[m].append({"name": _item_name(item), **_contingency(t, p)})
                for m in todo:
                    extra = {"warnings": fit_warnings, "failed": model is None} if m == "model" else {}
                    folder.log(m, pset.name, {"category": pset.name, "images": out[m], **extra})
                    self._scored(True)
                if model is not None:
                    model.close()
                if feats is not None:
                    feats.store.close()
                self.drop_set_cache(pset.name, folder)
            for m in methods:
                rec = folder.get(m, pset.name)
                if m not in todo:
                    self._scored(False)
                if rec.get("warnings"):
                    warned[pset.name] = rec["warnings"]
                acc = accs[m][pset.name] = PartAccumulator(background=0, ignore=None)
                for r in rec["images"]:
                    t = np.repeat(np.asarray(r["true"], np.int64), r["counts"])
                    p = np.repeat(np.asarray(r["pred"], np.int64), r["counts"])
                    acc.add(t, p, foreground=np.ones(t.shape, bool))
        return self._result(sets, accs, warned)

    def _result(self, sets: list[PartSet], accs: dict[str, dict[str, PartAccumulator]],
                warned: dict[str, list[str]]) -> BenchmarkResult:
        name = self.model_name()
        labels = {"model": (f"{name} (part co-segmentation)", "model"), "grid": (f"{self.settings.num_parts}-cell grid (baseline)", "grid")}
        rows, group_rows, details = [], [], {}
        for m, per_set in accs.items():
            results = {c: a.result() for c, a in per_set.items()}
            rows.append({
                "method": m, "label": labels[m][0], "short": labels[m][1],
                "nmi": mean([r.nmi for r in results.values()]), "ari": mean([r.ari for r in results.values()]),
                "nmi_per_image": mean([r.nmi_per_image for r in results.values()]),
                "ari_per_image": mean([r.ari_per_image for r in results.values()]),
                "categories": len(results), "images": sum(r.num_images for r in results.values()),
                "samples": sum(r.num_samples for r in results.values())})
            for c, r in results.items():
                group_rows.append({"category": c, "method": m, "nmi": r.nmi, "ari": r.ari,
                                   "nmi_per_image": r.nmi_per_image, "ari_per_image": r.ari_per_image,
                                   "images": r.num_images, "samples": r.num_samples})
            details[m] = {c: r.to_dict() for c, r in results.items()}
        what = "annotated part pixels of the objects" if self.pixels else "visible keypoints"
        n_images = sum(len(s) for s in sets)
        title = (f"{self.entry.title} part co-segmentation: {plural(len(sets), 'category', 'categories')}, "
                 f"{plural(n_images, 'image')}. NMI and ARI (%) on {what}, pooled per category, "
                 f"averaged over categories.")
        c = self.settings_record()
        notes = [f"model: {self.model_info()['source'] or name}; {c['num_parts']} parts, load size {c['load_size']}, "
                 f"stride {c['stride']}, layer {c['layer']} {c['facet']}, thresh {c['thresh']}, CRF={c['crf']}"]
        notes += warning_notes(warned)
        columns = [Column("nmi", "NMI"), Column("ari", "ARI"), Column("nmi_per_image", "NMI (per image)"),
                   Column("ari_per_image", "ARI (per image)"), Column("categories", "categories", "int"),
                   Column("images", "images", "int")]
        return BenchmarkResult(
            benchmark=self.kind, dataset=self.dataset, title=title, columns=columns, rows=rows,
            group_name="category", group_columns=[Column("nmi", "NMI"), Column("ari", "ARI")],
            group_rows=group_rows, details=details, notes=notes,
            info={"counts": {"categories": len(sets), "images": n_images},
                  "part_labels": {s.name: s.parts for s in sets} if self.pixels else None})


def _item_name(item: Any) -> str:
    return str(getattr(item, "name", ""))


def _contingency(true: np.ndarray, pred: np.ndarray) -> dict[str, list[int]]:
    """The distinct (true, predicted) label pairs of one image and how often each occurs."""
    if true.size == 0:
        return {"true": [], "pred": [], "counts": []}
    pairs, counts = np.unique(np.stack([true, pred]), axis=1, return_counts=True)
    return {"true": pairs[0].tolist(), "pred": pairs[1].tolist(), "counts": counts.tolist()}


def _resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an int label map to ``size = (H, W)`` (PIL's rule, as the masks)."""
    from PIL import Image

    lab = np.asarray(labels, dtype=np.int32)
    if lab.shape == tuple(size):
        return lab
    return np.asarray(Image.fromarray(lab).resize((size[1], size[0]), Image.NEAREST), dtype=np.int32)
