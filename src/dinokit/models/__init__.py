"""Backbones and weight loading: the ViT in official DINO/DINOv2 layout and a registry of named models."""

from .config import ArchConfig, arch_preset
from .registry import DEFAULT_MODEL, ModelSpec, get_spec, list_models, model_names, register_model
from .vit import ForwardResult, VisionTransformer
from .weights import (
    cache_dir,
    cached_file,
    create_model,
    download_weights,
    infer_arch,
    load_model,
    read_weights,
    save_backbone,
)

__all__ = [
    "ArchConfig",
    "arch_preset",
    "DEFAULT_MODEL",
    "ModelSpec",
    "get_spec",
    "list_models",
    "model_names",
    "register_model",
    "ForwardResult",
    "VisionTransformer",
    "cache_dir",
    "cached_file",
    "create_model",
    "download_weights",
    "infer_arch",
    "load_model",
    "read_weights",
    "save_backbone",
]
