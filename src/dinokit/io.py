"""Safe output writing: every file is written to a temporary name and renamed.

A crash mid-write therefore never leaves a truncated result, and finished
outputs from earlier in a run stay intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np

from .errors import DinokitError

PathLike = Union[str, os.PathLike]


@contextmanager
def atomic_path(path: PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    With ``overwrite=False`` an existing ``path`` raises :class:`DinokitError`
    instead of being replaced.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise DinokitError(f"{path}: already exists (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: PathLike, writer: Callable[[Path], Any], overwrite: bool = True) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path, overwrite) as tmp:
        writer(tmp)
    return Path(path)


def save_json(path: PathLike, obj: Any, overwrite: bool = True) -> Path:
    """Write ``obj`` as indented JSON, atomically."""

    def _write(tmp: Path) -> None:
        tmp.write_text(json.dumps(obj, indent=2, default=json_default) + "\n")

    return write_atomic(path, _write, overwrite)


def save_image(path: PathLike, image: Any, overwrite: bool = True) -> Path:
    """Save a PIL image or an ``HxW`` / ``HxWx3`` uint8 array, atomically (format from the suffix)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise TypeError(f"save_image expects uint8 data, got {arr.dtype}")
        image = Image.fromarray(arr)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    return write_atomic(path, lambda tmp: image.save(tmp, format=fmt), overwrite)


def save_tensors(
    path: PathLike, tensors: dict, metadata: Optional[dict[str, str]] = None, overwrite: bool = True
) -> Path:
    """Write a dict of tensors as safetensors (contiguous, CPU), atomically."""
    from safetensors.torch import save_file

    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return write_atomic(path, lambda tmp: save_file(clean, str(tmp), metadata=metadata), overwrite)


def unique_output_names(sources: Sequence[Any], roots: Optional[Sequence[PathLike]] = None) -> list[str]:
    """One output name per input, the rule every command uses.

    A file's name is its stem, or its path below the input folder it was
    found in (without the suffix) when ``roots`` lists those folders; a PIL
    image uses its ``name`` attribute, else ``image_00003``. A name seen before
    gets ``_2``, ``_3`` ... in input order, so reruns over the same inputs
    give the same names.
    """
    resolved = [Path(r).resolve() for r in roots or ()]
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, src in enumerate(sources):
        if isinstance(src, (str, os.PathLike)):
            base = _relative_stem(Path(src), resolved)
        else:
            base = getattr(src, "name", None) or getattr(src, "filename", None) or f"image_{i:05d}"
            base = Path(str(base)).stem if base else f"image_{i:05d}"
        n = seen.get(base, 0) + 1
        seen[base] = n
        names.append(base if n == 1 else f"{base}_{n}")
    return names


def _relative_stem(path: Path, roots: Sequence[Path]) -> str:
    full = path.resolve()
    for root in roots:
        try:
            return full.relative_to(root).with_suffix("").as_posix()
        except ValueError:
            continue
    return path.stem


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for NumPy scalars and arrays, paths and tensors."""
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
