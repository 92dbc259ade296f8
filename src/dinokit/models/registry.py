"""Registry of named models: architecture plus where the weights come from.

Modelled on timm's pretrained configs: a name maps to a :class:`ModelSpec`;
other modules (DINOv2, supervised ViTs) add theirs with :func:`register_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..errors import WeightsError
from ..settings import DEFAULT_MODEL
from .config import ArchConfig

DINO_URL = "https://dl.fbaipublicfiles.com/dino"


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its architecture, weight URL and task defaults.

    ``saliency_heads`` are the attention heads averaged for saliency maps
    (``None`` means all heads). ``cache_name`` names the cached file when the
    URL's last part is not unique (Hugging Face hub files are all called
    ``model.safetensors``). ``request_url`` is where gated weights (no
    ``url``, nothing downloaded) are requested by hand.
    """

    name: str
    arch: ArchConfig
    url: Optional[str]
    description: str = ""
    saliency_heads: Optional[tuple[int, ...]] = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    cache_name: Optional[str] = None
    request_url: Optional[str] = None

    @property
    def filename(self) -> Optional[str]:
        if self.cache_name:
            return self.cache_name
        return self.url.rsplit("/", 1)[-1] if self.url else None


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add (or replace) a named model."""
    _REGISTRY[spec.name] = spec
    for alias in spec.aliases:
        _REGISTRY[alias] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name, with a helpful error listing the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise WeightsError(
            f"unknown model {name!r}; known models: {', '.join(model_names())} "
            "(or pass --weights FILE)"
        ) from None


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered model name or alias."""
    return name in _REGISTRY


def model_names() -> list[str]:
    """Names of the registered models (aliases excluded)."""
    return sorted({spec.name for spec in _REGISTRY.values()})


def list_models() -> list[ModelSpec]:
    """All registered model specs, sorted by name."""
    return [get_spec(n) for n in model_names()]


def _dino(name: str, file: str, patch: int, dim: int, heads: int, desc: str, sal=None) -> None:
    register_model(
        ModelSpec(
            name=name,
            arch=ArchConfig(patch_size=patch, embed_dim=dim, depth=12, num_heads=heads),
            url=f"{DINO_URL}/{file}/{file}.pth",
            description=desc,
            saliency_heads=sal,
        )
    )


# Saliency heads for dino_vits8 are the reference implementation's choice
# (Amir et al.); other models average all heads unless stated.
_dino("dino_vits8", "dino_deitsmall8_pretrain", 8, 384, 6, "DINO ViT-S/8 (21M)", (0, 2, 4, 5))
_dino("dino_vits16", "dino_deitsmall16_pretrain", 16, 384, 6, "DINO ViT-S/16 (21M)")
_dino("dino_vitb8", "dino_vitbase8_pretrain", 8, 768, 12, "DINO ViT-B/8 (85M)")
_dino("dino_vitb16", "dino_vitbase16_pretrain", 16, 768, 12, "DINO ViT-B/16 (85M)")

