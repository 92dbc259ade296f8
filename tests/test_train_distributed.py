"""Two CPU processes with torchrun + gloo train like one process with the combined batch; device choice.

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

from dinokit.cli import main
from dinokit.errors import DinokitError
from dinokit.train import DinoTrainer, load_checkpoint, read_metrics
from dinokit.distributed import select_device, setup

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


# --------------------------------------------------------------------------- device choice (CPU-only checks)
def _fake_cuda(monkeypatch, count: int = 2, current: int = 0) -> list:
    """Pretend ``count`` CUDA devices exist; returns the list of devices ``set_device`` was called with."""
    calls: list = []

    def set_device(dev):
        dev = torch.device(dev)
        if dev.index is None:  # what the real torch.cuda.set_device rejects
            raise ValueError("Expected a torch.device with a specified index or an integer")
        calls.append(dev)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_setup_gives_bare_cuda_its_index(monkeypatch):
    calls = _fake_cuda(monkeypatch)
    assert setup("cuda").device == torch.device("cuda", 0)
    assert setup("cuda:1").device == torch.device("cuda", 1)
    assert setup(None).device == torch.device("cuda", 0)
    assert calls == [torch.device("cuda", 0), torch.device("cuda", 1), torch.device("cuda", 0)]
    with pytest.raises(DinokitError, match="cuda:2.*only 2 CUDA device"):
        setup("cuda:2")


def test_torchrun_processes_take_their_local_gpu(monkeypatch):
    _fake_cuda(monkeypatch, count=4)
    assert select_device(None, world_size=2, local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda", world_size=2, local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda:3", world_size=2, local_rank=1) == torch.device("cuda", 3)
    assert select_device("cpu", world_size=2, local_rank=1) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_setup_cuda_without_cuda_is_one_line_error():
    with pytest.raises(DinokitError) as err:
        setup("cuda")
    assert "device cuda requested" in str(err.value) and "available here: cpu" in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_train_bad_device_is_one_line(tmp_path, capsys):
    images = make_noise_folder(tmp_path / "imgs", 4)
    rc = main(["train", "--data", str(images), "-o", str(tmp_path / "run"), "--device", "foo", "-q"] + CLI_TINY)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "'foo'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
