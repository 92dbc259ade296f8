"""Hyperparameters of DINO training, with the paper's defaults and a small-data preset.

Defaults (``preset="paper"``) are those of the DINO paper and its reference
``main_dino.py`` for ViT-S/16: 100 epochs, batch 64 per GPU, base learning
rate 5e-4 scaled by ``total batch / 256`` with a 10-epoch linear warm-up then
cosine decay to 1e-6, weight decay cosine from 0.04 to 0.4, teacher momentum
cosine from 0.996 to 1, teacher temperature warmed up linearly from 0.04 to
0.07 over 30 epochs, student temperature 0.1, center momentum 0.9, gradient
clipping at 3.0 (per parameter), last layer frozen for the first epoch,
drop-path 0.1, head output dimension 65536 (MLP 2048-2048-256, weight-normed
last layer), 2 global crops of 224 px (scale 0.4-1) and 8 local crops of
96 px (scale 0.05-0.4), mixed precision on GPU.

``preset="small-data"`` is for a few hundred to a few thousand images of a
domain without pretrained weights, on one GPU or a CPU: the recipe of the
ViT-Tiny/16 shipped in the test data (2 global crops of 128 px, 4 local crops
of 64 px, batch 32, head output 4096) with a constant teacher temperature of
0.04 (the reference's advice when training is unstable) and no teacher
temperature warm-up. Every value can still be overridden.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Optional

from ..errors import DinokitError
from ..models.config import ARCH_PRESETS

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "small-data": dict(
        out_dim=4096,
        batch_size=32,
        global_size=128,
        local_size=64,
        local_crops_number=4,
        teacher_temp=0.04,
        warmup_teacher_temp=0.04,
        warmup_teacher_temp_epochs=0,
    ),
}

# Settings a resumed run may change without changing what is computed.
RESUMABLE_CHANGES = frozenset({"num_workers", "log_every", "saveckp_freq", "amp", "init_model", "init_weights",
                               "batch_augment"})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a DINO training run (see the module docstring for the defaults' source).

    Architecture: ``arch`` (``vit_tiny``/``vit_small``/``vit_base``/...) and
    ``patch_size``; ``embed_dim``, ``depth``, ``num_heads`` and ``img_size``
    override the preset (for small custom models). ``init_model`` /
    ``init_weights`` start both networks from a pretrained backbone
    (fine-tuning; the architecture then comes from those weights).
    ``batch_size`` is per process; ``lr`` is the base rate for a total batch
    of 256 (linear scaling rule). ``batch_augment`` draws the crops on the
    device in batches (:mod:`.batch_augment`; default on for CUDA, off for CPU).
    """

    arch: str = "vit_small"
    patch_size: int = 16
    embed_dim: Optional[int] = None
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    img_size: Optional[int] = None
    drop_path_rate: float = 0.1
    init_model: Optional[str] = None
    init_weights: Optional[str] = None
    # projection head
    out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_nlayers: int = 3
    norm_last_layer: bool = True
    use_bn_in_head: bool = False
    # loss and teacher
    momentum_teacher: float = 0.996
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    student_temp: float = 0.1
    center_momentum: float = 0.9
    # optimisation
    epochs: int = 100
    batch_size: int = 64
    lr: float = 0.0005
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    freeze_last_layer: int = 1
    amp: bool = True
    # multi-crop augmentation
    global_size: int = 224
    local_size: int = 96
    local_crops_number: int = 8
    global_crops_scale: tuple[float, float] = (0.4, 1.0)
    local_crops_scale: tuple[float, float] = (0.05, 0.4)
    # None: multi-crop augmentation batched on the device for CUDA, per image in the loader workers on CPU
    batch_augment: Optional[bool] = None
    # bookkeeping
    seed: int = 0
    num_workers: Optional[int] = None
    log_every: int = 10
    saveckp_freq: int = 0

    def __post_init__(self) -> None:
        if self.init_model is None and self.init_weights is None and self.arch not in ARCH_PRESETS:
            raise DinokitError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCH_PRESETS)}")
        positive = ("patch_size", "out_dim", "head_hidden_dim", "head_bottleneck_dim", "head_nlayers", "epochs",
                    "batch_size", "global_size", "local_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise DinokitError(f"{name} must be positive, got {getattr(self, name)}")
        nonneg = ("warmup_epochs", "warmup_teacher_temp_epochs", "freeze_last_layer", "local_crops_number", "clip_grad",
                  "lr", "min_lr", "weight_decay", "weight_decay_end", "drop_path_rate", "log_every", "saveckp_freq")
        for name in nonneg:
            if getattr(self, name) < 0:
                raise DinokitError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise DinokitError(f"num_workers must not be negative, got {self.num_workers}")
        for name in ("teacher_temp", "warmup_teacher_temp", "student_temp"):
            if not getattr(self, name) > 0:
                raise DinokitError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("momentum_teacher", "center_momentum"):
            if not 0 <= getattr(self, name) <= 1:
                raise DinokitError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("global_crops_scale", "local_crops_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise DinokitError(f"{name} must be two numbers 0 < min <= max <= 1, got {lo} {hi}")
        if self.drop_path_rate >= 1:
            raise DinokitError(f"drop_path_rate must be below 1, got {self.drop_path_rate}")

    @property
    def ncrops(self) -> int:
        return 2 + self.local_crops_number

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**kwargs)

    @classmethod
    def from_preset(cls, preset: str = "paper", **overrides: Any) -> "TrainConfig":
        """The named preset (``paper`` or ``small-data``) with ``overrides`` applied (``None`` values ignored)."""
        if preset not in PRESETS:
            raise DinokitError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise DinokitError(f"unknown training option(s): {', '.join(unknown)}")
        params = dict(PRESETS[preset])
        params.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**params)

    def differences(self, other: "TrainConfig") -> list[str]:
        """Names of settings that differ and matter for the computation (for resuming)."""
        a, b = self.to_dict(), other.to_dict()
        return sorted(k for k in a if k not in RESUMABLE_CHANGES and a[k] != b.get(k))


__all__ = ["TrainConfig", "PRESETS", "RESUMABLE_CHANGES"]
