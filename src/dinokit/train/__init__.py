"""DINO self-supervised training (Caron et al. 2021): pretrain or fine-tune a ViT on your own images.

- :class:`DinoTrainer` / :func:`train_dino`: the training loop (multi-crop,
  EMA teacher, centering and sharpening, cosine schedules, AdamW, gradient
  clipping, frozen last layer in epoch 1, AMP on GPU, torchrun/DDP), with
  atomic checkpoints, exact resume and a clean stop on SIGTERM / Ctrl-C.
- :class:`TrainConfig`: hyperparameters with the paper's defaults and a
  ``small-data`` preset.
- Parts usable on their own: :class:`DINOLoss`, :class:`DINOHead`,
  :class:`MultiCropWrapper`, :class:`MultiCropAugmentation`,
  :func:`cosine_schedule`.

Layout: :mod:`.builders` (networks, optimiser, schedules, data),
:mod:`.state` (a run's parts, fresh or restored), :mod:`.loop` (step,
epoch, stop), :mod:`.checkpoint` (saving) and :mod:`.trainer` (the API).

Augmentation runs on PIL images in the data-loader workers (the reference's
own pipeline; torchvision is not required), or, on CUDA by default, in
batches on the device from decoded images (:mod:`.batch_augment`).
"""

from .augment import MultiCropAugmentation
from .checkpoint import BACKBONE_NAME, CHECKPOINT_NAME, METRICS_NAME, load_checkpoint, read_metrics
from .config import PRESETS, TrainConfig
from .data import EpochSampler, MultiCropDataset, find_images
from .head import DINOHead, MultiCropWrapper, WeightNormLinear
from .loss import DINOLoss
from .schedules import cosine_schedule, teacher_temp_schedule
from .trainer import DinoTrainer, build_networks, train_dino

__all__ = [
    "BACKBONE_NAME",
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "PRESETS",
    "DINOHead",
    "DINOLoss",
    "DinoTrainer",
    "EpochSampler",
    "MultiCropAugmentation",
    "MultiCropDataset",
    "MultiCropWrapper",
    "TrainConfig",
    "WeightNormLinear",
    "build_networks",
    "cosine_schedule",
    "find_images",
    "load_checkpoint",
    "read_metrics",
    "teacher_temp_schedule",
    "train_dino",
]
