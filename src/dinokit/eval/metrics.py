"""Benchmark metrics: PCK for correspondences, Jaccard/precision for co-segmentation,
DAVIS J and F for video segmentation, NMI/ARI for part segmentation.

Each metric is a plain function on numpy arrays plus an accumulator that
collects per-item scores over a dataset and reports the aggregates the papers
use (``add(...)`` per item, ``result()`` at the end; results have
``to_dict()`` for JSON). Conventions, fixed here once:

* Jaccard/J of two empty masks is 1 (nothing to find, nothing found), as in
  the DAVIS evaluation code.
* An undefined average (no items, no keypoints, no pixels) is NaN, never 0.
* A keypoint is correct when its error is ``<= alpha * L`` (as in the public
  PF/SPair evaluation code); a NaN prediction counts as wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from .datasets.registry import DEFAULT_ALPHAS  # noqa: E402  (defined with the protocols)


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _as_mask(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask, got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: prediction shape {a.shape} differs from ground truth {b.shape}")


# ============================================================================ PCK


def pck_reference_length(*, bbox: Optional[Sequence[float]] = None,
                         image_size: Optional[Sequence[int]] = None) -> float:
    """The length PCK@alpha scales: ``max(h, w)`` of a box ``(x1, y1, x2, y2)`` or of an image ``(w, h)``."""
    if (bbox is None) == (image_size is None):
        raise ValueError("pck_reference_length: give exactly one of bbox or image_size")
    if bbox is not None:
        x1, y1, x2, y2 = (float(v) for v in np.asarray(bbox, dtype=np.float64).reshape(4))
        length = max(x2 - x1, y2 - y1)
    else:
        w, h = (float(v) for v in np.asarray(image_size, dtype=np.float64).reshape(-1)[:2])
        length = max(w, h)
    if not length > 0:
        raise ValueError(f"pck_reference_length: reference length must be > 0, got {length}")
    return length


def keypoint_errors(pred: Any, gt: Any) -> np.ndarray:
    """Euclidean distance per keypoint between ``(N, 2)`` predictions and ground truth; inf where pred is NaN."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    if p.shape != g.shape:
        raise ValueError(f"keypoint_errors: {len(p)} predicted points for {len(g)} ground-truth points")
    if not np.isfinite(g).all():
        raise ValueError("keypoint_errors: ground-truth keypoints must be finite")
    d = np.linalg.norm(p - g, axis=1)
    d[np.isnan(d)] = np.inf
    return d


def pck(pred: Any, gt: Any, reference_length: float,
        alphas: Sequence[float] = DEFAULT_ALPHAS) -> dict[float, float]:
    """Fraction of keypoints within ``alpha * reference_length`` of the truth, per alpha (NaN if no keypoints)."""
    d = keypoint_errors(pred, gt)
    if not reference_length > 0:
        raise ValueError(f"pck: reference_length must be > 0, got {reference_length}")
    if len(d) == 0:
        return {float(a): float("nan") for a in alphas}
    return {float(a): float(np.mean(d <= a * reference_length)) for a in alphas}


@dataclass
class PCKResult:
    """PCK aggregates. ``per_image``: mean over pairs of each pair's PCK (pairs without
    keypoints skipped); ``per_point``: correct points / all points;
    ``per_category[c]`` holds the same two for category c plus counts;
    ``category_mean``: mean over categories of their per-image PCK."""

    alphas: tuple[float, ...]
    per_image: dict[float, float]
    per_point: dict[float, float]
    per_category: dict[str, dict[str, Any]]
    category_mean: dict[float, float]
    num_pairs: int
    num_points: int
    num_empty_pairs: int

    def to_dict(self) -> dict[str, Any]:
        return _json(self.__dict__)


class PCKAccumulator:
    """Collects keypoint transfers pair by pair and reports PCK@alpha for several alphas.

    Typical use with a :class:`~dinokit.eval.datasets.CorrespondencePair`::

        acc = PCKAccumulator(alphas=(0.05, 0.1))
        acc.add(predicted_trg_kps, pair.trg_kps, pair.pck_length("bbox"), pair.category, pair.key)
        acc.result().per_image[0.1]
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS) -> None:
        alphas = tuple(float(a) for a in alphas)
        if not alphas or any(not a > 0 for a in alphas):
            raise ValueError(f"PCKAccumulator: alphas must be positive numbers, got {alphas}")
        self.alphas = alphas
        self.records: list[dict[str, Any]] = []

    def add(self, pred: Any, gt: Any, reference_length: float, category: str = "all",
            name: Optional[str] = None) -> dict[float, float]:
        """Score one pair; returns its PCK per alpha (NaN if it has no keypoints)."""
        d = keypoint_errors(pred, gt)
        if not reference_length > 0:
            raise ValueError(f"PCKAccumulator.add: reference_length must be > 0, got {reference_length}")
        correct = {a: int(np.sum(d <= a * reference_length)) for a in self.alphas}
        self.records.append({"name": name, "category": category, "points": len(d), "correct": correct,
                             "reference_length": float(reference_length)})
        n = len(d)
        return {a: (c / n if n else float("nan")) for a, c in correct.items()}

    def __len__(self) -> int:
        return len(self.records)

    def _aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        nonempty = [r for r in records if r["points"]]
        points = sum(r["points"] for r in records)
        return {
            "per_image": {a: _mean([r["correct"][a] / r["points"] for r in nonempty]) for a in self.alphas},
            "per_point": {a: (sum(r["correct"][a] for r in records) / points if points else float("nan"))
                          for a in self.alphas},
            "pairs": len(records),
            "points": points,
        }

    def result(self) -> PCKResult:
        overall = self._aggregate(self.records)
        cats: dict[str, list[dict[str, Any]]] = {}
        for r in self.records:
            cats.setdefault(r["category"], []).append(r)
        per_cat = {c: self._aggregate(rs) for c, rs in sorted(cats.items())}
        return PCKResult(
            alphas=self.alphas,
            per_image=overall["per_image"],
            per_point=overall["per_point"],
            per_category=per_cat,
            category_mean={a: _mean([v["per_image"][a] for v in per_cat.values()]) for a in self.alphas},
            num_pairs=len(self.records),
            num_points=overall["points"],
            num_empty_pairs=sum(1 for r in self.records if not r["points"]),
        )


# ============================================================================ co-segmentation


def jaccard(pred: Any, gt: Any, void: Optional[Any] = None) -> float:
    """Intersection over union of two foreground masks (1.0 when both are empty); ``void`` pixels are ignored."""
    p, g = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    _same_shape(p, g, "jaccard")
    if void is not None:
        keep = ~_as_mask(void, "void")
        _same_shape(keep, g, "jaccard (void)")
        p, g = p & keep, g & keep
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else np.count_nonzero(p & g) / union


def coseg_precision(pred: Any, gt: Any, void: Optional[Any] = None) -> float:
    """Co-segmentation "precision" (Rubinstein et al. 2013): the fraction of pixels whose
    foreground/background label is right, i.e. pixel accuracy — not detection precision.
    NaN if every pixel is void."""
    p, g = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    _same_shape(p, g, "coseg_precision")
    if void is None:
        return float(np.mean(p == g)) if p.size else float("nan")
    keep = ~_as_mask(void, "void")
    _same_shape(keep, g, "coseg_precision (void)")
    n = np.count_nonzero(keep)
    return float(np.count_nonzero((p == g) & keep) / n) if n else float("nan")


@dataclass
class CosegResult:
    """Co-segmentation aggregates. ``jaccard``/``precision``: mean over sets of the per-set
    means (the usual protocol); ``*_images``: mean over all images; ``per_set`` and
    ``per_image`` hold the breakdown."""

    jaccard: float
    precision: float
    jaccard_images: float
    precision_images: float
    per_set: dict[str, dict[str, float]]
    per_image: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return _json(self.__dict__)


def coseg_scores(pred: Any, gt: Any, void: Optional[Any] = None,
                 skip_empty_jaccard: bool = True) -> tuple[float, float]:
    """``(jaccard, precision)`` of one co-segmentation mask.

    With ``skip_empty_jaccard`` (the convention of the Internet dataset's evaluation, whose sets hold
    images without the object) Jaccard is NaN -- left out of the averages -- when the ground truth has
    no foreground; precision is always scored.
    """
    g = _as_mask(gt, "gt")
    keep = g if void is None else g & ~_as_mask(void, "void")
    j = float("nan") if skip_empty_jaccard and not keep.any() else jaccard(pred, gt, void)
    return j, coseg_precision(pred, gt, void)


class CosegAccumulator:
    """Collects per-image Jaccard and precision, grouped by co-segmentation set.

    ``skip_empty_jaccard``: see :func:`coseg_scores` (default off here: an empty ground truth
    scores Jaccard 1 if the prediction is empty too, else 0).
    """

    def __init__(self, skip_empty_jaccard: bool = False) -> None:
        self.skip_empty_jaccard = bool(skip_empty_jaccard)
        self.records: list[dict[str, Any]] = []

    def add(self, pred: Any, gt: Any, set_name: str = "all", name: Optional[str] = None,
            void: Optional[Any] = None) -> tuple[float, float]:
        """Score one image; returns ``(jaccard, precision)``."""
        j, p = coseg_scores(pred, gt, void, self.skip_empty_jaccard)
        self.records.append({"set": set_name, "name": name, "jaccard": j, "precision": p})
        return j, p

    def __len__(self) -> int:
        return len(self.records)

    def result(self) -> CosegResult:
        sets: dict[str, list[dict[str, Any]]] = {}
        for r in self.records:
            sets.setdefault(r["set"], []).append(r)
        per_set = {s: {"jaccard": _mean([r["jaccard"] for r in rs]),
                       "precision": _mean([r["precision"] for r in rs]), "images": len(rs)}
                   for s, rs in sorted(sets.items())}
        return CosegResult(
            jaccard=_mean([v["jaccard"] for v in per_set.values()]),
            precision=_mean([v["precision"] for v in per_set.values()]),
            jaccard_images=_mean([r["jaccard"] for r in self.records]),
            precision_images=_mean([r["precision"] for r in self.records]),
            per_set=per_set,
            per_image=[dict(r) for r in self.records],
        )


# ============================================================================ DAVIS


def region_similarity(pred: Any, gt: Any, void: Optional[Any] = None) -> float:
    """DAVIS region similarity J: IoU of the object masks, 1.0 when both are empty."""
    return jaccard(pred, gt, void)


def seg2bmap(mask: Any) -> np.ndarray:
    """One-pixel-wide boundary of a binary mask, as defined by the DAVIS benchmark.

    A pixel is on the boundary when it differs from its right, lower or
    lower-right neighbour; in the last row only the right neighbour counts, in
    the last column only the lower one, and the bottom-right pixel never does.
    """
    seg = _as_mask(mask, "mask")
    right = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    down = np.zeros_like(seg)
    down[:-1, :] = seg[1:, :]
    diag = np.zeros_like(seg)
    diag[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ right) | (seg ^ down) | (seg ^ diag)
    b[-1, :] = seg[-1, :] ^ right[-1, :]
    b[:, -1] = seg[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2 <= radius**2).astype(np.uint8)


def boundary_f_measure(pred: Any, gt: Any, void: Optional[Any] = None, bound_th: float = 0.008) -> float:
    """DAVIS boundary accuracy F: F-score of boundary pixels matched within a tolerance.

    The tolerance is a disk of radius ``ceil(bound_th * image diagonal)`` pixels
    (``bound_th >= 1`` is taken as the radius itself). Void pixels are removed
    before boundaries are taken. Both boundaries empty gives 1.0; only one
    empty gives 0.0.
    """
    import cv2

    p, g = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    _same_shape(p, g, "boundary_f_measure")
    if void is not None:
        keep = ~_as_mask(void, "void")
        _same_shape(keep, g, "boundary_f_measure (void)")
        p, g = p & keep, g & keep
    radius = int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(*g.shape)))
    pb, gb = seg2bmap(p), seg2bmap(g)
    n_p, n_g = int(np.count_nonzero(pb)), int(np.count_nonzero(gb))
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    kernel = _disk(radius)
    p_dil = cv2.dilate(pb.astype(np.uint8), kernel) > 0
    g_dil = cv2.dilate(gb.astype(np.uint8), kernel) > 0
    precision = np.count_nonzero(pb & g_dil) / n_p
    recall = np.count_nonzero(gb & p_dil) / n_g
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def davis_statistics(values: Sequence[float], n_bins: int = 4) -> dict[str, float]:
    """Mean, recall (fraction > 0.5) and decay of per-frame scores, as the DAVIS benchmark reports them.

    Decay is the mean of the first of ``n_bins`` equal temporal bins minus the
    mean of the last (adjacent bins share their boundary frame). NaN entries
    (frames without ground truth) are ignored.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    valid = v[~np.isnan(v)]
    if valid.size == 0:
        return {"mean": float("nan"), "recall": float("nan"), "decay": float("nan")}
    edges = np.floor(np.linspace(1, len(v), n_bins + 1) + 0.5).astype(np.int64) - 1
    bins = [v[edges[i]: edges[i + 1] + 1] for i in range(n_bins)]
    first, last = bins[0][~np.isnan(bins[0])], bins[-1][~np.isnan(bins[-1])]
    decay = float(first.mean() - last.mean()) if first.size and last.size else float("nan")
    return {"mean": float(valid.mean()), "recall": float(np.mean(valid > 0.5)), "decay": decay}


@dataclass
class DavisResult:
    """DAVIS aggregates over all objects of all sequences (each object's statistics
    are over its frames): ``J``/``F`` hold mean, recall and decay; ``JF`` is the mean of
    J-mean and F-mean; ``per_sequence[seq][object_id]`` has that object's J and F."""

    J: dict[str, float]
    F: dict[str, float]
    JF: float
    per_sequence: dict[str, dict[int, dict[str, Any]]]

    def to_dict(self) -> dict[str, Any]:
        return _json(self.__dict__)


class DavisAccumulator:
    """Collects per-frame J and F for each object of each sequence (semi-supervised protocol:
    predicted and ground-truth objects are matched by label id).

    ``skip_first_last`` (default, as in the DAVIS 2017 evaluation code) leaves
    out the first frame, which is given to the method, and the last frame.
    """

    def __init__(self, bound_th: float = 0.008, skip_first_last: bool = True) -> None:
        if not bound_th > 0:
            raise ValueError(f"DavisAccumulator: bound_th must be > 0, got {bound_th}")
        self.bound_th = bound_th
        self.skip_first_last = skip_first_last
        self.sequences: dict[str, dict[int, dict[str, list[float]]]] = {}

    def add(self, sequence: str, pred: Sequence[Any], gt: Sequence[Optional[Any]],
            object_ids: Optional[Sequence[int]] = None, void_label: int = 255) -> dict[int, dict[str, float]]:
        """Score one sequence of label maps (``pred[t]`` and ``gt[t]`` are ``HxW``; ``gt[t]`` may be
        None for an unannotated frame; ``void_label`` pixels of the ground truth are ignored).

        Objects are the non-zero, non-void labels of the first annotated
        ground-truth frame unless ``object_ids`` is given. Returns each
        object's mean J and F.
        """
        if len(pred) != len(gt):
            raise ValueError(f"DavisAccumulator.add({sequence!r}): {len(pred)} predicted frames, "
                             f"{len(gt)} ground-truth frames")
        if sequence in self.sequences:
            raise ValueError(f"DavisAccumulator.add: sequence {sequence!r} was already added")
        frames = list(range(len(gt)))
        if object_ids is None:
            first = next((np.asarray(g) for g in gt if g is not None), None)
            if first is None:
                raise ValueError(f"DavisAccumulator.add({sequence!r}): no annotated frame")
            object_ids = [int(v) for v in np.unique(first) if v != 0 and v != void_label]
        if self.skip_first_last:
            frames = frames[1:-1]
        scores: dict[int, dict[str, list[float]]] = {int(k): {"J": [], "F": []} for k in object_ids}
        for t in frames:
            if gt[t] is None:
                for k in scores:
                    scores[k]["J"].append(float("nan"))
                    scores[k]["F"].append(float("nan"))
                continue
            g, p = np.asarray(gt[t]), np.asarray(pred[t])
            _same_shape(p, g, f"DavisAccumulator.add({sequence!r}) frame {t}")
            void = g == void_label
            for k in scores:
                scores[k]["J"].append(region_similarity(p == k, g == k, void))
                scores[k]["F"].append(boundary_f_measure(p == k, g == k, void, self.bound_th))
        self.sequences[sequence] = scores
        return {k: {"J": _mean(v["J"]), "F": _mean(v["F"])} for k, v in scores.items()}

    def result(self) -> DavisResult:
        per_seq: dict[str, dict[int, dict[str, Any]]] = {}
        stats: dict[str, list[dict[str, float]]] = {"J": [], "F": []}
        for seq, objs in self.sequences.items():
            per_seq[seq] = {}
            for k, v in objs.items():
                js, fs = davis_statistics(v["J"]), davis_statistics(v["F"])
                per_seq[seq][k] = {"J": js, "F": fs}
                stats["J"].append(js)
                stats["F"].append(fs)
        agg = {m: {s: _mean([d[s] for d in stats[m]]) for s in ("mean", "recall", "decay")} for m in ("J", "F")}
        return DavisResult(J=agg["J"], F=agg["F"], JF=_mean([agg["J"]["mean"], agg["F"]["mean"]]),
                           per_sequence=per_seq)


# ============================================================================ NMI / ARI


def contingency_table(labels_true: Any, labels_pred: Any) -> np.ndarray:
    """Counts ``n[i, j]`` of samples with the i-th true label and the j-th predicted label (sorted label order)."""
    t = np.asarray(labels_true).reshape(-1)
    p = np.asarray(labels_pred).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"contingency_table: {t.size} true labels but {p.size} predicted labels")
    tv, ti = np.unique(t, return_inverse=True)
    pv, pi = np.unique(p, return_inverse=True)
    table = np.zeros((len(tv), len(pv)), dtype=np.int64)
    np.add.at(table, (ti, pi), 1)
    return table


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi_from_contingency(table: Any, average: str = "arithmetic") -> float:
    """Normalised mutual information from a contingency table.

    ``average`` (how the two entropies are combined to normalise MI):
    ``arithmetic`` (the scikit-learn default the part-discovery papers use),
    ``geometric``, ``min`` or ``max``. Both labelings constant gives 1.0; one
    constant and the other not gives 0.0; no samples gives NaN.
    """
    c = np.asarray(table, dtype=np.float64)
    n = c.sum()
    if n == 0:
        return float("nan")
    a, b = c.sum(axis=1), c.sum(axis=0)
    if np.count_nonzero(a) == 1 and np.count_nonzero(b) == 1:
        return 1.0
    nz = c > 0
    mi = float((c[nz] / n * np.log(c[nz] * n / np.outer(a, b)[nz])).sum())
    mi = max(mi, 0.0)
    if mi <= 1e-15:
        return 0.0
    hu, hv = _entropy(a), _entropy(b)
    norms = {"arithmetic": (hu + hv) / 2, "geometric": math.sqrt(hu * hv), "min": min(hu, hv), "max": max(hu, hv)}
    if average not in norms:
        raise ValueError(f"average must be one of {', '.join(norms)}; got {average!r}")
    return float(min(mi / norms[average], 1.0))


def ari_from_contingency(table: Any) -> float:
    """Adjusted Rand index from a contingency table (Hubert & Arabie).

    Identical partitions give 1.0 (including the degenerate cases of one
    cluster each and all singletons); chance level is 0; no samples gives NaN.
    """
    c = np.asarray(table, dtype=np.float64)
    n = c.sum()
    if n == 0:
        return float("nan")
    if n == 1:
        return 1.0

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2).sum())

    index = pairs(c)
    row, col = pairs(c.sum(axis=1)), pairs(c.sum(axis=0))
    total = n * (n - 1) / 2
    expected = row * col / total
    max_index = (row + col) / 2
    if max_index == expected:
        return 1.0
    return float((index - expected) / (max_index - expected))


def nmi(labels_true: Any, labels_pred: Any, average: str = "arithmetic") -> float:
    """Normalised mutual information between two labelings of the same samples."""
    return nmi_from_contingency(contingency_table(labels_true, labels_pred), average)


def ari(labels_true: Any, labels_pred: Any) -> float:
    """Adjusted Rand index between two labelings of the same samples."""
    return ari_from_contingency(contingency_table(labels_true, labels_pred))


def sample_labels(label_map: Any, points: Any) -> np.ndarray:
    """Labels of ``label_map`` (``HxW``) at ``(N, 2)`` (x, y) points, rounded to the nearest pixel and clipped.

    For keypoint-based part evaluation (e.g. CUB): compare the sampled part
    labels with the keypoint ids using :func:`nmi`/:func:`ari`.
    """
    lm = np.asarray(label_map)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(pts).all():
        raise ValueError("sample_labels: points must be finite")
    x = np.clip(np.floor(pts[:, 0] + 0.5).astype(np.int64), 0, lm.shape[1] - 1)
    y = np.clip(np.floor(pts[:, 1] + 0.5).astype(np.int64), 0, lm.shape[0] - 1)
    return lm[y, x]


@dataclass
class PartResult:
    """Part-segmentation agreement on foreground pixels. ``nmi``/``ari``: over all
    foreground samples of the dataset pooled (predicted part ids are assumed
    consistent across images, as in part co-segmentation); ``*_per_image``: mean of
    per-image scores."""

    nmi: float
    ari: float
    nmi_per_image: float
    ari_per_image: float
    num_images: int
    num_samples: int

    def to_dict(self) -> dict[str, Any]:
        return _json(self.__dict__)


class PartAccumulator:
    """Collects part labelings image by image and reports NMI and ARI on the foreground only.

    Foreground is where the ground truth is neither ``background`` nor
    ``ignore`` unless a ``foreground`` mask is passed to :meth:`add` (pass all
    True to score every sample, e.g. keypoint labels). Background pixels are
    left out, as in the unsupervised part-discovery literature, so a method is
    not rewarded for separating object from background.
    """

    def __init__(self, background: int = 0, ignore: Optional[int] = 255, average: str = "arithmetic") -> None:
        if average not in ("arithmetic", "geometric", "min", "max"):
            raise ValueError(f"average must be arithmetic, geometric, min or max; got {average!r}")
        self.background = background
        self.ignore = ignore
        self.average = average
        self._counts: dict[tuple[Any, Any], int] = {}
        self._per_image: list[tuple[float, float]] = []
        self.num_samples = 0

    def add(self, gt: Any, pred: Any, foreground: Optional[Any] = None) -> tuple[float, float]:
        """Score one image (label arrays of equal shape); returns its ``(nmi, ari)``."""
        g, p = np.asarray(gt), np.asarray(pred)
        _same_shape(p, g, "PartAccumulator.add")
        if foreground is None:
            fg = g != self.background
            if self.ignore is not None:
                fg &= g != self.ignore
        else:
            fg = np.asarray(foreground, dtype=bool)
            _same_shape(fg, g, "PartAccumulator.add (foreground)")
        gv, pv = g[fg].reshape(-1), p[fg].reshape(-1)
        if gv.size:
            pairs, counts = np.unique(np.stack([gv, pv]), axis=1, return_counts=True)
            for (a, b), n in zip(pairs.T.tolist(), counts.tolist()):
                self._counts[(a, b)] = self._counts.get((a, b), 0) + n
        self.num_samples += int(gv.size)
        table = contingency_table(gv, pv)
        score = (nmi_from_contingency(table, self.average), ari_from_contingency(table))
        self._per_image.append(score)
        return score

    def table(self) -> np.ndarray:
        """The pooled contingency table (rows: true labels, columns: predicted, both sorted)."""
        if not self._counts:
            return np.zeros((0, 0), dtype=np.int64)
        tv = sorted({k[0] for k in self._counts})
        pv = sorted({k[1] for k in self._counts})
        ti, pi = {v: i for i, v in enumerate(tv)}, {v: i for i, v in enumerate(pv)}
        t = np.zeros((len(tv), len(pv)), dtype=np.int64)
        for (a, b), n in self._counts.items():
            t[ti[a], pi[b]] = n
        return t

    def result(self) -> PartResult:
        t = self.table()
        return PartResult(
            nmi=nmi_from_contingency(t, self.average),
            ari=ari_from_contingency(t),
            nmi_per_image=_mean([s[0] for s in self._per_image]),
            ari_per_image=_mean([s[1] for s in self._per_image]),
            num_images=len(self._per_image),
            num_samples=self.num_samples,
        )


__all__ = [
    "DEFAULT_ALPHAS",
    "pck_reference_length",
    "keypoint_errors",
    "pck",
    "PCKAccumulator",
    "PCKResult",
    "jaccard",
    "coseg_precision",
    "coseg_scores",
    "CosegAccumulator",
    "CosegResult",
    "region_similarity",
    "seg2bmap",
    "boundary_f_measure",
    "davis_statistics",
    "DavisAccumulator",
    "DavisResult",
    "contingency_table",
    "nmi_from_contingency",
    "ari_from_contingency",
    "nmi",
    "ari",
    "sample_labels",
    "PartAccumulator",
    "PartResult",
]
