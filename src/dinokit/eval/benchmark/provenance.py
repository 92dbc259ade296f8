"""What produced a benchmark result: the model and its weights, the software, the machine.

Written into every result file so a number can be traced to the exact
weights (path, size and SHA-256 of the file) and code that produced it.
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import Any, Optional

import torch

_HASH_CACHE: dict[tuple[str, int, float], str] = {}


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file (hex), remembered per (path, size, mtime) for the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def _weights_file(net: Any, weights: Optional[str]) -> Optional[Path]:
    if weights is not None and Path(weights).is_file():
        return Path(weights)
    spec = getattr(net, "spec", None)
    if spec is not None and getattr(net, "source", None) not in (None, "random"):
        from ...models import cached_file

        path = cached_file(spec)
        if path is not None and path.is_file():
            return path
    return None


def describe_model(net: Any, name: Optional[str] = None, weights: Optional[str] = None) -> dict[str, Any]:
    """Name, weights (path, bytes, SHA-256) and architecture of a loaded backbone."""
    spec = getattr(net, "spec", None)
    cfg = getattr(net, "cfg", None)
    label = name or (spec.name if spec is not None else None)
    path = _weights_file(net, weights)
    if label is None:
        label = path.stem if path is not None else "model"
    info: dict[str, Any] = {
        "name": label,
        "source": str(getattr(net, "source", "")),
        "weights": str(path) if path is not None else None,
        "weights_bytes": path.stat().st_size if path is not None else None,
        "weights_sha256": file_sha256(path) if path is not None else None,
    }
    if cfg is not None:
        info["arch"] = {k: getattr(cfg, k) for k in ("patch_size", "embed_dim", "depth", "num_heads")
                        if hasattr(cfg, k)}
    return info


def environment(device: Any) -> dict[str, Any]:
    """Versions of dinokit, torch and Python, and the device the model ran on."""
    from ... import __version__

    return {
        "dinokit": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
