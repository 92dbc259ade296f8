"""Dense ViT descriptors (Amir et al. 2021) from one forward pass.

:class:`Extractor` wraps a backbone and returns descriptors of any facet
(``key``, ``query``, ``value``, ``token``) of any set of layers, optionally
log-binned, plus the CLS-attention saliency, all from a single forward pass
that stops after the deepest block needed. Overlapping patches come from a
patch stride smaller than the patch size, with DINO's positional-embedding
interpolation.
"""

from __future__ import annotations

import contextlib
import time

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence, Union

import torch
from PIL import Image
from torch import Tensor

from ..devices import resolve_device
from ..errors import DinokitError, ImageError
from ..models import DEFAULT_MODEL, VisionTransformer, load_model
from ..settings import FACETS as SETTINGS_FACETS
from .binning import log_bin
from .coords import GridGeometry
from .image import LoadedImage, LoadSize, PathLike, preprocess
from .saliency import saliency_from_cls_attention

if TYPE_CHECKING:  # pragma: no cover
    from .descriptors import ImageDescriptors

FACETS = SETTINGS_FACETS
ImageInput = Union[PathLike, Image.Image, LoadedImage]


def parse_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    """``"float32"``/``"bfloat16"``/``"float16"`` (or a torch dtype) to a torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
    if dtype not in table:
        raise DinokitError(f"unknown dtype {dtype!r}; choose float32, bfloat16 or float16")
    return table[dtype]


def resolve_stride(stride: Union[int, str, None], patch_size: int) -> int:
    """The stride in pixels, checked once for every caller: ``None`` -> the patch size; ``"auto"`` -> half the
    patch size when even (else the patch size); a number must divide the patch size."""
    if stride is None:
        return patch_size
    if isinstance(stride, str):
        if stride != "auto":
            raise DinokitError(f"stride must be a number or 'auto', got {stride!r}")
        return patch_size // 2 if patch_size % 2 == 0 else patch_size
    value = int(stride)
    if value <= 0 or patch_size % value:
        raise DinokitError(f"stride {value} must divide the patch size {patch_size}")
    return value


@dataclass
class Features:
    """Result of :meth:`Extractor.extract` for one batch of equal-size images.

    ``descriptors[(layer, facet)]`` is ``(B, T, D)`` float32 (row 0 is the CLS
    token when ``include_cls``); ``saliency`` is ``(B, T)`` in [0, 1];
    ``geometry[i]`` maps image ``i``'s patches to pixels.
    """

    descriptors: dict[tuple[int, str], Tensor]
    grid: tuple[int, int]
    geometry: list[GridGeometry]
    saliency: Optional[Tensor] = None
    images: list[Optional[LoadedImage]] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def get(self, layer: Optional[int] = None, facet: Optional[str] = None) -> Tensor:
        """The descriptors of ``(layer, facet)``, or the only ones when unspecified."""
        matches = [k for k in self.descriptors if (layer is None or k[0] == layer) and (facet is None or k[1] == facet)]
        if len(matches) != 1:
            raise KeyError(f"ask for one of {sorted(self.descriptors)}")
        return self.descriptors[matches[0]]


class Extractor:
    """Dense descriptors and saliency from a ViT.

    Args:
        model: a model name (``"dino_vits8"``), a weights file, or a built
            :class:`VisionTransformer`.
        weights: a weights file for ``model`` (overrides the download).
        stride: patch stride; smaller than the patch size gives overlapping
            patches; must divide the patch size. Defaults to the patch size;
            ``"auto"`` is half the patch size (the paper's 4 for ViT-S/8, 7 for
            patch 14, 8 for patch 16).
        load_size: resize rule for images given as paths (smaller edge);
            ``None`` keeps the size.
        device, dtype: where and in which precision the backbone runs;
            descriptors and saliency are returned as float32. A model passed
            as an object is moved and converted in place (``Module.to``).
        saliency_heads: heads of the saliency block averaged for saliency
            maps when a call does not say (default: the named model's
            documented default, else all heads).
    """

    def __init__(
        self,
        model: Union[str, VisionTransformer, None] = None,
        weights: Optional[PathLike] = None,
        *,
        stride: Union[int, str, None] = None,
        load_size: LoadSize = 224,
        device: Union[str, torch.device, None] = None,
        dtype: Union[str, torch.dtype, None] = None,
        num_heads: Optional[int] = None,
        progress: bool = True,
        saliency_heads: Optional[Sequence[int]] = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = parse_dtype(dtype)
        if isinstance(model, torch.nn.Module):
            net = model
        else:
            net = load_model(model, weights, num_heads=num_heads, progress=progress)
        self.model: VisionTransformer = net.to(device=self.device, dtype=self.dtype).eval()
        self.patch_size = int(self.model.patch_size)
        self.stride = resolve_stride(stride, self.patch_size)
        self.load_size = load_size
        self.num_heads = int(self.model.num_heads)
        self.depth = len(self.model.blocks)
        if saliency_heads is not None:
            bad = [h for h in saliency_heads if not -self.num_heads <= int(h) < self.num_heads]
            if bad or not len(saliency_heads):
                raise DinokitError(f"saliency heads {list(saliency_heads)} do not fit a {self.num_heads}-head model "
                                   f"(give indices 0..{self.num_heads - 1})")
        self.saliency_heads = tuple(int(h) for h in saliency_heads) if saliency_heads is not None else None

    def derive(self, **changes: Any) -> "Extractor":
        """An extractor sharing this backbone, with some of ``stride``, ``load_size``, ``device``, ``dtype`` and
        ``saliency_heads`` changed. Given keys apply as they are (``device``/``dtype`` ``None`` keep the current
        ones); the result is this extractor itself when nothing changes."""
        allowed = ("stride", "load_size", "device", "dtype", "saliency_heads")
        unknown = sorted(set(changes) - set(allowed))
        if unknown:
            raise TypeError(f"derive() takes {', '.join(allowed)}, not {', '.join(unknown)}")
        new = {k: getattr(self, k) for k in allowed}
        new.update({k: v for k, v in changes.items() if v is not None or k not in ("device", "dtype")})
        new["device"], new["dtype"] = resolve_device(new["device"]), parse_dtype(new["dtype"])
        new["stride"] = resolve_stride(new["stride"], self.patch_size)
        if new["saliency_heads"] is not None:
            new["saliency_heads"] = tuple(int(h) for h in new["saliency_heads"])
        if all(new[k] == getattr(self, k) for k in allowed):
            return self
        return Extractor(self.model, **new)

    # --- inputs -------------------------------------------------------------
    def load(self, image: ImageInput, load_size: LoadSize = "default") -> LoadedImage:  # type: ignore[assignment]
        """Preprocess one image with the model's normalisation and the extractor's load size."""
        if isinstance(image, LoadedImage):
            return image
        size = self.load_size if load_size == "default" else load_size
        cfg = self.model.cfg
        img = preprocess(image, size, cfg.mean, cfg.std)
        h, w = img.size
        if h < self.patch_size or w < self.patch_size:
            raise ImageError(
                f"{img.path or 'image'}: {w}x{h} pixels after resizing, smaller than one {self.patch_size}-pixel patch"
            )
        return img

    def default_saliency_heads(self) -> Optional[tuple[int, ...]]:
        """Heads averaged for saliency: the extractor's, else the model's documented default, else all (``None``)."""
        if self.saliency_heads is not None:
            return self.saliency_heads
        spec = getattr(self.model, "spec", None)
        return getattr(spec, "saliency_heads", None)

    def layer_index(self, layer: int) -> int:
        """Block index ``layer`` counted from 0 (negative: from the last block), checked against the depth."""
        idx = layer + self.depth if layer < 0 else layer
        if not 0 <= idx < self.depth:
            raise DinokitError(f"layer {layer} does not exist: the model has {self.depth} blocks (0..{self.depth - 1})")
        return idx

    # --- extraction -----------------------------------------------------------
    @torch.no_grad()
    def describe(self, image: ImageInput, layer: int = -1, facet: str = "key", *, bin: bool = False,
                 saliency_heads: Optional[Sequence[int]] = None,
                 timings: Optional[dict[str, float]] = None) -> "ImageDescriptors":
        """One image's descriptors and saliency from a single forward pass (the record the tasks share).

        ``timings`` accumulates seconds per stage (``load``, ``forward``, ``binning``).
        """
        from .descriptors import ImageDescriptors

        clock = _Clock(self.device, timings)
        loaded = self.load(image)
        clock.tick("load")
        feats = self.extract(loaded, layer, facet, bin=False, saliency=True, saliency_heads=saliency_heads)
        clock.tick("forward")
        out = ImageDescriptors.of(feats.get()[0], feats.saliency[0], feats.geometry[0], loaded, bin)
        clock.tick("binning")
        return out

    @torch.no_grad()
    def extract(
        self,
        images: Union[ImageInput, Sequence[ImageInput], Tensor],
        layers: Union[int, Iterable[int]] = -1,
        facets: Union[str, Iterable[str]] = "key",
        *,
        bin: bool = False,
        include_cls: bool = False,
        saliency: bool = False,
        saliency_layer: int = -1,
        saliency_heads: Optional[Sequence[int]] = None,
    ) -> Features:
        """Descriptors (and saliency) of one image, a list of equal-size images or a batch tensor.

        For a list of images of different sizes use :meth:`extract_many`.
        """
        layer_list = [self.layer_index(l) for l in ([layers] if isinstance(layers, int) else layers)]
        facet_list = [facets] if isinstance(facets, str) else list(facets)
        for f in facet_list:
            if f not in FACETS:
                raise DinokitError(f"unknown facet {f!r}; choose from {', '.join(FACETS)}")
        if bin and include_cls:
            raise DinokitError("log-binning and include_cls cannot be combined (the CLS token has no grid position)")
        batch, loaded = self._batch(images)
        taps: dict[int, set[str]] = {l: set(facet_list) for l in layer_list}
        sal_layer = self.layer_index(saliency_layer)
        if saliency:
            taps.setdefault(sal_layer, set()).add("cls_attn")
        with full_float32(self.device, self.dtype):
            res = self.model.run(batch.to(self.device, self.dtype, non_blocking=True), taps, self.stride)
        prefix = res.num_prefix_tokens
        out: dict[tuple[int, str], Tensor] = {}
        for layer in layer_list:
            for facet in facet_list:
                t = res.taps[layer][facet]
                if facet == "token":
                    desc = t
                else:  # (B, heads, N, d) -> (B, N, d * heads), channel index = c * heads + h
                    desc = t.permute(0, 2, 3, 1).flatten(2)
                desc = desc.float()  # no copy in float32; low precision is binned in float32
                cls_row = desc[:, :1]
                desc = desc[:, prefix:]
                if bin:
                    desc = log_bin(desc, res.grid)
                elif include_cls:
                    desc = torch.cat([cls_row, desc], dim=1)
                out[(layer, facet)] = desc
        sal = None
        if saliency:
            heads = saliency_heads if saliency_heads is not None else self.default_saliency_heads()
            sal = saliency_from_cls_attention(res.taps[sal_layer]["cls_attn"].float(), prefix, heads)
        h, w = batch.shape[-2:]
        geoms = [
            GridGeometry(res.grid, self.patch_size, self.stride, (h, w), img.original_size if img else (h, w))
            for img in loaded
        ]
        settings = dict(layers=layer_list, facets=facet_list, bin=bin, include_cls=include_cls,
                        stride=self.stride, patch_size=self.patch_size, dtype=str(self.dtype).replace("torch.", ""))
        if saliency:
            settings.update(saliency_layer=sal_layer, saliency_heads=list(heads) if heads is not None else None)
        return Features(out, res.grid, geoms, sal, loaded, settings)

    def extract_many(self, images: Sequence[ImageInput], batch_size: int = 1, progress: bool = False, **kwargs) -> list[Features]:
        """Extract for a list of images of any sizes; equal-size neighbours share a batch.

        Returns one :class:`Features` per image (batch dimension 1), in input order.
        """
        from tqdm.auto import tqdm

        results: list[Features] = []
        pending: list[LoadedImage] = []

        def flush() -> None:
            if not pending:
                return
            feats = self.extract(list(pending), **kwargs)
            results.extend(split_features(feats))
            pending.clear()

        for img in tqdm(images, desc="extract", unit="img", disable=not progress):
            loaded = self.load(img)
            if pending and (loaded.size != pending[0].size or len(pending) >= batch_size):
                flush()
            pending.append(loaded)
        flush()
        return results

    def descriptors(self, images, layer: int = -1, facet: str = "key", bin: bool = False, include_cls: bool = False) -> Tensor:
        """``(B, T, D)`` descriptors of one layer and facet (the reference extractor's call)."""
        return self.extract(images, layer, facet, bin=bin, include_cls=include_cls).get()

    def saliency(self, images, layer: int = -1, heads: Optional[Sequence[int]] = None) -> Tensor:
        """``(B, T)`` saliency from the CLS attention of ``layer`` (last by default)."""
        return self.extract(images, [], [], saliency=True, saliency_layer=layer, saliency_heads=heads).saliency

    def _batch(self, images) -> tuple[Tensor, list[Optional[LoadedImage]]]:
        if isinstance(images, Tensor):
            t = images if images.dim() == 4 else images.unsqueeze(0)
            if t.shape[-2] < self.patch_size or t.shape[-1] < self.patch_size:
                raise ImageError(f"input of {t.shape[-1]}x{t.shape[-2]} pixels is smaller than one {self.patch_size}-pixel patch")
            return t, [None] * t.shape[0]
        items = images if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise DinokitError("no images given")
        loaded = [self.load(i) for i in items]
        sizes = {l.size for l in loaded}
        if len(sizes) > 1:
            raise DinokitError(f"images of different sizes {sorted(sizes)} cannot share a batch; use extract_many")
        return torch.stack([l.tensor for l in loaded]), loaded


@contextlib.contextmanager
def full_float32(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """A float32 forward pass on CUDA without TF32 (cuDNN enables it for convolutions by default).

    The patch embedding is a convolution: with TF32 its outputs, and so every
    descriptor, would differ from the CPU's by about 1e-3; float32 means
    float32. Other devices and dtypes are left as they are.
    """
    if device.type != "cuda" or dtype != torch.float32:
        yield
        return
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


class _Clock:
    """Seconds per stage into ``timings`` (synchronising CUDA so a stage's kernels count in it)."""

    def __init__(self, device: torch.device, timings: Optional[dict[str, float]]) -> None:
        self.device, self.timings = device, timings
        self.last = self._now()

    def _now(self) -> float:
        if self.timings is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def tick(self, stage: str) -> None:
        if self.timings is None:
            return
        now = self._now()
        self.timings[stage] = self.timings.get(stage, 0.0) + (now - self.last)
        self.last = now


def as_extractor(
    source: Union["Extractor", str, PathLike, torch.nn.Module, None] = None,
    weights: Optional[PathLike] = None,
    *,
    stride: Union[int, str, None] = "auto",
    load_size: LoadSize = 224,
    device: Union[str, torch.device, None] = None,
    dtype: Union[str, torch.dtype, None] = None,
    saliency_heads: Optional[Sequence[int]] = None,
    progress: bool = True,
) -> "Extractor":
    """The one rule every task uses to get its extractor.

    An :class:`Extractor` is derived (same backbone) with the given stride and
    load size, and with ``device``/``dtype``/``saliency_heads`` when they are
    not ``None``; anything else (a model name, a weights file, a module, or
    nothing: ``weights`` alone, else the default model) builds a new one.
    """
    if isinstance(source, Extractor):
        changes: dict[str, Any] = {"stride": stride, "load_size": load_size, "device": device, "dtype": dtype}
        if saliency_heads is not None:
            changes["saliency_heads"] = saliency_heads
        return source.derive(**changes)
    model = source if source is not None else (None if weights is not None else DEFAULT_MODEL)
    return Extractor(model, weights, stride=stride, load_size=load_size, device=device, dtype=dtype,
                     saliency_heads=saliency_heads, progress=progress)


def extractor_for_settings(
    source: Union["Extractor", str, PathLike, torch.nn.Module, None],
    settings: Any,
    explicit: Iterable[str],
    weights: Optional[PathLike] = None,
    *,
    device: Union[str, torch.device, None] = None,
    dtype: Union[str, torch.dtype, None] = None,
    progress: bool = True,
) -> tuple["Extractor", Any]:
    """The extractor a task runs with, and its settings with the stride and load size it really uses.

    The one rule for an :class:`Extractor` handed to a task: the settings it
    was given explicitly (``explicit`` names them: the keyword overrides, or
    every field when a settings object was passed) are applied by deriving
    from it; its own stride, load size and saliency heads stand for the rest.
    Anything else builds an extractor from the settings (:func:`as_extractor`).
    """
    keys = ("stride", "load_size", "saliency_heads")
    if isinstance(source, Extractor):
        given = set(explicit)
        ex = source.derive(device=device, dtype=dtype, **{k: getattr(settings, k) for k in keys if k in given})
    else:
        ex = as_extractor(source, weights, stride=settings.stride, load_size=settings.load_size, device=device,
                          dtype=dtype, saliency_heads=settings.saliency_heads, progress=progress)
    return ex, settings.replace(stride=ex.stride, load_size=ex.load_size,
                                saliency_heads=ex.saliency_heads if ex.saliency_heads is None
                                else tuple(ex.saliency_heads))


def split_features(feats: Features) -> list[Features]:
    """Split a batched :class:`Features` into one per image."""
    n = len(feats.geometry)
    return [
        Features(
            {k: v[i : i + 1] for k, v in feats.descriptors.items()},
            feats.grid,
            [feats.geometry[i]],
            feats.saliency[i : i + 1] if feats.saliency is not None else None,
            [feats.images[i]] if feats.images else [],
            feats.settings,
        )
        for i in range(n)
    ]
