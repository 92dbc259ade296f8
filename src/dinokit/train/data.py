"""Training images, their multi-crop views and the epoch order, all reproducible from a seed.

A sample's crops depend only on ``(seed, epoch, image index)`` and an epoch's
order only on ``(seed, epoch)``; each process takes every ``world_size``-th
index of the same permutation, so a run can resume mid-epoch (skip the
batches already done) and give bit-identical results.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..errors import DinokitError, ImageError
from ..features.image import IMAGE_SUFFIXES, open_image
from .augment import MultiCropAugmentation

PathLike = Union[str, os.PathLike]


def find_images(root: PathLike) -> list[Path]:
    """All image files under ``root`` (any depth, e.g. ImageFolder layout), sorted for a stable order."""
    root = Path(root)
    if not root.exists():
        raise DinokitError(f"{root}: no such folder")
    if not root.is_dir():
        raise DinokitError(f"{root}: is not a folder of images")
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise DinokitError(f"{root}: contains no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed for one sample of one epoch (stable across Python runs, unlike ``hash``)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class MultiCropDataset(Dataset):
    """Images from files (or in memory), each returned as its list of uint8 crops.

    ``set_epoch`` must be called before each epoch so the crops change from
    epoch to epoch (the DataLoader workers get the dataset with that epoch).
    """

    def __init__(
        self,
        images: Union[PathLike, Sequence[PathLike], Sequence[Image.Image]],
        augmentation: Union[MultiCropAugmentation, Callable[[Image.Image, random.Random], list[torch.Tensor]]],
        seed: int = 0,
    ) -> None:
        if isinstance(images, (str, os.PathLike)):
            self.items: list = list(find_images(images))
        else:
            self.items = list(images)
            if not self.items:
                raise DinokitError("no training images given")
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> Image.Image:
        item = self.items[index]
        if isinstance(item, Image.Image):
            return item.convert("RGB") if item.mode != "RGB" else item
        return open_image(item)

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        rng = random.Random(sample_seed(self.seed, self.epoch, index))
        return self.augmentation(self.load(index), rng)


def collate_crops(samples: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """List of per-image crop lists -> list of ``(B, 3, S, S)`` batches, one per crop."""
    return [torch.stack(crops) for crops in zip(*samples)]


class EpochSampler(Sampler[int]):
    """This process's share of a seeded random permutation, whole batches only.

    The permutation is cut to a multiple of ``batch_size * world_size`` (drop
    last), then process ``rank`` takes positions ``rank, rank + world, ...``;
    ``start_batch`` skips the batches a resumed run has already done.
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def indices(self) -> list[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1) % (2**63))
            order = torch.randperm(self.num_samples, generator=gen).tolist()
        else:
            order = list(range(self.num_samples))
        usable = self.batches_per_epoch * self.batch_size * self.world_size
        mine = order[:usable][self.rank :: self.world_size]
        return mine[self.start_batch * self.batch_size :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def describe_loader_error(exc: BaseException) -> Optional[str]:
    """The one-line message of an :class:`ImageError` raised inside a DataLoader worker, if that is what ``exc`` is."""
    if isinstance(exc, ImageError):
        return str(exc).splitlines()[-1]
    text = str(exc)
    if "ImageError" in type(exc).__name__ or "ImageError:" in text:
        for line in reversed(text.strip().splitlines()):
            if "ImageError:" in line:
                return line.split("ImageError:", 1)[1].strip()
    return None


__all__ = ["EpochSampler", "MultiCropDataset", "collate_crops", "find_images", "sample_seed", "describe_loader_error"]
