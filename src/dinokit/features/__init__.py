"""Image preprocessing, the dense descriptor extractor, log-binning, saliency and patch geometry."""

from ..devices import default_device, resolve_device
from .binning import bin_offsets, log_bin
from .coords import GridGeometry
from .descriptors import ImageDescriptors
from .extractor import FACETS, Extractor, Features, as_extractor, parse_dtype, split_features
from .image import IMAGE_SUFFIXES, LoadedImage, list_images, open_image, preprocess, resized_size, to_rgb
from .saliency import saliency_from_cls_attention

__all__ = [
    "bin_offsets",
    "log_bin",
    "GridGeometry",
    "FACETS",
    "Extractor",
    "ImageDescriptors",
    "as_extractor",
    "Features",
    "default_device",
    "parse_dtype",
    "split_features",
    "IMAGE_SUFFIXES",
    "LoadedImage",
    "list_images",
    "open_image",
    "preprocess",
    "resized_size",
    "to_rgb",
    "saliency_from_cls_attention",
]
