"""Batched multi-crop augmentation on the device draws crops like the per-image PIL path (statistics, on CPU)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from dinokit.train import DinoTrainer, TrainConfig
from dinokit.train.augment import MultiCropAugmentation, adjust_hue, random_resized_crop_box
from dinokit.train.batch_augment import (
    BatchMultiCrop,
    collate_sources,
    draw_boxes,
    draw_crop,
    gaussian_blur,
    shift_hue,
)
from dinokit.train.builders import use_batch_augment

from .test_train_data import make_noise_folder
from .test_train_loop import TINY

N = 400  # samples per statistic: a fraction p is estimated within about 2.5 standard errors by the tolerances below
AUG = MultiCropAugmentation(global_size=32, local_size=16, local_crops_number=2)


def _pil_crops(aug: MultiCropAugmentation, img: Image.Image, n: int = N) -> list[np.ndarray]:
    """``n`` samples of every crop from the PIL path: a list (one per crop kind) of ``(n, 3, S, S)`` arrays."""
    samples = [aug(img, random.Random(i)) for i in range(n)]
    return [np.stack([s[c].numpy() for s in samples]) for c in range(aug.ncrops)]


def _batch_crops(aug: MultiCropAugmentation, img: Image.Image, n: int = N) -> list[np.ndarray]:
    bm = BatchMultiCrop(aug)
    canvas, sizes = collate_sources([bm.source(img)] * n)
    return [c.numpy() for c in bm(canvas, sizes, torch.Generator().manual_seed(0))]


def _image(fn, h: int = 48, w: int = 64) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.clip(fn(yy / h, xx / w), 0, 255).astype(np.uint8))


def test_crop_boxes_follow_random_resized_crop():
    sizes = torch.tensor([[48, 64], [40, 200]]).repeat(N // 2, 1)
    for scale in ((0.4, 1.0), (0.05, 0.4)):
        boxes = draw_boxes(sizes, scale, torch.Generator().manual_seed(1))
        left, top, w, h = boxes.unbind(1)
        assert bool((left >= 0).all() and (top >= 0).all() and (left + w <= sizes[:, 1]).all()
                    and (top + h <= sizes[:, 0]).all())
        rng = random.Random(1)
        ref = [random_resized_crop_box(int(sw), int(sh), scale, rng) for sh, sw in sizes.tolist()]
        ref_area = np.array([(r - le) * (b - t) for le, t, r, b in ref]) / (sizes[:, 0] * sizes[:, 1]).numpy()
        ref_aspect = np.log([(r - le) / (b - t) for le, t, r, b in ref])
        area = (w * h / (sizes[:, 0] * sizes[:, 1])).numpy()
        aspect = torch.log(w / h).numpy()
        assert area.mean() == pytest.approx(ref_area.mean(), abs=0.03)
        assert area.std() == pytest.approx(ref_area.std(), abs=0.03)
        assert aspect.mean() == pytest.approx(ref_aspect.mean(), abs=0.04)
        assert aspect.std() == pytest.approx(ref_aspect.std(), abs=0.03)


def test_flip_fraction_matches():
    # dark on the left, bright on the right: a crop is flipped when its left half is the brighter one
    img = _image(lambda y, x: np.stack([40 + 180 * x] * 3, axis=-1))
    aug = replace(AUG, jitter_p=0.0, grayscale_p=0.0)
    for crops in (_pil_crops(aug, img), _batch_crops(aug, img)):
        for c in (crops[0], crops[2]):
            half = c.shape[-1] // 2
            flipped = c[..., :half].mean(axis=(1, 2, 3)) > c[..., half:].mean(axis=(1, 2, 3))
            assert flipped.mean() == pytest.approx(0.5, abs=0.07)


def test_grayscale_and_solarize_fractions_match():
    # colourful and bright (all pixels from 140 up): grey outputs have equal channels, solarised ones turn dark
    img = _image(lambda y, x: np.stack([140 + 100 * x, 140 + 100 * y, 240 - 100 * x], axis=-1))
    aug = replace(AUG, jitter_p=0.0)
    stats = []
    for crops in (_pil_crops(aug, img), _batch_crops(aug, img)):
        c0 = crops[0].astype(int)
        gray = (np.abs(c0[:, 0] - c0[:, 1]).max(axis=(1, 2)) <= 2) & (np.abs(c0[:, 1] - c0[:, 2]).max(axis=(1, 2)) <= 2)
        solarized = crops[1].mean(axis=(1, 2, 3)) < 128
        no_solarize_on_first = (crops[0].mean(axis=(1, 2, 3)) < 128).mean()
        stats.append((gray.mean(), solarized.mean(), no_solarize_on_first))
    for gray, sol, first in stats:
        assert gray == pytest.approx(0.2, abs=0.06) and sol == pytest.approx(0.2, abs=0.06) and first == 0
    assert stats[0][0] == pytest.approx(stats[1][0], abs=0.08) and stats[0][1] == pytest.approx(stats[1][1], abs=0.08)


def test_brightness_shift_under_jitter_matches():
    # a mid-grey image: contrast, saturation and hue leave it alone, brightness scales it by U(0.6, 1.4) with p 0.8
    img = _image(lambda y, x: np.full(y.shape + (3,), 120.0))
    aug = replace(AUG, grayscale_p=0.0)
    want_std = math.sqrt(0.8 * 0.8**2 / 12)
    ratios = []
    for crops in (_pil_crops(aug, img), _batch_crops(aug, img)):
        r = crops[0].mean(axis=(1, 2, 3)) / 120.0
        assert r.mean() == pytest.approx(1.0, abs=0.04) and r.std() == pytest.approx(want_std, abs=0.03)
        # not jittered (p 0.2), or by a factor within 1 +- 0.01 (p 0.8 x 0.025)
        assert (np.abs(r - 1) < 0.01).mean() == pytest.approx(0.22, abs=0.07)
        ratios.append(r)
    assert ratios[0].mean() == pytest.approx(ratios[1].mean(), abs=0.05)


def test_blur_draws_and_kernel():
    sizes = torch.tensor([[48, 64]]).repeat(N, 1)
    gen = torch.Generator().manual_seed(2)
    for spec, p in zip(AUG.crops[:3], (1.0, 0.1, 0.5)):
        d = draw_crop(sizes, spec, AUG, gen)
        assert d.blur.float().mean().item() == pytest.approx(p, abs=0.07)
        assert d.sigma.min() >= 0.1 and d.sigma.max() <= 2.0 and d.sigma.mean().item() == pytest.approx(1.05, abs=0.1)
    # an impulse spreads with the requested standard deviation, per image
    x = torch.zeros(2, 3, 31, 31)
    x[:, :, 15, 15] = 1.0
    y = gaussian_blur(x, torch.tensor([0.8, 1.6]))
    coords = torch.arange(31.0) - 15
    for i, sigma in enumerate((0.8, 1.6)):
        row = y[i, 0].sum(dim=0)
        assert float(row.sum()) == pytest.approx(1.0, abs=1e-5)
        assert math.sqrt(float((row * coords**2).sum())) == pytest.approx(sigma, rel=0.05)


def test_hue_shift_matches_pil():
    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8))
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(shift_hue(x, torch.tensor([0.0])), x, atol=1e-5, rtol=0)
    for h in (0.05, -0.1, 0.3):
        ref = torch.from_numpy(np.array(adjust_hue(img, h))).permute(2, 0, 1)[None].float() / 255
        assert float((shift_hue(x, torch.tensor([h])) - ref).abs().mean()) < 3 / 255  # PIL works in 8-bit HSV


def test_trainer_uses_it_on_request_only(tmp_path):
    cfg = TrainConfig.from_preset(**TINY)
    assert not use_batch_augment(cfg, torch.device("cpu")) and use_batch_augment(cfg, torch.device("cuda", 0))
    assert not use_batch_augment(cfg.replace(batch_augment=False), torch.device("cuda", 0))
    images = make_noise_folder(tmp_path / "imgs", 8)
    runs = [DinoTrainer(images, tmp_path / f"r{i}", progress=False, **dict(TINY, batch_augment=True)).fit(stop_at_step=2)
            for i in range(2)]
    assert runs[0].run_.batch_augment is not None and runs[0].step_ == 2
    a, b = (r.teacher_.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)  # reproducible from the seed
