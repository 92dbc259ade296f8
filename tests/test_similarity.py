"""Similarity maps: the array API against brute force, pixel alignment of upsampling, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dinokit.blocks.matching import refine_peak
from dinokit.cli import main
from dinokit.errors import DinokitError
from dinokit.features import Extractor, GridGeometry
from dinokit.tasks.similarity import SimilarityIndex, similarity_maps

pytestmark = pytest.mark.usefixtures("one_thread_module")


# non-square, sides not multiples of the stride, original size not a multiple of the resized one
GEOMS = [GridGeometry((7, 10), 8, 4, (34, 47), (101, 139)), GridGeometry((9, 6), 8, 4, (41, 30), (77, 57))]


@pytest.fixture(scope="module")
def index():
    g = torch.Generator().manual_seed(0)
    descs = [torch.randn(geo.num_patches, 12, generator=g) for geo in GEOMS]
    return SimilarityIndex(descs, GEOMS), descs


def test_query_matches_brute_force(index):
    idx, descs = index
    xy = (60.0, 45.0)  # original pixels of image 0
    q = GEOMS[0].xy_to_index(xy, original=True)
    maps = idx.query(0, xy)
    assert len(maps) == 2
    for m, d, geo in zip(maps, descs, GEOMS):
        expected = F.cosine_similarity(descs[0][q][None], d, dim=1).reshape(geo.grid)
        np.testing.assert_allclose(m.scores, expected.numpy(), atol=1e-6)
        best = int(expected.flatten().argmax())
        assert m.best_index == best
        np.testing.assert_allclose(m.best_xy_resized, geo.index_to_xy(best))
        np.testing.assert_allclose(m.best_xy, geo.index_to_xy(best, original=True))
    assert maps[0].best_index == q and maps[0].best_score == pytest.approx(1.0, abs=1e-6)
    only_b = idx.query(0, xy, targets=[1])
    np.testing.assert_allclose(only_b[0].scores, maps[1].scores, atol=1e-6)


def test_masks_and_errors(index):
    idx, _ = index
    q = 23
    mask = np.ones(GEOMS[0].grid, dtype=bool)
    mask.flat[q] = False
    m = idx.query_index(0, q, masks={0: mask})[0]
    assert m.best_index != q and np.isneginf(m.scores.flat[q])
    assert np.isfinite(m.upsample()).all()
    with pytest.raises(DinokitError, match="outside image 0"):
        idx.query(0, (500.0, 10.0))
    with pytest.raises(DinokitError, match="out of range"):
        idx.query(2, (1.0, 1.0))
    with pytest.raises(DinokitError, match="dimensions"):
        SimilarityIndex([torch.zeros(70, 3), torch.zeros(54, 4)], GEOMS)
    with pytest.raises(DinokitError, match="grid"):
        SimilarityIndex([torch.zeros(71, 3)], GEOMS[:1])


def test_log_binned_index_equals_the_explicit_one():
    """Implicit log-binned descriptors (two D-dim products per query) give the explicit binned similarities."""
    from dinokit.features import log_bin
    from dinokit.features.binned_similarity import LogBinned

    g = torch.Generator().manual_seed(1)
    raws = [torch.randn(geo.num_patches, 6, generator=g) for geo in GEOMS]
    explicit = SimilarityIndex([log_bin(r[None], geo.grid)[0] for r, geo in zip(raws, GEOMS)], GEOMS)
    implicit = SimilarityIndex([LogBinned(r, geo.grid) for r, geo in zip(raws, GEOMS)], GEOMS)
    assert implicit.dim == explicit.dim == 17 * 6
    for image, xy in ((0, (60.0, 45.0)), (1, (3.0, 70.0)), (0, (139.0, 0.0))):
        for m1, m2 in zip(implicit.query(image, xy), explicit.query(image, xy)):
            np.testing.assert_allclose(m1.scores, m2.scores, atol=2e-6)
            assert m1.best_index == m2.best_index
        only = implicit.query(image, xy, targets=[1])[0]
        np.testing.assert_allclose(only.scores, explicit.query(image, xy, targets=[1])[0].scores, atol=2e-6)
    torch.testing.assert_close(implicit.descriptors(1), explicit.descriptors(1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(implicit.similarity(0, 1), explicit.similarity(0, 1), atol=2e-6, rtol=1e-5)
    with pytest.raises(DinokitError, match="mix"):
        SimilarityIndex([LogBinned(raws[0], GEOMS[0].grid), raws[1]], GEOMS)


@pytest.mark.parametrize("geo", GEOMS)
def test_upsampling_is_aligned_with_patch_centres(geo):
    rows, cols = geo.grid
    ramp_x = np.tile(np.arange(cols, dtype=np.float32), (rows, 1))  # value = column index
    for to, (h, w) in (("resized", geo.resized_size), ("original", geo.original_size)):
        up = geo.upsample(ramp_x, to)
        assert up.shape == (h, w)
        px = np.arange(w) + 0.5
        if to == "original":
            px = px * geo.resized_size[1] / geo.original_size[1]
        expected = np.clip((px - geo.patch_size / 2) / geo.stride, 0, cols - 1)
        np.testing.assert_allclose(up[h // 2], expected, atol=1e-5)
    # nearest mode picks the patch whose centre is nearest (the rule of xy_to_index)
    ids = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    near = geo.upsample(ids, "original", mode="nearest")
    ys, xs = np.mgrid[0 : geo.original_size[0] : 7, 0 : geo.original_size[1] : 5]
    pts = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    np.testing.assert_array_equal(near[ys.ravel(), xs.ravel()], geo.xy_to_index(pts, original=True))
    # several channels at once
    stack = geo.upsample(np.stack([ramp_x, ids], -1), "resized")
    assert stack.shape == (*geo.resized_size, 2)


def test_refine_peak_between_patches():
    geo = GEOMS[0]
    s = np.full(geo.grid, -1.0)
    s[3, 4] = s[3, 5] = 0.9
    xy = refine_peak(s, geo, window=3, temperature=0.01, original=False)
    np.testing.assert_allclose(xy, [(4 + 5) / 2 * 4 + 4, 3 * 4 + 4], atol=1e-6)
    with pytest.raises(ValueError):
        refine_peak(s, geo, window=4)


def test_index_from_real_features(golden_dir, tiny_model):
    ex = Extractor(tiny_model, stride=4, load_size=64, device="cpu")
    images = [golden_dir / "images" / "cat.jpg", golden_dir / "images" / "ibex.jpg"]
    idx = SimilarityIndex.from_images(ex, images, layer=11, facet="key")
    feats = ex.extract_many(images, layers=11, facets="key")
    assert [g.grid for g in idx.geometries] == [f.grid for f in feats]
    xy = (1500.0, 1200.0)
    maps = idx.query(0, xy)
    assert maps[0].best_score == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(maps[0].best_xy, idx.geometries[0].index_to_xy(idx.point_index(0, xy), original=True))
    maps2, ups = similarity_maps(feats, 0, xy, upsample="resized")
    np.testing.assert_allclose(maps2[1].scores, maps[1].scores, atol=1e-6)
    assert [u.shape for u in ups] == [g.resized_size for g in idx.geometries]


def test_cli_similarity(tmp_path, data_dir, tiny_weights, capsys):
    files = sorted((data_dir / "pf-willow" / "car(S)").glob("*.png"))[:2]
    out = tmp_path / "sim"
    w, h = Image.open(files[0]).size
    args = ["similarity", str(files[0]), str(files[1]), "--point", "100", "80", "--point", str(w - 1), str(h - 1),
            "-o", str(out), "--weights", str(tiny_weights), "--load-size", "64", "--save-arrays", "-q"]
    assert main(args) == 0
    info = json.loads((out / "similarity.json").read_text())
    assert len(info["points"]) == 2
    wb, hb = Image.open(files[1]).size
    for rec in info["points"]:
        own, other = rec["matches"]
        assert own["best_score"] == pytest.approx(1.0, abs=1e-5)
        assert own["best_xy"] == pytest.approx(rec["query_patch_center"])
        assert 0 <= other["best_xy"][0] <= wb and 0 <= other["best_xy"][1] <= hb
    # panels drawn at least 384 px tall (small images enlarged), with a caption above and a colour bar below
    panel = np.asarray(Image.open(out / "point1.png"))
    assert panel.ndim == 3 and 384 + 40 < panel.shape[0] < 384 + 160
    assert panel.shape[1] > 2 * 384 * min(w / h, wb / hb)
    white = (panel == 255).all(axis=2)
    assert white[:8].mean() > 0.8 and white[-6:].mean() > 0.7  # caption and scale strips on white
    bar_rows = [y for y in range(panel.shape[0] - 80, panel.shape[0]) if (~white[y]).mean() > 0.4]
    assert bar_rows, "no colour bar under the panels"
    from safetensors.torch import load_file

    maps = load_file(str(out / "point2_maps.safetensors"))
    assert set(maps) == {"image0", "image1"} and maps["image0"].dim() == 2
    bad = ["similarity", str(files[0]), str(files[1]), "--point", str(w + 50), "3", "-o", str(tmp_path / "bad"),
           "--weights", str(tiny_weights), "--load-size", "64", "-q"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "lies outside the image" in err and files[0].name in err
