"""Part co-segmentation: planted parts, three stages, augmentations, CRF, outputs, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dinokit.cli import main
from dinokit.errors import DinokitError
from dinokit.tasks.parts import (
    BACKGROUND,
    PartCoSegmentation,
    PartModel,
    crop_flip_augmentations,
    label_png,
    part_cosegment,
    parts_visualization,
)

from .synthetic_sets import PART0, PATCH, make_set, same_partition

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def planted_parts(truth: np.ndarray) -> np.ndarray:
    return np.where(truth >= PART0, truth - PART0, BACKGROUND)


def pixel_truth(truth: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(planted_parts(truth), PATCH, 0), PATCH, 1)


def match_accuracy(found: np.ndarray, planted: np.ndarray) -> float:
    """Pixel accuracy after mapping each found label to the planted label it overlaps most."""
    mapped = np.full_like(found, -99)
    for f in np.unique(found):
        vals, counts = np.unique(planted[found == f], return_counts=True)
        mapped[found == f] = vals[counts.argmax()]
    if len(np.unique(found)) != len(np.unique(planted)):
        return 0.0
    return float((mapped == planted).mean())


@pytest.fixture(scope="module")
def four_parts():
    feats, truths = make_set(n_images=6, n_parts=4, grid=(12, 16), seed=1)
    return feats, truths


def test_planted_parts_are_recovered_exactly(four_parts):
    feats, truths = four_parts
    model = PartCoSegmentation(num_parts=4, sample_interval=2, crf=False, progress=False).fit_features(feats)
    assert model.part_model_.num_parts == 4
    found = [model.parts(i)[::PATCH, ::PATCH] for i in range(len(truths))]
    # one consistent labelling across all images: part j of every image gets the same label
    assert same_partition(np.stack(found), np.stack([planted_parts(t) for t in truths]))
    assert all((f == BACKGROUND).sum() == (t < PART0).sum() for f, t in zip(found, truths))


def test_crf_keeps_planted_parts_at_pixel_level(four_parts):
    feats, truths = four_parts
    model = PartCoSegmentation(num_parts=4, sample_interval=2, progress=False).fit_features(feats)
    for i in range(2):
        labels = model.parts(i)
        assert labels.shape == (12 * PATCH, 16 * PATCH) and labels.dtype == np.int32
        assert match_accuracy(labels, pixel_truth(truths[i])) > 0.99
    assert model.timings_["crf"] > 0


def test_three_stages_drop_a_distractor():
    # a salient blob in 5 of 6 images joins the foreground (5/6 >= 75%) but is not in every image
    feats, truths = make_set(n_images=6, n_parts=2, grid=(12, 16), seed=3, distractor_in=(0, 1, 2, 3, 4))
    two = PartCoSegmentation(num_parts=2, sample_interval=2, crf=False, progress=False).fit_features(feats)
    three = PartCoSegmentation(num_parts=2, sample_interval=2, crf=False, three_stages=True,
                               progress=False).fit_features(feats)
    assert len(three.common_labels_) < three.second_stage_n_clusters_
    for i, t in enumerate(truths):
        found = three.parts(i)[::PATCH, ::PATCH]
        assert same_partition(found, planted_parts(t))  # the distractor is background
    # with two stages the distractor takes a part label in the images that have it
    assert not all(same_partition(two.parts(i)[::PATCH, ::PATCH], planted_parts(t)) for i, t in enumerate(truths))


def test_augmentations_add_descriptors_but_do_not_vote():
    flags = [False] * 4 + [True] * 4
    feats, truths = make_set(n_images=8, n_parts=2, grid=(12, 16), seed=4, augmentation=flags)
    model = PartCoSegmentation(num_parts=2, sample_interval=2, crf=False, progress=False).fit_features(feats)
    assert model.votes_.max() == 4  # only the four originals vote
    results = list(model.iter_parts())
    assert [i for i, _ in results] == [0, 1, 2, 3]
    for i, labels in results:
        assert same_partition(labels[::PATCH, ::PATCH], planted_parts(truths[i]))
    assert model.summary()["n_augmentations"] == 4


def test_crop_flip_augmentations():
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    augs = crop_flip_augmentations(rgb, 2, np.random.default_rng(1), "cat")
    assert [n for n, _ in augs] == ["cat_aug_0", "cat_flip_aug_0", "cat_aug_1", "cat_flip_aug_1"]
    again = crop_flip_augmentations(rgb, 2, np.random.default_rng(1), "cat")
    for (_, a), (_, b) in zip(augs, again):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def is_crop_of(crop, img):
        h, w = crop.shape[:2]
        return any(np.array_equal(img[t : t + h, l : l + w], crop)
                   for t in range(img.shape[0] - h + 1) for l in range(img.shape[1] - w + 1))

    for name, im in augs:
        arr = np.asarray(im)
        assert arr.shape == (38, 57, 3)  # int(0.95 * size)
        assert is_crop_of(arr, rgb[:, ::-1] if "flip" in name else rgb)


def test_part_model_without_background_centres():
    parts = np.eye(3, 8, dtype=np.float32)
    model = PartModel(parts, np.zeros((0, 8), np.float32))
    desc = np.repeat(parts, [2, 1, 1], axis=0)  # 4 patches on a 2x2 grid
    d = model.distances(desc, (2, 2))
    assert d.shape == (2, 2, 4)
    assert np.allclose(d[..., 3], 4.0)
    rgb = np.zeros((16, 16, 3), np.uint8)
    lab = model.segment(rgb, desc, (2, 2), crf=False)
    assert lab.shape == (16, 16) and (lab >= 0).all()
    assert lab[0, 0] == 0 and lab[15, 15] == 2


def test_label_png_and_visualization():
    labels = np.array([[-1, 0], [1, 3]], np.int32)
    png = label_png(labels, 4, size=(4, 4))
    assert png.mode == "P" and png.size == (4, 4)
    np.testing.assert_array_equal(np.asarray(png)[::2, ::2], labels + 1)
    assert png.getpalette()[3:6] == [255, 0, 0]  # part 0 is the reference's red
    rgb = np.full((2, 2, 3), 100, np.uint8)
    vis = parts_visualization(rgb, labels, 4)
    assert tuple(vis[0, 1]) == (178, 50, 50)  # half image, half red
    assert vis[0, 0, 0] in (191, 255)  # background over the checkerboard


def test_part_legend():
    from dinokit.tasks.parts import PART_COLORS, part_legend, with_legend

    strip = part_legend(512, 4)  # vis pictures are at least 512 pixels on the long side
    assert strip.shape[1] == 512 and 20 <= strip.shape[0] < 40  # one row, text readable (not 8 px)
    flat = {tuple(c) for c in strip.reshape(-1, 3).tolist()}
    assert all(c in flat for c in PART_COLORS[:4]) and PART_COLORS[4] not in flat
    many = part_legend(512, 12)
    assert many.shape[0] > strip.shape[0]  # wrapped over more rows
    img = np.zeros((50, 512, 3), np.uint8)
    both = with_legend(img, 4)
    assert both.shape == (50 + strip.shape[0], 512, 3) and (both[:50] == 0).all()


def test_no_foreground_is_a_clear_error():
    feats, _ = make_set(n_images=4, n_parts=2, seed=5)
    with pytest.raises(DinokitError, match="no foreground found"):
        PartCoSegmentation(num_parts=2, sample_interval=2, thresh=0.99, progress=False).fit_features(feats)
    with pytest.raises(DinokitError, match="remove_outliers"):
        PartCoSegmentation(remove_outliers=True)
    with pytest.raises(DinokitError, match="num_parts"):
        PartCoSegmentation(num_parts=0)


# --- end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_extractor(tiny_weights):
    from dinokit.features import Extractor

    return Extractor(weights=tiny_weights, stride=4, load_size=64, device="cpu")


def test_end_to_end_parts_with_augmentations(data_dir, tiny_extractor, tmp_path):
    images = sorted((data_dir / "icoseg" / "brown-bear" / "images").glob("*.jpg"))[:3]
    kwargs = dict(load_size=64, stride=4, sample_interval=10, num_parts=3, votes_percentage=60,
                  num_crop_augmentations=1, progress=False)
    info = part_cosegment(images, tmp_path, tiny_extractor, save_intermediate=True, **kwargs)
    assert info["n_augmentations"] == 6 and info["num_parts"] == 3
    for img in images:
        lab = np.asarray(Image.open(tmp_path / f"{img.stem}_parts.png"))
        with Image.open(img) as im:
            assert lab.shape == (im.height, im.width)
        assert lab.max() <= 3
        assert (tmp_path / f"{img.stem}_vis.png").is_file()
        assert (tmp_path / f"{img.stem}_clustering.png").is_file()
    assert not list(tmp_path.glob("*aug*"))  # augmentations get no outputs
    done = json.loads((tmp_path / "done.json").read_text())
    assert done["method"] == "part_cosegmentation" and done["settings"]["elbow_second_stage"] == 0.94
    # same seed, same parts
    model = PartCoSegmentation(tiny_extractor, **kwargs).fit(images)
    first = np.asarray(Image.open(tmp_path / f"{images[0].stem}_parts.png"))
    again = np.asarray(label_png(model.parts(0), 3, first.shape))
    np.testing.assert_array_equal(first, again)
    assert part_cosegment(images, tmp_path, tiny_extractor, **kwargs) is None  # finished: skipped


def test_cli_parts_three_stages(data_dir, trained_weights, tmp_path, capsys):
    # the trained tiny model has real structure: a part common to all four cats survives the third stage
    images = sorted((data_dir / "afhq" / "src" / "cat").glob("*.jpg"))[:4]
    out = tmp_path / "out"
    code = main(["parts", *map(str, images), "-o", str(out), "--weights", str(trained_weights), "--stride", "8",
                 "--load-size", "96", "--sample-interval", "5", "--num-parts", "2", "--three-stages",
                 "--mask-size", "load", "-q"])
    assert code == 0, capsys.readouterr().err
    assert len(list(out.glob("*_parts.png"))) == 4
    lab = np.asarray(Image.open(out / f"{images[0].stem}_parts.png"))
    assert lab.shape == (96, 96) and lab.max() <= 2
    done = json.loads((out / "done.json").read_text())
    assert done["settings"]["three_stages"] is True
    assert 0 < len(done["common_labels"]) < done["second_stage_n_clusters"]
