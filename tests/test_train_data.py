"""Multi-crop augmentation and the reproducible data pipeline of DINO training.

Also holds the small image generators the other ``test_train_*`` files use.
"""

from __future__ import annotations

import colorsys
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter, ImageOps

from dinokit.errors import DinokitError
from dinokit.train import augment
from dinokit.train.augment import MultiCropAugmentation, adjust_hue, random_resized_crop_box
from dinokit.train.data import EpochSampler, MultiCropDataset, collate_crops, find_images


# --------------------------------------------------------------------------- generators shared by the train tests
def texture_image(cls: int, rng: np.random.Generator, size: int = 32, classes: int = 4, hue_spread: float = 0.2) -> Image.Image:
    """A two-tone texture whose kind (horizontal/vertical stripes, checkerboard, noise) is the class.

    The hue family also depends on the class but overlaps between neighbouring
    classes (``hue_spread``), so colour alone does not separate them.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    hue = (cls / classes + rng.uniform(-hue_spread, hue_spread)) % 1.0
    c1 = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))) * 255
    c2 = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.4))) * 255
    period = rng.uniform(6, 10)
    ph = rng.uniform(0, 2 * np.pi, 2)
    kind = cls % 4
    if kind == 0:
        mask = np.sin(2 * np.pi * yy / period + ph[0]) > 0
    elif kind == 1:
        mask = np.sin(2 * np.pi * xx / period + ph[0]) > 0
    elif kind == 2:
        mask = (np.sin(2 * np.pi * xx / period + ph[0]) > 0) ^ (np.sin(2 * np.pi * yy / period + ph[1]) > 0)
    else:
        mask = rng.random((size, size)) < 0.5
    img = np.where(mask[..., None], c1, c2) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_texture_folder(root: Path, per_class: int, seed: int, classes: int = 4, size: int = 32) -> Path:
    """ImageFolder of :func:`texture_image` samples: ``root/class<c>/<i>.png``."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            texture_image(c, rng, size, classes).save(d / f"{i:03d}.png")
    return root


def make_noise_folder(root: Path, n: int, size: int = 24, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((rng.random((size, size + 4, 3)) * 255).astype(np.uint8)).save(root / f"{i:02d}.png")
    return root


# --------------------------------------------------------------------------- augmentation
def test_crop_box_follows_random_resized_crop():
    rng = random.Random(0)
    for _ in range(500):
        left, top, right, bottom = random_resized_crop_box(200, 100, (0.05, 0.4), rng)
        w, h = right - left, bottom - top
        assert 0 <= left and right <= 200 and 0 <= top and bottom <= 100
        assert 0.05 * 20000 * 0.9 <= w * h <= 0.4 * 20000 * 1.1
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # an extreme aspect ratio cannot fit: the largest centred crop with ratio 4/3
    assert random_resized_crop_box(1000, 10, (0.9, 1.0), random.Random(0)) == (493, 0, 506, 10)


def test_crops_are_deterministic_in_the_seed_and_shaped():
    img = Image.fromarray((np.random.default_rng(0).random((50, 60, 3)) * 255).astype(np.uint8))
    aug = MultiCropAugmentation(global_size=32, local_size=16, local_crops_number=3)
    a = aug(img, random.Random(7))
    b = aug(img, random.Random(7))
    c = aug(img, random.Random(8))
    assert [tuple(t.shape) for t in a] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(t.dtype == torch.uint8 for t in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert aug.ncrops == 5


def test_paper_probabilities_per_crop(monkeypatch):
    counts = {"blur": [], "solarize": 0, "jitter": 0, "mirror": 0, "crops": 0, "kind": None, "solarized_kinds": set()}

    class CountingBlur(ImageFilter.GaussianBlur):
        def __init__(self, radius=2):
            counts["blur"].append((counts["crops"], radius))
            super().__init__(radius)

    real_solarize, real_mirror, real_jitter = ImageOps.solarize, ImageOps.mirror, augment.color_jitter

    def solarize(img, threshold=128):
        assert threshold == 128
        counts["solarize"] += 1
        counts["solarized_kinds"].add(counts["kind"])
        return real_solarize(img, threshold)

    def mirror(img):
        counts["mirror"] += 1
        return real_mirror(img)

    def jitter(*a, **k):
        counts["jitter"] += 1
        return real_jitter(*a, **k)

    monkeypatch.setattr(ImageFilter, "GaussianBlur", CountingBlur)
    monkeypatch.setattr(ImageOps, "solarize", solarize)
    monkeypatch.setattr(ImageOps, "mirror", mirror)
    monkeypatch.setattr(augment, "color_jitter", jitter)
    aug = MultiCropAugmentation(global_size=8, local_size=8, local_crops_number=4)
    img = Image.new("RGB", (16, 16), (200, 100, 50))
    n = 600
    blur_by_kind = {"g1": 0, "g2": 0, "local": 0}
    for i in range(n):
        rng = random.Random(i)
        for k, spec in enumerate(aug.crops):
            counts["kind"] = k
            before = len(counts["blur"])
            aug.crop(img, spec, rng)
            counts["crops"] += 1
            if len(counts["blur"]) > before:
                blur_by_kind["g1" if k == 0 else "g2" if k == 1 else "local"] += 1
    total = counts["crops"]
    assert blur_by_kind["g1"] == n  # global crop 1 is always blurred
    assert abs(blur_by_kind["g2"] / n - 0.1) < 0.04
    assert abs(blur_by_kind["local"] / (4 * n) - 0.5) < 0.04
    assert abs(counts["solarize"] / n - 0.2) < 0.05 and counts["solarized_kinds"] == {1}  # second global crop only
    assert abs(counts["jitter"] / total - 0.8) < 0.03
    assert abs(counts["mirror"] / total - 0.5) < 0.03
    assert all(0.1 <= r <= 2.0 for _, r in counts["blur"])
    paper = MultiCropAugmentation()
    assert (paper.jitter, paper.jitter_p, paper.grayscale_p, paper.flip_p) == ((0.4, 0.4, 0.2, 0.1), 0.8, 0.2, 0.5)
    assert [(c.size, c.scale, c.blur_p, c.solarize_p) for c in paper.crops[:3]] == [
        (224, (0.4, 1.0), 1.0, 0.0), (224, (0.4, 1.0), 0.1, 0.2), (96, (0.05, 0.4), 0.5, 0.0)]
    assert paper.ncrops == 10


def test_grayscale_probability():
    aug = MultiCropAugmentation(global_size=8, local_size=8, local_crops_number=0, jitter_p=0.0)
    img = Image.new("RGB", (16, 16), (220, 40, 40))
    gray = 0
    n = 800
    for i in range(n):
        t = aug.crop(img, aug.crops[1], random.Random(i))
        arr = np.asarray(t).astype(int)
        gray += int(np.all(arr[..., 0] == arr[..., 1]) and np.all(arr[..., 1] == arr[..., 2]))
    assert abs(gray / n - 0.2) < 0.04


def test_adjust_hue_shifts_and_wraps():
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    assert adjust_hue(red, 0.0) is red
    half = np.asarray(adjust_hue(red, 0.5))[0, 0]
    assert half[0] < 10 and half[1] > 240 and half[2] > 240  # cyan
    third = np.asarray(adjust_hue(red, 1 / 3))[0, 0]
    assert third[1] > 240 and third[0] < 10  # green
    neg = np.asarray(adjust_hue(red, -1 / 3))[0, 0]
    assert neg[2] > 240 and neg[0] < 10  # wraps to blue


# --------------------------------------------------------------------------- dataset and sampler
def test_sampler_shards_the_same_permutation():
    single = EpochSampler(50, batch_size=6, seed=3, rank=0, world_size=1)
    ranks = [EpochSampler(50, batch_size=3, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in [single] + ranks:
        s.set_epoch(4)
    assert single.batches_per_epoch == ranks[0].batches_per_epoch == 8
    full = single.indices()
    assert len(full) == 48 and len(set(full)) == 48
    for b in range(8):
        step_single = set(full[b * 6 : (b + 1) * 6])
        step_ranks = set(ranks[0].indices()[b * 3 : (b + 1) * 3]) | set(ranks[1].indices()[b * 3 : (b + 1) * 3])
        assert step_single == step_ranks  # same images per optimisation step
    other = EpochSampler(50, 6, seed=3)
    other.set_epoch(5)
    assert other.indices() != full
    single.set_epoch(4, start_batch=5)
    assert single.indices() == full[30:] and len(single) == 18


def test_dataset_crops_depend_on_seed_epoch_and_index(tmp_path):
    root = make_noise_folder(tmp_path / "imgs", 3)
    ds = MultiCropDataset(root, MultiCropAugmentation(16, 8, 2), seed=1)
    a = ds[0]
    assert torch.equal(a[0], MultiCropDataset(root, MultiCropAugmentation(16, 8, 2), seed=1)[0][0])
    ds.set_epoch(1)
    assert not torch.equal(a[0], ds[0][0])
    batch = collate_crops([ds[0], ds[1], ds[2]])
    assert [tuple(b.shape) for b in batch] == [(3, 3, 16, 16)] * 2 + [(3, 3, 8, 8)] * 2


def test_find_images_errors(tmp_path):
    with pytest.raises(DinokitError, match="no such folder"):
        find_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DinokitError, match="contains no images"):
        find_images(tmp_path / "empty")
    root = make_texture_folder(tmp_path / "tex", per_class=2, seed=0, classes=2)
    assert len(find_images(root)) == 4  # recursive (ImageFolder layout)
