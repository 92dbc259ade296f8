"""Runs that silently do less than asked are announced: warm-ups longer than the run, images left out by whole batches."""

from __future__ import annotations

import warnings

import pytest

from dinokit.cli import main
from dinokit.train import DinoTrainer, TrainConfig
from dinokit.errors import DinokitWarning
from dinokit.train.notices import short_run_problems, warn_dropped_images

from .test_train_data import make_noise_folder
from .test_train_loop import CLI_TINY, TINY


def _messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, DinokitWarning)]


def test_short_run_problems_name_the_option_and_values():
    assert short_run_problems(TrainConfig.from_preset(**TINY)) == []
    cfg = TrainConfig.from_preset(**dict(TINY, epochs=3, warmup_epochs=10, warmup_teacher_temp_epochs=30,
                                         freeze_last_layer=3))
    lr, temp, freeze = short_run_problems(cfg)
    assert "warmup_epochs=10" in lr and "epochs=3" in lr and "never decays" in lr
    assert "warmup_teacher_temp_epochs=30" in temp and "epochs=3" in temp and "from 0.04 to 0.07 over 3" in temp
    assert "freeze_last_layer=3" in freeze and "never trained" in freeze
    # a warm-up exactly as long as the run still reaches its end value: no warning
    assert short_run_problems(cfg.replace(warmup_epochs=3, warmup_teacher_temp_epochs=3, freeze_last_layer=2)) == []
    assert all("\n" not in m for m in (lr, temp, freeze))


def test_dropped_images_counts():
    with pytest.warns(DinokitWarning, match="43 images in batches of 16: each epoch leaves out 11 images"):
        assert warn_dropped_images(43, 16) == 11
    with pytest.warns(DinokitWarning, match=r"batches of 4 x 2 processes: each epoch leaves out 2 images"):
        assert warn_dropped_images(10, 4, world_size=2) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_dropped_images(32, 16) == 0


def test_trainer_warns_before_training(tmp_path):
    images = make_noise_folder(tmp_path / "imgs", 11)
    with pytest.warns(DinokitWarning) as record:
        DinoTrainer(images, tmp_path / "run", progress=False, **dict(TINY, warmup_epochs=5)).fit(stop_at_step=0)
    messages = _messages(record)
    assert any("11 images in batches of 4: each epoch leaves out 3 images" in m for m in messages)
    assert any("warmup_epochs=5 is longer than the run (epochs=2)" in m for m in messages)


def test_cli_train_shows_each_warning_as_one_line_even_when_quiet(tmp_path, capsys):
    images = make_noise_folder(tmp_path / "imgs", 6)
    rc = main(["train", "--data", str(images), "-o", str(tmp_path / "run"), "--epochs", "1", "--stop-after-epoch", "0",
               "-q"] + CLI_TINY)
    err = capsys.readouterr().err.splitlines()
    assert rc == 0
    warned = [line for line in err if line.startswith("dinokit: warning: ")]
    assert len(warned) == 2, err
    assert any("6 images in batches of 4: each epoch leaves out 2 images" in w for w in warned)
    assert any("freeze_last_layer=1 covers the whole run (epochs=1)" in w for w in warned)
    assert not any("Warning" in line or "warnings.warn" in line for line in err)
