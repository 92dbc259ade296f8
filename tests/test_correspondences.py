"""Correspondences: best buddies vs the golden reference, planted matches, flips, dense matching, CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from dinokit.blocks.kmeans import kmeans_plusplus
from dinokit.blocks.matching import best_buddies, cosine_similarity, nearest_neighbours
from dinokit.cli import main
from dinokit.features import Extractor, GridGeometry, open_image
from dinokit.tasks.correspondences import CorrespondenceFinder, match_points, select_correspondences

pytestmark = pytest.mark.usefixtures("one_thread_module")


# --- golden best buddies ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def golden(golden_dir):
    from safetensors.torch import load_file

    return load_file(str(golden_dir / "reference_outputs.safetensors"))


@pytest.mark.parametrize("chunk_size", [None, 1, 37])
def test_best_buddies_match_golden(golden, chunk_size):
    a, b = golden["cat.s8.key.l9.bin1.cls0"], golden["ibex.s8.key.l9.bin1.cls0"]
    sim = cosine_similarity(a, b, chunk_size=chunk_size)
    torch.testing.assert_close(sim, golden["bb.similarity"], atol=1e-4, rtol=1e-4)
    nn = nearest_neighbours(a, b, chunk_size=chunk_size)
    assert torch.equal(nn.nn_1, golden["bb.nn_1"])
    assert torch.equal(nn.nn_2, golden["bb.nn_2"])
    bbs = best_buddies(a, b, chunk_size=chunk_size)
    assert torch.equal(bbs.mutual, golden["bb.mask"].bool())
    assert torch.equal(bbs.mask, golden["bb.mask"].bool())
    assert torch.equal(bbs.indices_b, golden["bb.nn_1"][golden["bb.mask"].bool()])


def test_finder_descriptors_and_saliency_match_golden(golden, golden_dir, tiny_model):
    """One forward pass per image gives the reference's binned descriptors and saliency, hence its best buddies."""
    ex = Extractor(tiny_model, stride=8, load_size=96, device="cpu")
    finder = CorrespondenceFinder(ex, saliency_heads=(0, 2, 4, 5))
    da = finder.describe(golden_dir / "images" / "cat.jpg")
    db = finder.describe(golden_dir / "images" / "ibex.jpg")
    torch.testing.assert_close(da.descriptors, golden["cat.s8.key.l9.bin1.cls0"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(db.saliency, golden["ibex.s8.saliency"], atol=1e-4, rtol=1e-4)
    for a, b in ((da.descriptors, db.descriptors), (da.matching, db.matching)):  # explicit and structured
        bbs = best_buddies(a, b)
        assert torch.equal(bbs.mutual, golden["bb.mask"].bool())
        assert torch.equal(bbs.neighbours.nn_2, golden["bb.nn_2"])
    assert set(finder.timings) >= {"load", "forward", "binning"}


@pytest.mark.parametrize("grids", [((5, 7), (6, 4)), ((9, 11), (8, 13)), ((1, 3), (4, 1))])
def test_structured_binned_similarity_equals_explicit(grids):
    """The similarity of log-binned descriptors computed from the unbinned maps equals the explicit one."""
    from dinokit.features import log_bin
    from dinokit.features.binned_similarity import LogBinned

    (ga, gb), g = grids, torch.Generator().manual_seed(0)
    raw_a = torch.randn(ga[0] * ga[1], 16, generator=g)
    raw_b = torch.randn(gb[0] * gb[1], 16, generator=g)
    la, lb = LogBinned(raw_a, ga), LogBinned(raw_b, gb)
    xa, xb = log_bin(raw_a[None], ga)[0], log_bin(raw_b[None], gb)[0]
    torch.testing.assert_close(la.dense(), xa)
    torch.testing.assert_close(la.norms(), xa.norm(dim=1))
    explicit = cosine_similarity(xa, xb)
    for chunk in (None, 1, 5):
        torch.testing.assert_close(cosine_similarity(la, lb, chunk_size=chunk), explicit, atol=1e-6, rtol=1e-5)
    q = xa[[0, ga[0] * ga[1] - 1]]
    torch.testing.assert_close(lb.cosine_to(q), cosine_similarity(q, xb), atol=1e-6, rtol=1e-5)
    ga_geo, gb_geo = _geometry(*ga), _geometry(*gb)
    pts = ga_geo.index_to_xy([0, ga[0] * ga[1] // 2, ga[0] * ga[1] - 1], original=True)
    m1 = match_points(la, ga_geo, lb, gb_geo, pts)
    m2 = match_points(xa, ga_geo, xb, gb_geo, pts)
    np.testing.assert_array_equal(m1.indices, m2.indices)


# --- the reference's foreground rule ----------------------------------------------------------------
def _literal_reference_mask(sim: torch.Tensor, fg_a: torch.Tensor, fg_b: torch.Tensor) -> torch.Tensor:
    """The reference's steps spelled out with Python loops over tokens (slow, obviously correct)."""
    ta, tb = sim.shape
    nn_1 = [max(range(tb), key=lambda j: (sim[i, j].item(), -j)) for i in range(ta)]
    nn_2 = [max(range(ta), key=lambda i: (sim[i, j].item(), -i)) for j in range(tb)]
    mask = torch.tensor([nn_2[nn_1[i]] == i for i in range(ta)])
    reached = torch.zeros(ta, dtype=torch.bool)
    for j in range(tb):
        if fg_b[j]:
            reached[nn_2[j]] = True
    return mask & fg_a & reached


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_foreground_rule_is_the_reference_rule(seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(40, 6, generator=g), torch.randn(33, 6, generator=g)
    b[:20] = a[:20] + 0.05 * torch.randn(20, 6, generator=g)  # many mutual pairs
    fg_a, fg_b = torch.rand(40, generator=g) > 0.3, torch.rand(33, generator=g) > 0.5
    bbs = best_buddies(a, b, fg_a, fg_b, chunk_size=7)
    assert torch.equal(bbs.mask, _literal_reference_mask(cosine_similarity(a, b), fg_a, fg_b))


def test_foreground_of_b_goes_through_nn_2():
    """A pair whose B point is background survives when another foreground B patch has the same A neighbour."""
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])  # b0 <-> a0 mutual; b1's nearest A patch is a0 too
    fg_a = torch.tensor([True, True])
    kept = best_buddies(a, b, fg_a, torch.tensor([False, True, False]))
    assert kept.indices_a.tolist() == [0] and kept.indices_b.tolist() == [0]
    dropped = best_buddies(a, b, fg_a, torch.tensor([False, False, True]))
    assert dropped.indices_a.tolist() == [1]  # a0's pair is gone: no foreground B patch points at a0


# --- planted matches on synthetic grids ----------------------------------------------------------------
def _geometry(rows, cols, patch=8, stride=4, original=None):
    size = ((rows - 1) * stride + patch, (cols - 1) * stride + patch)
    return GridGeometry((rows, cols), patch, stride, size, original or size)


def _planted(seed=0, n_planted=24, dim=32):
    g = torch.Generator().manual_seed(seed)
    ga, gb = _geometry(9, 11), _geometry(8, 13)
    a = torch.randn(ga.num_patches, dim, generator=g)
    b = torch.randn(gb.num_patches, dim, generator=g)
    ia = torch.randperm(ga.num_patches, generator=g)[:n_planted]
    ib = torch.randperm(gb.num_patches, generator=g)[:n_planted]
    b[ib] = 3.0 * a[ia] + 0.01 * torch.randn(n_planted, dim, generator=g)  # scale is irrelevant to cosine
    return a, b, ga, gb, dict(zip(ia.tolist(), ib.tolist()))


def test_planted_pairs_are_found_and_clustered_deterministically():
    a, b, ga, gb, planted = _planted()
    # chance best buddies exist among random vectors too: the saliency of A keeps only the planted ones
    sal_a, sal_b = torch.zeros(ga.num_patches), torch.ones(gb.num_patches)
    sal_a[list(planted)] = torch.linspace(0.2, 1.0, len(planted))
    res = select_correspondences(a, b, sal_a, sal_b, ga, gb, num_pairs=6, thresh=0.05, seed=3)
    assert res.num_best_buddies == len(planted)
    assert len(res) == 6
    assert len(set(res.indices_a.tolist())) == 6
    for i, j in zip(res.indices_a.tolist(), res.indices_b.tolist()):
        assert planted.get(i) == j, "every returned pair must be a planted pair"
    assert np.all(res.similarity > 0.99)
    again = select_correspondences(a, b, sal_a, sal_b, ga, gb, num_pairs=6, thresh=0.05, seed=3)
    np.testing.assert_array_equal(res.indices_a, again.indices_a)
    # all planted pairs are best buddies (random 32-dim vectors are never that similar by chance)
    bbs = best_buddies(a, b)
    found = dict(zip(bbs.indices_a.tolist(), bbs.indices_b.tolist()))
    assert all(found.get(i) == j for i, j in planted.items())


def test_saliency_ranks_within_clusters_and_threshold_filters():
    a, b, ga, gb, planted = _planted(seed=1, n_planted=12)
    sal_a = torch.zeros(ga.num_patches)
    sal_b = torch.zeros(gb.num_patches)
    fg = list(planted.items())[:5]
    for i, j in fg:
        sal_a[i], sal_b[j] = 0.5 + 0.1 * i / ga.num_patches, 0.9
    res = select_correspondences(a, b, sal_a, sal_b, ga, gb, num_pairs=10, thresh=0.05)
    # only the 5 foreground pairs survive; fewer than wanted, so all are returned, by decreasing mean saliency
    assert sorted(res.indices_a.tolist()) == sorted(i for i, _ in fg)
    mean = (res.saliency_a + res.saliency_b) / 2
    assert np.all(np.diff(mean) <= 0)
    # one cluster: the pair of highest mean saliency
    one = select_correspondences(a, b, sal_a, sal_b, ga, gb, num_pairs=1, thresh=0.05)
    assert one.indices_a.tolist() == [max(fg, key=lambda p: sal_a[p[0]].item())[0]]


def test_no_best_buddies_gives_empty_result_with_warning():
    a, b, ga, gb, _ = _planted()
    with pytest.warns(RuntimeWarning, match="no best buddies"):
        res = select_correspondences(a, b, torch.zeros(ga.num_patches), torch.ones(gb.num_patches), ga, gb,
                                     num_pairs=10, thresh=0.05)
    assert len(res) == 0 and res.points_a.shape == (0, 2) and res.to_dict()["pairs"] == []


def test_kmeans_recovers_separated_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 10
    x = torch.cat([c + 0.1 * torch.randn(30, 16, generator=g) for c in centres])
    labels, cent, inertia = kmeans_plusplus(x, 4, seed=5)
    groups = labels.reshape(4, 30)
    assert all(len(set(row.tolist())) == 1 for row in groups) and len(set(groups[:, 0].tolist())) == 4
    labels2, _, inertia2 = kmeans_plusplus(x, 4, seed=5)
    assert torch.equal(labels, labels2) and inertia == inertia2
    with pytest.raises(ValueError):
        kmeans_plusplus(x[:3], 4)


# --- coordinates -----------------------------------------------------------------------------------------
def test_points_round_trip_between_grid_resized_and_original():
    """Non-square images whose sides are not multiples of the stride: every representation agrees."""
    a, b, _, _, planted = _planted(seed=2)
    ga = GridGeometry((9, 11), 8, 4, (43, 50), (301, 433))  # (43 - 8) % 4 != 0, (50 - 8) % 4 != 0
    gb = GridGeometry((8, 13), 8, 4, (39, 57), (117, 171))
    res = select_correspondences(a, b, torch.ones(99), torch.ones(104), ga, gb, num_pairs=5, thresh=0.05)
    for idx, pr, po, geo in ((res.indices_a, res.points_a_resized, res.points_a, ga),
                             (res.indices_b, res.points_b_resized, res.points_b, gb)):
        rows, cols = geo.grid
        np.testing.assert_allclose(pr[:, 0], (idx % cols) * 4 + 4)  # x = col * stride + patch / 2
        np.testing.assert_allclose(pr[:, 1], (idx // cols) * 4 + 4)
        (h0, w0), (h1, w1) = geo.original_size, geo.resized_size
        np.testing.assert_allclose(po, pr * [w0 / w1, h0 / h1])
        np.testing.assert_array_equal(geo.xy_to_index(po, original=True), idx)
        assert np.all((po >= 0) & (po <= [w0, h0]))


# --- dense matching ----------------------------------------------------------------------------------------
def test_match_points_self_foreground_and_refinement():
    a, _, ga, _, _ = _planted()
    go = GridGeometry(ga.grid, ga.patch_size, ga.stride, ga.resized_size, (90, 120))
    q = go.index_to_xy(np.array([0, 17, 50, 98]), original=True) + 0.3  # near patch centres
    m = match_points(a, go, a, go, q)
    np.testing.assert_array_equal(m.indices, [0, 17, 50, 98])
    np.testing.assert_allclose(m.scores, 1.0, atol=1e-5)
    np.testing.assert_allclose(m.points, go.index_to_xy(m.indices, original=True))
    mask = torch.ones(go.num_patches, dtype=torch.bool)
    mask[17] = False
    masked = match_points(a, go, a, go, q, mask_b=mask)
    assert masked.indices[1] != 17 and masked.indices[0] == 0
    # a descriptor halfway between two neighbouring patches: refinement lands between their centres
    b = a.clone()
    b[51] = b[50]
    ref = match_points(a, go, b, go, go.index_to_xy([50], original=True), refine=True, window=3, temperature=1e-3)
    mid = (go.index_to_xy(50, original=True) + go.index_to_xy(51, original=True)) / 2
    np.testing.assert_allclose(ref.points[0], mid, atol=1e-6)


# --- an image against its mirror, through the real model -------------------------------------------------------
@pytest.fixture(scope="module")
def mirror_symmetric_model(tiny_model):
    """The golden tiny ViT made exactly left-right equivariant (symmetric patch kernels and position embeddings)."""
    m = copy.deepcopy(tiny_model)
    with torch.no_grad():
        w = m.patch_embed.proj.weight
        w.copy_((w + w.flip(-1)) / 2)
        n = int(round((m.pos_embed.shape[1] - 1) ** 0.5))
        grid = m.pos_embed[:, 1:].reshape(1, n, n, -1)
        m.pos_embed[:, 1:] = ((grid + grid.flip(2)) / 2).reshape(1, n * n, -1)
    return m


def test_image_against_its_mirror(mirror_symmetric_model, data_dir):
    side = 8 + 8 * 15  # (side - patch) % stride == 0: the grid is symmetric
    img = open_image(sorted((data_dir / "pf-willow").glob("*/*.png"))[3]).resize((side, side), Image.BICUBIC)
    mirror = ImageOps.mirror(img)
    finder = CorrespondenceFinder(Extractor(mirror_symmetric_model, stride=8, load_size=None, device="cpu"),
                                  bin=False, num_pairs=8)
    res = finder.find(img, mirror)
    assert len(res) == 8
    np.testing.assert_allclose(res.points_b[:, 0], side - res.points_a[:, 0])
    np.testing.assert_allclose(res.points_b[:, 1], res.points_a[:, 1])
    # (the +0.1 rule of the position-embedding interpolation leaves a hair of asymmetry off the 28x28 grid)
    assert np.all(res.similarity > 0.99)
    # dense matching of the salient points (off-centre by a pixel) lands on their mirror images too;
    # (flat background is left out: there a patch and its mirror are nearly identical by construction)
    dense = finder.match(img, mirror, res.points_a + [0.9, -0.9], foreground=True)
    np.testing.assert_allclose(dense.points, res.points_b)


# --- CLI -------------------------------------------------------------------------------------------------------
def _willow_pair(data_dir):
    files = sorted((data_dir / "pf-willow" / "duck(S)").glob("*.png"))
    return files[0], files[1]


def test_cli_correspond_pair_end_to_end(tmp_path, data_dir, tiny_weights):
    a, b = _willow_pair(data_dir)
    out = tmp_path / "out"
    args = ["correspond", str(a), str(b), "-o", str(out), "--weights", str(tiny_weights), "--load-size", "64",
            "--stride", "4", "--thresh", "0.0", "--num-pairs", "5", "--seed", "1", "-q"]
    assert main(args) == 0
    names = {p.name for p in out.iterdir()}
    assert {"pair.png", "correspondences.json", f"A_{a.stem}.png", f"B_{b.stem}.png"} <= names
    info = json.loads((out / "correspondences.json").read_text())
    assert info["image_a"] == str(a) and info["num_pairs"] == 5
    wa, ha = Image.open(a).size
    wb, hb = Image.open(b).size
    for p in info["pairs"]:
        assert 0 <= p["a"][0] <= wa and 0 <= p["a"][1] <= ha
        assert 0 <= p["b"][0] <= wb and 0 <= p["b"][1] <= hb
    # small images are drawn enlarged (longest side 512), both at the taller one's height
    side = Image.open(out / "pair.png")
    ha2, hb2 = round(ha * 512 / max(wa, ha)), round(hb * 512 / max(wb, hb))
    assert side.height == max(ha2, hb2) and side.width > 2 * side.height * min(wa / ha, wb / hb)
    assert Image.open(out / f"A_{a.stem}.png").size == (512, ha2)
    first = (out / "correspondences.json").read_text()
    mtime = (out / "correspondences.json").stat().st_mtime_ns
    assert main(args) == 0  # finished: skipped
    assert (out / "correspondences.json").stat().st_mtime_ns == mtime
    assert main(args + ["--overwrite"]) == 0
    assert (out / "correspondences.json").read_text() == first  # deterministic


def test_cli_correspond_pairs_dir(tmp_path, data_dir, tiny_weights, capsys):
    a, b = _willow_pair(data_dir)
    root = tmp_path / "pairs"
    for name in ("p1", "p2"):
        (root / name).mkdir(parents=True)
        for f in (a, b) if name == "p1" else (b, a):
            (root / name / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    assert main(["correspond", "--pairs-dir", str(root), "-o", str(out), "--weights", str(tiny_weights),
                 "--load-size", "64", "--stride", "8", "--thresh", "0", "-q"]) == 0
    for name in ("p1", "p2"):
        assert (out / name / "pair.png").is_file()
        assert json.loads((out / name / "correspondences.json").read_text())["num_pairs"] >= 1
    (root / "p3").mkdir()
    (root / "p3" / a.name).write_bytes(a.read_bytes())
    assert main(["correspond", "--pairs-dir", str(root), "-o", str(out), "--weights", str(tiny_weights), "-q"]) == 2
    assert "p3: holds 1 image(s)" in capsys.readouterr().err


# --- pictures ----------------------------------------------------------------------------------------------------
def test_number_tags_stay_inside_their_own_image():
    from dinokit.blocks.draw import draw_matches

    gray = np.full((100, 120, 3), 128, np.uint8)
    pa, pb = np.array([[112.0, 3.0], [60.0, 96.0]]), np.array([[8.0, 3.0], [60.0, 50.0]])  # discs inside
    side = draw_matches(gray, gray, pa, pb, lines=False, gap=10)
    changed = (side != np.array([128, 128, 128])).any(axis=2) & (side != 255).any(axis=2)
    assert (side[:, 120:130] == 255).all(), "nothing may be drawn in the gap between the images"
    ys, xs = np.nonzero(changed[:, :120])
    assert len(xs) and xs.max() < 120
    # the tag of the top-right point of A went left and down (inside A), that of the bottom point up
    assert changed[0:25, 90:112].sum() > 20 and changed[70:92, 60:85].sum() > 20
    ys, xs = np.nonzero(changed[:, 130:])
    assert xs.min() >= 0 and changed[0:25, 130:160].sum() > 20


def test_tags_avoid_each_other():
    from dinokit.blocks.draw import _overlap, _place_label

    taken, dots = [], []
    for p in np.array([[50.0, 50.0], [52.0, 51.0], [49.0, 53.0], [51.0, 48.0]]):
        box = _place_label(p, (14.0, 12.0), 5.0, (0.0, 0.0, 200.0, 200.0), taken, dots)
        assert all(_overlap(box, t) == 0 for t in taken)
        assert 0 <= box[0] and box[2] <= 200 and 0 <= box[1] and box[3] <= 200
        taken.append(box)


def test_pictures_of_small_and_empty_results():
    from dinokit.tasks.correspondences import Correspondences, draw_correspondences

    geo = GridGeometry((1, 1), 8, 4, (8, 8), (8, 8))
    empty = Correspondences(*(np.zeros((0, 2)),) * 4, *(np.zeros(0, np.int64),) * 2, *(np.zeros(0),) * 3,
                            geo, geo, 0, 0)
    rgb = np.full((150, 200, 3), 200, np.uint8)
    side, pa, pb = draw_correspondences(rgb, rgb, empty)
    assert pa.shape == (384, 512, 3)  # small images are drawn enlarged: longest side 512
    assert side.shape[0] == 384
    assert pa[:10].mean() < 120 and pa[-50:].mean() == 200  # "no correspondences" band on top
    big = np.full((3000, 4000, 3), 200, np.uint8)
    assert draw_correspondences(big, rgb, empty)[1].shape == (768, 1024, 3)  # and large ones reduced
