"""Video object segmentation benchmarks: DAVIS 2016 and 2017.

Two layouts are read:

official
    ``<root>/JPEGImages/<res>/<seq>/00000.jpg`` and
    ``<root>/Annotations/<res>/<seq>/00000.png``, with the sequence lists in
    ``<root>/ImageSets/<year>/<split>.txt`` (DAVIS 2017: one sequence per line) or
    ``<root>/ImageSets/<res>/<split>.txt`` (DAVIS 2016: frame/mask path pairs).
compact
    ``<root>/<seq>/frames/*.jpg`` and ``<root>/<seq>/masks/*.png`` (the subset in
    ``shared/data/davis2016``).

Masks are label maps (:func:`~dinokit.eval.datasets.read_label_mask`): 0
background, 1..K objects, 255 void. DAVIS 2016 binary masks (0/255) become
object 1. A frame without a mask file (e.g. DAVIS 2017 test-dev) has mask None.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ...errors import DatasetError
from .common import PathLike, image_size, list_images, read_label_mask, read_rgb, require_dir, select_named

VOID_LABEL = 255


@dataclass(frozen=True)
class VideoSequence:
    """A video: ordered frame paths and, per frame, the mask path or None."""

    name: str
    frames: tuple[Path, ...]
    masks: tuple[Optional[Path], ...]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def frame_names(self) -> list[str]:
        return [f.stem for f in self.frames]

    @property
    def annotated(self) -> list[int]:
        """Indices of frames that have a mask."""
        return [i for i, m in enumerate(self.masks) if m is not None]

    def load_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as ``HxWx3`` uint8 RGB."""
        return read_rgb(self.frames[index])

    def load_mask(self, index: int) -> Optional[np.ndarray]:
        """Mask of frame ``index`` as ``HxW`` uint8 labels (0 bg, 1..K objects, 255 void), or None."""
        m = self.masks[index]
        return None if m is None else read_label_mask(m)

    def load_masks(self) -> np.ndarray:
        """All masks stacked to ``(T, H, W)`` uint8; raises if a frame has none."""
        missing = [self.frames[i].name for i, m in enumerate(self.masks) if m is None]
        if missing:
            raise DatasetError(f"sequence {self.name}: no mask for frame {missing[0]}")
        return np.stack([read_label_mask(m) for m in self.masks])  # type: ignore[arg-type]

    def object_ids(self) -> list[int]:
        """Object labels present in the first annotated mask (the ones a semi-supervised method tracks)."""
        ann = self.annotated
        if not ann:
            return []
        labels = np.unique(self.load_mask(ann[0]))
        return [int(v) for v in labels if v not in (0, VOID_LABEL)]

    def validate(self, cache: Optional[dict] = None) -> None:
        """Check all frames have one size and every mask matches it."""
        if not self.frames:
            raise DatasetError(f"sequence {self.name}: no frames")
        size = image_size(self.frames[0], cache)
        for f in self.frames[1:]:
            s = image_size(f, cache)
            if s != size:
                raise DatasetError(f"{f}: frame is {s[0]}x{s[1]}, but {self.frames[0].name} is {size[0]}x{size[1]}")
        for m in self.masks:
            if m is not None:
                s = image_size(m, cache)
                if s != size:
                    raise DatasetError(f"{m}: mask is {s[0]}x{s[1]}, but the frames are {size[0]}x{size[1]}")


def _sequence(name: str, frame_dir: Path, mask_dir: Optional[Path], require_first_mask: bool) -> VideoSequence:
    frames = list_images(frame_dir)
    if not frames:
        raise DatasetError(f"{frame_dir}: no frames in sequence {name!r}")
    by_stem = {}
    if mask_dir is not None and mask_dir.is_dir():
        by_stem = {m.stem: m for m in list_images(mask_dir)}
    stems = {f.stem for f in frames}
    orphan = sorted(set(by_stem) - stems)
    if orphan:
        raise DatasetError(f"{by_stem[orphan[0]]}: mask has no frame with the same name in {frame_dir}")
    masks = tuple(by_stem.get(f.stem) for f in frames)
    if require_first_mask and masks[0] is None:
        where = mask_dir if mask_dir is not None else frame_dir
        raise DatasetError(f"{where}: no mask for the first frame {frames[0].name} of sequence {name!r}")
    return VideoSequence(name=name, frames=tuple(frames), masks=masks)


def _split_names(path: Path) -> list[str]:
    names: list[str] = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) == 1 and "/" not in fields[0]:
            name = fields[0]
        else:
            # DAVIS 2016 lists "/JPEGImages/480p/<seq>/00000.jpg /Annotations/480p/<seq>/00000.png"
            parts = Path(fields[0]).parts
            if len(parts) < 2:
                raise DatasetError(f"{path}:{n}: cannot read a sequence name from {line.strip()!r}")
            name = parts[-2]
        if name not in names:
            names.append(name)
    return names


def read_davis(
    root: PathLike,
    split: Optional[str] = None,
    year: Optional[int] = None,
    resolution: str = "480p",
    sequences: Optional[Sequence[str]] = None,
    require_first_mask: bool = True,
    check: bool = True,
) -> list[VideoSequence]:
    """Read DAVIS sequences (official or compact layout, see the module docstring).

    ``split`` (``train``/``val``/...) selects the sequences listed in
    ``ImageSets``; ``year`` (2016 or 2017) picks which list when both exist,
    defaulting to 2017 then 2016. Without ``split`` every sequence folder is
    read. ``sequences`` restricts to the given names. ``check`` opens every
    frame and mask header to confirm sizes agree.
    """
    root = require_dir(root, "DAVIS folder")
    if (root / "JPEGImages").is_dir():
        frame_root = require_dir(root / "JPEGImages" / resolution, f"DAVIS {resolution} frames")
        mask_root = root / "Annotations" / resolution
        if split is not None:
            years = [str(year)] if year is not None else ["2017", "2016"]
            candidates = [root / "ImageSets" / y / f"{split}.txt" for y in years]
            candidates.append(root / "ImageSets" / resolution / f"{split}.txt")
            listing = next((c for c in candidates if c.is_file()), None)
            if listing is None:
                raise DatasetError(f"{root / 'ImageSets'}: no {split}.txt sequence list "
                                   f"(looked in {', '.join(str(c.parent.name) for c in candidates)})")
            names = _split_names(listing)
            for n in names:
                if not (frame_root / n).is_dir():
                    raise DatasetError(f"{listing}: lists sequence {n!r}, but {frame_root / n} does not exist")
        else:
            names = [d.name for d in sorted(frame_root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        seqs = [_sequence(n, frame_root / n, mask_root / n, require_first_mask) for n in names
                if sequences is None or n in sequences]
    else:
        if split is not None:
            raise DatasetError(f"{root}: split {split!r} needs the official layout (JPEGImages/, ImageSets/)")
        seqs = []
        for d in sorted(root.iterdir()):
            if not d.is_dir() or d.name.startswith(".") or (sequences is not None and d.name not in sequences):
                continue
            if not (d / "frames").is_dir():
                raise DatasetError(f"{d}: no frames/ folder (expected <seq>/frames and <seq>/masks)")
            seqs.append(_sequence(d.name, d / "frames", d / "masks", require_first_mask))
    return select_named(seqs, sequences, root, "sequence", check)
