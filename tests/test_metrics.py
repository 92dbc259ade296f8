"""Metrics of dinokit.eval.metrics against hand-computed cases, including edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dinokit.eval.metrics import (
    CosegAccumulator,
    DavisAccumulator,
    PartAccumulator,
    PCKAccumulator,
    ari,
    ari_from_contingency,
    boundary_f_measure,
    contingency_table,
    coseg_precision,
    coseg_scores,
    davis_statistics,
    jaccard,
    keypoint_errors,
    nmi,
    nmi_from_contingency,
    pck,
    pck_reference_length,
    region_similarity,
    sample_labels,
    seg2bmap,
)

# ----------------------------------------------------------------------------- PCK


def test_reference_length_bbox_and_image():
    assert pck_reference_length(bbox=[10, 20, 110, 70]) == 100  # w=100, h=50
    assert pck_reference_length(bbox=[0, 0, 30, 80]) == 80
    assert pck_reference_length(image_size=(640, 480)) == 640
    assert pck_reference_length(image_size=(300, 500)) == 500
    with pytest.raises(ValueError):
        pck_reference_length(bbox=[5, 5, 5, 5])
    with pytest.raises(ValueError):
        pck_reference_length(bbox=[0, 0, 1, 1], image_size=(2, 2))


def test_pck_thresholds_inclusive_and_nan_prediction():
    gt = np.array([[0, 0], [10, 10], [50, 50], [100, 0]], float)
    # errors: 0, 5 (3-4-5), 10, 20
    pred = np.array([[0, 0], [13, 14], [56, 58], [100, 20]], float)
    np.testing.assert_allclose(keypoint_errors(pred, gt), [0, 5, 10, 20])
    r = pck(pred, gt, reference_length=100, alphas=(0.05, 0.1, 0.15, 0.2))
    assert r == {0.05: 0.5, 0.1: 0.75, 0.15: 0.75, 0.2: 1.0}
    pred[0] = np.nan
    assert pck(pred, gt, 100, alphas=(0.2,)) == {0.2: 0.75}
    assert math.isinf(keypoint_errors(pred, gt)[0])


def test_pck_no_keypoints_is_nan_and_shape_mismatch_raises():
    r = pck(np.zeros((0, 2)), np.zeros((0, 2)), 50)
    assert all(math.isnan(v) for v in r.values())
    with pytest.raises(ValueError):
        pck(np.zeros((2, 2)), np.zeros((3, 2)), 50)
    with pytest.raises(ValueError):
        pck(np.zeros((1, 2)), np.zeros((1, 2)), 0)


def test_pck_accumulator_per_image_per_point_per_category():
    acc = PCKAccumulator(alphas=(0.05, 0.1))
    gt = np.array([[0, 0], [10, 10], [50, 50], [100, 0]], float)
    pred = np.array([[0, 0], [13, 14], [56, 58], [100, 20]], float)  # errors 0, 5, 10, 20
    assert acc.add(pred, gt, 100, category="cat", name="p1") == {0.05: 0.5, 0.1: 0.75}
    acc.add([[0, 0]], [[30, 40]], 100, category="dog", name="p2")  # error 50: wrong
    out = acc.add(np.zeros((0, 2)), np.zeros((0, 2)), 100, category="dog", name="p3")
    assert math.isnan(out[0.1])
    r = acc.result()
    assert r.num_pairs == 3 and r.num_points == 5 and r.num_empty_pairs == 1
    # per image: mean over non-empty pairs (0.75 and 0); per point: 3 of 5
    assert r.per_image[0.1] == pytest.approx(0.375)
    assert r.per_point[0.1] == pytest.approx(0.6)
    assert r.per_image[0.05] == pytest.approx(0.25)
    assert r.per_point[0.05] == pytest.approx(0.4)
    assert r.per_category["cat"]["per_image"][0.1] == pytest.approx(0.75)
    assert r.per_category["dog"]["per_image"][0.1] == 0.0
    assert r.per_category["dog"]["pairs"] == 2 and r.per_category["dog"]["points"] == 1
    assert r.category_mean[0.1] == pytest.approx(0.375)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["per_point"]["0.1"] == pytest.approx(0.6)


def test_pck_accumulator_empty_and_bad_alphas():
    r = PCKAccumulator().result()
    assert r.num_pairs == 0 and all(math.isnan(v) for v in r.per_image.values())
    assert r.to_dict()["per_image"]["0.1"] is None
    with pytest.raises(ValueError):
        PCKAccumulator(alphas=(0.1, -1))


# ----------------------------------------------------------------------------- co-segmentation


def _mask(shape, *slices):
    m = np.zeros(shape, bool)
    for s in slices:
        m[s] = True
    return m


def test_jaccard_and_precision_hand_case():
    gt = _mask((4, 4), np.s_[0:2, 0:3])  # 6 pixels
    pred = _mask((4, 4), np.s_[1:3, 1:3])  # 4 pixels, overlap 2 ([1,1],[1,2])
    assert jaccard(pred, gt) == pytest.approx(2 / 8)
    # wrong pixels: gt-only 4, pred-only 2 -> 10 of 16 right
    assert coseg_precision(pred, gt) == pytest.approx(10 / 16)


def test_jaccard_edge_cases_empty_and_full():
    empty, full = np.zeros((3, 5), bool), np.ones((3, 5), bool)
    assert jaccard(empty, empty) == 1.0 and coseg_precision(empty, empty) == 1.0
    assert jaccard(full, full) == 1.0 and coseg_precision(full, full) == 1.0
    assert jaccard(full, empty) == 0.0 and coseg_precision(full, empty) == 0.0
    assert jaccard(empty, full) == 0.0
    with pytest.raises(ValueError):
        jaccard(np.zeros((2, 2)), np.zeros((2, 3)))


def test_void_pixels_are_ignored():
    gt = _mask((2, 4), np.s_[:, 0:2])
    pred = _mask((2, 4), np.s_[:, 0:3])  # column 2 wrong
    void = _mask((2, 4), np.s_[:, 2])
    assert jaccard(pred, gt, void) == 1.0 and coseg_precision(pred, gt, void) == 1.0
    assert math.isnan(coseg_precision(pred, gt, np.ones((2, 4), bool)))


def test_coseg_accumulator_means_per_set_then_over_sets():
    acc = CosegAccumulator()
    full, empty = np.ones((2, 2), bool), np.zeros((2, 2), bool)
    half = _mask((2, 2), np.s_[0, :])
    acc.add(full, full, "a", "a1")  # J 1, P 1
    acc.add(half, full, "a", "a2")  # J .5, P .5
    acc.add(empty, full, "a", "a3")  # J 0, P 0
    acc.add(half, half, "b", "b1")  # J 1, P 1
    r = acc.result()
    assert r.per_set["a"] == {"jaccard": pytest.approx(0.5), "precision": pytest.approx(0.5), "images": 3}
    assert r.per_set["b"]["jaccard"] == 1.0
    assert r.jaccard == pytest.approx(0.75)  # mean of set means
    assert r.jaccard_images == pytest.approx(2.5 / 4)  # mean over images
    assert r.precision == pytest.approx(0.75)
    assert [x["name"] for x in r.per_image] == ["a1", "a2", "a3", "b1"]
    assert math.isnan(CosegAccumulator().result().jaccard)


def test_coseg_scores_skip_jaccard_of_images_without_the_object():
    empty, blob = np.zeros((4, 4), bool), _mask((4, 4), np.s_[0:2, 0:2])
    j, p = coseg_scores(blob, empty)  # a noise image (Internet dataset): no object to find
    assert math.isnan(j) and p == pytest.approx(12 / 16)
    assert coseg_scores(blob, empty, skip_empty_jaccard=False) == (0.0, pytest.approx(12 / 16))
    assert coseg_scores(empty, empty, skip_empty_jaccard=False) == (1.0, 1.0)
    assert coseg_scores(blob, blob) == (1.0, 1.0)
    # the object only under void pixels counts as no object
    assert math.isnan(coseg_scores(blob, blob, void=blob)[0])
    acc = CosegAccumulator(skip_empty_jaccard=True)
    acc.add(blob, blob, "s", "a")
    acc.add(blob, empty, "s", "noise")
    r = acc.result()
    assert r.jaccard == 1.0 and r.per_set["s"]["images"] == 2
    assert r.precision == pytest.approx((1 + 12 / 16) / 2)
    assert CosegAccumulator().add(blob, empty) == (0.0, pytest.approx(12 / 16))


# ----------------------------------------------------------------------------- DAVIS


def test_seg2bmap_square_hand_case():
    seg = _mask((5, 5), np.s_[1:3, 1:3])
    expected = np.array([
        [1, 1, 1, 0, 0],
        [1, 0, 1, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ], bool)
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_seg2bmap_stripe_boundary_is_last_fg_column():
    seg = _mask((6, 8), np.s_[:, 0:3])
    b = seg2bmap(seg)
    assert b[:, 2].all() and b.sum() == 6
    assert not seg2bmap(np.zeros((4, 4), bool)).any()
    assert not seg2bmap(np.ones((4, 4), bool)).any()


def test_boundary_f_tolerance_from_bound_th():
    # 30x40 image: diagonal 50, radius ceil(0.008 * 50) = 1
    gt = _mask((30, 40), np.s_[:, 0:10])
    assert boundary_f_measure(gt, gt) == 1.0
    assert boundary_f_measure(_mask((30, 40), np.s_[:, 0:11]), gt) == 1.0  # 1 px off
    assert boundary_f_measure(_mask((30, 40), np.s_[:, 0:12]), gt) == 0.0  # 2 px off
    assert boundary_f_measure(_mask((30, 40), np.s_[:, 0:12]), gt, bound_th=2) == 1.0
    # 300x400 image: diagonal 500, radius 4
    big = _mask((300, 400), np.s_[:, 0:100])
    assert boundary_f_measure(_mask((300, 400), np.s_[:, 0:104]), big) == 1.0
    assert boundary_f_measure(_mask((300, 400), np.s_[:, 0:105]), big) == 0.0


def test_boundary_f_partial_match_and_void():
    gt = _mask((20, 40), np.s_[:, 0:5])  # boundary: column 4, 20 pixels
    pred = gt | _mask((20, 40), np.s_[8:10, 30:32])  # extra 2x2 blob: 8 unmatched boundary pixels
    precision, recall = 20 / 28, 1.0
    expected = 2 * precision * recall / (precision + recall)
    assert boundary_f_measure(pred, gt, bound_th=1) == pytest.approx(expected)
    void = _mask((20, 40), np.s_[5:13, 27:35])
    assert boundary_f_measure(pred, gt, void=void, bound_th=1) == 1.0


def test_boundary_f_empty_cases():
    empty, obj = np.zeros((10, 10), bool), _mask((10, 10), np.s_[2:5, 2:5])
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(empty, obj) == 0.0
    assert boundary_f_measure(obj, empty) == 0.0
    assert region_similarity(empty, empty) == 1.0


def test_davis_statistics_mean_recall_decay():
    v = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    s = davis_statistics(v)
    # 8 frames -> bins [0:3], [2:5], [4:6], [5:8]; decay = mean(.9,.8,.7) - mean(.4,.3,.2)
    assert s["mean"] == pytest.approx(0.55)
    assert s["recall"] == pytest.approx(0.5)  # 0.5 itself is not > 0.5
    assert s["decay"] == pytest.approx(0.5)
    s = davis_statistics([np.nan, 1.0, np.nan, 0.0])
    assert s["mean"] == 0.5 and s["recall"] == 0.5
    assert all(math.isnan(x) for x in davis_statistics([np.nan]).values())


def test_davis_accumulator_objects_void_and_skipped_frames():
    h, w = 20, 20
    gt = np.zeros((5, h, w), np.uint8)
    gt[:, 2:8, 2:8] = 1
    gt[:, 12:18, 12:18] = 2
    gt[:, 0, :] = 255  # void row
    pred = gt.copy()
    pred[:, 0, :] = 1  # predictions under void do not count
    pred[2, 12:18, 12:18] = 0  # object 2 missed in frame 2
    pred[4] = 0  # last frame is skipped by default
    acc = DavisAccumulator()
    per_obj = acc.add("seq", list(pred), list(gt))
    assert per_obj[1] == {"J": 1.0, "F": 1.0}
    assert per_obj[2]["J"] == pytest.approx(2 / 3) and per_obj[2]["F"] == pytest.approx(2 / 3)
    r = acc.result()
    assert r.J["mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert r.JF == pytest.approx((r.J["mean"] + r.F["mean"]) / 2)
    assert r.per_sequence["seq"][2]["J"]["recall"] == pytest.approx(2 / 3)
    # with every frame scored the empty last prediction counts
    acc2 = DavisAccumulator(skip_first_last=False)
    assert acc2.add("seq", list(pred), list(gt))[1]["J"] == pytest.approx(4 / 5)
    # an unannotated frame is left out, not scored as 0
    acc3 = DavisAccumulator(skip_first_last=False)
    gt_list = list(gt)
    gt_list[4] = None
    assert acc3.add("seq", list(pred), gt_list)[1]["J"] == 1.0
    with pytest.raises(ValueError):
        acc3.add("seq", list(pred), gt_list)


# ----------------------------------------------------------------------------- NMI / ARI


def test_contingency_table():
    t = contingency_table([0, 0, 1, 1, 1], [5, 7, 7, 7, 5])
    np.testing.assert_array_equal(t, [[1, 1], [1, 2]])


def test_nmi_ari_hand_cases():
    t, p = [0, 0, 1, 1], [0, 0, 0, 1]
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_t = math.log(2)
    h_p = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert nmi(t, p) == pytest.approx(mi / ((h_t + h_p) / 2))
    assert nmi(t, p, "geometric") == pytest.approx(mi / math.sqrt(h_t * h_p))
    assert nmi(t, p, "min") == pytest.approx(mi / h_p)
    assert nmi(t, p, "max") == pytest.approx(mi / h_t)
    # ARI: pairs together in both 1, row pairs 2, col pairs 3, total pairs 6
    expected_index = 2 * 3 / 6
    assert ari(t, p) == pytest.approx((1 - expected_index) / ((2 + 3) / 2 - expected_index))
    assert ari([0, 0, 1, 1, 1], [0, 0, 0, 1, 1]) == pytest.approx((2 - 4 * 4 / 10) / (4 - 4 * 4 / 10))
    # independent 2x2 design: ARI -1/2, NMI 0
    assert ari([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == 0.0


def test_nmi_ari_invariant_to_relabelling_and_degenerate_cases():
    t = [0, 0, 1, 1, 2, 2]
    assert nmi(t, [5, 5, 9, 9, 1, 1]) == pytest.approx(1.0)
    assert ari(t, [5, 5, 9, 9, 1, 1]) == pytest.approx(1.0)
    assert nmi([3, 3, 3], [1, 1, 1]) == 1.0 and ari([3, 3, 3], [1, 1, 1]) == 1.0
    assert nmi([0, 1, 2], [4, 5, 6]) == 1.0 and ari([0, 1, 2], [4, 5, 6]) == 1.0
    assert nmi([0, 0, 1], [1, 1, 1]) == 0.0 and ari([0, 0, 1], [1, 1, 1]) == 0.0
    assert math.isnan(nmi([], [])) and math.isnan(ari([], []))
    assert ari_from_contingency([[1]]) == 1.0
    with pytest.raises(ValueError):
        nmi_from_contingency([[1, 2], [3, 4]], average="harmonic")


def test_part_accumulator_foreground_only():
    gt = np.array([[0, 0, 1, 1], [0, 0, 2, 2]])
    pred = np.array([[7, 8, 3, 3], [9, 3, 4, 4]])  # background predictions are arbitrary
    acc = PartAccumulator()
    assert acc.add(gt, pred) == (1.0, 1.0)
    r = acc.result()
    assert r.nmi == 1.0 and r.ari == 1.0 and r.num_samples == 4
    # an explicit foreground mask overrides the background label
    acc2 = PartAccumulator()
    fg = np.ones_like(gt, bool)
    nmi_all, _ = acc2.add(gt, pred, foreground=fg)
    assert nmi_all == pytest.approx(nmi(gt.ravel(), pred.ravel()))


def test_part_accumulator_pools_over_images_and_ignores_void():
    acc = PartAccumulator()
    gt = np.array([[1, 1, 2, 2]])
    acc.add(gt, np.array([[5, 5, 6, 6]]))
    acc.add(gt, np.array([[6, 6, 5, 5]]))  # consistent within the image, swapped across images
    r = acc.result()
    assert r.nmi_per_image == 1.0 and r.ari_per_image == 1.0
    assert r.nmi == pytest.approx(0.0) and r.ari < 0  # the pooled labels carry no information
    np.testing.assert_array_equal(acc.table(), [[2, 2], [2, 2]])
    acc_void = PartAccumulator()
    acc_void.add(np.array([[1, 1, 255, 2]]), np.array([[3, 3, 9, 4]]))
    assert acc_void.result().num_samples == 3 and acc_void.result().nmi == 1.0


def test_part_accumulator_empty_and_all_foreground_single_part():
    acc = PartAccumulator()
    nmi_v, ari_v = acc.add(np.zeros((3, 3), int), np.ones((3, 3), int))
    assert math.isnan(nmi_v) and math.isnan(ari_v)
    assert math.isnan(acc.result().nmi) and acc.result().num_samples == 0
    acc.add(np.ones((3, 3), int), np.full((3, 3), 4))
    r = acc.result()
    assert r.nmi == 1.0 and r.ari == 1.0 and r.nmi_per_image == 1.0 and r.num_images == 2


def test_sample_labels_rounds_and_clips():
    lm = np.arange(12).reshape(3, 4)
    got = sample_labels(lm, [[0.4, 0.4], [2.6, 1.2], [10, -3], [3, 2]])
    np.testing.assert_array_equal(got, [0, 7, 3, 11])


def test_davis_metrics_on_a_real_mask():
    import os
    from pathlib import Path

    from dinokit.eval.datasets import read_davis

    shared = Path(os.environ.get("DINOKIT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
    if not (shared / "data" / "davis2016").is_dir():
        pytest.skip("shared benchmark data not available")
    seq = read_davis(shared / "data" / "davis2016", sequences=["dog"], check=False)[0]
    gt = seq.load_mask(10) == 1  # 854x480: tolerance radius ceil(0.008 * 979.2) = 8 px

    def shifted(dx):
        out = np.zeros_like(gt)
        out[:, dx:] = gt[:, : gt.shape[1] - dx]
        return out

    assert boundary_f_measure(gt, gt) == 1.0 and region_similarity(gt, gt) == 1.0
    assert boundary_f_measure(shifted(8), gt) == 1.0  # within tolerance
    assert boundary_f_measure(shifted(9), gt) < 0.9  # left/right edges now out of reach
    assert region_similarity(shifted(8), gt) < 0.9


def test_boundary_f_equals_a_distance_transform_formulation():
    """F from the disk dilation equals the definition: a boundary pixel is matched when the other
    boundary has a pixel within Euclidean distance ceil(0.008 * diagonal)."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for trial in range(4):
        h, w = 60 + 20 * trial, 90
        gt = ndimage.gaussian_filter(rng.random((h, w)), 4) > 0.5  # a few smooth blobs
        assert 0.05 < gt.mean() < 0.95
        pred = ndimage.binary_dilation(gt, iterations=trial) ^ (rng.random((h, w)) > 0.97)
        r = math.ceil(0.008 * math.hypot(h, w))
        pb, gb = seg2bmap(pred), seg2bmap(gt)
        d_to_g = ndimage.distance_transform_edt(~gb)
        d_to_p = ndimage.distance_transform_edt(~pb)
        precision = np.mean(d_to_g[pb] <= r)
        recall = np.mean(d_to_p[gb] <= r)
        expected = 2 * precision * recall / (precision + recall)
        assert boundary_f_measure(pred, gt) == pytest.approx(expected, abs=1e-12), trial
