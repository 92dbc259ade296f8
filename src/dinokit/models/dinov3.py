"""The DINOv3 ViT backbones (Siméoni et al. 2025): architectures, named models and checkpoint layouts.

DINOv3 is a pre-norm ViT/16 with layer scale, 4 storage tokens after the CLS
token, no absolute position table and an axial rotary embedding (RoPE, base
100) on the patch tokens' queries and keys; the fused ``qkv`` has its key bias
masked (``attn.qkv.bias_mask``), LayerNorm eps is 1e-5, the "plus" and 7B
models use a SwiGLU feed-forward (``mlp.w1/w2/w3``). dinokit builds it as a
:class:`~dinokit.models.vit.VisionTransformer` with ``pos="rope"``, whose
parameter names are the official ones, so the released ``.pth`` files load
with strict key checking. Overlapping patches (a stride below 16) get their
true centres as rotary positions (see :class:`~dinokit.models.layers.RopeEmbedding`).

Weights are gated: request them at :data:`DINOV3_DOWNLOADS` (the links sent
by e-mail expire), then put the file under its official name into the torch
hub cache (``dinokit models`` prints the path) or pass ``--weights FILE``.
Nothing is downloaded automatically. The weights are under the DINOv3
License; a one-line notice is printed once when such a model is loaded.

Two layouts are read: the official one and Hugging Face's ``DINOv3ViTModel``
(``embeddings.register_tokens``, split ``q_proj/k_proj/v_proj``, ``o_proj``,
``layer_scale*.lambda1``, ``up_proj/down_proj/gate_proj``), fused back here.
"""

from __future__ import annotations

import re
import sys
from typing import Mapping, Optional

import torch
from torch import Tensor

from ..errors import WeightsError
from .config import IMAGENET_MEAN, IMAGENET_STD, ArchConfig
from .formats import CheckpointFormat, refuse_unknown, register_format, split_keys
from .layers import release_periods
from .registry import ModelSpec, register_model

DINOV3_DOWNLOADS = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/"
DINOV3_LICENSE_NOTE = (
    "note: DINOv3 weights are released by Meta under the DINOv3 License "
    "(https://ai.meta.com/resources/models-and-libraries/dinov3-license/); using them means accepting its terms"
)
SAT_MEAN = (0.430, 0.411, 0.296)
SAT_STD = (0.213, 0.156, 0.143)
_noticed = False

# name -> (embed_dim, depth, heads, ffn, ffn ratio, SwiGLU alignment, qkv bias, local_cls_norm, file, readable, params)
_SIZES = {
    "dinov3_vits16": (384, 12, 6, "mlp", 4.0, 0, True, False, "lvd1689m-08c60483", "ViT-S/16", "21M"),
    "dinov3_vits16plus": (384, 12, 6, "swiglu_split", 6.0, 8, True, False, "lvd1689m-4057cbaa", "ViT-S+/16", "29M"),
    "dinov3_vitb16": (768, 12, 12, "mlp", 4.0, 0, True, False, "lvd1689m-73cec8be", "ViT-B/16", "86M"),
    "dinov3_vitl16": (1024, 24, 16, "mlp", 4.0, 0, True, False, "lvd1689m-8aa4cbdd", "ViT-L/16", "300M"),
    "dinov3_vitl16_sat493m": (1024, 24, 16, "mlp", 4.0, 0, True, True, "sat493m-eadcf0ff", "ViT-L/16 satellite", "300M"),
    "dinov3_vith16plus": (1280, 32, 20, "swiglu_split", 6.0, 8, True, False, "lvd1689m-7c1da9a5", "ViT-H+/16", "840M"),
    "dinov3_vit7b16": (4096, 40, 32, "swiglu_split", 3.0, 64, False, True, "lvd1689m-a955f4ea", "ViT-7B/16", "6.7B"),
}


def swiglu_hidden(dim: int, ratio: float, align: int) -> int:
    """Hidden size of the release's SwiGLU: ``int(dim * ratio * 2 / 3)`` rounded up to ``align``."""
    d = int(dim * ratio * 2 / 3)
    return d + (-d % align)


def dinov3_arch(name: str) -> ArchConfig:
    """Architecture of the official DINOv3 model ``name`` (e.g. ``"dinov3_vits16"``)."""
    dim, depth, heads, ffn, ratio, align, qkv_bias, local, file, _, _ = _SIZES[name]
    hidden = swiglu_hidden(dim, ratio, align) if ffn == "swiglu_split" else int(dim * ratio)
    sat = file.startswith("sat")
    return ArchConfig(
        patch_size=16, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio, qkv_bias=qkv_bias,
        layernorm_eps=1e-5, num_register_tokens=4, layerscale=True, ffn=ffn, mask_token=True, pos="rope",
        rope_base=100.0, mask_k_bias=True, ffn_hidden=hidden, local_cls_norm=local,
        mean=SAT_MEAN if sat else IMAGENET_MEAN, std=SAT_STD if sat else IMAGENET_STD,
    )


def dinov3_filename(name: str) -> str:
    """The official file name of a named DINOv3 model's weights."""
    arch = name.replace("_sat493m", "")
    return f"{arch}_pretrain_{_SIZES[name][8]}.pth"


def license_notice() -> None:
    """Print the DINOv3 licence note to stderr, once per process."""
    global _noticed
    if not _noticed:
        _noticed = True
        print(DINOV3_LICENSE_NOTE, file=sys.stderr)


# --- the official layout ---------------------------------------------------------
def looks_like_dinov3(state: Mapping[str, Tensor]) -> bool:
    """Whether a state dict is in the official DINOv3 layout."""
    return "rope_embed.periods" in state or "storage_tokens" in state


def infer_dinov3_arch(state: Mapping[str, Tensor], num_heads: Optional[int] = None, source: str = "weights") -> ArchConfig:
    """Architecture of an official-layout DINOv3 state dict; the head count follows from ``rope_embed.periods``."""
    try:
        w = state["patch_embed.proj.weight"]
        periods = state["rope_embed.periods"]
    except KeyError as exc:
        raise WeightsError(f"{source}: missing {exc.args[0]}, not a DINOv3 backbone state dict") from None
    dim, patch = int(w.shape[0]), int(w.shape[-1])
    heads = dim // (4 * int(periods.numel()))
    if num_heads is not None and int(num_heads) != heads:
        raise WeightsError(
            f"{source}: --num-heads {num_heads} contradicts the stored architecture, which has {heads} heads "
            f"(rope_embed.periods has {periods.numel()} entries); leave --num-heads out"
        )
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    split = "blocks.0.mlp.w1.weight" in state
    hidden = int(state["blocks.0.mlp.w1.weight" if split else "blocks.0.mlp.fc1.weight"].shape[0])
    return ArchConfig(
        patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=hidden / dim,
        qkv_bias="blocks.0.attn.qkv.bias" in state, layernorm_eps=1e-5,
        num_register_tokens=int(state["storage_tokens"].shape[1]) if "storage_tokens" in state else 0,
        layerscale="blocks.0.ls1.gamma" in state, ffn="swiglu_split" if split else "mlp",
        mask_token="mask_token" in state, pos="rope", mask_k_bias="blocks.0.attn.qkv.bias_mask" in state,
        ffn_hidden=hidden, local_cls_norm="local_cls_norm.weight" in state,
    )


DINOV3_FORMAT = register_format(
    CheckpointFormat("dinov3", looks_like_dinov3, lambda state, source: dict(state), infer_dinov3_arch)
)


# --- Hugging Face's DINOv3ViTModel ------------------------------------------------
_HF_LAYER = re.compile(r"^(?:model\.)?layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$")
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.register_tokens": "storage_tokens",
    "embeddings.mask_token": "mask_token",
    "embeddings.patch_embeddings.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.bias": "patch_embed.proj.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
_HF_MODULES = {
    "norm1": "norm1", "norm2": "norm2", "attention.o_proj": "attn.proj", "layer_scale1": "ls1",
    "layer_scale2": "ls2", "mlp.down_proj": "mlp.fc2", "mlp.gate_proj": "mlp.w1",
}
_QKV = {"attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2}


def looks_like_hf_dinov3(state: Mapping[str, Tensor]) -> bool:
    """Whether a state dict uses the names of ``transformers``' ``DINOv3ViTModel``."""
    return "embeddings.patch_embeddings.weight" in state


def hf_inv_freq_periods(head_dim: int, base: float = 100.0) -> Tensor:
    """The periods ``transformers`` implies: ``1 / inv_freq`` with its own float32 ``inv_freq``."""
    return 1.0 / (1 / base ** torch.arange(0, 1, 4 / head_dim, dtype=torch.float32))


def convert_hf_dinov3_state_dict(
    state: Mapping[str, Tensor], source: str = "weights", head_dim: int = 64, periods: str = "release",
    base: float = 100.0,
) -> dict[str, Tensor]:
    """Rename a ``DINOv3ViTModel`` state dict to the official layout, fusing q, k, v.

    ``transformers`` keeps no key bias and no periods: the fused ``qkv`` gets a
    zero key bias and the official ``bias_mask``; ``periods`` is ``"release"``
    (the bfloat16 values the released checkpoints store) or ``"transformers"``
    (``1 / inv_freq``, to reproduce ``transformers`` itself).
    """
    gated = any(".mlp.gate_proj." in k for k in state)
    out, blocks, unknown = split_keys(state, _HF_TOP, _HF_LAYER)
    qkv: dict[tuple[int, str], list[Optional[Tensor]]] = {}
    for key, i, module, param, value in blocks:
        if module in _QKV:
            qkv.setdefault((i, param), [None, None, None])[_QKV[module]] = value
            continue
        if module == "mlp.up_proj":
            target = "mlp.w2" if gated else "mlp.fc1"
        elif module == "mlp.down_proj" and gated:
            target = "mlp.w3"
        elif module in _HF_MODULES:
            target = _HF_MODULES[module]
        else:
            unknown.append(key)
            continue
        out[f"blocks.{i}.{target}.{'gamma' if param == 'lambda1' else param}"] = value
    refuse_unknown(unknown, source, "DINOv3ViTModel")
    _fuse_qkv(qkv, out, source)
    out["rope_embed.periods"] = hf_inv_freq_periods(head_dim, base) if periods == "transformers" else release_periods(head_dim, base)
    return out


def _fuse_qkv(qkv: dict, out: dict[str, Tensor], source: str) -> None:
    """``attn.qkv`` (and, with biases, ``bias_mask``) from the split projections; a missing key bias is zero."""
    for (i, param), (q, k, v) in qkv.items():
        if q is None or v is None or (k is None and param == "weight"):
            raise WeightsError(f"{source}: layer {i} lacks one of the query/key/value {param}s")
        if param == "bias":
            k = torch.zeros_like(q) if k is None else k
            out[f"blocks.{i}.attn.qkv.bias_mask"] = torch.cat((torch.ones_like(q), torch.zeros_like(k), torch.ones_like(v)))
        out[f"blocks.{i}.attn.qkv.{param}"] = torch.cat((q, k, v), dim=0)


# Head count of the released widths, for a transformers state dict without its config.json.
_RELEASED_HEADS = {384: 6, 768: 12, 1024: 16, 1280: 20, 4096: 32}


def _hf_convert(state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    dim = int(state["embeddings.patch_embeddings.weight"].shape[0])
    if dim not in _RELEASED_HEADS:
        raise WeightsError(f"{source}: a {dim}-wide DINOv3 needs its config.json to tell the head count")
    return convert_hf_dinov3_state_dict(state, source, dim // _RELEASED_HEADS[dim])


HF_DINOV3_FORMAT = register_format(CheckpointFormat("transformers-dinov3", looks_like_hf_dinov3, _hf_convert))


def arch_from_hf_dinov3_config(config: Mapping, preprocessor: Optional[Mapping] = None, source: str = "config.json") -> ArchConfig:
    """The :class:`ArchConfig` of a ``dinov3_vit`` ``config.json`` (plus ``preprocessor_config.json``)."""
    dim = int(config["hidden_size"])
    gated = bool(config.get("use_gated_mlp", False))
    act = config.get("hidden_act", "silu" if gated else "gelu")
    if act != ("silu" if gated else "gelu"):
        raise WeightsError(f"{source}: hidden_act {act!r} with use_gated_mlp={gated} is not a DINOv3 layout")
    if config.get("key_bias", False) or config.get("query_bias", True) != config.get("value_bias", True):
        raise WeightsError(f"{source}: only a masked key bias (key_bias false, query/value bias alike) is supported")
    patch = config.get("patch_size", 16)
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
    hidden = int(config.get("intermediate_size", 4 * dim))
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if preprocessor and "image_mean" in preprocessor and "image_std" in preprocessor:
        r, g, b = (float(v) for v in preprocessor["image_mean"])
        mean = (r, g, b)
        r, g, b = (float(v) for v in preprocessor["image_std"])
        std = (r, g, b)
    return ArchConfig(
        patch_size=patch, embed_dim=dim, depth=int(config["num_hidden_layers"]),
        num_heads=int(config["num_attention_heads"]), mlp_ratio=hidden / dim, qkv_bias=bool(config.get("query_bias", True)),
        layernorm_eps=float(config.get("layer_norm_eps", 1e-5)), num_register_tokens=int(config.get("num_register_tokens", 0)),
        layerscale=True, ffn="swiglu_split" if gated else "mlp", mask_token=True, pos="rope",
        rope_base=float(config.get("rope_theta", 100.0)), mask_k_bias=True, ffn_hidden=hidden, mean=mean, std=std,
    )


def _register_all() -> None:
    for name, (*_, readable, params) in _SIZES.items():
        register_model(
            ModelSpec(
                name=name,
                arch=dinov3_arch(name),
                url=None,
                description=f"DINOv3 {readable} ({params}; gated weights, DINOv3 License)",
                saliency_heads=None,
                cache_name=dinov3_filename(name),
                request_url=DINOV3_DOWNLOADS,
            )
        )


_register_all()

DINOV3_NAMES = tuple(_SIZES)

__all__ = [
    "DINOV3_DOWNLOADS",
    "DINOV3_NAMES",
    "DINOV3_FORMAT",
    "HF_DINOV3_FORMAT",
    "arch_from_hf_dinov3_config",
    "convert_hf_dinov3_state_dict",
    "dinov3_arch",
    "dinov3_filename",
    "infer_dinov3_arch",
    "license_notice",
    "looks_like_dinov3",
    "swiglu_hidden",
]
