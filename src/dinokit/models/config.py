"""Architecture description of a Vision Transformer.

An :class:`ArchConfig` is everything needed to build a backbone whose state
dict matches a checkpoint. It round-trips through the string metadata of a
safetensors file (scheme ``dinokit-arch-v1``) so a weights file alone is enough
to rebuild its model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..errors import WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
METADATA_FORMAT = "dinokit-arch-v1"


@dataclass(frozen=True)
class ArchConfig:
    """Hyperparameters of a ViT backbone in DINO / DINOv2 layout.

    ``pos_embed_mode`` selects the positional-embedding interpolation: ``"dino"``
    (DINO's bicubic rule, in the model's dtype) or ``"dinov2"`` (DINOv2's rule,
    always computed in float32). ``interpolate_offset`` and
    ``interpolate_antialias`` complete the rule: an offset > 0 resizes by the
    scale factor ``(grid + offset) / M`` (DINO, DINOv2 without registers: 0.1),
    an offset of 0 resizes to the grid size exactly (DINOv2 with registers,
    which also antialias). ``ffn`` is ``"mlp"`` (fc1/GELU/fc2), ``"swiglu"``
    (DINOv2 ViT-g, packed ``w12``/``w3``) or ``"swiglu_split"`` (DINOv3,
    ``w1``/``w2``/``w3``); ``ffn_hidden`` fixes the hidden size (0: ``embed_dim
    * mlp_ratio``, rounded as DINOv2 does for its SwiGLU).

    ``pos`` is ``"table"`` (a learned absolute table, DINO / DINOv2) or
    ``"rope"`` (DINOv3: no table, axial rotary embedding of the patch
    tokens' queries and keys with ``rope_base``; the extra tokens are called
    storage tokens; ``mask_k_bias`` masks the key bias of ``qkv``;
    ``local_cls_norm`` keeps the unused second CLS norm some checkpoints carry).
    """

    arch: str = "vit"
    patch_size: int = 16
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layernorm_eps: float = 1e-6
    img_size: int = 224
    num_register_tokens: int = 0
    layerscale: bool = False
    ffn: str = "mlp"
    pos_embed_mode: str = "dino"
    mask_token: bool = False
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False
    pos: str = "table"
    rope_base: float = 100.0
    mask_k_bias: bool = False
    ffn_hidden: int = 0
    local_cls_norm: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise WeightsError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        for name in ("patch_size", "embed_dim", "depth", "num_heads", "img_size"):
            if getattr(self, name) <= 0:
                raise WeightsError(f"architecture field {name} must be positive, got {getattr(self, name)}")
        if self.ffn not in ("mlp", "swiglu", "swiglu_split"):
            raise WeightsError(f"unknown ffn {self.ffn!r} (expected 'mlp', 'swiglu' or 'swiglu_split')")
        if self.pos not in ("table", "rope"):
            raise WeightsError(f"unknown pos {self.pos!r} (expected 'table' or 'rope')")
        if self.pos == "rope" and self.head_dim % 4:
            raise WeightsError(f"RoPE needs a head size divisible by 4, got {self.head_dim}")
        if self.pos_embed_mode not in ("dino", "dinov2"):
            raise WeightsError(f"unknown pos_embed_mode {self.pos_embed_mode!r}")
        if not 0.0 <= self.interpolate_offset < 1.0:
            raise WeightsError(f"interpolate_offset must be in [0, 1), got {self.interpolate_offset}")
        if self.num_register_tokens < 0:
            raise WeightsError(f"num_register_tokens must be >= 0, got {self.num_register_tokens}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_prefix_tokens(self) -> int:
        """CLS plus register tokens, which precede the patch tokens."""
        return 1 + self.num_register_tokens

    def replace(self, **changes: Any) -> "ArchConfig":
        return replace(self, **changes)

    def to_metadata(self) -> dict[str, str]:
        """String metadata for a safetensors header (scheme ``dinokit-arch-v1``)."""
        meta: dict[str, str] = {"format": METADATA_FORMAT}
        for key, value in asdict(self).items():
            if isinstance(value, bool):
                meta[key] = "true" if value else "false"
            elif isinstance(value, (tuple, list)):
                meta[key] = ",".join(str(v) for v in value)
            elif isinstance(value, float) and value.is_integer() and key not in ("layernorm_eps", "rope_base"):
                meta[key] = str(int(value))
            else:
                meta[key] = str(value)
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "metadata") -> "ArchConfig":
        """Parse ``dinokit-arch-v1`` metadata; unknown keys are ignored."""
        if meta.get("format") != METADATA_FORMAT:
            raise WeightsError(f"{source}: no {METADATA_FORMAT} architecture metadata")
        kwargs: dict[str, Any] = {}
        try:
            for f in fields(cls):
                if f.name not in meta:
                    continue
                raw = meta[f.name]
                default = f.default
                if isinstance(default, bool):
                    kwargs[f.name] = raw.strip().lower() in ("1", "true", "yes")
                elif isinstance(default, int):
                    kwargs[f.name] = int(float(raw))
                elif isinstance(default, float):
                    kwargs[f.name] = float(raw)
                elif isinstance(default, tuple):
                    kwargs[f.name] = tuple(float(v) for v in raw.split(","))
                else:
                    kwargs[f.name] = raw
        except ValueError as exc:
            raise WeightsError(f"{source}: malformed architecture metadata ({exc})") from None
        return cls(**kwargs)


# Standard DINO / DeiT sizes, by name.
ARCH_PRESETS: dict[str, dict[str, Any]] = {
    "vit_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit_giant2": dict(embed_dim=1536, depth=40, num_heads=24, ffn="swiglu", mlp_ratio=4.0),
}

# Head count for a standard embedding width (used when only shapes are known).
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1536: 24}


def input_normalization(model: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` a backbone's inputs are normalised with: its config's, else ImageNet's (DINO's)."""
    cfg = getattr(model, "cfg", None)
    return tuple(getattr(cfg, "mean", None) or IMAGENET_MEAN), tuple(getattr(cfg, "std", None) or IMAGENET_STD)


def arch_preset(name: str, **overrides: Any) -> ArchConfig:
    """Build an :class:`ArchConfig` from a preset name such as ``vit_small``."""
    if name not in ARCH_PRESETS:
        raise WeightsError(f"unknown architecture {name!r}; choose one of {', '.join(ARCH_PRESETS)}")
    params = dict(ARCH_PRESETS[name])
    params.update(overrides)
    return ArchConfig(**params)


__all__ = ["ArchConfig", "arch_preset", "ARCH_PRESETS", "STANDARD_HEADS", "IMAGENET_MEAN", "IMAGENET_STD",
           "input_normalization"]
