"""Backbones and weight loading: the ViT in official DINO/DINOv2/DINOv3 layout and a registry of named models."""

from .config import ArchConfig, arch_preset
from .registry import DEFAULT_MODEL, ModelSpec, get_spec, is_registered, list_models, model_names, register_model
from . import dinov2 as _dinov2, timm as _timm  # noqa: F401,E402  (register the DINOv2 and supervised models)
from .dinov2 import DINOV2_NAMES, dinov2_arch
from .dinov3 import DINOV3_NAMES, dinov3_arch
from .formats import FORMATS, CheckpointFormat, register_format
from .hf import convert_hf_state_dict, load_hf_model
from .timm import SUPERVISED_NAMES, convert_timm_state_dict, load_timm_model
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
    "is_registered",
    "DINOV2_NAMES",
    "dinov2_arch",
    "DINOV3_NAMES",
    "dinov3_arch",
    "FORMATS",
    "CheckpointFormat",
    "register_format",
    "convert_hf_state_dict",
    "load_hf_model",
    "SUPERVISED_NAMES",
    "convert_timm_state_dict",
    "load_timm_model",
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
