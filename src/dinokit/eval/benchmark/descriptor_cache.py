"""On-disk descriptor caches under a benchmark's output folder, so an interrupted run does not redo forward passes.

Two caches, one per kind of benchmark:

* :class:`ImageDescriptorCache` (correspondences): per image, the unbinned
  descriptors and saliency of :class:`~dinokit.tasks.correspondences.CorrespondenceFinder`,
  in the descriptor-file format of :mod:`dinokit.features.export`; an image
  used by many pairs is passed through the model once. Files are deleted
  once no pending pair needs them (unless kept).
* :func:`cached_set_features` (co-segmentation, parts, video): per image of a
  set, what :func:`~dinokit.tasks.cosegmentation.extract_set` produces
  (normalised descriptors in the store's precision, saliency, CLS).

Results are computed from the values as stored, whether they were just
computed or read back, so a resumed run gives exactly the numbers of an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ...errors import DinokitError
from ...features.coords import GridGeometry
from ...features.export import geometry_metadata, read_descriptor_file
from ...io import save_tensors

_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def cache_name(path: Union[str, os.PathLike], root: Optional[Path]) -> str:
    """A file name for an image's cache entry: its path relative to ``root`` (or a hash of the absolute path)."""
    p = Path(path)
    if root is not None:
        try:
            rel = p.resolve().relative_to(Path(root).resolve())
            return str(rel.with_suffix("")).replace(os.sep, "__")
        except ValueError:
            pass
    return f"{p.stem}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:12]}"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


class ImageDescriptorCache:
    """Descriptors of images for a :class:`~dinokit.tasks.correspondences.CorrespondenceFinder`: memory, then disk,
    then the model.

    Args:
        finder: the configured finder (its extractor, layer, facet, binning and saliency heads).
        directory: where the files go (``None``: memory only).
        root: dataset folder, to name files by relative path.
        dtype: ``float32`` (exact) or ``float16`` (half the disk) for the stored descriptors.
        memory_items: images kept in memory (a category's worth avoids re-reading files).

    ``computed`` and ``loaded`` count forward passes and files read.
    """

    def __init__(self, finder: Any, directory: Optional[Path], root: Optional[Path] = None,
                 dtype: str = "float32", memory_items: int = 12) -> None:
        if dtype not in _DTYPES:
            raise DinokitError(f"cache dtype must be float32 or float16, got {dtype!r}")
        self.finder = finder
        self.directory = Path(directory) if directory is not None else None
        self.root = root
        self.dtype = dtype
        self.memory_items = int(memory_items)
        self.computed = 0
        self.loaded = 0
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self._pending: dict[str, int] = {}

    def _file(self, path: Union[str, os.PathLike]) -> Optional[Path]:
        return None if self.directory is None else self.directory / f"{cache_name(path, self.root)}.safetensors"

    def expect(self, paths: Sequence[Union[str, os.PathLike]]) -> None:
        """Count future uses of each image; :meth:`release` deletes a file when its count reaches 0."""
        for p in paths:
            k = str(p)
            self._pending[k] = self._pending.get(k, 0) + 1

    def release(self, path: Union[str, os.PathLike], delete: bool = True) -> None:
        """One use of ``path`` is done; with ``delete``, remove its file when no use is left."""
        k = str(path)
        if k not in self._pending:
            return
        self._pending[k] -= 1
        if self._pending[k] <= 0:
            del self._pending[k]
            self._memory.pop(k, None)
            f = self._file(path)
            if delete and f is not None:
                f.unlink(missing_ok=True)

    def get(self, path: Union[str, os.PathLike]) -> Any:
        """:class:`~dinokit.features.descriptors.ImageDescriptors` of the image at ``path``."""
        from ...features.descriptors import ImageDescriptors

        k = str(path)
        if k in self._memory:
            self._memory.move_to_end(k)
            return self._memory[k]
        device = self.finder.extractor.device
        f = self._file(path)
        raw = sal = geo = None
        if f is not None and f.is_file():
            try:
                tensors, meta = read_descriptor_file(f)
                raw = tensors[self._key()].float()
                sal = tensors["saliency"].float()
                geo = GridGeometry(_ints(meta["grid"]), int(meta["patch_size"]), int(meta["stride"]),
                                   _ints(meta["resized_size"]), _ints(meta["original_size"]))  # type: ignore[arg-type]
                self.loaded += 1
            except (DinokitError, KeyError, ValueError):
                raw = None  # unreadable entry: compute it again
        if raw is None:
            d = self.finder.describe(path)
            geo = d.geometry
            raw = d.raw.detach().to("cpu", _DTYPES[self.dtype])
            sal = d.saliency.detach().to("cpu", torch.float32)
            self.computed += 1
            if f is not None:
                self._save(f, raw, sal, geo, path)
            raw = raw.float()
        raw, sal = raw.to(device), sal.to(device)
        out = ImageDescriptors.of(raw, sal, geo, None, bin=self.finder.bin)
        if self.memory_items > 0:
            self._memory[k] = out
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)
        return out

    def _key(self) -> str:
        return f"descriptors.l{self.finder.layer}.{self.finder.facet}"

    def _save(self, f: Path, raw: torch.Tensor, sal: torch.Tensor, geo: GridGeometry, path: Any) -> None:
        meta = {**geometry_metadata(geo, self.finder.effective_settings()), "image": str(path)}
        save_tensors(f, {self._key(): raw, "saliency": sal}, meta)


def cached_set_features(
    extractor: Any,
    sources: Sequence[Path],
    directory: Optional[Path],
    *,
    layer: int,
    facet: str,
    bin: bool,
    include_cls: bool,
    low_res_saliency_maps: bool,
    store: Any,
    root: Optional[Path] = None,
    progress: bool = False,
    counter: Optional[dict[str, int]] = None,
) -> Any:
    """:class:`~dinokit.tasks.cosegmentation.SetFeatures` of a set of image files, each image read from
    ``directory`` when cached there, else extracted (one image at a time) and cached.

    ``store`` (a :class:`~dinokit.blocks.store.DescriptorStore`)
    receives the descriptors; its precision is the cached one. ``counter``
    gets ``computed``/``loaded`` counts added.
    """
    from tqdm.auto import tqdm

    from ...blocks.store import DescriptorStore
    from ...tasks.cosegmentation import ImageItem, SetFeatures, extract_set

    names = _unique_stems(sources)
    items, saliency, cls_rows = [], [], []
    counts = counter if counter is not None else {}
    for src, name in tqdm(list(zip(sources, names)), desc="features", unit="img", disable=not progress, leave=False):
        f = directory / f"{cache_name(src, root)}.safetensors" if directory is not None else None
        entry = None
        if f is not None and f.is_file():
            try:
                entry = _read_set_entry(f, include_cls)
                counts["loaded"] = counts.get("loaded", 0) + 1
            except (DinokitError, KeyError, ValueError):
                entry = None
        if entry is None:
            one = DescriptorStore("memory", dtype=store.dtype)
            feats = extract_set(extractor, [src], layer=layer, facet=facet, bin=bin, include_cls=include_cls,
                                low_res_saliency_maps=low_res_saliency_maps, store=one, names=[name])
            it = feats.items[0]
            entry = {
                "descriptors": one.get(0),
                "saliency": np.asarray(feats.saliency[0], np.float32),
                "cls": None if feats.cls is None else np.asarray(feats.cls[0], np.float32),
                "original_size": it.original_size, "size": it.size, "grid": it.grid,
            }
            one.close()
            counts["computed"] = counts.get("computed", 0) + 1
            if f is not None:
                _write_set_entry(f, entry, store.dtype, src)
        store.append(entry["descriptors"])
        saliency.append(entry["saliency"])
        if include_cls:
            cls_rows.append(entry["cls"])
        items.append(ImageItem(name, Path(src), tuple(entry["original_size"]), tuple(entry["size"]),
                               tuple(entry["grid"])))
    cls = np.stack(cls_rows) if include_cls and cls_rows else None
    return SetFeatures(items, store, saliency, cls, extractor.load_size)


def _write_set_entry(f: Path, entry: dict, dtype: np.dtype, src: Any) -> None:
    tensors = {"descriptors": torch.tensor(np.asarray(entry["descriptors"]).astype(dtype)),
               "saliency": torch.tensor(np.asarray(entry["saliency"], dtype=np.float32))}
    if entry["cls"] is not None:
        tensors["cls"] = torch.tensor(np.asarray(entry["cls"], dtype=np.float32))
    meta = {"format": "dinokit-set-features-v1", "image": str(src),
            **{k: ",".join(str(v) for v in entry[k]) for k in ("original_size", "size", "grid")}}
    save_tensors(f, tensors, meta)


def _read_set_entry(f: Path, include_cls: bool) -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(f), "pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != "dinokit-set-features-v1":
        raise DinokitError(f"{f}: not a set-feature cache file")
    t = load_file(str(f))
    if include_cls and "cls" not in t:
        raise KeyError("cls")
    return {
        "descriptors": t["descriptors"].float().numpy(),
        "saliency": t["saliency"].float().numpy(),
        "cls": t["cls"].float().numpy() if "cls" in t else None,
        **{k: _ints(meta[k]) for k in ("original_size", "size", "grid")},
    }


def _unique_stems(sources: Sequence[Path]) -> list[str]:
    """File stems, with ``_2``, ``_3`` ... appended to repeats."""
    seen: dict[str, int] = {}
    out = []
    for s in sources:
        stem = Path(s).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out
