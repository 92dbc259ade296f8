"""Semantic-correspondence benchmarks: PF-WILLOW, SPair-71k, PF-PASCAL and CUB-200-2011 keypoints.

Every reader returns a list of :class:`CorrespondencePair` (or, for per-image
datasets, :class:`KeypointImage` that :func:`pairs_within_categories` turns into
pairs). Keypoints follow the dinokit convention: ``(x, y)`` float pixel
coordinates in the original image, exactly as the annotation files store them
(no 0/1-based shift, so numbers match the public evaluation code).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ...errors import DatasetError
from .common import (
    IMAGE_SUFFIXES,
    PathLike,
    as_bbox,
    as_points,
    check_points_in_image,
    image_size,
    load_mat,
    read_rgb,
    require_dir,
    require_file,
)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
"""PASCAL VOC class names; PF-PASCAL's ``class`` column is a 1-based index into this tuple."""


def keypoint_bbox(points: np.ndarray) -> Optional[np.ndarray]:
    """Tight box ``(x1, y1, x2, y2)`` around the annotated (non-NaN) points, or None if there are none."""
    pts = points[~np.isnan(points).any(axis=1)] if points.size else points
    if len(pts) == 0:
        return None
    return np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class KeypointImage:
    """One image with semantic keypoints (a row of a per-image dataset such as PF-WILLOW or CUB).

    ``keypoints`` is ``(K, 2)`` (x, y); a row of NaN marks a keypoint that is not
    visible or not annotated, so index ``k`` means the same semantic point in
    every image of a category.
    """

    name: str
    path: Path
    category: str
    keypoints: np.ndarray
    bbox: Optional[np.ndarray] = None
    size: Optional[tuple[int, int]] = None
    annotation: Optional[Path] = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def visible(self) -> np.ndarray:
        """``(K,)`` bool: which keypoints are annotated."""
        return ~np.isnan(self.keypoints).any(axis=1) if self.keypoints.size else np.zeros(0, dtype=bool)

    def validate(self, check_image: bool = True, cache: Optional[dict] = None) -> None:
        """Check shapes, and (with ``check_image``) that the image exists and holds the keypoints."""
        where = str(self.annotation or self.path)
        pts = as_points(self.keypoints, where, allow_nan=True)
        if self.bbox is not None:
            as_bbox(self.bbox, where)
        if check_image:
            size = image_size(self.path, cache)
            if self.size is not None and tuple(self.size) != size:
                raise DatasetError(f"{where}: annotation says the image is {self.size[0]}x{self.size[1]}, "
                                   f"but {self.path.name} is {size[0]}x{size[1]}")
            check_points_in_image(pts, size, where)

    def load_image(self) -> np.ndarray:
        """The image as ``HxWx3`` uint8 RGB."""
        return read_rgb(self.path)


@dataclass(frozen=True, eq=False)
class CorrespondencePair:
    """A source/target image pair with corresponding keypoints.

    ``src_kps[i]`` and ``trg_kps[i]`` are the same semantic point (``(N, 2)``,
    x, y); only points annotated in both images are kept, so N may be 0.
    ``kp_ids`` gives each point's semantic id within its category.
    ``src_bbox``/``trg_bbox`` are ``(x1, y1, x2, y2)``; ``meta['bbox_from']``
    says whether they come from the annotation or from the keypoints.
    """

    name: str
    category: str
    src_path: Path
    trg_path: Path
    src_kps: np.ndarray
    trg_kps: np.ndarray
    kp_ids: np.ndarray
    src_bbox: Optional[np.ndarray] = None
    trg_bbox: Optional[np.ndarray] = None
    src_size: Optional[tuple[int, int]] = None
    trg_size: Optional[tuple[int, int]] = None
    annotation: Optional[Path] = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A name unique within a dataset, usable as a relative output path (``category/name``)."""
        return f"{self.category}/{self.name}"

    @property
    def num_points(self) -> int:
        return int(len(self.trg_kps))

    def pck_length(self, by: str = "bbox") -> float:
        """Length that PCK@alpha is relative to: max side of the target box (``by='bbox'``)
        or of the target image (``by='image'``)."""
        from ..metrics import pck_reference_length

        if by == "bbox":
            if self.trg_bbox is None:
                raise DatasetError(f"{self.annotation or self.trg_path}: pair {self.name} has no target bounding box")
            return pck_reference_length(bbox=self.trg_bbox)
        if by == "image":
            size = self.trg_size if self.trg_size is not None else image_size(self.trg_path)
            return pck_reference_length(image_size=size)
        raise ValueError(f"pck_length: by must be 'bbox' or 'image', got {by!r}")

    def validate(self, check_images: bool = True, cache: Optional[dict] = None) -> None:
        """Check that the keypoints are paired, finite and (with ``check_images``) inside both images."""
        where = str(self.annotation or self.src_path)
        src = as_points(self.src_kps, where)
        trg = as_points(self.trg_kps, where)
        if len(src) != len(trg) or len(self.kp_ids) != len(src):
            raise DatasetError(f"{where}: pair {self.name} has {len(src)} source and {len(trg)} target keypoints")
        for box in (self.src_bbox, self.trg_bbox):
            if box is not None:
                as_bbox(box, where)
        if check_images:
            for path, pts, expected in ((self.src_path, src, self.src_size), (self.trg_path, trg, self.trg_size)):
                size = image_size(path, cache)
                if expected is not None and tuple(expected) != size:
                    raise DatasetError(f"{where}: annotation says {path.name} is {expected[0]}x{expected[1]}, "
                                       f"but the image is {size[0]}x{size[1]}")
                check_points_in_image(pts, size, f"{where} ({path.name})")

    def load_images(self) -> tuple[np.ndarray, np.ndarray]:
        """Source and target images as ``HxWx3`` uint8 RGB."""
        return read_rgb(self.src_path), read_rgb(self.trg_path)


def make_pair(src: KeypointImage, trg: KeypointImage, meta: Optional[dict] = None) -> CorrespondencePair:
    """Pair two images of the same category, keeping the keypoints annotated in both."""
    if src.keypoints.shape != trg.keypoints.shape:
        raise DatasetError(f"{trg.annotation or trg.path}: has {len(trg.keypoints)} keypoints, "
                           f"but {src.annotation or src.path} has {len(src.keypoints)}")
    both = np.flatnonzero(src.visible & trg.visible)
    src_box, trg_box, box_from = src.bbox, trg.bbox, "annotation"
    if src_box is None or trg_box is None:
        src_box, trg_box, box_from = keypoint_bbox(src.keypoints), keypoint_bbox(trg.keypoints), "keypoints"
    info = {"bbox_from": box_from, "src_name": src.name, "trg_name": trg.name}
    info.update(meta or {})
    return CorrespondencePair(
        name=f"{src.name}-{trg.name}",
        category=src.category,
        src_path=src.path,
        trg_path=trg.path,
        src_kps=src.keypoints[both].copy(),
        trg_kps=trg.keypoints[both].copy(),
        kp_ids=both.astype(np.int64),
        src_bbox=src_box,
        trg_bbox=trg_box,
        src_size=src.size,
        trg_size=trg.size,
        annotation=trg.annotation,
        meta=info,
    )


def pairs_within_categories(
    images: Sequence[KeypointImage],
    max_pairs_per_category: Optional[int] = None,
    min_common_keypoints: int = 1,
    seed: int = 0,
) -> list[CorrespondencePair]:
    """Every ordered pair of distinct images within each category (the PF-WILLOW protocol).

    Pairs sharing fewer than ``min_common_keypoints`` annotated points are
    dropped. ``max_pairs_per_category`` keeps a reproducible random subset
    (drawn with ``seed``, in the original order) for large datasets like CUB.
    """
    by_cat: dict[str, list[KeypointImage]] = {}
    for im in images:
        by_cat.setdefault(im.category, []).append(im)
    rng = np.random.default_rng(seed)
    pairs: list[CorrespondencePair] = []
    for cat, ims in by_cat.items():
        odd = next((im for im in ims if im.keypoints.shape != ims[0].keypoints.shape), None)
        if odd is not None:
            raise DatasetError(f"{odd.annotation or odd.path}: has {len(odd.keypoints)} keypoints, but "
                               f"{ims[0].annotation or ims[0].path} of the same category has {len(ims[0].keypoints)}")
        vis = np.stack([im.visible for im in ims])
        common = vis.astype(np.int64) @ vis.T.astype(np.int64)
        idx = [(i, j) for i in range(len(ims)) for j in range(len(ims))
               if i != j and common[i, j] >= min_common_keypoints]
        if max_pairs_per_category is not None and len(idx) > max_pairs_per_category:
            keep = np.sort(rng.choice(len(idx), size=max_pairs_per_category, replace=False))
            idx = [idx[k] for k in keep]
        pairs.extend(make_pair(ims[i], ims[j]) for i, j in idx)
    return pairs


def _validate_all(items: Iterable[Any], check_images: bool) -> None:
    cache: dict = {}
    for item in items:
        if isinstance(item, KeypointImage):
            item.validate(check_image=check_images, cache=cache)
        else:
            item.validate(check_images=check_images, cache=cache)


def _find_image(folder: Path, stem: str, where: Path) -> Path:
    for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    raise DatasetError(f"{where}: no image named {stem}.* next to this annotation")


# ----------------------------------------------------------------------------- PF-WILLOW


def read_pf_willow_images(root: PathLike, check: bool = True) -> list[KeypointImage]:
    """PF-WILLOW images: ``<root>/<class>/<name>.{png,jpg}`` with ``<name>.mat`` holding ``pts_coord``.

    ``pts_coord`` is ``2 x K`` (row 0 = x, row 1 = y, pixels); the K points
    correspond across the images of a class. The bounding box used for PCK is
    the keypoints' own box (``bbox`` is left None). Also reads PF-PASCAL-style
    class folders laid out the same way.
    """
    root = require_dir(root, "PF-WILLOW folder")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    images: list[KeypointImage] = []
    for cls in classes:
        mats = sorted(cls.glob("*.mat"))
        for mat in mats:
            data = load_mat(mat)
            if "pts_coord" not in data:
                raise DatasetError(f"{mat}: no 'pts_coord' variable (expected a 2 x K keypoint array)")
            coords = np.asarray(data["pts_coord"], dtype=np.float64)
            if coords.ndim != 2 or coords.shape[0] != 2:
                raise DatasetError(f"{mat}: 'pts_coord' must be 2 x K (row 0 = x, row 1 = y), got {coords.shape}")
            kps = as_points(coords.T, str(mat), allow_nan=True)
            images.append(KeypointImage(name=mat.stem, path=_find_image(cls, mat.stem, mat), category=cls.name,
                                        keypoints=kps, annotation=mat))
    if not images:
        raise DatasetError(f"{root}: no <class>/<image>.mat annotations found (is this the PF-WILLOW folder?)")
    _validate_all(images, check)
    return images


def read_pf_willow(root: PathLike, check: bool = True) -> list[CorrespondencePair]:
    """PF-WILLOW pairs: every ordered pair of distinct images within a class (900 for the full set).

    PCK is conventionally taken relative to the max side of the target
    keypoints' bounding box, which is what ``trg_bbox`` holds here.
    """
    return pairs_within_categories(read_pf_willow_images(root, check=check))


# ----------------------------------------------------------------------------- SPair-71k

_SPLIT_ALIASES = {"train": "trn", "trn": "trn", "val": "val", "validation": "val", "test": "test"}


def _spair_split(split: str) -> str:
    try:
        return _SPLIT_ALIASES[split]
    except KeyError:
        raise ValueError(f"split must be one of trn/train, val, test; got {split!r}") from None


def read_spair(
    root: PathLike,
    split: str = "test",
    categories: Optional[Sequence[str]] = None,
    check: bool = True,
) -> list[CorrespondencePair]:
    """SPair-71k pairs from the official layout.

    ``<root>/PairAnnotation/<split>/*.json`` (split ``trn``, ``val`` or
    ``test``), each with ``src_imname``, ``trg_imname``, ``category``,
    ``src_kps``/``trg_kps`` (lists of ``[x, y]``, already matched),
    ``src_bndbox``/``trg_bndbox`` (``x1, y1, x2, y2``) and optionally
    ``kps_ids``, ``src_imsize``/``trg_imsize`` (``[w, h, c]``) and the difficulty
    flags, which go into ``meta``. Images are ``<root>/JPEGImages/<category>/``.
    """
    root = require_dir(root, "SPair-71k folder")
    ann_dir = require_dir(root / "PairAnnotation" / _spair_split(split), "SPair-71k pair annotations")
    img_root = require_dir(root / "JPEGImages", "SPair-71k image folder")
    wanted = set(categories) if categories is not None else None
    files = sorted(ann_dir.glob("*.json"))
    if not files:
        raise DatasetError(f"{ann_dir}: no .json pair annotations")
    pairs = []
    for f in files:
        ann = _spair_json(f)
        cat = str(ann["category"])
        if wanted is not None and cat not in wanted:
            continue
        src = as_points(ann["src_kps"], f"{f} (src_kps)")
        trg = as_points(ann["trg_kps"], f"{f} (trg_kps)")
        if len(src) != len(trg):
            raise DatasetError(f"{f}: {len(src)} src_kps but {len(trg)} trg_kps")
        ids = _spair_ids(ann, f, len(src))
        sizes = [_spair_size(ann, key, f) for key in ("src_imsize", "trg_imsize")]
        meta = {k: ann[k] for k in ("pair_id", "mirror", "viewpoint_variation", "scale_variation", "truncation",
                                    "occlusion", "src_pose", "trg_pose") if k in ann}
        meta["bbox_from"] = "annotation"
        pairs.append(CorrespondencePair(
            name=f.stem, category=cat,
            src_path=img_root / cat / str(ann["src_imname"]), trg_path=img_root / cat / str(ann["trg_imname"]),
            src_kps=src, trg_kps=trg, kp_ids=ids,
            src_bbox=as_bbox(ann["src_bndbox"], f"{f} (src_bndbox)"),
            trg_bbox=as_bbox(ann["trg_bndbox"], f"{f} (trg_bndbox)"),
            src_size=sizes[0], trg_size=sizes[1], annotation=f, meta=meta,
        ))
    if wanted is not None:
        unknown = wanted - {p.category for p in pairs}
        if unknown:
            raise DatasetError(f"{ann_dir}: no pairs for categor{'y' if len(unknown) == 1 else 'ies'} "
                               f"{', '.join(sorted(unknown))}")
    _validate_all(pairs, check)
    return pairs


def _spair_json(f: Path) -> dict[str, Any]:
    """One SPair-71k pair annotation, its required fields checked."""
    try:
        ann = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{f}: not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(ann, dict):
        raise DatasetError(f"{f}: expected a JSON object")
    missing = [k for k in ("src_imname", "trg_imname", "category", "src_kps", "trg_kps", "src_bndbox", "trg_bndbox")
               if k not in ann]
    if missing:
        raise DatasetError(f"{f}: missing field(s) {', '.join(missing)}")
    return ann


def _spair_ids(ann: dict[str, Any], f: Path, n: int) -> np.ndarray:
    """The keypoint ids (``kps_ids``, else 0..n-1)."""
    if "kps_ids" not in ann:
        return np.arange(n, dtype=np.int64)
    try:
        ids = np.asarray([int(k) for k in ann["kps_ids"]], dtype=np.int64)
    except (TypeError, ValueError):
        raise DatasetError(f"{f}: kps_ids must be integers") from None
    if len(ids) != n:
        raise DatasetError(f"{f}: {len(ids)} kps_ids for {n} keypoints")
    return ids


def _spair_size(ann: dict[str, Any], key: str, f: Path) -> Optional[tuple[int, int]]:
    """``(width, height)`` from ``src_imsize``/``trg_imsize`` (``[w, h, c]``), or None."""
    v = ann.get(key)
    if v is None:
        return None
    try:
        return int(v[0]), int(v[1])
    except (TypeError, ValueError, IndexError):
        raise DatasetError(f"{f}: {key} must be [width, height, ...]") from None


# ----------------------------------------------------------------------------- PF-PASCAL


def _parse_coords(text: str, where: str) -> np.ndarray:
    text = (text or "").strip()
    if not text:
        return np.zeros(0, dtype=np.float64)
    try:
        return np.array([float(t) for t in text.split(";") if t.strip()], dtype=np.float64)
    except ValueError:
        raise DatasetError(f"{where}: coordinates must be numbers separated by ';', got {text[:40]!r}") from None


def _pf_pascal_csv(path: Path, split: str) -> Path:
    if path.is_file():
        return path
    root = require_dir(path, "PF-PASCAL folder")
    names = {"trn": ("trn", "train"), "val": ("val",), "test": ("test",)}[_spair_split(split)]
    for n in names:
        for pattern in (f"{n}_pairs.csv", f"{n}_pairs_pf_pascal.csv"):
            if (root / pattern).is_file():
                return root / pattern
    raise DatasetError(f"{root}: no {names[0]}_pairs.csv or {names[0]}_pairs_pf_pascal.csv pair list")


def _resolve(name: str, bases: Sequence[Path], where: str) -> Path:
    rel = Path(name.strip())
    candidates = []
    for base in bases:
        candidates += [base / rel, base / "JPEGImages" / rel.name]
    for c in candidates:
        if c.is_file():
            return c
    raise DatasetError(f"{where}: image {name!r} not found (looked under {', '.join(str(b) for b in bases)})")


def _pf_pascal_annotation(
    img: Path, cat: str, ann_roots: Sequence[Path], cache: dict[Path, tuple[Optional[np.ndarray], Optional[np.ndarray]]]
) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[Path]]:
    """Keypoints (K x 2, NaN when missing) and bbox from ``Annotations/<class>/<stem>.mat``, if that file exists
    (under an annotation root, or beside the image's own folder: ``PF-dataset-PASCAL/{JPEGImages,Annotations}``)."""
    for ar in [*ann_roots, img.parent.parent / "Annotations"]:
        mat = ar / cat / f"{img.stem}.mat"
        if mat.is_file():
            if mat not in cache:
                data = load_mat(mat)
                kps = as_points(data["kps"], str(mat), allow_nan=True) if "kps" in data else None
                box = as_bbox(data["bbox"], str(mat)) if "bbox" in data else None
                cache[mat] = (kps, box)
            return (*cache[mat], mat)
    return None, None, None


def read_pf_pascal(
    path: PathLike,
    split: str = "test",
    image_root: Optional[PathLike] = None,
    check: bool = True,
) -> list[CorrespondencePair]:
    """PF-PASCAL pairs from its CSV pair list.

    ``path`` is the CSV (``source_image,target_image,class,XA,YA,XB,YB``, with
    ``;``-separated coordinates; training lists may add ``flip``) or the folder
    holding ``<split>_pairs.csv`` / ``<split>_pairs_pf_pascal.csv``. ``class`` is
    a 1-based VOC index (or a class name). Image names are resolved against
    ``image_root`` (default: the CSV folder and its parent) and their
    ``JPEGImages/``. If the CSV has no coordinates, keypoints come from
    ``Annotations/<class>/<stem>.mat`` (``kps``, K x 2, NaN when missing); that
    file's ``bbox`` is used when present, otherwise the keypoints' box.
    ``flip`` is kept in ``meta`` and not applied.
    """
    csv_path = _pf_pascal_csv(Path(path), split)
    bases = [Path(image_root)] if image_root is not None else [csv_path.parent, csv_path.parent.parent]
    ann_roots = [b / "Annotations" for b in bases if (b / "Annotations").is_dir()]
    rows, col = _pf_pascal_rows(csv_path)
    pairs = []
    mat_cache: dict[Path, tuple[Optional[np.ndarray], Optional[np.ndarray]]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{csv_path}:{line_no}"
        if len(row) < len(rows[0]):
            raise DatasetError(f"{where}: {len(row)} fields, header has {len(rows[0])}")
        cat = _voc_category(row[col["class"]].strip(), where)
        src_path = _resolve(row[col["source_image"]], bases, where)
        trg_path = _resolve(row[col["target_image"]], bases, where)
        src_ann = _pf_pascal_annotation(src_path, cat, ann_roots, mat_cache)
        trg_ann = _pf_pascal_annotation(trg_path, cat, ann_roots, mat_cache)
        src_kps, trg_kps, ids = _pf_pascal_points(row, col, where, cat, src_ann, trg_ann)
        src_box, trg_box, box_from = src_ann[1], trg_ann[1], "annotation"
        if src_box is None or trg_box is None:
            src_box, trg_box, box_from = keypoint_bbox(src_kps), keypoint_bbox(trg_kps), "keypoints"
        meta: dict[str, Any] = {"bbox_from": box_from, "line": line_no}
        if "flip" in col and row[col["flip"]].strip():
            try:
                meta["flip"] = int(float(row[col["flip"]]))
            except ValueError:
                raise DatasetError(f"{where}: flip must be 0 or 1") from None
        pairs.append(CorrespondencePair(
            name=f"{src_path.stem}-{trg_path.stem}", category=cat, src_path=src_path, trg_path=trg_path,
            src_kps=src_kps, trg_kps=trg_kps, kp_ids=ids, src_bbox=src_box, trg_bbox=trg_box,
            annotation=csv_path, meta=meta,
        ))
    if not pairs:
        raise DatasetError(f"{csv_path}: no pairs listed")
    _validate_all(pairs, check)
    return pairs


def _pf_pascal_rows(csv_path: Path) -> tuple[list[list[str]], dict[str, int]]:
    """The CSV's rows (header first) and the column of each lower-cased header name."""
    try:
        with open(csv_path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{csv_path}: cannot read CSV ({exc.__class__.__name__})") from None
    if not rows:
        raise DatasetError(f"{csv_path}: empty pair list")
    col = {h.strip().lower(): i for i, h in enumerate(rows[0])}
    for need in ("source_image", "target_image", "class"):
        if need not in col:
            raise DatasetError(f"{csv_path}: header has no '{need}' column (got {','.join(rows[0])})")
    return rows, col


def _voc_category(text: str, where: str) -> str:
    """A 1-based VOC class index (or a class name) -> the class name."""
    try:
        index = int(float(text))
    except ValueError:
        return text
    if not 1 <= index <= len(VOC_CLASSES):
        raise DatasetError(f"{where}: class index {index} outside 1..{len(VOC_CLASSES)}")
    return VOC_CLASSES[index - 1]


def _pf_pascal_points(row: list[str], col: dict[str, int], where: str, cat: str, src_ann: tuple,
                      trg_ann: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source and target keypoints and their ids: from the CSV's XA/YA/XB/YB, else from both ``.mat`` files."""
    if all(k in col for k in ("xa", "ya", "xb", "yb")):
        xa, ya = _parse_coords(row[col["xa"]], where), _parse_coords(row[col["ya"]], where)
        xb, yb = _parse_coords(row[col["xb"]], where), _parse_coords(row[col["yb"]], where)
        if not (len(xa) == len(ya) == len(xb) == len(yb)):
            raise DatasetError(f"{where}: XA/YA/XB/YB have {len(xa)}/{len(ya)}/{len(xb)}/{len(yb)} values")
        return np.stack([xa, ya], 1), np.stack([xb, yb], 1), np.arange(len(xa), dtype=np.int64)
    (src_kps, _, src_mat), (trg_kps, _, trg_mat) = src_ann, trg_ann
    if src_kps is None or trg_kps is None:
        names = f"{Path(row[col['source_image']]).name} / {Path(row[col['target_image']]).name}"
        raise DatasetError(f"{where}: no XA/YA/XB/YB columns and no Annotations/{cat}/<image>.mat with 'kps' "
                           f"for {names}")
    if src_kps.shape != trg_kps.shape:
        raise DatasetError(f"{trg_mat}: {len(trg_kps)} keypoints, but {src_mat} has {len(src_kps)}")
    both = ~np.isnan(src_kps).any(1) & ~np.isnan(trg_kps).any(1)
    return src_kps[both], trg_kps[both], np.flatnonzero(both).astype(np.int64)


# ----------------------------------------------------------------------------- CUB-200-2011


def _cub_root(root: Path) -> Path:
    for cand in (root, root / "CUB_200_2011"):
        if (cand / "images.txt").is_file():
            return cand
    raise DatasetError(f"{root}: not a CUB-200-2011 folder (no images.txt here or in CUB_200_2011/)")


def _read_table(path: Path, min_fields: int, max_split: int = -1) -> list[list[str]]:
    require_file(path, "CUB metadata file")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(None, max_split) if max_split >= 0 else line.split()
        if len(fields) < min_fields:
            raise DatasetError(f"{path}:{n}: expected {min_fields} fields, got {len(fields)}")
        rows.append(fields)
    return rows


def _int(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DatasetError(f"{where}: expected an integer, got {text!r}") from None


def _float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DatasetError(f"{where}: expected a number, got {text!r}") from None


def read_cub_keypoints(
    root: PathLike,
    split: str = "test",
    categories: Optional[Sequence[str]] = None,
    check: bool = True,
) -> list[KeypointImage]:
    """CUB-200-2011 images with their 15 part keypoints.

    Reads ``images.txt``, ``parts/parts.txt``, ``parts/part_locs.txt``
    (``image_id part_id x y visible``), ``bounding_boxes.txt`` (``x y w h``) and,
    for ``split='train'``/``'test'``, ``train_test_split.txt``; ``split='all'``
    keeps every image. Invisible parts become NaN rows. ``category`` is the
    class folder name (e.g. ``001.Black_footed_Albatross``). If the separate
    foreground segmentations are unpacked as ``segmentations/<class>/<name>.png``
    (inside or next to the CUB folder) their path is in ``meta['mask']``.
    """
    base = _cub_root(Path(root))
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    images = {_int(r[0], str(base / "images.txt")): r[1] for r in _read_table(base / "images.txt", 2, 1)}
    parts_file = base / "parts" / "parts.txt"
    part_names = {_int(r[0], str(parts_file)): r[1].strip() for r in _read_table(parts_file, 2, 1)}
    n_parts = max(part_names) if part_names else 0
    if sorted(part_names) != list(range(1, n_parts + 1)):
        raise DatasetError(f"{parts_file}: part ids must be 1..{n_parts} without gaps")
    keep: Optional[set[int]] = None
    if split != "all":
        split_file = base / "train_test_split.txt"
        want = 1 if split == "train" else 0
        keep = {_int(r[0], str(split_file)) for r in _read_table(split_file, 2) if _int(r[1], str(split_file)) == want}
    locs_file = base / "parts" / "part_locs.txt"
    kps = _cub_part_locs(locs_file, images, n_parts)
    boxes = _cub_boxes(base / "bounding_boxes.txt")
    seg_roots = [d for d in (base / "segmentations", base.parent / "segmentations") if d.is_dir()]
    wanted = set(categories) if categories is not None else None
    out = []
    for img_id, rel in images.items():
        if keep is not None and img_id not in keep:
            continue
        cat = Path(rel).parent.name
        if wanted is not None and cat not in wanted:
            continue
        meta: dict[str, Any] = {"image_id": img_id, "part_names": tuple(part_names[k] for k in range(1, n_parts + 1))}
        for sr in seg_roots:
            m = (sr / rel).with_suffix(".png")
            if m.is_file():
                meta["mask"] = m
                break
        out.append(KeypointImage(name=Path(rel).stem, path=base / "images" / rel, category=cat,
                                 keypoints=kps[img_id], bbox=boxes.get(img_id), annotation=locs_file, meta=meta))
    if wanted is not None:
        unknown = wanted - {im.category for im in out}
        if unknown:
            raise DatasetError(f"{base}: no {split} images for {', '.join(sorted(unknown))}")
    _validate_all(out, check)
    return out


def _cub_part_locs(locs_file: Path, images: dict[int, str], n_parts: int) -> dict[int, np.ndarray]:
    """Image id -> ``(n_parts, 2)`` keypoints from ``part_locs.txt`` (NaN rows for invisible parts)."""
    kps = {i: np.full((n_parts, 2), np.nan) for i in images}
    for r in _read_table(locs_file, 5):
        where = f"{locs_file} (image {r[0]}, part {r[1]})"
        img_id, part_id = _int(r[0], where), _int(r[1], where)
        if img_id not in kps:
            raise DatasetError(f"{where}: image id {img_id} is not in images.txt")
        if not 1 <= part_id <= n_parts:
            raise DatasetError(f"{where}: part id {part_id} is not in parts.txt")
        if _int(r[4].split(".")[0], where):
            kps[img_id][part_id - 1] = (_float(r[2], where), _float(r[3], where))
    return kps


def _cub_boxes(box_file: Path) -> dict[int, np.ndarray]:
    """Image id -> ``x1, y1, x2, y2`` from ``bounding_boxes.txt`` (``x y w h``; none when the file is absent)."""
    boxes: dict[int, np.ndarray] = {}
    if box_file.is_file():
        for r in _read_table(box_file, 5):
            where = f"{box_file} (image {r[0]})"
            x, y, w, h = (_float(v, where) for v in r[1:5])
            boxes[_int(r[0], where)] = as_bbox([x, y, x + w, y + h], where)
    return boxes


def read_cub_pairs(
    root: PathLike,
    split: str = "test",
    pairs_file: Optional[PathLike] = None,
    max_pairs_per_category: Optional[int] = None,
    categories: Optional[Sequence[str]] = None,
    seed: int = 0,
    check: bool = True,
) -> list[CorrespondencePair]:
    """CUB keypoint pairs: an explicit list or ordered pairs within each class.

    CUB has no official pair list. With ``pairs_file`` (two image names as in
    ``images.txt``, or two image ids, per line, separated by spaces or a comma)
    exactly those pairs are built; otherwise every ordered pair sharing a
    visible keypoint within a class, optionally subsampled with
    ``max_pairs_per_category``/``seed``. ``trg_bbox`` is CUB's bounding box.
    """
    ims = read_cub_keypoints(root, split="all" if pairs_file is not None else split,
                             categories=categories, check=False)
    if pairs_file is None:
        pairs = pairs_within_categories(ims, max_pairs_per_category=max_pairs_per_category, seed=seed)
    else:
        pf = require_file(pairs_file, "CUB pair list")
        by_key: dict[str, KeypointImage] = {}
        for im in ims:
            by_key[str(im.meta["image_id"])] = im
            by_key[str(Path(im.path).relative_to(Path(im.path).parents[1]))] = im
        pairs = []
        for n, line in enumerate(pf.read_text().splitlines(), start=1):
            fields = line.replace(",", " ").split()
            if not fields:
                continue
            if len(fields) < 2:
                raise DatasetError(f"{pf}:{n}: expected two image names or ids")
            a, b = (by_key.get(f) for f in fields[:2])
            if a is None or b is None:
                raise DatasetError(f"{pf}:{n}: image {fields[0] if a is None else fields[1]!r} is not in CUB "
                                   f"images.txt{' for the selected categories' if categories else ''}")
            pairs.append(make_pair(a, b, {"line": n}))
    _validate_all(pairs, check)
    return pairs
