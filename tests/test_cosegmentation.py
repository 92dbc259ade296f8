"""Co-segmentation: clustering, elbow and voting on planted sets; outliers; end to end on iCoseg."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from dinokit.blocks.refine import upsample_mask
from dinokit.cli import main
from dinokit.errors import DinokitError, ImageError
from dinokit.tasks.cosegmentation import (
    CoSegmentation,
    checkerboard_visualization,
    cosegment,
    find_outliers,
    images_of_set,
    vote_salient_clusters,
)

from .synthetic_sets import PART0, make_set

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --- voting and outliers -------------------------------------------------------------
def test_votes_follow_the_reference_rule():
    labels = [np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), np.array([0, 0, 2, 2]), np.array([1, 1, 1, 1])]
    sal = [np.array([0.5, 0.3, 0.0, 0.9]), np.array([0.2, 0.07, 0.06, 0.05]),
           np.array([0.1, 0.1, 0.065, 0.065]), np.array([0.3, 0.3, 0.3, 0.3])]
    votes, salient = vote_salient_clusters(labels, sal, 3, thresh=0.065, votes_percentage=75)
    # cluster 0 is salient in images 0, 1, 2 (image 3 has none of it: no vote)
    # cluster 1: image 0 mean 0.0, image 1 mean 0.06, image 3 mean 0.3 -> 1 vote
    # cluster 2: image 0 mean 0.9, image 2 mean 0.065 (not above the threshold) -> 1 vote
    assert votes.tolist() == [3, 1, 1]
    assert salient.tolist() == [0]  # ceil(4 * 0.75) = 3 votes needed
    _, salient50 = vote_salient_clusters(labels, sal, 3, thresh=0.065, votes_percentage=50)
    assert salient50.tolist() == [0]
    _, salient25 = vote_salient_clusters(labels, sal, 3, thresh=0.065, votes_percentage=25)
    assert salient25.tolist() == [0, 1, 2]


def test_find_outliers():
    rng = np.random.default_rng(0)
    cls = np.ones((6, 8)) + 0.1 * rng.standard_normal((6, 8))
    cls[4] = -cls[4]
    inliers, sim = find_outliers(cls, 0.7)
    assert inliers.tolist() == [True, True, True, True, False, True]
    assert sim[4] < 0 and (sim[inliers] > 0.7).all()
    assert find_outliers(cls, -1.0)[0].all()


# --- planted foreground ----------------------------------------------------------------
def test_planted_foreground_is_recovered_exactly():
    feats, truths = make_set(n_images=6, seed=1)
    model = CoSegmentation(sample_interval=3, progress=False).fit_features(feats)
    # background halves, foreground, and (the reference's rule) the first k that does not help enough
    assert model.n_clusters_ >= 3
    assert len(model.objectives_) == model.n_clusters_
    for i, truth in enumerate(truths):
        np.testing.assert_array_equal(model.coarse_mask(i), truth >= PART0)
    assert model.votes_.max() == 6
    # GrabCut at image resolution keeps the (pixel-aligned) planted foreground
    for i, truth in enumerate(truths[:3]):
        mask, refined = model.mask_with_info(i)
        expect = upsample_mask(truth >= PART0, mask.shape)
        assert mask.shape == (80, 96)
        assert (mask == expect).mean() > 0.97


def test_planted_foreground_is_deterministic():
    feats, _ = make_set(n_images=5, noise=0.2, seed=2)
    a = CoSegmentation(sample_interval=2, progress=False, seed=5).fit_features(feats)
    b = CoSegmentation(sample_interval=2, progress=False, seed=5).fit_features(feats)
    assert a.n_clusters_ == b.n_clusters_
    np.testing.assert_array_equal(a.kmeans_.cluster_centers_, b.kmeans_.cluster_centers_)
    for la, lb in zip(a.labels_, b.labels_):
        np.testing.assert_array_equal(la, lb)


def test_torch_backend_recovers_the_same_foreground():
    feats, truths = make_set(n_images=4, seed=3)
    model = CoSegmentation(sample_interval=3, progress=False, kmeans_backend="torch").fit_features(feats)
    for i, truth in enumerate(truths):
        np.testing.assert_array_equal(model.coarse_mask(i), truth >= PART0)


def test_outliers_are_left_out_and_get_empty_masks():
    feats, truths = make_set(n_images=6, seed=4, outliers=(2,))
    model = CoSegmentation(sample_interval=3, remove_outliers=True, progress=False).fit_features(feats)
    assert model.inliers_.tolist() == [True, True, False, True, True, True]
    assert model.labels_[2] is None
    assert model.votes_.max() == 5  # the outlier does not vote
    mask, refined = model.mask_with_info(2)
    assert mask.shape == (80, 96) and not mask.any() and not refined
    for i in (0, 1, 3):
        np.testing.assert_array_equal(model.coarse_mask(i), truths[i] >= PART0)
    assert model.summary()["outliers"] == ["img2"]


def test_high_threshold_gives_empty_masks_with_a_warning(tmp_path):
    from dinokit.tasks.cosegmentation import save_cosegmentation

    feats, _ = make_set(n_images=4, seed=5)
    with pytest.warns(UserWarning, match="no cluster got votes"):
        model = CoSegmentation(sample_interval=3, thresh=0.95, progress=False).fit_features(feats)
    assert model.salient_labels_.size == 0
    assert not model.coarse_mask(0).any()
    info = save_cosegmentation(model, tmp_path, progress=False)
    assert not any(info["grabcut_refined"].values())
    assert not np.asarray(Image.open(tmp_path / "img0_mask.png")).any()
    vis = np.asarray(Image.open(tmp_path / "img0_vis.png"))
    assert vis[:5].max() < 191 <= vis[-5:].min()  # a dark note band on top says why it is all checkerboard


def test_parameter_validation():
    with pytest.raises(DinokitError, match="votes_percentage"):
        CoSegmentation(votes_percentage=150)
    with pytest.raises(DinokitError, match="sample_interval"):
        CoSegmentation(sample_interval=0)
    with pytest.raises(DinokitError, match="elbow"):
        CoSegmentation(elbow=1.5)
    with pytest.raises(DinokitError, match="stride"):
        CoSegmentation(stride="half")
    assert CoSegmentation().stride == "auto" and CoSegmentation(stride=8).stride == 8


def test_elbow_lookahead_grows_with_the_set(tmp_path):
    from dinokit.blocks.store import DescriptorStore
    from dinokit.tasks.cosegmentation import elbow_lookahead

    small = DescriptorStore("memory")
    small.append(np.ones((100, 4), np.float32))
    assert elbow_lookahead(small) == 1  # the reference's loop
    disk = DescriptorStore("disk", directory=tmp_path)
    disk.append(np.ones((100, 4), np.float32))
    assert elbow_lookahead(disk) == 3
    disk.close()


def test_checkerboard_visualization():
    rgb = np.full((20, 30, 3), 7, np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:10] = True
    vis = checkerboard_visualization(rgb, mask)
    assert (vis[mask] == 7).all()
    assert set(np.unique(vis[~mask])) == {191, 255}
    assert vis[0, 0, 0] != vis[0, 10, 0]


# --- end to end on iCoseg with the golden tiny model -------------------------------------
@pytest.fixture(scope="module")
def goose(data_dir):
    images = sorted((data_dir / "icoseg" / "goose" / "images").glob("*.jpg"))[:4]
    assert len(images) == 4
    return images


@pytest.fixture(scope="module")
def tiny_extractor(tiny_weights):
    from dinokit.features import Extractor

    return Extractor(weights=tiny_weights, stride=4, load_size=64, device="cpu")


def test_grabcut_on_several_threads_gives_the_masks_of_one(goose, trained_weights):
    """GrabCut runs on the CPU cores at once (it releases the GIL); the masks equal the one-at-a-time ones."""
    model = CoSegmentation(weights=trained_weights, load_size=64, sample_interval=10, thresh=0.05,
                           votes_percentage=50, device="cpu", progress=False).fit(goose)
    try:
        one = list(model.masks_with_info(workers=1))
        four = list(model.masks_with_info(workers=4))
        assert any(ok for _, ok in one)  # GrabCut really ran
        assert all(np.array_equal(a, b) and oa == ob for (a, oa), (b, ob) in zip(one, four))
    finally:
        model.close()


def test_end_to_end_icoseg(goose, tiny_extractor, tmp_path):
    kwargs = dict(load_size=64, stride=4, sample_interval=10, progress=False)
    info = cosegment(goose, tmp_path / "out", tiny_extractor, save_intermediate=True, **kwargs)
    out = tmp_path / "out"
    for img in goose:
        mask = np.array(Image.open(out / f"{img.stem}_mask.png"))
        with Image.open(img) as im:
            assert mask.shape == (im.height, im.width)
        assert set(np.unique(mask)) <= {0, 255}
        vis = Image.open(out / f"{img.stem}_vis.png")
        # drawn for people: the original's shape, its long side brought into 512..1024 pixels
        assert 512 <= max(vis.size) <= 1024
        assert abs(vis.width / vis.height - im.width / im.height) < 0.01
        for kind in ("saliency", "clustering"):
            assert (out / f"{img.stem}_{kind}.png").is_file()
    done = json.loads((out / "done.json").read_text())
    assert done["n_images"] == 4 and done["n_clusters"] == info["n_clusters"]
    assert done["settings"]["low_res_saliency_maps"] is True  # the reference's default
    assert done["settings"]["thresh"] == 0.065 and done["settings"]["elbow"] == 0.975
    # deterministic for a fixed seed: the same clusters and masks again
    model = CoSegmentation(tiny_extractor, **kwargs).fit(goose)
    assert model.n_clusters_ == info["n_clusters"]
    assert model.salient_labels_.tolist() == info["salient_labels"]
    first = np.array(Image.open(out / f"{goose[0].stem}_mask.png")) > 0
    again = upsample_mask(model.mask(0), first.shape)
    np.testing.assert_array_equal(first, again)
    # a finished set is skipped
    assert cosegment(goose, out, tiny_extractor, **kwargs) is None


def test_same_pass_saliency_and_binned_outlier_path(goose, tiny_extractor):
    model = CoSegmentation(tiny_extractor, load_size=64, stride=4, sample_interval=10, low_res_saliency_maps=False,
                           bin=True, remove_outliers=True, progress=False).fit(goose[:3])
    it = model.items_[0]
    assert model.saliency_[0].shape == it.grid
    sal = model.saliency_[0]
    assert sal.min() == 0 and sal.max() == pytest.approx(1)  # min-max normalised on the descriptor grid
    assert model.features_.store.dim == 17 * 48  # log-binned key descriptors of a 48-d model
    assert model.features_.cls.shape == (3, 48)
    assert model.inliers_.shape == (3,)


def test_cli_end_to_end_and_clear_errors(goose, tiny_weights, tmp_path, capsys):
    root = tmp_path / "sets"
    (root / "geese").mkdir(parents=True)
    for img in goose[:3]:
        shutil.copy(img, root / "geese" / img.name)
    (root / "single").mkdir()
    shutil.copy(goose[0], root / "single" / goose[0].name)
    (root / "empty").mkdir()
    args = ["cosegment", "--sets-root", str(root), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights),
            "--load-size", "64", "--sample-interval", "10", "-q"]
    assert main(args) == 1  # two sets could not run
    err = capsys.readouterr().err
    assert "error: set empty:" in err and "no image files found" in err
    assert "error: set single:" in err and "needs at least 2 images" in err
    assert "2 of 3 set(s) failed: empty, single" in err  # the summary, although -q
    assert (tmp_path / "out" / "geese" / "done.json").is_file()
    assert len(list((tmp_path / "out" / "geese").glob("*_mask.png"))) == 3
    # rerun with the same settings: the finished set is skipped, the failed ones are tried again
    assert main(args) == 1
    assert "skipped 1 already done with these settings" in capsys.readouterr().err
    # a rerun with another setting refuses, naming the difference, before loading the model
    assert main([*args, "--elbow", "0.9"]) == 2
    assert "elbow: 0.975 -> 0.9" in capsys.readouterr().err
    # one set given directly
    assert main(["cosegment", str(root / "single"), "-o", str(tmp_path / "o2"), "--weights", str(tiny_weights),
                 "--load-size", "64", "-q"]) == 2
    assert "needs at least 2 images" in capsys.readouterr().err
    assert main(["cosegment", str(root / "empty"), "-o", str(tmp_path / "o3"), "--weights", str(tiny_weights), "-q"]) == 2
    assert "no image files found" in capsys.readouterr().err


def test_images_of_set(data_dir, tmp_path):
    group = data_dir / "icoseg" / "goose"
    found = images_of_set(group)  # no images of its own: its images/ subfolder, not masks/
    assert found and all(p.parent.name == "images" for p in found)
    with pytest.raises(ImageError, match="no image files"):
        images_of_set(tmp_path)
