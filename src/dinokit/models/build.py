"""Building backbones from state dicts: strict loading with a readable report, and the DINO / DINOv2 layout.

This is the bottom of the loading stack: it knows the model class and the
official DINO / DINOv2 parameter names (registered as the ``dino`` checkpoint
format, tried last), and nothing about files, Hugging Face or ``timm``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Union

import torch

from ..errors import WeightsError
from .config import STANDARD_HEADS, ArchConfig
from .dinov3 import license_notice
from .formats import CheckpointFormat, register_format
from .registry import ModelSpec
from .vit import VisionTransformer


def infer_dino_arch(state: Mapping[str, torch.Tensor], num_heads: Optional[int] = None, source: str = "weights") -> ArchConfig:
    """Architecture from tensor shapes; the head count must be given unless the width is standard."""
    try:
        w = state["patch_embed.proj.weight"]
        pos = state["pos_embed"]
    except KeyError as exc:
        raise WeightsError(f"{source}: missing {exc.args[0]}, not a ViT backbone state dict") from None
    dim, patch = int(w.shape[0]), int(w.shape[-1])
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    if num_heads is None:
        if dim not in STANDARD_HEADS:
            raise WeightsError(
                f"{source}: cannot tell the number of attention heads of a {dim}-wide ViT from its weights; "
                "pass --num-heads N (Python: num_heads=N)"
            )
        num_heads = STANDARD_HEADS[dim]
    regs = int(state["register_tokens"].shape[1]) if "register_tokens" in state else 0
    swiglu = "blocks.0.mlp.w12.weight" in state
    if swiglu:
        mlp_ratio = 4.0
    else:
        mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / dim
    n_pos = int(pos.shape[1]) - 1
    side = int(round(n_pos**0.5))
    layerscale = "blocks.0.ls1.gamma" in state
    dinov2 = layerscale or regs > 0 or "mask_token" in state
    return ArchConfig(
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=int(num_heads),
        mlp_ratio=float(mlp_ratio),
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        img_size=side * patch,
        num_register_tokens=regs,
        layerscale=layerscale,
        ffn="swiglu" if swiglu else "mlp",
        pos_embed_mode="dinov2" if dinov2 else "dino",
        mask_token="mask_token" in state,
        # the official register models resize to the exact grid with antialiasing
        interpolate_offset=0.0 if regs else 0.1,
        interpolate_antialias=regs > 0,
    )


def shape_report(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Readable list of missing, unexpected and mis-shaped keys (empty when they match)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    lines = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            shown = ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")
            lines.append(f"{len(items)} {title} key(s): {shown}")
    return lines


def build_and_load(cfg: ArchConfig, state: Mapping[str, torch.Tensor], source: str) -> VisionTransformer:
    """Build a model for ``cfg`` and load ``state`` strictly, or raise a readable report.

    The model is built on the meta device and takes the loaded tensors as its
    parameters, so no time or memory goes into a random initialisation.
    """
    with torch.device("meta"):
        model = VisionTransformer(cfg)
    problems = shape_report(model, state)
    if problems:
        raise WeightsError(
            f"{source}: the weights do not fit the architecture "
            f"(patch {cfg.patch_size}, dim {cfg.embed_dim}, depth {cfg.depth}, heads {cfg.num_heads}): "
            + "; ".join(problems)
        )
    tensors = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model


def finish_model(
    net: VisionTransformer,
    spec: Optional[ModelSpec],
    source: str,
    device: Union[str, torch.device, None] = None,
    dtype: Optional[torch.dtype] = None,
) -> VisionTransformer:
    """Record where ``net`` came from, put it in inference mode and on ``device`` / ``dtype``.

    Loading real DINOv3 weights (anything but a random model) prints the
    licence note once.
    """
    net.set_origin(spec, source)
    if net.cfg.pos == "rope" and source != "random":
        license_notice()
    net.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        net.to(device=device, dtype=dtype)
    return net


def _is_dino_layout(state: Mapping[str, Any]) -> bool:
    return "patch_embed.proj.weight" in state


# The official DINO / DINOv2 names are dinokit's own layout: nothing to rename.
DINO_FORMAT = register_format(
    CheckpointFormat("dino", _is_dino_layout, lambda state, source: dict(state), infer_dino_arch, priority=100)
)
