"""DINO projection head and the multi-crop wrapper that runs a backbone on crops of several sizes.

Parameter names follow the official checkpoints (``head.mlp.N.*``,
``head.last_layer.weight_g`` / ``weight_v``), so heads load from and save to
the reference layout.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.layers import trunc_normal_


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation: ``W = g * v / ||v||`` row by row.

    Same parametrisation and parameter names (``weight_g`` of shape
    ``(out, 1)``, ``weight_v`` of shape ``(out, in)``) as
    ``torch.nn.utils.weight_norm(nn.Linear(in, out, bias=False))``, without
    the deprecated hook API.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))

    @property
    def weight(self) -> Tensor:
        v = self.weight_v
        return v * (self.weight_g / v.norm(dim=1, keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class DINOHead(nn.Module):
    """MLP (``nlayers`` linear layers with GELU) to a bottleneck, L2 normalisation, weight-normalised last layer.

    With ``norm_last_layer`` the last layer's norms ``weight_g`` are fixed at 1
    (not trained), which the paper found stabilises training.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        nlayers: int = 3,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
    ) -> None:
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        # The reference initialises v as nn.Linear does (Kaiming uniform) and g to 1.
        nn.init.kaiming_uniform_(self.last_layer.weight_v, a=5**0.5)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


class MultiCropWrapper(nn.Module):
    """Backbone + head over a list of crops: one backbone pass per run of equal-resolution crops.

    The output rows are crop-major (all images of crop 0, then crop 1, ...),
    the order :class:`~dinokit.train.loss.DINOLoss` expects.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: Union[Tensor, Sequence[Tensor]]) -> Tensor:
        if isinstance(crops, Tensor):
            crops = [crops]
        outputs = []
        start = 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            outputs.append(self.backbone(torch.cat(list(crops[start:end]))))
            start = end
        return self.head(torch.cat(outputs))


__all__ = ["WeightNormLinear", "DINOHead", "MultiCropWrapper"]
