"""The official DINOv2 backbones (Oquab et al. 2023), with and without registers (Darcet et al. 2024).

Each named model is the architecture of the ``torch.hub`` entry of
``facebookresearch/dinov2`` (``block_chunks=0``, layer scale, a ``mask_token``,
518-pixel positional embedding, patch 14), so the official ``*_pretrain.pth``
files load with strict key checking. The ``_reg`` variants add 4 register
tokens and, as the official hub entries do, interpolate the positional
embedding to the exact grid size with antialiasing (offset 0); the others use
the scale-factor rule with offset 0.1 and no antialiasing.

Saliency: every DINOv2 model averages *all* heads of the last block
(``--saliency-heads`` / ``Extractor(saliency_heads=...)`` choose others). The
subset (0, 2, 4, 5) of Amir et al. was picked by hand for ``dino_vits8`` only,
and head indices carry no meaning across models (each training run orders its
heads arbitrarily). A subset can only be chosen by measuring the released
weights, which cannot be downloaded here; ``benchmarks/saliency_heads.py``
does that measurement (per-head ROC-AUC against the iCoseg / MSRC foreground
masks) for anyone who has them. On the one trained model available (a
ViT-Ti/16 DINO with 3 heads) the best head differed from group to group, so a
subset picked on one set would not transfer; the unbiased default is all
heads. Register tokens never enter a saliency map: they are taken out of the
CLS row's softmax (see :mod:`dinokit.features.saliency`).
"""

from __future__ import annotations

from .config import ArchConfig
from .registry import ModelSpec, register_model

DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2"

# name suffix -> (embed_dim, depth, heads, ffn, readable size, parameters)
_SIZES = {
    "s": (384, 12, 6, "mlp", "ViT-S/14", "21M"),
    "b": (768, 12, 12, "mlp", "ViT-B/14", "86M"),
    "l": (1024, 24, 16, "mlp", "ViT-L/14", "300M"),
    "g": (1536, 40, 24, "swiglu", "ViT-g/14", "1.1B"),
}


def dinov2_arch(size: str, registers: bool = False) -> ArchConfig:
    """Architecture of the official DINOv2 ``size`` model (``"s"``, ``"b"``, ``"l"``, ``"g"``)."""
    dim, depth, heads, ffn, _, _ = _SIZES[size]
    return ArchConfig(
        patch_size=14,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=4.0,
        img_size=518,
        num_register_tokens=4 if registers else 0,
        layerscale=True,
        ffn=ffn,
        pos_embed_mode="dinov2",
        mask_token=True,
        interpolate_offset=0.0 if registers else 0.1,
        interpolate_antialias=registers,
    )


def _register_all() -> None:
    for size, (_, _, _, _, readable, params) in _SIZES.items():
        for registers in (False, True):
            base = f"dinov2_vit{size}14"
            name = base + ("_reg" if registers else "")
            file = f"{base}_reg4_pretrain.pth" if registers else f"{base}_pretrain.pth"
            register_model(
                ModelSpec(
                    name=name,
                    arch=dinov2_arch(size, registers),
                    url=f"{DINOV2_URL}/{base}/{file}",
                    description=f"DINOv2 {readable}{' with 4 registers' if registers else ''} ({params})",
                    saliency_heads=None,
                )
            )


_register_all()

DINOV2_NAMES = tuple(f"dinov2_vit{s}14{r}" for s in _SIZES for r in ("", "_reg"))

__all__ = ["DINOV2_URL", "DINOV2_NAMES", "dinov2_arch"]
