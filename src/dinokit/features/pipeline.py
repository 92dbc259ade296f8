"""Descriptor extraction for many files: loader workers, equal-size batches, a background writer.

:func:`extract_folder` is what ``dinokit extract`` runs. Images are decoded
and resized in :class:`torch.utils.data.DataLoader` workers; images of equal
resized size are grouped into batches (never padded); on CUDA the loader pins
memory and host-to-device copies are ``non_blocking``; finished files are
written by a background thread behind a small bounded queue, so the
accelerator does not wait for the disk. Each item is recorded as finished in
the output folder after its file is written. Bad images are reported through
:class:`dinokit.runs.ItemFailures` and the others go on.

Under ``torchrun`` each process takes a strided share (by rank) of the
pending items; every file is written once, and rank 0 alone writes the run
record (:func:`dinokit.distributed.setup`, :func:`~dinokit.features.group.start_shared_run`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DinokitError, ImageError
from ..runs import ItemFailures, OutputFolder
from ..settings import ExtractSettings
from .extractor import Extractor, Features
from .image import LoadedImage, LoadSize, preprocess

_NO_RGB = np.zeros((0, 0, 3), dtype=np.uint8)


def default_batch_size(device: torch.device) -> int:
    """16 on CUDA, 1 elsewhere."""
    return 16 if device.type == "cuda" else 1


def default_num_workers(device: torch.device) -> int:
    """``min(8, cpus - 1)`` loader workers on CUDA, 0 (load in this process) elsewhere."""
    if device.type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cpus - 1))


@dataclass
class _Loaded:
    """One item from a loader worker: the preprocessed image, or why it could not be read."""

    index: int
    name: str
    path: str
    tensor: Optional[torch.Tensor] = None
    original_size: tuple[int, int] = (0, 0)
    error: Optional[str] = None

    def pin_memory(self) -> "_Loaded":
        """Called by the DataLoader's pinning thread (``pin_memory=True``): page-lock the image tensor."""
        if self.tensor is not None:
            self.tensor = self.tensor.pin_memory()
        return self


class _ImageFiles(Dataset):
    """Decode, resize and normalise image files (picklable: no model inside, so workers stay light)."""

    def __init__(self, items: Sequence[tuple[str, Path]], load_size: LoadSize, mean: Sequence[float],
                 std: Sequence[float], patch_size: int) -> None:
        self.items = [(n, str(p)) for n, p in items]
        self.load_size, self.mean, self.std, self.patch_size = load_size, tuple(mean), tuple(std), patch_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> _Loaded:
        name, path = self.items[index]
        try:
            img = preprocess(path, self.load_size, self.mean, self.std)
            h, w = img.size
            if h < self.patch_size or w < self.patch_size:
                raise ImageError(f"{path}: {w}x{h} pixels after resizing, smaller than one "
                                 f"{self.patch_size}-pixel patch")
        except DinokitError as exc:
            return _Loaded(index, name, path, error=str(exc))
        return _Loaded(index, name, path, img.tensor, img.original_size)


def _keep(item: _Loaded) -> _Loaded:
    """Collate for single items: pass the record through as it is."""
    return item


def batches_by_size(items: Iterator[_Loaded], batch_size: int, hold: Optional[int] = None) -> Iterator[list[_Loaded]]:
    """Group loaded images of equal size into batches of at most ``batch_size``; failed loads come alone.

    Images wait in one bucket per size; a full bucket is released at once,
    and when more than ``hold`` images wait (default ``4 * batch_size``) the
    fullest bucket is released, so memory stays bounded however mixed the sizes.
    """
    hold = hold if hold is not None else 4 * batch_size
    buckets: dict[tuple[int, int], list[_Loaded]] = {}
    waiting = 0
    for item in items:
        if item.tensor is None:
            yield [item]
            continue
        key = (int(item.tensor.shape[-2]), int(item.tensor.shape[-1]))
        bucket = buckets.setdefault(key, [])
        bucket.append(item)
        waiting += 1
        if len(bucket) >= batch_size or waiting > hold:
            full = key if len(bucket) >= batch_size else max(buckets, key=lambda k: len(buckets[k]))
            out = buckets.pop(full)
            waiting -= len(out)
            yield out
    for key in list(buckets):
        yield buckets.pop(key)


class _Writer:
    """A background thread writing descriptor files from a bounded queue; written items are ``finish``-ed.

    Finished items are recorded together (``finish(names)``) every
    ``record_every`` files or ``record_seconds``, and at the end, so a long
    run does not rewrite its run record after every file (an interrupted run
    redoes at most those few).
    """

    def __init__(self, write: Callable[[str, dict, dict], None], finish: Callable[[list[str]], None],
                 failures: ItemFailures, depth: int = 4, record_every: int = 64, record_seconds: float = 2.0) -> None:
        self.write, self.finish, self.failures = write, finish, failures
        self.queue: "queue.Queue[Optional[tuple[str, dict, dict]]]" = queue.Queue(maxsize=depth)
        self.lock = threading.Lock()
        self.error: Optional[BaseException] = None
        self.done, self.record_every, self.record_seconds = 0, record_every, record_seconds
        self.last_record = time.monotonic()
        self.unrecorded: list[str] = []
        self.thread = threading.Thread(target=self._loop, name="dinokit-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                self._record()
                return
            if self.error is not None:
                continue  # drain without writing after a fatal error
            try:
                self._one(*job)
                if (len(self.unrecorded) >= self.record_every
                        or time.monotonic() - self.last_record >= self.record_seconds):
                    self._record()
            except BaseException as exc:  # fail-fast or a real bug: handed to the main thread
                self.error = exc

    def _one(self, name: str, tensors: dict, meta: dict) -> None:
        with self.lock:
            if self.failures.run(name, lambda: self.write(name, tensors, meta)):
                self.unrecorded.append(name)
                self.done += 1

    def _record(self) -> None:
        self.last_record = time.monotonic()
        if self.unrecorded:
            names, self.unrecorded = self.unrecorded, []
            self.finish(names)

    def put(self, name: str, tensors: dict, meta: dict) -> None:
        """Queue one file (blocks while the queue is full); re-raises a writer error here."""
        self.check()
        self.queue.put((name, tensors, meta))

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Wait for every queued file, then re-raise a writer error."""
        self.queue.put(None)
        self.thread.join()
        self.check()


@dataclass
class PipelineOptions:
    """How :func:`extract_folder` runs: batch size and loader workers (``None``: the device's default)."""

    batch_size: Optional[int] = None
    num_workers: Optional[int] = None
    queue_depth: int = 4
    progress: bool = True
    rank: int = 0
    world_size: int = 1


@dataclass
class PipelineReport:
    """What :func:`extract_folder` did in this process."""

    done: int = 0
    skipped: int = 0
    finished: list[str] = field(default_factory=list)


def _loader(extractor: Extractor, items: Sequence[tuple[str, Path]], workers: int) -> DataLoader:
    cfg = extractor.model.cfg
    data = _ImageFiles(items, extractor.load_size, cfg.mean, cfg.std, extractor.patch_size)
    return DataLoader(data, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_keep,
                      pin_memory=extractor.device.type == "cuda", prefetch_factor=4 if workers else None)


def _forward(extractor: Extractor, batch: list[_Loaded], settings: ExtractSettings) -> list[tuple[dict, dict]]:
    """One equal-size batch through the backbone: per image, the file's tensors (on the CPU) and metadata."""
    from .export import extract_as_settings, file_contents

    dev = extractor.device
    images = [LoadedImage(b.tensor.to(dev, non_blocking=True), _NO_RGB, tuple(b.original_size), Path(b.path))
              for b in batch]
    feats = extract_as_settings(extractor, images, settings)
    host = Features({k: v.to("cpu") for k, v in feats.descriptors.items()}, feats.grid, feats.geometry,
                    feats.saliency.to("cpu") if feats.saliency is not None else None, feats.images, feats.settings)
    out = []
    for i in range(len(batch)):
        tensors, meta = file_contents(extractor, host, i)
        out.append(({k: v.clone() for k, v in tensors.items()}, meta))
    return out


def extract_folder(extractor: Optional[Extractor], items: Sequence[tuple[str, Path]], out_dir: Union[str, Path],
                   settings: ExtractSettings, folder: OutputFolder, failures: ItemFailures,
                   options: Optional[PipelineOptions] = None) -> PipelineReport:
    """Write ``OUT_DIR/<name>.safetensors`` for every ``(name, image file)`` not yet finished in ``folder``.

    This process takes items ``rank, rank + world_size, ...`` of the pending
    ones. The files equal :func:`dinokit.features.export.write_descriptor_file`'s
    (bit for bit in float32 on the CPU, whatever the batch size and workers).
    """
    from tqdm.auto import tqdm

    opt = options or PipelineOptions()
    by_name = dict(items)
    todo = folder.pending([n for n, _ in items])
    share = [(n, by_name[n]) for n in todo[opt.rank::opt.world_size]]
    report = PipelineReport(skipped=len(items) - len(todo))
    if not share:
        return report
    bs = max(1, opt.batch_size or default_batch_size(extractor.device))
    workers = opt.num_workers if opt.num_workers is not None else default_num_workers(extractor.device)
    out = Path(out_dir)

    def write(name: str, tensors: dict, meta: dict) -> None:
        from ..io import save_tensors

        save_tensors(out / f"{name}.safetensors", tensors, meta, overwrite=folder.may_replace)

    def finish(names: list[str]) -> None:
        folder.finish_many(names)
        report.finished.extend(names)

    loaded = iter(_loader(extractor, share, workers))  # workers start (fork) before the writer thread does
    writer = _Writer(write, finish, failures, opt.queue_depth)
    bar = tqdm(total=len(share), desc="extract", unit="img", dynamic_ncols=True,
               disable=not opt.progress or opt.rank != 0 or len(share) < 2)
    try:
        for batch in batches_by_size(loaded, bs):
            if batch[0].error is not None:
                with writer.lock:
                    failures.run(batch[0].name, lambda: _raise(batch[0].error))
            else:
                for b, (tensors, meta) in zip(batch, _forward(extractor, batch, settings)):
                    writer.put(b.name, tensors, meta)
            bar.update(len(batch))
    finally:
        bar.close()
        writer.close()
    report.done = writer.done
    return report


def _raise(message: Optional[str]) -> None:
    raise ImageError(message or "unreadable image")
