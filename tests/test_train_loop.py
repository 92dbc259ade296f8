"""The DINO training loop: exact resume, clean stop on SIGTERM, run-directory rules, export and CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dinokit.cli import main
from dinokit.errors import DinokitError, ImageError
from dinokit.models import load_model, read_weights
from dinokit.train import DinoTrainer, TrainConfig, load_checkpoint, read_metrics
from dinokit.train.trainer import build_networks, backbone_arch

from .test_train_data import make_noise_folder

TINY = dict(
    arch="vit_tiny", patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=16,
    out_dim=64, head_hidden_dim=64, head_bottleneck_dim=16, batch_size=4,
    global_size=16, local_size=8, local_crops_number=2, epochs=2, warmup_epochs=1,
    warmup_teacher_temp_epochs=1, num_workers=0, log_every=1,
)
CLI_TINY = ["--arch", "vit_tiny", "--patch-size", "8", "--embed-dim", "32", "--depth", "2", "--num-heads", "2",
            "--img-size", "16", "--out-dim", "64", "--head-hidden-dim", "64", "--head-bottleneck-dim", "16",
            "--batch-size", "4", "--global-size", "16", "--local-size", "8", "--local-crops-number", "2",
            "--warmup-epochs", "1", "--warmup-teacher-temp-epochs", "1", "--num-workers", "0", "--log-every", "1"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_noise_folder(tmp_path_factory.mktemp("train") / "imgs", 16)


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _fit(images, run, **kw):
    options = dict(TINY)
    options.update(kw.pop("options", {}))
    return DinoTrainer(images, run, progress=False, **options).fit(**kw)


@pytest.fixture(scope="module")
def reference_run(images, tmp_path_factory):
    """Two uninterrupted epochs (4 steps each)."""
    return _fit(images, tmp_path_factory.mktemp("ref") / "run")


def test_uninterrupted_run_outputs(reference_run):
    tr = reference_run
    assert tr.finished_ and tr.step_ == 8 and tr.epochs_done_ == 2 and tr.interrupted_ is None
    run = tr.run_dir
    assert {p.name for p in run.iterdir()} >= {"checkpoint.pth", "teacher_backbone.safetensors", "metrics.jsonl", "config.json"}
    steps = [r for r in read_metrics(run / "metrics.jsonl") if r["type"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 9))
    assert all({"loss", "lr", "momentum", "wd", "teacher_temp"} <= r.keys() for r in steps)
    assert steps[0]["lr"] == 0.0 and steps[3]["lr"] == pytest.approx(0.0005 * 4 / 256)  # warm-up over epoch 1
    assert steps[0]["momentum"] == pytest.approx(0.996) and steps[-1]["momentum"] > steps[0]["momentum"]
    assert steps[0]["teacher_temp"] == pytest.approx(0.04) and steps[-1]["teacher_temp"] == pytest.approx(0.07)
    assert [r["epoch"] for r in tr.history_] == [0, 1]
    ckpt = load_checkpoint(run / "checkpoint.pth")
    assert ckpt["step"] == 8 and ckpt["epoch"] == 2
    assert "head.last_layer.weight_g" in ckpt["student"] and "head.last_layer.weight_v" in ckpt["teacher"]


def test_teacher_is_ema_and_last_layer_frozen_in_first_epoch(images, tmp_path):
    cfg = TrainConfig.from_preset(**TINY)
    student0, teacher0 = build_networks(cfg, backbone_arch(cfg)[0])
    assert _states_equal(student0.state_dict(), teacher0.state_dict())
    tr = _fit(images, tmp_path / "run", stop_at_epoch=1)
    s, t = tr.student_.state_dict(), tr.teacher_.state_dict()
    # last layer: no update during epoch 1 in the student, so none (up to EMA rounding) in the teacher either
    v0 = student0.state_dict()["head.last_layer.weight_v"]
    assert torch.equal(s["head.last_layer.weight_v"], v0)
    torch.testing.assert_close(t["head.last_layer.weight_v"], v0, rtol=1e-6, atol=1e-7)
    # the rest moved, and the teacher lags the student
    name = "backbone.blocks.0.attn.qkv.weight"
    assert not torch.equal(s[name], student0.state_dict()[name])
    assert not torch.equal(t[name], s[name]) and not torch.equal(t[name], teacher0.state_dict()[name])


def test_teacher_head_batch_norm_uses_batch_statistics(images, tmp_path):
    # As the reference, the teacher runs in training mode: batch norm in its head normalises with the batch's
    # statistics (and tracks them), instead of the running statistics it was initialised with.
    tr = _fit(images, tmp_path / "bn", stop_at_step=1, options=dict(use_bn_in_head=True))
    bn = tr.teacher_.head.mlp[1]
    assert isinstance(bn, torch.nn.BatchNorm1d) and tr.teacher_.training
    assert int(bn.num_batches_tracked) == 1 and not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_resume_after_one_epoch_is_bit_identical(images, reference_run, tmp_path):
    run = tmp_path / "run"
    first = _fit(images, run, stop_at_epoch=1)
    assert first.step_ == 4 and not first.finished_
    second = _fit(images, run, resume=True)
    assert second.finished_ and second.step_ == 8
    assert _states_equal(second.teacher_.state_dict(), reference_run.teacher_.state_dict())
    assert _states_equal(second.student_.state_dict(), reference_run.student_.state_dict())
    assert torch.equal(second.dino_loss_.center, reference_run.dino_loss_.center)
    a = load_checkpoint(run / "checkpoint.pth")["optimizer"]["state"]
    b = load_checkpoint(reference_run.run_dir / "checkpoint.pth")["optimizer"]["state"]
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)
    # the metrics log reads as one run
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if r["type"] == "step"]
    assert steps == list(range(1, 9))


def test_resume_mid_epoch_with_workers_is_bit_identical(images, reference_run, tmp_path):
    # stop inside epoch 1, and load data with worker processes this time: crops depend only on the seed
    run = tmp_path / "run"
    _fit(images, run, stop_at_step=3, options=dict(num_workers=2))
    assert load_checkpoint(run / "checkpoint.pth")["step"] == 3
    done = _fit(images, run, resume=True, options=dict(num_workers=2))
    assert _states_equal(done.teacher_.state_dict(), reference_run.teacher_.state_dict())


def test_run_directory_rules(images, reference_run, tmp_path):
    run = tmp_path / "run"
    _fit(images, run, stop_at_epoch=1)
    with pytest.raises(DinokitError, match="--resume"):
        _fit(images, run)
    with pytest.raises(DinokitError, match="out_dim"):
        DinoTrainer(images, run, progress=False, **dict(TINY, out_dim=32)).fit(resume=True)
    # only the changed option given: the stored configuration supplies the rest
    with pytest.raises(DinokitError, match="seed"):
        DinoTrainer(images, run, progress=False, seed=5).fit(resume=True)
    fresh = DinoTrainer(images, run, progress=False, overwrite=True, **TINY).fit(stop_at_step=1)
    assert fresh.step_ == 1
    # resume with no arguments at all: settings come from the checkpoint
    rest = DinoTrainer(images, run, progress=False).fit(resume=True)
    assert rest.finished_ and _states_equal(rest.teacher_.state_dict(), reference_run.teacher_.state_dict())
    assert rest.config.embed_dim == 32


def test_exported_backbone_loads_with_weights(reference_run):
    path = reference_run.backbone_path_
    model = load_model(weights=path)
    assert model.cfg.embed_dim == 32 and model.cfg.num_heads == 2 and model.cfg.patch_size == 8
    teacher = {k[len("backbone."):]: v for k, v in reference_run.teacher_.state_dict().items() if k.startswith("backbone.")}
    assert _states_equal(model.state_dict(), teacher)
    x = torch.randn(2, 3, 24, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_run.backbone_(x))
    # the checkpoint itself also reads as a backbone (teacher, head dropped)
    loaded = read_weights(reference_run.checkpoint_path_)
    assert _states_equal(loaded.state_dict, teacher)


def test_fine_tuning_starts_from_given_weights(images, tiny_weights, tmp_path):
    tr = DinoTrainer(images, tmp_path / "ft", progress=False, init_weights=str(tiny_weights),
                     **{k: v for k, v in TINY.items() if k not in ("embed_dim", "depth", "num_heads", "img_size")}
                     ).fit(stop_at_step=0)
    golden = load_model(weights=tiny_weights)
    assert tr.backbone_.cfg.embed_dim == 48 and tr.backbone_.cfg.num_heads == 6
    assert _states_equal(tr.backbone_.state_dict(), golden.state_dict())
    assert _states_equal(tr.student_.backbone.state_dict(), golden.state_dict())


def test_bad_inputs(tmp_path):
    few = make_noise_folder(tmp_path / "few", 3)
    with pytest.raises(DinokitError, match="fewer than one batch"):
        DinoTrainer(few, tmp_path / "r1", progress=False, **TINY).fit()
    bad = make_noise_folder(tmp_path / "bad", 8)
    (bad / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ImageError, match="broken.png"):
        DinoTrainer(bad, tmp_path / "r2", progress=False, **TINY).fit()
    with pytest.raises(DinokitError, match="unknown training option"):
        DinoTrainer(bad, tmp_path / "r3", progress=False, learning_rate=1.0)
    with pytest.raises(DinokitError, match="local_crops_scale"):
        TrainConfig(local_crops_scale=(0.5, 0.1))
    with pytest.raises(DinokitError, match="unknown preset"):
        TrainConfig.from_preset("imagenet")


def test_small_data_preset():
    cfg = TrainConfig.from_preset("small-data", epochs=7)
    assert (cfg.out_dim, cfg.batch_size, cfg.global_size, cfg.local_size, cfg.local_crops_number) == (4096, 32, 128, 64, 4)
    assert cfg.epochs == 7 and cfg.teacher_temp == 0.04
    paper = TrainConfig()
    assert (paper.out_dim, paper.local_crops_number, paper.local_size, paper.momentum_teacher) == (65536, 8, 96, 0.996)
    assert paper.global_crops_scale == (0.4, 1.0) and paper.local_crops_scale == (0.05, 0.4)
    assert (paper.student_temp, paper.center_momentum, paper.clip_grad, paper.freeze_last_layer) == (0.1, 0.9, 3.0, 1)


def test_cli_train(images, tmp_path):
    run = tmp_path / "cli"
    rc = main(["train", "--data", str(images), "-o", str(run), "--epochs", "1", "-q"] + CLI_TINY)
    assert rc == 0
    cfg = json.loads((run / "config.json").read_text())["config"]
    assert cfg["embed_dim"] == 32 and cfg["out_dim"] == 64 and cfg["epochs"] == 1
    assert load_model(weights=run / "teacher_backbone.safetensors").cfg.depth == 2
    assert main(["train", "--data", str(images), "-o", str(run), "--epochs", "1", "-q"] + CLI_TINY) == 2
    assert main(["train", "--data", str(tmp_path / "nothing"), "-o", str(tmp_path / "x"), "-q"] + CLI_TINY) == 2


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_sigterm_saves_and_stops_cleanly(images, tmp_path):
    # The signal goes to the whole process group, as a terminal's Ctrl-C or a job scheduler's kill does, so the
    # data-loader worker gets it too: only the main process may react, and only once.
    run = tmp_path / "sig"
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    cli = list(CLI_TINY)
    cli[cli.index("--num-workers") + 1] = "1"
    cmd = [sys.executable, "-m", "dinokit", "train", "--data", str(images), "-o", str(run), "--epochs", "500", "-q"] + cli
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        started = _wait_for(lambda: len(read_metrics(run / "metrics.jsonl")) >= 3 or proc.poll() is not None, 120)
        assert started and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "no progress"
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "checkpoint saved" in err and "Traceback" not in err
    assert err.count("SIGTERM received") == 1, err
    ckpt = load_checkpoint(run / "checkpoint.pth")
    total = 500 * 4
    assert 3 <= ckpt["step"] < total
    # the log ends at the checkpoint, and the exported backbone is the checkpoint's teacher
    assert max(r["step"] for r in read_metrics(run / "metrics.jsonl")) == ckpt["step"]
    exported = load_model(weights=run / "teacher_backbone.safetensors").state_dict()
    teacher = {k[len("backbone."):]: v for k, v in ckpt["teacher"].items() if k.startswith("backbone.")}
    assert _states_equal(exported, teacher)
    # continue from exactly there
    step = ckpt["step"]
    more = DinoTrainer(images, run, progress=False).fit(resume=True, stop_at_step=step + 2)
    assert more.step_ == step + 2
