"""DINO's multi-crop data augmentation, on PIL images.

The same operations, parameters and probabilities as the reference
(``DataAugmentationDINO`` in ``main_dino.py``, built from torchvision's PIL
transforms), written directly on PIL so torchvision is not needed:

- global crop 1: random resized crop (scale 0.4-1, bicubic), horizontal flip
  (p 0.5), colour jitter (brightness 0.4, contrast 0.4, saturation 0.2,
  hue 0.1; p 0.8), grayscale (p 0.2), Gaussian blur (p 1.0);
- global crop 2: the same, blur with p 0.1, then solarisation (p 0.2);
- local crops: random resized crop (scale 0.05-0.4), flip/jitter/grayscale,
  blur (p 0.5).

All randomness comes from a ``random.Random`` passed in, so a crop is a pure
function of the image and a seed: a sample's crops are the same whichever
worker or process makes them, which is what makes resuming exact.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

# (scale range of the crop area, aspect-ratio range) as torchvision's RandomResizedCrop defaults.
CROP_ASPECT_RATIOS = (3.0 / 4.0, 4.0 / 3.0)


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float], rng: random.Random, ratio: tuple[float, float] = CROP_ASPECT_RATIOS
) -> tuple[int, int, int, int]:
    """Crop box ``(left, top, right, bottom)`` drawn as torchvision's ``RandomResizedCrop.get_params``.

    Ten tries at an area fraction in ``scale`` and a log-uniform aspect ratio;
    if none fits, the largest centred crop with an aspect ratio in ``ratio``.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    """Shift the hue channel (HSV, 8 bits) by ``hue_factor`` of a turn, wrapping around, as torchvision's PIL path."""
    if hue_factor == 0:
        return img
    h, s, v = img.convert("HSV").split()
    shift = int(hue_factor * 255) % 256  # truncation toward zero, then wrap (numpy's uint8 cast)
    np_h = (np.asarray(h, dtype=np.uint8).astype(np.uint16) + shift).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(np_h, "L"), s, v)).convert("RGB")


def color_jitter(
    img: Image.Image, rng: random.Random, brightness: float, contrast: float, saturation: float, hue: float
) -> Image.Image:
    """torchvision ``ColorJitter``: the four adjustments in a random order, each with a uniform factor."""
    order = list(range(4))
    rng.shuffle(order)
    b = rng.uniform(max(0.0, 1 - brightness), 1 + brightness)
    c = rng.uniform(max(0.0, 1 - contrast), 1 + contrast)
    s = rng.uniform(max(0.0, 1 - saturation), 1 + saturation)
    h = rng.uniform(-hue, hue)
    for fn in order:
        if fn == 0:
            img = ImageEnhance.Brightness(img).enhance(b)
        elif fn == 1:
            img = ImageEnhance.Contrast(img).enhance(c)
        elif fn == 2:
            img = ImageEnhance.Color(img).enhance(s)
        else:
            img = adjust_hue(img, h)
    return img


@dataclass(frozen=True)
class CropSpec:
    """One kind of crop: output size, area scale and the probabilities of the stochastic steps."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float = 0.0


@dataclass(frozen=True)
class MultiCropAugmentation:
    """Callable ``(image, rng) -> list of uint8 crops`` (``3 x size x size`` tensors).

    Crops come out in DINO's order: the two global crops, then the local
    ones. Normalisation is left to the training loop so it runs batched on the
    device and the data loader moves 4x fewer bytes.

    Defaults are the paper's: 2 global crops of 224 px (scale 0.4-1), 8 local
    crops of 96 px (scale 0.05-0.4).
    """

    global_size: int = 224
    local_size: int = 96
    local_crops_number: int = 8
    global_crops_scale: tuple[float, float] = (0.4, 1.0)
    local_crops_scale: tuple[float, float] = (0.05, 0.4)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    grayscale_p: float = 0.2
    blur_radius: tuple[float, float] = (0.1, 2.0)

    @property
    def crops(self) -> list[CropSpec]:
        g, loc = self.global_crops_scale, self.local_crops_scale
        specs = [CropSpec(self.global_size, g, 1.0), CropSpec(self.global_size, g, 0.1, 0.2)]
        specs += [CropSpec(self.local_size, loc, 0.5)] * self.local_crops_number
        return specs

    @property
    def ncrops(self) -> int:
        return 2 + self.local_crops_number

    def crop(self, img: Image.Image, spec: CropSpec, rng: random.Random) -> Image.Image:
        """One augmented crop (a PIL image of ``spec.size`` squared)."""
        box = random_resized_crop_box(img.width, img.height, spec.scale, rng)
        out = img.resize((spec.size, spec.size), Image.BICUBIC, box=box)
        if rng.random() < self.flip_p:
            out = ImageOps.mirror(out)
        if rng.random() < self.jitter_p:
            out = color_jitter(out, rng, *self.jitter)
        if rng.random() < self.grayscale_p:
            out = out.convert("L").convert("RGB")
        # The reference's GaussianBlur draws with `<=` (so p=1 always blurs) and solarisation with `<`.
        if rng.random() <= spec.blur_p:
            out = out.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*self.blur_radius)))
        if spec.solarize_p > 0 and rng.random() < spec.solarize_p:
            out = ImageOps.solarize(out, threshold=128)
        return out

    def __call__(self, img: Image.Image, rng: random.Random) -> list[torch.Tensor]:
        if img.mode != "RGB":
            img = img.convert("RGB")
        return [to_uint8_tensor(self.crop(img, spec, rng)) for spec in self.crops]


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """``H x W x 3`` PIL image to a ``3 x H x W`` uint8 tensor."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def normalize_batch(crops: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` to the float input of the network (``(x/255 - mean) / std``)."""
    m = torch.tensor(mean, device=crops.device, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, device=crops.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (crops.float().div_(255.0) - m) / s


__all__ = [
    "CropSpec",
    "MultiCropAugmentation",
    "adjust_hue",
    "color_jitter",
    "normalize_batch",
    "random_resized_crop_box",
    "to_uint8_tensor",
]
