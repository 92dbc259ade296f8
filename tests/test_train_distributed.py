"""Two CPU processes with torchrun + gloo train like one process with the combined batch.

Each process takes its half of every global batch; DistributedDataParallel
averages the gradients and the DINO center is all-reduced, so the losses and
the weights must match a single process that sees the whole batch (up to
float summation order).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dinokit.train import DinoTrainer, load_checkpoint, read_metrics

from .conftest import torch_threads
from .test_train_data import make_noise_folder
from .test_train_loop import CLI_TINY, TINY


def _replace(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


@pytest.mark.slow
def test_two_process_gloo_run_matches_single_process(tmp_path):
    images = make_noise_folder(tmp_path / "imgs", 16)
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    cli = _replace(CLI_TINY, "--batch-size", "4") + ["--drop-path-rate", "0", "--device", "cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dinokit", "train", "--data", str(images), "-o", str(run), "--epochs", "2", "-q"] + cli
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ckpt = load_checkpoint(run / "checkpoint.pth")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4  # 16 images / (4 per process x 2) = 2 steps per epoch

    with torch_threads(1):
        single = DinoTrainer(images, tmp_path / "single", progress=False,
                             **dict(TINY, batch_size=8, drop_path_rate=0.0)).fit()

    ddp_losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["type"] == "step"]
    one_losses = [r["loss"] for r in read_metrics(single.run_dir / "metrics.jsonl") if r["type"] == "step"]
    assert len(ddp_losses) == len(one_losses) == 4
    assert ddp_losses == pytest.approx(one_losses, rel=1e-4)
    torch.testing.assert_close(ckpt["dino_loss"]["center"], single.dino_loss_.center, rtol=1e-4, atol=1e-6)
    teacher = single.teacher_.state_dict()
    for name, value in ckpt["teacher"].items():
        torch.testing.assert_close(value, teacher[name], rtol=1e-3, atol=1e-5, msg=name)
    # the schedules used the total batch: lr = 5e-4 * (2 x 4) / 256 at the end of warm-up (epoch 1, step 2)
    lrs = [r["lr"] for r in read_metrics(run / "metrics.jsonl") if r["type"] == "step"]
    assert lrs[1] == pytest.approx(0.0005 * 8 / 256)
