"""DINO training throughput on this machine: images per second and where the time goes.

For each architecture (default vit_tiny/16 and vit_small/16) at 2 global crops
of 96 px + 4 local crops of 48 px, with the paper's head (K = 65536):

- augmentation: decoding + multi-crop augmentation of one batch in this
  process (PIL, as the data-loader workers do it);
- step: one training step on a ready batch, split into forward (teacher +
  student + loss), backward (+ per-parameter clipping), AdamW step and EMA;
- images/s serial (augmentation then step, one process) and with ``--workers``
  data-loader workers overlapping augmentation with the step (the GPU setting);
- images/s of ``DinoTrainer`` itself over its third epoch of the same number
  of steps, with its default workers (none on CPU). This is what ``dinokit
  train`` logs as ``images_per_second``: data loading, drop-path, schedules and
  logging included, checkpoint writing excluded. Epochs 1 and 2 are not timed:
  they pay one-time costs (warm-up; AdamW state for the head's last layer once it
  is unfrozen in epoch 2).

Images: the real photos of ../shared/data (AFHQ, PASCAL-Part, ...) when
present, else generated ones. Run: ``python benchmarks/train.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import dinokit  # noqa: F401  (before torch: dinokit's allocator setting)
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dinokit.train import (
    DINOLoss,
    DinoTrainer,
    MultiCropAugmentation,
    MultiCropDataset,
    TrainConfig,
    build_networks,
)
from dinokit.train.augment import normalize_batch
from dinokit.train.data import collate_crops, find_images
from dinokit.train.trainer import backbone_arch, clip_gradients, ema_update, params_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import matmul_gflops, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DINOKIT_SHARED", ROOT.parent / "shared"))


def training_images(limit: int, tmp: Path) -> list[Path]:
    data = SHARED / "data"
    files: list[Path] = []
    for sub in ("afhq", "pascal-part", "msrc-cow/images", *sorted(f"icoseg/{g.name}/images" for g in (data / "icoseg").glob("*"))):
        if (data / sub).is_dir():  # photos only, not the masks beside them
            files += find_images(data / sub)
    if files:
        return files[:limit]
    rng = np.random.default_rng(0)
    tmp.mkdir(parents=True, exist_ok=True)
    for i in range(limit):
        Image.fromarray((rng.random((320, 400, 3)) * 255).astype(np.uint8)).save(tmp / f"{i}.jpg")
    return sorted(tmp.glob("*.jpg"))


def bench_arch(arch: str, images: list[Path], batch: int, steps: int, workers: int, out_dim: int) -> dict:
    cfg = TrainConfig.from_preset(
        "paper", arch=arch, patch_size=16, global_size=96, local_size=48, local_crops_number=4,
        batch_size=batch, out_dim=out_dim, num_workers=0,
    )
    aug = MultiCropAugmentation(cfg.global_size, cfg.local_size, cfg.local_crops_number)
    ds = MultiCropDataset(images, aug, seed=0)

    def make_batch(start: int) -> list[torch.Tensor]:
        return collate_crops([ds[(start + i) % len(ds)] for i in range(batch)])

    # augmentation alone (this process)
    make_batch(0)
    t0 = time.perf_counter()
    batches = [make_batch(b * batch) for b in range(steps)]
    aug_s = (time.perf_counter() - t0) / steps

    arch_cfg, _ = backbone_arch(cfg)
    student, teacher = build_networks(cfg, arch_cfg)
    student.train()
    teacher.eval()
    opt = torch.optim.AdamW(params_groups(student))
    loss_fn = DINOLoss(cfg.out_dim, cfg.ncrops, 0.04, 0.04, 0, 10)
    for g in opt.param_groups:
        g["lr"] = 1e-4
    mean, std = arch_cfg.mean, arch_cfg.std
    times = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "ema": 0.0}

    def step(crops: list[torch.Tensor], record: bool) -> None:
        t_a = time.perf_counter()
        imgs = [normalize_batch(c, mean, std) for c in crops]
        loss = loss_fn(student(imgs), teacher(imgs[:2]), 0)
        t_b = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(student, 3.0)
        t_c = time.perf_counter()
        opt.step()
        t_d = time.perf_counter()
        ema_update(teacher, student, 0.996)
        t_e = time.perf_counter()
        if record:
            for k, v in zip(times, (t_b - t_a, t_c - t_b, t_d - t_c, t_e - t_d)):
                times[k] += v

    step(batches[0], record=False)  # warm-up (lazy imports, allocator)
    for b in batches:
        step(b, record=True)
    step_s = sum(times.values()) / steps

    # end to end with data-loader workers overlapping augmentation and the step
    loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate_crops,
                        drop_last=True, persistent_workers=False)
    it = iter(loader)
    step(next(it), record=False)
    t0 = time.perf_counter()
    n = 0
    for _ in range(steps):
        try:
            crops = next(it)
        except StopIteration:
            it = iter(loader)
            crops = next(it)
        step(crops, record=False)
        n += batch
    overlapped = n / (time.perf_counter() - t0)

    # the real trainer: three epochs of `steps` steps, the third one timed
    with tempfile.TemporaryDirectory(prefix="dinokit-bench-train-") as tmp:
        epoch_images = (images * (batch * steps // len(images) + 1))[: batch * steps]
        trainer = DinoTrainer(
            epoch_images, Path(tmp) / "run", progress=False, arch=arch, patch_size=16, global_size=96, local_size=48,
            local_crops_number=4, batch_size=batch, out_dim=out_dim, num_workers=None, epochs=10, log_every=0,
            device="cpu",
        ).fit(stop_at_epoch=3)
        trainer_ips = trainer.history_[-1]["images_per_second"]

    params = sum(p.numel() for p in student.backbone.parameters()) / 1e6
    return {
        "arch": f"{arch}/16",
        "backbone M params": round(params, 1),
        "batch": batch,
        "aug ms/batch": aug_s * 1000,
        "fwd ms": times["forward"] / steps * 1000,
        "bwd+clip ms": times["backward"] / steps * 1000,
        "adamw ms": times["optimizer"] / steps * 1000,
        "ema ms": times["ema"] / steps * 1000,
        "aug share %": 100 * aug_s / (aug_s + step_s),
        "fwd/bwd share %": 100 * (times["forward"] + times["backward"]) / steps / (aug_s + step_s),
        "img/s serial": batch / (aug_s + step_s),
        f"img/s {workers} worker(s)": overlapped,
        "img/s DinoTrainer (default workers)": trainer_ips,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["vit_tiny", "vit_small"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per architecture")
    ap.add_argument("--workers", type=int, default=1, help="data-loader workers for the overlapped run")
    ap.add_argument("--out-dim", type=int, default=65536, help="head output dimension (paper: 65536)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = training_images(64, Path("/tmp/dinokit-bench-train-images"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"matmul {matmul_gflops(1024):.0f} GFLOP/s; {len(images)} training images; "
          f"crops 2 x 96 px + 4 x 48 px; head K = {args.out_dim}")
    rows = [bench_arch(a, images, args.batch_size, args.steps, args.workers, args.out_dim) for a in args.archs]
    print_table(rows, "DINO training throughput (CPU)")


if __name__ == "__main__":
    main()
