"""Per-image descriptor storage with bounded memory, for clustering large image sets.

The co-segmentation methods cluster every descriptor of every image: for 1,000
images at load size 224 and stride 4 that is about 3-4 million 384-d vectors,
4.6+ GB in float32. :class:`DescriptorStore` keeps them L2-normalised in
float16 (half the size, ample precision for unit vectors), either in RAM or
appended to a file on disk and read back one image at a time, so the working
set is a few images' worth whatever the set size.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import DinokitError

__all__ = ["DescriptorStore", "l2_normalize"]


def _to_float32(rows: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``rows`` as float32 (into ``out`` when given). float16 goes through torch's vectorised conversion,
    about ten times numpy's ``astype``, which makes the k-means passes over a float16 store cheap."""
    if out is None:
        if rows.dtype == np.float32:
            return rows
        return torch.from_numpy(np.ascontiguousarray(rows)).float().numpy()
    torch.from_numpy(out).copy_(torch.from_numpy(np.ascontiguousarray(rows)))
    return out


def l2_normalize(x: Union[np.ndarray, torch.Tensor], eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (zero rows stay zero)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.asarray(x, dtype=np.float32)
    norm = np.sqrt((x.astype(np.float32) ** 2).sum(axis=-1, keepdims=True))
    return x / np.maximum(norm, eps)


class DescriptorStore:
    """Append-only list of ``(T_i, D)`` descriptor matrices, one per image.

    Args:
        location: ``"memory"``, ``"disk"`` (a temporary file under
            ``directory``), or ``"auto"``: memory until the total would pass
            ``memory_limit_bytes`` (estimated from the first image and
            ``expected_images``), then disk.
        dtype: storage precision (``float16`` by default; rows come back as float32).
        normalize: L2-normalise rows on the way in.
    """

    def __init__(
        self,
        location: str = "auto",
        *,
        dtype: Union[str, np.dtype] = "float16",
        normalize: bool = True,
        directory: Optional[Union[str, Path]] = None,
        memory_limit_bytes: float = 1 << 30,
        expected_images: Optional[int] = None,
    ) -> None:
        if location not in ("auto", "memory", "disk"):
            raise DinokitError(f"unknown descriptor store {location!r}; choose auto, memory or disk")
        self.location = location
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float16), np.dtype(np.float32)):
            raise DinokitError(f"descriptor store dtype must be float16 or float32, got {self.dtype}")
        self.normalize = normalize
        self.directory = Path(directory) if directory is not None else None
        self.memory_limit_bytes = float(memory_limit_bytes)
        self.expected_images = expected_images
        self.counts: list[int] = []
        self.dim: Optional[int] = None
        self._arrays: list[np.ndarray] = []
        self._offsets: list[int] = []
        self._file: Optional[Path] = None
        self._tmpdir: Optional[Path] = None
        self._handle = None
        self._on_disk = location == "disk"

    # --- writing ------------------------------------------------------------
    def append(self, desc: Union[np.ndarray, torch.Tensor]) -> int:
        """Add one image's descriptors ``(T, D)``; returns its index."""
        arr = l2_normalize(desc) if self.normalize else np.asarray(
            desc.detach().cpu().float().numpy() if isinstance(desc, torch.Tensor) else desc, dtype=np.float32)
        if arr.ndim != 2:
            raise DinokitError(f"descriptors must be (tokens, dims), got shape {arr.shape}")
        if self.dim is None:
            self.dim = arr.shape[1]
            if self.location == "auto" and self.expected_images:
                estimate = arr.shape[0] * arr.shape[1] * self.dtype.itemsize * self.expected_images
                self._on_disk = estimate > self.memory_limit_bytes
        elif arr.shape[1] != self.dim:
            raise DinokitError(f"descriptor dimension changed from {self.dim} to {arr.shape[1]}")
        stored = np.ascontiguousarray(arr, dtype=self.dtype)
        if not self._on_disk and self.location == "auto" and self.nbytes + stored.nbytes > self.memory_limit_bytes:
            self._spill()
        if self._on_disk:
            self._write(stored)
        else:
            self._arrays.append(stored)
        self.counts.append(int(arr.shape[0]))
        return len(self.counts) - 1

    def _open(self) -> None:
        if self._handle is None:
            base = self.directory
            if base is not None:
                base.mkdir(parents=True, exist_ok=True)
            self._tmpdir = Path(tempfile.mkdtemp(prefix="dinokit-desc-", dir=base))
            self._file = self._tmpdir / "descriptors.bin"
            self._handle = open(self._file, "wb")

    def _write(self, stored: np.ndarray) -> None:
        self._open()
        self._offsets.append(self._handle.tell())
        self._handle.write(stored.tobytes())

    def _spill(self) -> None:
        """Move what is in RAM to disk (the set turned out larger than estimated)."""
        self._on_disk = True
        arrays, self._arrays = self._arrays, []
        for a in arrays:
            self._write(a)

    # --- reading ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.counts)

    @property
    def on_disk(self) -> bool:
        return self._on_disk

    @property
    def nbytes(self) -> int:
        """Bytes held (in RAM, or in the file on disk)."""
        return int(sum(self.counts) * (self.dim or 0) * self.dtype.itemsize)

    @property
    def total(self) -> int:
        return int(sum(self.counts))

    def get(self, index: int) -> np.ndarray:
        """Descriptors of image ``index`` as float32 ``(T, D)``."""
        raw = self._raw(index)
        return raw.copy() if raw.dtype == np.float32 else _to_float32(raw)

    def _raw(self, index: int) -> np.ndarray:
        """Descriptors of image ``index`` in the storage dtype."""
        if not 0 <= index < len(self.counts):
            raise IndexError(f"image {index} not in store of {len(self.counts)}")
        if not self._on_disk:
            return self._arrays[index]
        if self._handle is not None:
            self._handle.flush()
        n = self.counts[index] * self.dim
        with open(self._file, "rb") as fh:
            fh.seek(self._offsets[index])
            raw = np.fromfile(fh, dtype=self.dtype, count=n)
        return raw.reshape(self.counts[index], self.dim)

    def iter_images(self, indices: Optional[Sequence[int]] = None) -> Iterator[np.ndarray]:
        """Each image's descriptors in turn (float32)."""
        for i in range(len(self.counts)) if indices is None else indices:
            yield self.get(i)

    def iter_batches(self, batch_size: int = 65536, masks: Optional[Sequence[Optional[np.ndarray]]] = None,
                     reuse: bool = False) -> Iterator[np.ndarray]:
        """All rows (optionally only ``masks[i]`` rows of image ``i``) in order, as float32 batches of about
        ``batch_size`` rows (whole images).

        With ``reuse`` every batch is written into the same buffer, so a batch is only valid until the
        next one is asked for; a pass then allocates nothing per batch (what k-means assignment needs).
        """
        pending: list[np.ndarray] = []
        size = 0
        buf: Optional[np.ndarray] = None

        def flush() -> np.ndarray:
            nonlocal buf
            if not reuse:
                return _to_float32(np.concatenate(pending))
            if buf is None or buf.shape[0] < size:
                buf = np.empty((max(size, batch_size), self.dim), np.float32)
            pos = 0
            for rows in pending:
                _to_float32(rows, buf[pos : pos + rows.shape[0]])
                pos += rows.shape[0]
            return buf[:size]

        for i in range(len(self.counts)):
            rows = self._raw(i)
            if masks is not None and masks[i] is not None:
                rows = rows[np.asarray(masks[i], dtype=bool)]
            pending.append(rows)
            size += rows.shape[0]
            if size >= batch_size:
                yield flush()
                pending, size = [], 0
        if pending:
            yield flush()

    def subset(self, masks: Sequence[Optional[np.ndarray]]) -> "_MaskedView":
        """A view yielding only the masked rows of every image (for batched k-means assignment)."""
        return _MaskedView(self, masks)

    def sample(self, interval: int, masks: Optional[Sequence[Optional[np.ndarray]]] = None,
               indices: Optional[Sequence[int]] = None) -> np.ndarray:
        """Every ``interval``-th row of each image (of its masked rows), concatenated, as float32."""
        if interval < 1:
            raise DinokitError(f"sample_interval must be positive, got {interval}")
        picked = []
        for i in range(len(self.counts)) if indices is None else indices:
            rows = self._raw(i)
            if masks is not None and masks[i] is not None:
                rows = rows[np.asarray(masks[i], dtype=bool)]
            picked.append(rows[::interval].copy())  # a copy, so the image's rows are not kept alive
        if not picked:
            return np.zeros((0, self.dim or 0), np.float32)
        return np.ascontiguousarray(_to_float32(np.concatenate(picked)))

    # --- cleanup ------------------------------------------------------------
    def close(self) -> None:
        """Delete the on-disk file (if any) and drop the data."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self._arrays = []

    def __enter__(self) -> "DescriptorStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


class _MaskedView:
    def __init__(self, store: DescriptorStore, masks: Sequence[Optional[np.ndarray]]) -> None:
        self.store, self.masks = store, masks

    def iter_batches(self, batch_size: int = 65536, reuse: bool = False) -> Iterator[np.ndarray]:
        return self.store.iter_batches(batch_size, self.masks, reuse=reuse)
