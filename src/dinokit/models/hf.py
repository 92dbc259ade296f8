"""Hugging Face ``transformers`` checkpoints (``ViTModel``, ``Dinov2Model``, ``Dinov2WithRegistersModel``) as dinokit backbones.

The converter renames the weights to the official DINO / DINOv2 layout and
fuses the separate query, key and value projections into one ``attn.qkv``
layer, so a converted model runs through the same code as the official
checkpoints and its facets come from the single ``qkv`` projection of the
forward pass. Both the names ``transformers`` writes to disk
(``attention.attention.query``, ``layer_scale1.lambda1``, ``mlp.weights_in``)
and the names of its in-memory v5 modules (``attention.q_proj``,
``mlp.gate_proj``/``up_proj``) are understood.

Positional-embedding interpolation: ``transformers`` resizes to the exact grid
(``size=``, bicubic; ``ViTModel`` only with
``interpolate_pos_encoding=True``), while the official DINO and DINOv2
(without registers) code uses the scale factor ``(grid + 0.1) / M``; the two
agree at the native grid only.
``interpolation="official"`` (default) reproduces the original release, so a
converted ``facebook/dinov2-small`` gives the same features as the named
``dinov2_vits14``; ``interpolation="transformers"`` reproduces the
``transformers`` model at every image size (tested to float precision for
hidden states, attention and CLS output, at grids larger and smaller than the
native one). For DINOv2 with registers both rules are the same (exact size,
antialiased), so parity is exact with either setting.

DINOv3 (``DINOv3ViTModel``, model type ``dinov3_vit``) is converted by
:mod:`dinokit.models.dinov3`; there the same switch chooses the RoPE periods
(``transformers`` stores none): ``"official"`` the bfloat16-rounded values of
the released checkpoints, ``"transformers"`` the ones ``transformers``
recomputes from ``rope_theta``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor

from ..errors import WeightsError
from .build import build_and_load, finish_model
from .config import IMAGENET_MEAN, IMAGENET_STD, ArchConfig
from .dinov3 import arch_from_hf_dinov3_config, convert_hf_dinov3_state_dict
from .formats import CheckpointFormat, refuse_unknown, register_format, split_keys
from .vit import VisionTransformer

PathLike = Union[str, os.PathLike]
HF_TYPES = ("dinov2", "dinov2_with_registers", "vit", "dinov3_vit")
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
INTERPOLATIONS = ("official", "transformers")

_LAYER = re.compile(r"^(?:encoder\.layers?|layers?)\.(\d+)\.(.+)\.(weight|bias|lambda1)$")
# Module of a transformer layer (both on-disk and in-memory transformers names) -> official module.
_LAYER_MODULES = {
    "norm1": "norm1",
    "layernorm_before": "norm1",
    "norm2": "norm2",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "layer_scale1": "ls1",
    "layer_scale2": "ls2",
    "mlp.fc1": "mlp.fc1",
    "intermediate.dense": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "output.dense": "mlp.fc2",
    "mlp.weights_in": "mlp.w12",
    "mlp.weights_out": "mlp.w3",
    "mlp.down_proj": "mlp.w3",
}
_QKV = {
    "attention.attention.query": 0,
    "attention.q_proj": 0,
    "attention.attention.key": 1,
    "attention.k_proj": 1,
    "attention.attention.value": 2,
    "attention.v_proj": 2,
}
_GATE_UP = {"mlp.gate_proj": 0, "mlp.up_proj": 1}
_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "embeddings.mask_token": "mask_token",
    "embeddings.register_tokens": "register_tokens",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_IGNORED = ("pooler.", "classifier.", "head.")
_WRAPPERS = ("dinov2.", "dinov2_with_registers.", "vit.", "model.", "backbone.")


def looks_like_hf(state: Mapping[str, Any]) -> bool:
    """Whether a state dict uses ``transformers`` names (possibly under a wrapper prefix)."""
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in state)


def convert_hf_state_dict(state: Mapping[str, Tensor], source: str = "weights") -> dict[str, Tensor]:
    """Rename a ``transformers`` ViT / DINOv2 state dict to the official layout, fusing q, k, v."""
    out, blocks, unknown = split_keys(_strip_wrapper(state), _TOP, _LAYER, _IGNORED)
    qkv: dict[tuple[int, str], list[Optional[Tensor]]] = {}
    gate_up: dict[tuple[int, str], list[Optional[Tensor]]] = {}
    for key, i, module, param, value in blocks:
        if module in _QKV:
            qkv.setdefault((i, param), [None, None, None])[_QKV[module]] = value
        elif module in _GATE_UP:
            gate_up.setdefault((i, param), [None, None])[_GATE_UP[module]] = value
        elif module in _LAYER_MODULES:
            target = _LAYER_MODULES[module]
            out[f"blocks.{i}.{target}.{'gamma' if param == 'lambda1' else param}"] = value
        else:
            unknown.append(key)
    refuse_unknown(unknown, source, "ViT / DINOv2")
    for (i, param), parts in qkv.items():
        if any(p is None for p in parts):
            raise WeightsError(f"{source}: layer {i} lacks one of the query/key/value {param}s")
        out[f"blocks.{i}.attn.qkv.{param}"] = torch.cat([p for p in parts if p is not None], dim=0)
    for (i, param), parts in gate_up.items():
        if any(p is None for p in parts):
            raise WeightsError(f"{source}: layer {i} lacks the gate or up projection {param}")
        out[f"blocks.{i}.mlp.w12.{param}"] = torch.cat([p for p in parts if p is not None], dim=0)
    return out


def _strip_wrapper(state: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """Drop the ``dinov2.`` / ``vit.`` prefix of task models (and their heads)."""
    for prefix in _WRAPPERS:
        if any(k.startswith(prefix + "embeddings.") for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def arch_from_hf_config(
    config: Mapping[str, Any],
    state: Optional[Mapping[str, Tensor]] = None,
    interpolation: str = "official",
    preprocessor: Optional[Mapping[str, Any]] = None,
    source: str = "config.json",
) -> ArchConfig:
    """The :class:`ArchConfig` of a ``transformers`` config (a ``config.json`` dict).

    ``state`` (converted to the official layout) tells whether layer scale and
    a mask token are present; ``preprocessor`` (``preprocessor_config.json``)
    gives the normalisation.
    """
    if interpolation not in INTERPOLATIONS:
        raise WeightsError(f"unknown interpolation {interpolation!r}; choose {' or '.join(INTERPOLATIONS)}")
    check_hf_config(config, source)
    kind = config["model_type"]
    dim = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    patch = _single(config.get("patch_size", 16), "patch_size", source)
    img = _single(config.get("image_size", 224), "image_size", source)
    eps = float(config.get("layer_norm_eps", 1e-12 if kind == "vit" else 1e-6))
    regs = int(config.get("num_register_tokens", 0)) if kind == "dinov2_with_registers" else 0
    if kind == "vit":
        inter = int(config.get("intermediate_size", 4 * dim))
        mlp_ratio = inter / dim
        if int(dim * mlp_ratio) != inter:
            mlp_ratio = (inter + 0.5) / dim
        ffn = "mlp"
    else:
        mlp_ratio = float(config.get("mlp_ratio", 4))
        ffn = "swiglu" if config.get("use_swiglu_ffn", False) else "mlp"
    if state is not None and "pos_embed" in state:
        n_pos = int(state["pos_embed"].shape[1]) - 1
        side = int(round(n_pos**0.5))
        img = side * patch
    layerscale = kind != "vit" if state is None else "blocks.0.ls1.gamma" in state
    mask = kind != "vit" if state is None else "mask_token" in state
    if kind == "vit":
        mode = "dino"
        offset, antialias = (0.1 if interpolation == "official" else 0.0), False
    elif regs:
        mode, offset, antialias = "dinov2", 0.0, True
    else:
        mode = "dinov2"
        offset, antialias = (0.1 if interpolation == "official" else 0.0), False
    if preprocessor and "image_mean" in preprocessor and "image_std" in preprocessor:
        mean = _rgb(preprocessor["image_mean"], "image_mean", source)
        std = _rgb(preprocessor["image_std"], "image_std", source)
    elif kind == "vit":
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # ViTImageProcessor's defaults
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return ArchConfig(
        patch_size=patch,
        embed_dim=dim,
        depth=int(config["num_hidden_layers"]),
        num_heads=heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=bool(config.get("qkv_bias", True)),
        layernorm_eps=eps,
        img_size=img,
        num_register_tokens=regs,
        layerscale=layerscale,
        ffn=ffn,
        pos_embed_mode=mode,
        mask_token=mask,
        interpolate_offset=offset,
        interpolate_antialias=antialias,
        mean=mean,
        std=std,
    )


def _rgb(values: Any, name: str, source: str) -> tuple[float, float, float]:
    """Three per-channel floats of a preprocessor config."""
    try:
        r, g, b = (float(v) for v in values)
    except (TypeError, ValueError):
        raise WeightsError(f"{source}: {name} must be three numbers, got {values!r}") from None
    return r, g, b


def check_hf_config(config: Mapping[str, Any], source: str = "config.json") -> None:
    """Refuse configurations dinokit cannot reproduce, before any weights are read."""
    kind = config.get("model_type")
    if kind not in HF_TYPES:
        raise WeightsError(
            f"{source}: model_type {kind!r} is not supported; dinokit converts {', '.join(HF_TYPES)} models"
        )
    act = config.get("hidden_act", "gelu")
    if act != "gelu" and not (kind == "dinov3_vit" and act == "silu"):
        raise WeightsError(f"{source}: hidden_act {act!r} is not supported (only exact GELU)")
    if int(config.get("num_channels", 3)) != 3:
        raise WeightsError(f"{source}: only 3-channel (RGB) models are supported")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads") if k not in config]
    if missing:
        raise WeightsError(f"{source}: config lacks {', '.join(missing)}")


def _single(value: Any, name: str, source: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise WeightsError(f"{source}: non-square {name} {list(value)} is not supported")
        value = value[0]
    return int(value)


def is_hf_dir(path: PathLike) -> bool:
    """Whether ``path`` is a folder with a ``config.json`` and ``transformers`` weights."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and any((p / f).is_file() for f in HF_WEIGHT_FILES)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object")
    return data


def read_hf_weights(folder: PathLike) -> dict[str, Tensor]:
    """All tensors of a ``transformers`` folder (single or sharded safetensors, or ``pytorch_model.bin``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    single, index, pickled = (folder / f for f in HF_WEIGHT_FILES)
    try:
        if single.is_file():
            return load_file(str(single))
        if index.is_file():
            shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
            if not shards:
                raise WeightsError(f"{index}: lists no weight files")
            state: dict[str, Tensor] = {}
            for shard in shards:
                if not (folder / shard).is_file():
                    raise WeightsError(f"{folder / shard}: shard listed in {index.name} is missing")
                state.update(load_file(str(folder / shard)))
            return state
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{folder}: unreadable safetensors weights ({exc})") from None
    if pickled.is_file():
        try:
            obj = torch.load(str(pickled), map_location="cpu", weights_only=True)
        except Exception as exc:  # unsafe pickles and broken files alike
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WeightsError(
                f"{pickled}: refused or unreadable: only plain tensors are loaded ({first[:200]})"
            ) from None
        if not isinstance(obj, Mapping):
            raise WeightsError(f"{pickled}: expected a dict of tensors")
        return {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    raise WeightsError(f"{folder}: no weights found (expected one of {', '.join(HF_WEIGHT_FILES)})")


def load_hf_model(
    source: Union[PathLike, torch.nn.Module],
    *,
    interpolation: str = "official",
    device: Union[str, torch.device, None] = None,
    dtype: Optional[torch.dtype] = None,
) -> VisionTransformer:
    """A dinokit backbone from a ``transformers`` model folder, hub id or in-memory model.

    ``source`` is a folder written by ``save_pretrained`` (``config.json`` plus
    ``model.safetensors``), a ``ViTModel`` / ``Dinov2Model`` /
    ``Dinov2WithRegistersModel`` (or their classification wrappers) in memory,
    or a hub id such as ``"facebook/dinov2-small"`` (needs ``transformers`` and
    network on first use). The weights are loaded strictly into the official
    layout; the model is returned in eval mode with ``spec=None``.
    """
    preprocessor: Optional[dict] = None
    if isinstance(source, torch.nn.Module):
        config = getattr(source, "config", None)
        if config is None or not hasattr(config, "to_dict"):
            raise WeightsError(f"{type(source).__name__} is not a transformers model (it has no config)")
        cfg_dict = config.to_dict()
        raw = source.state_dict()
        name = f"{type(source).__name__} ({cfg_dict.get('_name_or_path') or 'in memory'})"
    else:
        path = Path(source)
        if path.is_file() and path.name in HF_WEIGHT_FILES:
            path = path.parent
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise WeightsError(f"{path}: not a Hugging Face model folder (no config.json)")
            cfg_dict = _read_json(path / "config.json")
            check_hf_config(cfg_dict, str(path / "config.json"))
            raw = read_hf_weights(path)
            if (path / "preprocessor_config.json").is_file():
                preprocessor = _read_json(path / "preprocessor_config.json")
            name = str(path)
        elif re.fullmatch(r"[\w.\-]+/[\w.\-]+", str(source)) and not path.exists():
            return load_hf_model(_from_hub(str(source)), interpolation=interpolation, device=device, dtype=dtype)
        else:
            raise WeightsError(f"{source}: no such Hugging Face model folder")
    if cfg_dict.get("model_type") == "dinov3_vit":
        arch = arch_from_hf_dinov3_config(cfg_dict, preprocessor, name)
        periods = "transformers" if interpolation == "transformers" else "release"
        state = convert_hf_dinov3_state_dict(raw, name, arch.head_dim, periods, arch.rope_base)
    else:
        state = convert_hf_state_dict(raw, name)
        arch = arch_from_hf_config(cfg_dict, state, interpolation, preprocessor, name)
    return finish_model(build_and_load(arch, state, name), None, name, device, dtype)


def _from_hub(repo_id: str) -> torch.nn.Module:
    """Download (or read from the cache) a hub model with ``transformers``."""
    try:
        from transformers import AutoModel
    except ImportError:
        raise WeightsError(
            f"loading {repo_id} from the Hugging Face hub needs transformers: pip install 'dinokit[hf]' "
            "(or pass a folder written by save_pretrained)"
        ) from None
    try:
        return AutoModel.from_pretrained(repo_id, attn_implementation="eager")
    except Exception as exc:  # offline, unknown repo, gated model ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(
            f"could not load {repo_id} from the Hugging Face hub ({first}); "
            "download the model folder yourself and pass it with --weights FOLDER"
        ) from None


# A transformers state dict without its config.json (e.g. a bare model.safetensors).
HF_FORMAT = register_format(CheckpointFormat("transformers", looks_like_hf, convert_hf_state_dict))

__all__ = [
    "HF_FORMAT",
    "HF_TYPES",
    "INTERPOLATIONS",
    "arch_from_hf_config",
    "check_hf_config",
    "convert_hf_state_dict",
    "is_hf_dir",
    "load_hf_model",
    "looks_like_hf",
    "read_hf_weights",
]
