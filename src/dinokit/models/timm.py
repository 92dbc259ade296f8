"""Supervised ViTs and ``timm`` models as dinokit backbones.

``timm``'s ViT uses the same parameter names as DINO (``cls_token``,
``pos_embed``, ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,
norm2,mlp.fc1,mlp.fc2}``, ``norm``) plus a classifier ``head``, so its
checkpoints load into the same architecture after small renames (register
tokens ``reg_token``, a positional table without the CLS row, the packed
SwiGLU ``mlp.fc1``/``mlp.fc2`` of DINOv2-g). Amir et al. compare DINO with the
supervised ViTs of ``timm`` (``vit_small_patch16_224``, ``vit_base_patch16_224``,
``vit_base_patch8_224``: ImageNet-21k pre-training, ImageNet-1k fine-tuning,
"AugReg" weights), normalised with mean = std = 0.5; those are registered here
by their full ``timm`` names with the short names as aliases, and download
from the ``timm`` organisation of the Hugging Face hub without needing ``timm``.
The short aliases keep the paper's weights: current ``timm`` resolves
``vit_base_patch16_224`` and ``vit_base_patch8_224`` to the later
``augreg2_in21k_ft_in1k`` weights instead (``--model timm:NAME`` follows
``timm``). There is no supervised ViT-S/8 in ``timm`` (its
``vit_small_patch8_224`` is DINO's). Positions are interpolated with DINO's
rule (as the reference extractor does for these models), not ``timm``'s.

Any other ``timm`` ViT can be loaded by name (``load_timm_model`` or
``--model timm:NAME``) when ``timm`` is installed (``pip install 'dinokit[timm]'``).

Saliency: the supervised models average all heads (no head subset has been
measured for them; see :mod:`dinokit.models.dinov2` for the reasoning).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import torch
from torch import Tensor

from ..errors import WeightsError
from .build import build_and_load, finish_model, infer_dino_arch
from .config import ArchConfig
from .formats import CheckpointFormat, register_format
from .registry import ModelSpec, register_model
from .vit import VisionTransformer

TIMM_HUB_URL = "https://huggingface.co/timm"
SUPERVISED_MEAN = (0.5, 0.5, 0.5)
SUPERVISED_STD = (0.5, 0.5, 0.5)
_UNSUPPORTED = ("fc_norm.weight", "norm_pre.weight", "attn_pool.latent", "cls_token_pos")


def looks_like_timm(state: Mapping[str, Tensor]) -> bool:
    """Whether a DINO-style state dict needs the ``timm`` renames (registers, CLS-less positions, packed SwiGLU)."""
    if "reg_token" in state:
        return True
    pos = state.get("pos_embed")
    if pos is not None and pos.dim() == 3 and _is_square(pos.shape[1]) and not _is_square(pos.shape[1] - 1):
        return True
    return _packed_swiglu(state)


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _packed_swiglu(state: Mapping[str, Tensor]) -> bool:
    fc1, fc2 = state.get("blocks.0.mlp.fc1.weight"), state.get("blocks.0.mlp.fc2.weight")
    return fc1 is not None and fc2 is not None and fc1.shape[0] == 2 * fc2.shape[1]


def convert_timm_state_dict(state: Mapping[str, Tensor], source: str = "weights") -> dict[str, Tensor]:
    """Rename a ``timm`` ViT state dict to the official DINO / DINOv2 layout.

    The classifier ``head`` is dropped. A positional table without the CLS row
    (``timm``'s ``no_embed_class`` models such as the DINOv2 register variants)
    gets a zero CLS row, which is exactly equivalent: ``timm`` adds no position
    to the CLS token. Models pooled by averaging (``fc_norm``), with a
    pre-norm (CLIP-style) or attention pooling are refused.
    """
    bad = [k for k in _UNSUPPORTED if k in state]
    if bad:
        raise WeightsError(
            f"{source}: timm ViT variant not supported ({', '.join(bad)}); dinokit supports class-token ViTs"
        )
    packed = _packed_swiglu(state)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(("head.", "head_drop.")):
            continue
        if key == "reg_token":
            key = "register_tokens"
        elif packed and ".mlp.fc1." in key:
            key = key.replace(".mlp.fc1.", ".mlp.w12.")
        elif packed and ".mlp.fc2." in key:
            key = key.replace(".mlp.fc2.", ".mlp.w3.")
        elif packed and ".mlp.norm." in key:
            raise WeightsError(f"{source}: SwiGLU with an inner norm ({key}) is not supported")
        out[key] = value
    pos = out.get("pos_embed")
    if pos is not None and _is_square(pos.shape[1]) and not _is_square(pos.shape[1] - 1):
        out["pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
    return out


def load_timm_model(
    name: str,
    *,
    pretrained: bool = True,
    device: Union[str, torch.device, None] = None,
    dtype: Optional[torch.dtype] = None,
) -> VisionTransformer:
    """A ``timm`` ViT by name (``"vit_small_patch16_224.augreg_in21k_ft_in1k"``) converted to a dinokit backbone.

    Needs ``timm`` (``pip install 'dinokit[timm]'``); the normalisation comes
    from the model's ``pretrained_cfg``.
    """
    try:
        import timm as timm_lib
    except ImportError:
        raise WeightsError(
            f"loading the timm model {name!r} needs timm, which is not installed: pip install 'dinokit[timm]' "
            "(or pass a timm checkpoint file with --weights FILE)"
        ) from None
    try:
        foreign = timm_lib.create_model(name, pretrained=pretrained)
    except Exception as exc:  # unknown name, offline download ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"could not create the timm model {name!r} ({first})") from None
    blocks = getattr(foreign, "blocks", None)
    if blocks is None or not hasattr(blocks[0], "attn") or not hasattr(foreign, "patch_embed"):
        raise WeightsError(f"timm model {name!r} is not a plain ViT (no blocks / patch_embed)")
    state = convert_timm_state_dict(foreign.state_dict(), f"timm:{name}")
    cfg = infer_dino_arch(state, int(blocks[0].attn.num_heads), f"timm:{name}")
    eps = getattr(getattr(blocks[0], "norm1", None), "eps", cfg.layernorm_eps)
    pcfg = getattr(foreign, "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in pcfg.get("mean", cfg.mean))
    std = tuple(float(v) for v in pcfg.get("std", cfg.std))
    cfg = cfg.replace(layernorm_eps=float(eps), mean=mean, std=std)
    return finish_model(build_and_load(cfg, state, f"timm:{name}"), None, f"timm:{name}", device, dtype)


def _supervised(name: str, alias: str, patch: int, dim: int, heads: int, desc: str) -> None:
    register_model(
        ModelSpec(
            name=name,
            arch=ArchConfig(
                patch_size=patch, embed_dim=dim, depth=12, num_heads=heads, mean=SUPERVISED_MEAN, std=SUPERVISED_STD
            ),
            url=f"{TIMM_HUB_URL}/{name}/resolve/main/model.safetensors",
            description=desc,
            saliency_heads=None,
            aliases=(alias,),
            cache_name=f"timm-{name}.safetensors",
        )
    )


_supervised("vit_small_patch16_224.augreg_in21k_ft_in1k", "vit_small_patch16_224", 16, 384, 6,
            "supervised ViT-S/16 (timm AugReg, IN-21k + IN-1k)")
_supervised("vit_base_patch16_224.augreg_in21k_ft_in1k", "vit_base_patch16_224", 16, 768, 12,
            "supervised ViT-B/16 (timm AugReg, IN-21k + IN-1k)")
_supervised("vit_base_patch8_224.augreg_in21k_ft_in1k", "vit_base_patch8_224", 8, 768, 12,
            "supervised ViT-B/8 (timm AugReg, IN-21k + IN-1k)")

TIMM_FORMAT = register_format(CheckpointFormat("timm", looks_like_timm, convert_timm_state_dict))

SUPERVISED_NAMES = (
    "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "vit_base_patch16_224.augreg_in21k_ft_in1k",
    "vit_base_patch8_224.augreg_in21k_ft_in1k",
)

__all__ = [
    "SUPERVISED_NAMES",
    "TIMM_FORMAT",
    "TIMM_HUB_URL",
    "convert_timm_state_dict",
    "load_timm_model",
    "looks_like_timm",
]
