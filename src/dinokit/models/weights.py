"""Reading, checking, downloading and saving backbone weights.

Every file is loaded safely: safetensors, or ``torch.load(weights_only=True)``
with exactly one extra allowed class (``argparse.Namespace``, which DINO's
training checkpoints carry). Pickled code is refused.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from ..errors import WeightsError
from ..io import save_tensors
from .build import build_and_load, finish_model, shape_report  # noqa: F401  (shape_report: re-exported)
from .config import ARCH_PRESETS, ArchConfig, arch_preset
from .formats import arch_from_shapes, convert_checkpoint
from .hf import HF_WEIGHT_FILES, is_hf_dir, load_hf_model
from .registry import DEFAULT_MODEL, ModelSpec, get_spec, is_registered
from .timm import load_timm_model
from .vit import VisionTransformer

PathLike = Union[str, os.PathLike]
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".tar")
# Prefixes that wrap a backbone in DINO / DDP checkpoints, stripped in this order.
_PREFIXES = ("module.", "backbone.", "encoder.")
# Non-backbone entries of training checkpoints.
_DROP = ("head.", "dino_head.", "ibot_head.")


@dataclass
class LoadedWeights:
    """A backbone state dict and what the file said about itself."""

    state_dict: dict[str, torch.Tensor]
    metadata: Optional[dict[str, str]] = None
    args: Any = None
    source: str = ""
    dropped: list[str] = field(default_factory=list)


def cache_dir() -> Path:
    """Folder where named weights are cached (torch hub's ``checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_file(spec: ModelSpec) -> Optional[Path]:
    """Cache location of a named model's weights (``None`` if it has no URL)."""
    return cache_dir() / spec.filename if spec.filename else None


def download_weights(spec: ModelSpec, progress: bool = True) -> Path:
    """Return the cached weights file of ``spec``, downloading it once if needed.

    Without network the user gets one line: the URL, the cache path, and how
    to pass a file instead.
    """
    dst = cached_file(spec)
    if dst is None:
        raise WeightsError(f"model {spec.name} has no download URL; pass --weights FILE")
    if dst.is_file():
        return dst
    if spec.url is None:
        where = f"request them at {spec.request_url}, then " if spec.request_url else ""
        raise WeightsError(
            f"{dst}: no such weights file; the weights of {spec.name} are not downloaded automatically: "
            f"{where}save {spec.filename} as {dst} or pass it with --weights FILE"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(spec.url, str(dst), progress=progress)
    except Exception as exc:  # network errors come in many types (URLError, OSError, HTTPError, ssl)
        reason = str(getattr(exc, "reason", "") or exc).strip() or type(exc).__name__
        raise WeightsError(
            f"could not download the weights of {spec.name} from {spec.url} ({reason}); "
            f"download that file yourself and save it as {dst}, or pass it with --weights FILE "
            f"(Python: load_model('{spec.name}', weights='FILE'))"
        ) from None
    return dst


def read_weights(path: PathLike, checkpoint_key: str = "teacher") -> LoadedWeights:
    """Read a backbone state dict from ``.safetensors`` or a PyTorch file, safely.

    Training checkpoints (``teacher``/``student``/``model``/``state_dict``
    entries, ``module.`` and ``backbone.`` prefixes) are unwrapped and their
    head entries dropped.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such weights file")
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder, expected a weights file (.pth, .pt or .safetensors)")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: the file is empty")
    metadata = None
    args = None
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), "pt") as f:
                metadata = f.metadata()
            obj: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "Unsupported global" in str(exc) or "weights_only" in str(exc).lower():
                found = re.search(r"GLOBAL ([\w.]+)", str(exc))
                what = f" ({found.group(1)})" if found else ""
                raise WeightsError(
                    f"{path}: refused to load: the file contains Python objects{what} that could run code; "
                    "only plain tensors are accepted (convert it to .safetensors or a plain state dict)"
                ) from None
            raise WeightsError(f"{path}: not a readable PyTorch weights file ({msg})") from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    if isinstance(obj.get("args"), argparse.Namespace):
        args = obj["args"]
    state, dropped = unwrap_checkpoint(obj, str(path), checkpoint_key)
    return LoadedWeights(state, metadata, args, str(path), dropped)


def unwrap_checkpoint(obj: Mapping, source: str = "checkpoint", key: str = "teacher") -> tuple[dict, list[str]]:
    """Find the backbone state dict inside a checkpoint and bring it to dinokit's layout.

    Wrapper prefixes and head entries are removed, then the first matching
    adapter of :data:`~dinokit.models.formats.FORMATS` renames the rest.
    """
    for candidate in (key, "teacher", "student", "model", "state_dict", "module"):
        if candidate in obj and isinstance(obj[candidate], Mapping):
            obj = obj[candidate]
            break
    state: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            dropped.append(name)
            continue
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name.startswith(_DROP):
            dropped.append(name)
            continue
        state[name] = value
    if not state:
        raise WeightsError(f"{source}: contains no tensors that look like a ViT backbone")
    state, _ = convert_checkpoint(state, source)
    return state, dropped


def infer_arch(state: Mapping[str, torch.Tensor], num_heads: Optional[int] = None, source: str = "weights") -> ArchConfig:
    """Architecture from tensor shapes; the head count must be given unless the width is standard."""
    return arch_from_shapes(state, num_heads, source)


def _arch_from_args(args: Any, state: Mapping[str, torch.Tensor], source: str) -> Optional[ArchConfig]:
    """Use a training checkpoint's ``args.arch`` only when it agrees with the weights."""
    name = getattr(args, "arch", None)
    if name not in ARCH_PRESETS:
        return None
    preset = arch_preset(name, patch_size=int(getattr(args, "patch_size", 16)))
    shapes = infer_arch(state, num_heads=preset.num_heads, source=source)
    if shapes.embed_dim != preset.embed_dim or shapes.depth != preset.depth or shapes.patch_size != preset.patch_size:
        raise WeightsError(
            f"{source}: the checkpoint says arch={name} (dim {preset.embed_dim}, depth {preset.depth}, "
            f"patch {preset.patch_size}) but its weights are dim {shapes.embed_dim}, depth {shapes.depth}, "
            f"patch {shapes.patch_size}; pass --num-heads N to build the model from the weights' shapes"
        )
    return shapes


def load_model(
    model: Optional[str] = None,
    weights: Optional[PathLike] = None,
    *,
    num_heads: Optional[int] = None,
    arch: Optional[ArchConfig] = None,
    pretrained: bool = True,
    checkpoint_key: str = "teacher",
    device: Union[str, torch.device, None] = None,
    dtype: Optional[torch.dtype] = None,
    progress: bool = True,
    seed: int = 0,
) -> VisionTransformer:
    """Build a backbone by name and/or from a weights file, ready for inference.

    - ``load_model("dino_vits8")``: the official weights, downloaded once.
    - ``load_model(weights="file.safetensors")``: architecture from the file's
      metadata, or from the tensor shapes (``num_heads`` for non-standard widths).
    - ``load_model("dino_vits8", pretrained=False)``: random weights (seeded).

    A ``num_heads`` that contradicts a stored architecture (safetensors
    metadata, a Hugging Face ``config.json``, a named model) is refused. The
    returned model is in eval mode; ``model.spec`` is the named model (or
    ``None``) and ``model.source`` where the weights came from.
    """
    foreign = _load_foreign(model, weights, pretrained)
    if foreign is not None:
        net, spec = foreign
        check_num_heads(net.cfg, num_heads, net.source)
        return finish_model(net, spec, net.source, device, dtype)
    if model is not None and weights is None and (
        Path(model).suffix in WEIGHT_SUFFIXES or os.sep in model or (not is_registered(model) and Path(model).is_dir())
    ):
        model, weights = None, model
    spec = get_spec(model) if model is not None else None
    if weights is None and spec is None and arch is None:
        spec = get_spec(DEFAULT_MODEL)
    if weights is not None:
        loaded = read_weights(weights, checkpoint_key)
        source = loaded.source
        net = build_and_load(_file_arch(loaded, spec, arch, num_heads), loaded.state_dict, source)
    elif spec is not None and pretrained:
        check_num_heads(spec.arch, num_heads, f"model {spec.name}")
        path = download_weights(spec, progress=progress)
        loaded = read_weights(path, checkpoint_key)
        source = spec.url or str(path)
        net = build_and_load(spec.arch, loaded.state_dict, str(path))
    else:
        if arch is None and spec is not None:
            check_num_heads(spec.arch, num_heads, f"model {spec.name}")
        cfg = arch if arch is not None else (spec.arch if spec is not None else None)
        if cfg is None:
            raise WeightsError("no model name, weights file or architecture given")
        if num_heads is not None:
            cfg = cfg.replace(num_heads=num_heads)
        net = VisionTransformer(cfg, seed=seed)  # initialised once, from the seed
        source = "random"
    return finish_model(net, spec, source, device, dtype)


def check_num_heads(cfg: ArchConfig, num_heads: Optional[int], source: str) -> None:
    """Refuse a ``--num-heads`` that contradicts the head count ``source`` stores."""
    if num_heads is not None and int(num_heads) != cfg.num_heads:
        raise WeightsError(
            f"{source}: --num-heads {num_heads} contradicts the stored architecture, which has "
            f"{cfg.num_heads} heads; leave --num-heads out"
        )


def _file_arch(
    loaded: LoadedWeights, spec: Optional[ModelSpec], arch: Optional[ArchConfig], num_heads: Optional[int]
) -> ArchConfig:
    """The architecture of a weights file: given, from its metadata, its named model, args or shapes."""
    source = loaded.source
    try:
        if arch is not None:
            return arch if num_heads is None else arch.replace(num_heads=num_heads)
        if loaded.metadata and loaded.metadata.get("format") == "dinokit-arch-v1":
            cfg = ArchConfig.from_metadata(loaded.metadata, source)
            check_num_heads(cfg, num_heads, source)
            return cfg
        if spec is not None:
            check_num_heads(spec.arch, num_heads, f"{source} (model {spec.name})")
            return spec.arch
        if num_heads is None and loaded.args is not None:
            return _arch_from_args(loaded.args, loaded.state_dict, source) or infer_arch(loaded.state_dict, None, source)
        return infer_arch(loaded.state_dict, num_heads, source)
    except WeightsError as exc:  # e.g. a head count that does not divide the width: name the file
        if str(exc).startswith(source):
            raise
        raise WeightsError(f"{source}: {exc}") from None


def _load_foreign(
    model: Optional[str], weights: Optional[PathLike], pretrained: bool
) -> Optional[tuple[VisionTransformer, Optional[ModelSpec]]]:
    """Hugging Face folders / hub ids (``hf:ORG/NAME``) and ``timm:NAME`` models, else ``None``.

    A registered name given with a Hugging Face folder keeps its spec (and so
    its saliency default).
    """
    if weights is None and model is not None and not is_registered(model):
        if model.startswith("hf:"):
            return load_hf_model(model[3:]), None
        if model.startswith("timm:"):
            return load_timm_model(model[5:], pretrained=pretrained), None
        if is_hf_dir(model):
            model, weights = None, model
    if weights is None:
        return None
    path = Path(weights)
    if path.is_file() and path.name in HF_WEIGHT_FILES and (path.parent / "config.json").is_file():
        path = path.parent
    if not path.is_dir():
        return None
    if not is_hf_dir(path):
        raise WeightsError(
            f"{path}: is a folder but not a Hugging Face model folder (config.json plus model.safetensors); "
            "pass a weights file (.pth, .pt or .safetensors) or such a folder"
        )
    net = load_hf_model(path)
    net.source = str(path)
    return net, (get_spec(model) if model is not None else None)


def create_model(arch: Union[str, ArchConfig], seed: int = 0, **overrides: Any) -> VisionTransformer:
    """A randomly initialised backbone from a preset name (``vit_small``), a model name or a config."""
    if isinstance(arch, str):
        cfg = arch_preset(arch, **overrides) if arch in ARCH_PRESETS else get_spec(arch).arch.replace(**overrides)
    else:
        cfg = arch.replace(**overrides) if overrides else arch
    return load_model(arch=cfg, pretrained=False, seed=seed)


def save_backbone(model: VisionTransformer, path: PathLike, overwrite: bool = True, extra: Optional[dict[str, str]] = None) -> Path:
    """Save a backbone as safetensors with ``dinokit-arch-v1`` metadata (atomic)."""
    meta = model.cfg.to_metadata()
    if extra:
        meta.update({k: str(v) for k, v in extra.items()})
    return save_tensors(path, model.state_dict(), meta, overwrite)
