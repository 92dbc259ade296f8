"""GrabCut and dense-CRF refinement on small synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from dinokit.blocks.refine import crf_from_distances, dense_crf, grabcut_refine, upsample_energies, upsample_mask
from dinokit.errors import DinokitError


def square_image(size: int = 64, seed: int = 0, box=(19, 45, 13, 51)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy orange rectangle on a noisy blue background, and its true mask."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), bool)
    truth[box[0] : box[1], box[2] : box[3]] = True
    img = np.where(truth[..., None], np.array([230, 120, 40]), np.array([30, 90, 160])).astype(np.float32)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_upsample_mask_nearest():
    m = np.array([[1, 0], [0, 1]], bool)
    up = upsample_mask(m, (4, 6))
    assert up.shape == (4, 6)
    assert up[:2, :3].all() and not up[:2, 3:].any() and up[2:, 3:].all()


def test_grabcut_snaps_a_coarse_mask_to_the_object():
    img, truth = square_image()
    # a coarse 4x4 grid mask (16-pixel cells): 3 pixels too tall and 3 too narrow on each side
    grid = np.zeros((4, 4), bool)
    grid[1:3, 1:3] = True
    coarse_iou = iou(upsample_mask(grid, truth.shape), truth)
    res = grabcut_refine(img, grid)
    assert res.refined
    assert res.mask.shape == truth.shape and res.mask.dtype == bool
    assert coarse_iou < 0.75
    assert iou(res.mask, truth) > 0.98


def test_grabcut_is_deterministic():
    img, _ = square_image(seed=1)
    grid = np.zeros((8, 8), bool)
    grid[2:6, 2:6] = True
    a = grabcut_refine(img, grid).mask
    grabcut_refine(np.ascontiguousarray(img[::-1]), grid)  # advances OpenCV's global RNG
    b = grabcut_refine(img, grid).mask
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fill", [True, False])
def test_grabcut_falls_back_without_seeds(fill):
    img, _ = square_image()
    grid = np.full((8, 8), fill)
    res = grabcut_refine(img, grid)
    assert not res.refined
    assert res.mask.shape == (64, 64) and (res.mask == fill).all()


def test_grabcut_rejects_non_rgb():
    with pytest.raises(DinokitError, match="RGB"):
        grabcut_refine(np.zeros((8, 8), np.uint8), np.ones((2, 2), bool))


def test_dense_crf_cleans_noisy_unaries():
    img, truth = square_image(48, seed=2, box=(12, 36, 10, 38))
    rng = np.random.default_rng(3)
    # weak, noisy evidence: the right label is favoured by 0.3 on average, with noise of 1.0
    favour = np.stack([~truth, truth], axis=-1).astype(np.float32)
    unary = -0.3 * favour + rng.normal(0, 1.0, favour.shape).astype(np.float32)
    raw = unary.argmin(-1) == 1
    smooth = dense_crf(img, unary) == 1
    assert smooth.shape == truth.shape
    assert (raw == truth).mean() < 0.65
    assert (smooth == truth).mean() > 0.95


def test_crf_from_distances_follows_patches_and_edges():
    img, truth = square_image(64, seed=4, box=(16, 48, 16, 48))
    # an 8x8 patch grid and two centres: distance 0 to the right centre, 2 to the other
    grid_truth = truth[::8, ::8]
    d = np.stack([grid_truth * 2.0, (~grid_truth) * 2.0], axis=-1).astype(np.float32)
    lab = crf_from_distances(img, d)
    assert lab.shape == truth.shape
    assert iou(lab == 1, truth) > 0.95
    up = upsample_energies(d, (64, 64))
    assert up.shape == (64, 64, 2)
    np.testing.assert_array_equal(up[::8, ::8], d)
    # patches misaligned with the object: the colour kernel pulls the labels towards its edges
    img2, truth2 = square_image(64, seed=5, box=(18, 46, 14, 50))
    coarse = iou(up.argmin(-1) == 1, truth2)
    assert iou(crf_from_distances(img2, d) == 1, truth2) > coarse + 0.05


def test_dense_crf_shape_mismatch():
    with pytest.raises(DinokitError, match="do not match"):
        dense_crf(np.zeros((10, 10, 3), np.uint8), np.zeros((9, 10, 2), np.float32))


def test_refinement_defaults_are_the_references():
    import inspect

    crf = {k: v.default for k, v in inspect.signature(dense_crf).parameters.items() if v.default is not inspect._empty}
    assert crf == dict(gaussian_sxy=3, gaussian_compat=50, bilateral_sxy=5, bilateral_srgb=13, bilateral_compat=15,
                       iterations=10)
    gc = inspect.signature(grabcut_refine).parameters
    assert gc["kernel_size"].default == 7 and gc["iter_count"].default == 5
