"""DINO's multi-crop augmentation on whole batches on the device (GPU training), same distributions as the PIL path.

The per-image PIL pipeline of :mod:`.augment` keeps a GPU waiting for the
data-loader workers. Here the workers only decode each image and scale it
so its shorter side is ``source_size`` (:class:`SourceImage`, antialiased by
PIL); the batch goes to the device once, and :class:`BatchMultiCrop` draws
every crop of every image there, in one batched call per crop:

- random resized crop (torchvision's ten tries at a scale and log-uniform
  aspect ratio, then the centred fallback), horizontal flip: one affine
  sampling grid per crop, sampled bilinearly at twice the output size and
  averaged 2x2 (a box filter against aliasing when shrinking);
- colour jitter (brightness, contrast, saturation, hue in a random order per
  crop, the factors of ``ColorJitter``), grayscale, Gaussian blur (one
  kernel per crop, sigma uniform in ``blur_radius``) and solarisation, with
  the probabilities of each :class:`~.augment.CropSpec`.

The parameters (which crops flip, jitter factors, sigmas ...) are drawn on
the CPU from a seeded generator, so a step's crops depend only on the seed
and the step, on any device. They are not the PIL path's crops pixel for
pixel (other random draws, bilinear instead of bicubic resampling, a
Gaussian instead of PIL's box approximation); the tests compare the two
paths' statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .augment import CROP_ASPECT_RATIOS, CropSpec, MultiCropAugmentation, to_uint8_tensor

_GRAY = (0.299, 0.587, 0.114)  # PIL's "L" conversion weights


# --------------------------------------------------------------------------- in the data-loader workers
@dataclass(frozen=True)
class SourceImage:
    """Loader transform ``(image, rng) -> [uint8 3 x H x W]``: the image scaled so its shorter side is ``size``."""

    size: int

    def __call__(self, img: Image.Image, rng: object = None) -> list[Tensor]:
        if img.mode != "RGB":
            img = img.convert("RGB")
        scale = self.size / min(img.width, img.height)
        w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
        if (w, h) != img.size:
            img = img.resize((w, h), Image.BICUBIC)
        return [to_uint8_tensor(img)]


def collate_sources(samples: list[list[Tensor]]) -> tuple[Tensor, Tensor]:
    """Source images of different sizes -> ``(canvas (B, 3, Hmax, Wmax) uint8, sizes (B, 2) as (h, w))``."""
    images = [s[0] for s in samples]
    hmax = max(t.shape[1] for t in images)
    wmax = max(t.shape[2] for t in images)
    canvas = torch.zeros(len(images), 3, hmax, wmax, dtype=torch.uint8)
    for i, t in enumerate(images):
        canvas[i, :, : t.shape[1], : t.shape[2]] = t
    return canvas, torch.tensor([[t.shape[1], t.shape[2]] for t in images], dtype=torch.long)


# --------------------------------------------------------------------------- random parameters (CPU generator)
def draw_boxes(sizes: Tensor, scale: tuple[float, float], gen: torch.Generator,
               ratio: tuple[float, float] = CROP_ASPECT_RATIOS) -> Tensor:
    """Crop boxes ``(B, 4)`` as ``(left, top, width, height)`` pixels, drawn as torchvision's ``RandomResizedCrop``.

    Ten candidate (scale, log-uniform aspect) pairs per image; the first that
    fits is used, else the largest centred crop with an aspect in ``ratio``.
    """
    h, w = sizes[:, 0:1].double(), sizes[:, 1:2].double()
    n = sizes.shape[0]
    target = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, 10, generator=gen, dtype=torch.float64))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, 10, generator=gen, dtype=torch.float64))
    cw, ch = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.double().argmax(dim=1, keepdim=True)
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    h, w = h[:, 0], w[:, 0]
    # fallback: the whole image, cut to the nearest allowed aspect ratio, centred
    in_ratio = w / h
    fw = torch.where(in_ratio > ratio[1], torch.round(h * ratio[1]), w)
    fh = torch.where(in_ratio < ratio[0], torch.round(w / ratio[0]), h)
    found = ok.any(dim=1)
    cw, ch = torch.where(found, cw, fw), torch.where(found, ch, fh)
    u = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    left = torch.where(found, torch.floor(u[:, 0] * (w - cw + 1)), torch.floor((w - cw) / 2))
    top = torch.where(found, torch.floor(u[:, 1] * (h - ch + 1)), torch.floor((h - ch) / 2))
    return torch.stack((left, top, cw, ch), dim=1)


@dataclass
class CropDraws:
    """The random choices for one crop of every image of a batch (CPU tensors of length ``B``)."""

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    order: Tensor
    factors: Tensor
    gray: Tensor
    blur: Tensor
    sigma: Tensor
    solarize: Tensor


def draw_crop(sizes: Tensor, spec: CropSpec, aug: MultiCropAugmentation, gen: torch.Generator) -> CropDraws:
    """Every random choice of one crop kind for a batch, with the PIL path's probabilities and ranges."""
    n = sizes.shape[0]

    def u(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    b, c, s, hue = aug.jitter
    lo = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -hue], dtype=torch.float64)
    hi = torch.tensor([1 + b, 1 + c, 1 + s, hue], dtype=torch.float64)
    return CropDraws(
        boxes=draw_boxes(sizes, spec.scale, gen),
        flip=u(n) < aug.flip_p,
        jitter=u(n) < aug.jitter_p,
        order=torch.argsort(u(n, 4), dim=1),
        factors=lo + (hi - lo) * u(n, 4),
        gray=u(n) < aug.grayscale_p,
        blur=u(n) <= spec.blur_p,  # `<=` as the reference's GaussianBlur (p=1 always blurs)
        sigma=aug.blur_radius[0] + (aug.blur_radius[1] - aug.blur_radius[0]) * u(n),
        solarize=(u(n) < spec.solarize_p) if spec.solarize_p > 0 else torch.zeros(n, dtype=torch.bool),
    )


# --------------------------------------------------------------------------- image operations (any device)
def resized_crops(canvas: Tensor, boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """Float ``(B, 3, size, size)`` crops of ``boxes`` (flipped where ``flip``), 2x2-supersampled bilinear."""
    n, _, hc, wc = canvas.shape
    boxes = boxes.to(canvas.device, torch.float32)
    left, top, w, h = boxes.unbind(1)
    sx = torch.where(flip.to(canvas.device), -w / wc, w / wc)
    theta = torch.zeros(n, 2, 3, device=canvas.device)
    theta[:, 0, 0], theta[:, 0, 2] = sx, (2 * left + w) / wc - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / hc, (2 * top + h) / hc - 1
    grid = F.affine_grid(theta, [n, 3, 2 * size, 2 * size], align_corners=False)
    out = F.grid_sample(canvas.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.avg_pool2d(out, 2) / 255.0


def grayscale(x: Tensor) -> Tensor:
    """``(B, 1, H, W)`` luma of ``(B, 3, H, W)`` images in [0, 1]."""
    w = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def shift_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of ``(B, 3, H, W)`` images in [0, 1] by ``shift`` (``(B,)``, in turns)."""
    r, g, b = x.unbind(1)
    v, _ = x.max(dim=1)
    delta = v - x.min(dim=1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    hue = torch.remainder(hue + shift.view(-1, 1, 1), 1.0)
    sat = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    k = torch.remainder(torch.stack((5.0 + hue * 6, 3.0 + hue * 6, 1.0 + hue * 6), dim=1), 6.0)
    return v.unsqueeze(1) - (v * sat).unsqueeze(1) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _jitter_op(x: Tensor, op: int, f: Tensor) -> Tensor:
    """One ``ColorJitter`` adjustment (0 brightness, 1 contrast, 2 saturation, 3 hue) with factors ``f`` ``(n,)``."""
    if op == 3:
        return shift_hue(x, f)
    f = f.view(-1, 1, 1, 1)
    if op == 0:
        return (x * f).clamp_(0, 1)
    base = grayscale(x)
    if op == 1:
        base = base.mean(dim=(2, 3), keepdim=True)
    return (base + f * (x - base)).clamp_(0, 1)


def color_jitter(x: Tensor, apply: Tensor, order: Tensor, factors: Tensor) -> Tensor:
    """``ColorJitter`` on the images where ``apply``: the four adjustments in each image's own ``order``."""
    x = x.clone()
    factors = factors.to(x.device, x.dtype)
    for pos in range(4):
        for op in range(4):
            idx = torch.nonzero(apply & (order[:, pos] == op)).flatten().to(x.device)
            if idx.numel():
                x[idx] = _jitter_op(x[idx], op, factors[idx, op])
    return x


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur with one ``sigma`` per image (kernel radius ``ceil(3 * max sigma)``, edges repeated)."""
    n, c, hh, ww = x.shape
    sigma = sigma.to(x.device, x.dtype).view(-1, 1)
    radius = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype).view(1, -1)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
    y = F.pad(x.reshape(1, n * c, hh, ww), (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.pad(y, (0, 0, radius, radius), mode="replicate")
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, hh, ww)


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask.to(a.device).view(-1, 1, 1, 1), a, b)


def augment_crop(canvas: Tensor, spec: CropSpec, d: CropDraws) -> Tensor:
    """One crop of every image, uint8 ``(B, 3, S, S)``: resize+flip, jitter, grayscale, blur, solarise."""
    x = resized_crops(canvas, d.boxes, d.flip, spec.size)
    if d.jitter.any():
        x = color_jitter(x, d.jitter, d.order, d.factors)
    if d.gray.any():
        x = _where(d.gray, grayscale(x).expand_as(x), x)
    # The PIL path stores 8-bit pixels after every step; rounding here keeps solarisation's threshold comparable.
    x = torch.round(x * 255) / 255
    idx = torch.nonzero(d.blur).flatten().to(x.device)
    if idx.numel():
        x[idx] = gaussian_blur(x[idx], d.sigma[d.blur])
    if d.solarize.any():
        x = torch.round(x * 255) / 255
        x = _where(d.solarize, torch.where(x >= 0.5, 1 - x, x), x)
    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8)


# --------------------------------------------------------------------------- the batch augmenter
@dataclass(frozen=True)
class BatchMultiCrop:
    """Callable ``(canvas, sizes, generator) -> list of uint8 crop batches`` in DINO's order, on the canvas's device.

    ``aug`` gives the crops and probabilities (the same object configures the
    PIL path); ``source_size`` is the shorter side the workers scale images
    to (default 1.5 x the global crop size).
    """

    aug: MultiCropAugmentation
    source_size: Optional[int] = None

    @property
    def source(self) -> SourceImage:
        """The loader transform that goes with this augmenter."""
        return SourceImage(self.source_size or round(1.5 * self.aug.global_size))

    def __call__(self, canvas: Tensor, sizes: Tensor, gen: torch.Generator) -> list[Tensor]:
        sizes = sizes.cpu()
        draws = [draw_crop(sizes, spec, self.aug, gen) for spec in self.aug.crops]
        return [augment_crop(canvas, spec, d) for spec, d in zip(self.aug.crops, draws)]


__all__ = [
    "BatchMultiCrop",
    "CropDraws",
    "SourceImage",
    "augment_crop",
    "collate_sources",
    "color_jitter",
    "draw_boxes",
    "draw_crop",
    "gaussian_blur",
    "grayscale",
    "resized_crops",
    "shift_hue",
]
