"""Part-segmentation ground truth: PASCAL-Part ``.mat`` files and part label masks (e.g. CUB parts).

Readers list the images (:class:`PartImage`) without decoding the annotations,
which are large; :meth:`PartImage.load` decodes and validates one image's
annotation into a :class:`PartAnnotation` of objects with per-part masks.
:meth:`PartAnnotation.label_map` turns that into the integer map the NMI/ARI
metrics take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ...errors import DatasetError
from .common import (
    IMAGE_SUFFIXES,
    PathLike,
    image_size,
    load_mat,
    read_label_mask,
    read_rgb,
    require_dir,
)


@dataclass(frozen=True, eq=False)
class PartObject:
    """One annotated object: its class, ``HxW`` bool mask and named ``HxW`` bool part masks."""

    category: str
    mask: np.ndarray
    parts: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class PartAnnotation:
    """The decoded part annotation of one image."""

    name: str
    image_path: Path
    size: tuple[int, int]
    objects: tuple[PartObject, ...]

    @property
    def categories(self) -> list[str]:
        return sorted({o.category for o in self.objects})

    @property
    def part_names(self) -> list[str]:
        return sorted({p for o in self.objects for p in o.parts})

    def _selected(self, categories: Optional[Sequence[str]]) -> list[PartObject]:
        return [o for o in self.objects if categories is None or o.category in categories]

    def foreground(self, categories: Optional[Sequence[str]] = None) -> np.ndarray:
        """``HxW`` bool union of the masks of objects of the given classes (all by default)."""
        fg = np.zeros((self.size[1], self.size[0]), dtype=bool)
        for o in self._selected(categories):
            fg |= o.mask
        return fg

    def label_map(
        self,
        parts: Union[Sequence[str], Mapping[str, int]],
        categories: Optional[Sequence[str]] = None,
        unassigned: int = 255,
    ) -> np.ndarray:
        """``HxW`` int32 part labels: 0 background, one label per part name, ``unassigned`` elsewhere on objects.

        ``parts`` is a list of part names (label = position + 1) or a mapping
        ``name -> label``; keys may be qualified as ``"<class>/<part>"``
        (e.g. ``"cat/head"``), which wins over a bare ``"head"``. Several names
        may share a label to merge parts. Object pixels covered by no listed
        part get ``unassigned`` (default 255, which the metrics can ignore).
        """
        mapping = {n: i + 1 for i, n in enumerate(parts)} if not isinstance(parts, Mapping) else dict(parts)
        for n, v in mapping.items():
            if int(v) <= 0 or int(v) == unassigned:
                raise ValueError(f"label_map: label for part {n!r} must be > 0 and != unassigned ({unassigned})")
        labels = np.zeros((self.size[1], self.size[0]), dtype=np.int32)
        for o in self._selected(categories):
            labels[o.mask] = unassigned
        for o in self._selected(categories):
            for pname, pmask in o.parts.items():
                lab = mapping.get(f"{o.category}/{pname}", mapping.get(pname))
                if lab is not None:
                    labels[pmask] = int(lab)
        return labels


@dataclass(frozen=True)
class PartImage:
    """An image with a part annotation file, decoded on demand by :meth:`load`.

    ``kind`` is ``"pascal-part"`` (a ``.mat`` with ``anno``) or ``"labels"`` (a
    PNG whose value k > 0 marks part k, 255 void); for ``"labels"``,
    ``part_names[k - 1]`` names part k and ``category`` is the object class.
    """

    name: str
    image_path: Path
    annotation_path: Path
    kind: str = "pascal-part"
    category: str = ""
    part_names: tuple[str, ...] = ()

    def load_image(self) -> np.ndarray:
        """``HxWx3`` uint8 RGB."""
        return read_rgb(self.image_path)

    def load(self) -> PartAnnotation:
        """Decode and validate the annotation (mask sizes must equal the image's)."""
        size = image_size(self.image_path)
        if self.kind == "pascal-part":
            objects = _read_pascal_part_objects(self.annotation_path)
        elif self.kind == "labels":
            objects = _objects_from_labels(self.annotation_path, self.category, self.part_names)
        else:
            raise ValueError(f"unknown part annotation kind {self.kind!r}")
        for o in objects:
            for m in (o.mask, *o.parts.values()):
                if m.shape != (size[1], size[0]):
                    raise DatasetError(f"{self.annotation_path}: a {o.category} mask is {m.shape[1]}x{m.shape[0]}, "
                                       f"but {self.image_path.name} is {size[0]}x{size[1]}")
        return PartAnnotation(name=self.name, image_path=self.image_path, size=size, objects=tuple(objects))


def _text(value: Any) -> str:
    arr = np.asarray(value)
    if arr.dtype.kind in "US":
        return str(arr.reshape(-1)[0]) if arr.size else ""
    if arr.dtype == object and arr.size:
        return _text(arr.reshape(-1)[0])
    raise TypeError


def _read_pascal_part_objects(path: Path) -> list[PartObject]:
    data = load_mat(path)
    if "anno" not in data:
        raise DatasetError(f"{path}: no 'anno' variable (not a PASCAL-Part annotation)")
    try:
        anno = data["anno"].reshape(-1)[0]
        objs = anno["objects"].reshape(-1) if anno["objects"].size else []
        out = []
        for i, ob in enumerate(objs):
            cat = _text(ob["class"])
            mask = np.asarray(ob["mask"])
            if mask.ndim != 2:
                raise DatasetError(f"{path}: object {i} ({cat}) mask is not 2-D")
            parts: dict[str, np.ndarray] = {}
            plist = ob["parts"].reshape(-1) if ob["parts"].size else []
            for pa in plist:
                pname = _text(pa["part_name"])
                pm = np.asarray(pa["mask"]) > 0
                if pm.shape != mask.shape:
                    raise DatasetError(f"{path}: part {pname!r} of object {i} ({cat}) is {pm.shape}, "
                                       f"object is {mask.shape}")
                parts[pname] = parts[pname] | pm if pname in parts else pm
            out.append(PartObject(category=cat, mask=mask > 0, parts=parts))
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise DatasetError(f"{path}: malformed PASCAL-Part annotation ({exc.__class__.__name__}: {exc})") from None
    return out


def _objects_from_labels(path: Path, category: str, names: Sequence[str]) -> list[PartObject]:
    labels = read_label_mask(path)
    fg = (labels > 0) & (labels != 255)
    parts = {}
    for k in np.unique(labels[fg]):
        k = int(k)
        if names and k > len(names):
            raise DatasetError(f"{path}: part label {k} but only {len(names)} part names were given")
        parts[names[k - 1] if names else f"part{k}"] = labels == k
    return [PartObject(category=category, mask=fg, parts=parts)]


def _image_for(stem: str, folders: Sequence[Path]) -> Optional[Path]:
    for d in folders:
        for suffix in IMAGE_SUFFIXES:
            p = d / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def read_pascal_part(
    root: PathLike,
    image_dir: Optional[PathLike] = None,
    categories: Optional[Sequence[str]] = None,
    check: bool = True,
) -> list[PartImage]:
    """PASCAL-Part images: ``.mat`` files with ``anno`` (``objects[i].class/mask/parts[j].part_name/mask``).

    Annotations are read from ``<root>/Annotations_Part/`` if present (the
    official release), else from ``root``. Images are looked up by stem in
    ``image_dir``, else beside the annotations, ``<root>/JPEGImages`` and
    ``<root>/../JPEGImages`` (VOC2010). ``categories`` keeps images with at
    least one object of those classes (this decodes every annotation).
    ``check`` confirms every image is readable.
    """
    root = require_dir(root, "PASCAL-Part folder")
    ann_dir = root / "Annotations_Part" if (root / "Annotations_Part").is_dir() else root
    mats = sorted(ann_dir.glob("*.mat"))
    if not mats:
        raise DatasetError(f"{ann_dir}: no PASCAL-Part .mat annotations")
    folders = [Path(image_dir)] if image_dir is not None else [ann_dir, root / "JPEGImages", root.parent / "JPEGImages"]
    items = []
    for m in mats:
        img = _image_for(m.stem, folders)
        if img is None:
            raise DatasetError(f"{m}: no image {m.stem}.jpg in {', '.join(str(f) for f in folders)}")
        items.append(PartImage(name=m.stem, image_path=img, annotation_path=m))
    if categories is not None:
        wanted = set(categories)
        items = [it for it in items if wanted & set(it.load().categories)]
        if not items:
            raise DatasetError(f"{ann_dir}: no annotated objects of class {', '.join(sorted(wanted))}")
    if check:
        cache: dict = {}
        for it in items:
            image_size(it.image_path, cache)
    return items


def read_part_masks(
    images: PathLike,
    masks: PathLike,
    part_names: Sequence[str] = (),
    check: bool = True,
) -> list[PartImage]:
    """Images with part label PNGs at the same relative path (value k = part k, 0 background, 255 void).

    Meant for part masks distributed separately from their images, e.g. CUB
    part segmentations as ``<masks>/<class>/<name>.png`` beside
    ``CUB_200_2011/images/<class>/<name>.jpg``. Images without a mask are
    skipped (part masks usually cover a subset); the object class is the
    image's folder name. ``check`` confirms each mask has its image's size.
    """
    images, masks = require_dir(images, "image folder"), require_dir(masks, "part mask folder")
    items = []
    for m in sorted(masks.rglob("*.png")):
        rel = m.relative_to(masks).with_suffix("")
        img = _image_for(rel.name, [images / rel.parent])
        if img is None:
            raise DatasetError(f"{m}: part mask has no image {rel}.jpg under {images}")
        cat = rel.parent.name if rel.parent != Path(".") else images.name
        items.append(PartImage(name=rel.name, image_path=img, annotation_path=m, kind="labels",
                               category=cat, part_names=tuple(part_names)))
    if not items:
        raise DatasetError(f"{masks}: no part mask PNGs")
    if check:
        cache: dict = {}
        for it in items:
            ms, isz = image_size(it.annotation_path, cache), image_size(it.image_path, cache)
            if ms != isz:
                raise DatasetError(f"{it.annotation_path}: mask is {ms[0]}x{ms[1]}, image is {isz[0]}x{isz[1]}")
    return items


__all__ = ["PartObject", "PartAnnotation", "PartImage", "read_pascal_part", "read_part_masks"]
