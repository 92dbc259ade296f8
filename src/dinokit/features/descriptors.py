"""The one record of "an image's descriptors and saliency" that the tasks, benchmarks and inspector share.

:meth:`dinokit.features.Extractor.describe` makes it from one forward pass;
the benchmark's descriptor cache rebuilds it from a file, the inspector from
its index. Sets of many images keep theirs in a
:class:`~dinokit.blocks.store.DescriptorStore` instead (bounded memory), and
batched extraction returns :class:`~dinokit.features.extractor.Features`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from torch import Tensor

from .binned_similarity import LogBinned
from .coords import GridGeometry
from .image import LoadedImage


@dataclass
class ImageDescriptors:
    """Descriptors and saliency ``(T,)`` of one image, on the extractor's device.

    ``raw`` holds the ``(T, D)`` unbinned descriptors and ``binned`` their
    implicit log-binning (or ``None``); :attr:`descriptors` is the explicit
    ``(T, D')`` matrix the settings ask for, built on first use.
    """

    raw: Tensor
    saliency: Tensor
    geometry: GridGeometry
    image: Optional[LoadedImage] = None
    binned: Optional[LogBinned] = None
    _dense: Optional[Tensor] = field(default=None, repr=False)

    @classmethod
    def of(cls, raw: Tensor, saliency: Tensor, geometry: GridGeometry, image: Optional[LoadedImage] = None,
           bin: bool = False) -> "ImageDescriptors":
        """The record, with the implicit log-binning of ``raw`` when ``bin``."""
        return cls(raw, saliency, geometry, image, LogBinned(raw, geometry.grid) if bin else None)

    @property
    def matching(self) -> Union[Tensor, LogBinned]:
        """What the similarity searches use: the :class:`LogBinned` form when binned, else ``raw``."""
        return self.binned if self.binned is not None else self.raw

    @property
    def descriptors(self) -> Tensor:
        """Explicit descriptors ``(T, D')`` (log-binned when binning is on)."""
        if self.binned is None:
            return self.raw
        if self._dense is None:
            self._dense = self.binned.dense()
        return self._dense


__all__ = ["ImageDescriptors"]
