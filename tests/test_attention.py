"""CLS attention maps: parity with the reference's last-block attention, thresholding, upsampling, PNG output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dinokit.cli import main
from dinokit.errors import DinokitError
from dinokit.features.coords import GridGeometry
from dinokit.features.image import LoadedImage
from dinokit.tasks.attention import (
    attention_maps,
    expected_files,
    keep_mass,
    save_attention_maps,
)


@pytest.fixture(scope="module")
def ref(golden_dir):
    return load_file(str(golden_dir / "reference_outputs.safetensors"))


def _loaded(ref, key, rgb_key=None):
    t = ref[key]
    h, w = t.shape[-2:]
    rgb = ref[rgb_key].numpy()[:h, :w] if rgb_key else np.zeros((h, w, 3), np.uint8)
    return LoadedImage(t, np.ascontiguousarray(rgb), (h, w))


@pytest.mark.parametrize("image", ["cat", "ibex"])
def test_cls_attention_matches_reference(ref, tiny_model, image):
    maps = attention_maps(tiny_model, _loaded(ref, f"{image}.crop96.input"), threshold=None, device="cpu")
    want = ref[f"{image}.crop96.last_attn"][:, 0, 1:].reshape(6, 12, 12).numpy()
    assert maps.grid == (12, 12) and maps.num_heads == 6
    np.testing.assert_allclose(maps.grid_attention, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps.mean, np.kron(want.mean(0), np.ones((8, 8))), rtol=1e-4, atol=1e-6)
    # at stride = patch size, nearest upsampling is DINO's scale_factor=patch_size display
    np.testing.assert_allclose(maps.attention, np.kron(want, np.ones((1, 8, 8))), rtol=1e-4, atol=1e-6)


def test_keep_mass_is_dinos_rule():
    attn = torch.tensor([[0.1, 0.5, 0.1, 0.3], [0.25, 0.25, 0.25, 0.25]])
    keep = keep_mass(attn, 0.6)
    assert keep[0].tolist() == [False, True, False, True]  # 0.5 + 0.3 is the smallest set reaching 0.6
    assert keep[1].sum() == 3  # ties: three quarters hold 0.75 >= 0.6, two hold only 0.5
    with pytest.raises(DinokitError):
        keep_mass(attn, 0.0)


def test_threshold_keeps_the_requested_mass(ref, tiny_model):
    maps = attention_maps(tiny_model, _loaded(ref, "ibex.input"), threshold=0.6, device="cpu")
    assert maps.image.shape[:2] == (98, 96) and maps.attention.shape == (6, 98, 96)  # not a multiple of 8
    rows, cols = maps.grid
    for h in range(maps.num_heads):
        a = maps.grid_attention[h].ravel()
        kept = maps.masks[h][: rows * 8 : 8, : cols * 8 : 8].ravel()  # one pixel per patch
        share = a[kept].sum() / a.sum()
        assert share >= 0.6 - 1e-6
        # minimal: dropping the weakest kept patch falls below the fraction
        assert (a[kept].sum() - a[kept].min()) / a.sum() < 0.6
    assert maps.mean_mask is not None and maps.mean_mask.any()


def test_upsampling_any_stride():
    geo = GridGeometry((2, 3), 8, 8, (16, 24), (16, 24))
    grid = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(geo.upsample(grid, "resized", "nearest"), np.kron(grid, np.ones((8, 8))))
    # stride 4: centres at 4, 8, 12 ... each pixel takes the nearest centre, edges extend
    g = np.arange(9, dtype=np.float32).reshape(3, 3)  # a 16x16 image, patch 8, stride 4
    geo = GridGeometry((3, 3), 8, 4, (16, 16), (16, 16))
    up = geo.upsample(g, "resized", "nearest")
    assert up.shape == (16, 16)
    assert up[0, 0] == 0 and up[15, 15] == 8 and up[8, 8] == 4
    bil = geo.upsample(g, "resized", "bilinear")
    assert bil[0, 0] == 0 and bil[15, 15] == 8
    # pixel column 6 (centre 6.5) lies 5/8 of the way from the first patch centre (x=4) to the second (x=8)
    assert bil[0, 6] == pytest.approx(0.625)
    with pytest.raises(ValueError):
        geo.upsample(g, "resized", "cubic")


def test_one_nearest_rule_for_attention_and_pca_at_odd_strides(tiny_model):
    """Patch 14 at stride 7 puts some pixel centres exactly between two patch centres: every map breaks
    the tie the same way (towards the later patch), the attention masks and the PCA/similarity pictures alike."""
    geo = GridGeometry((3, 3), 14, 7, (28, 28), (28, 28))
    ids = np.arange(9, dtype=np.float32).reshape(3, 3)
    near = geo.upsample(ids, "resized", "nearest")
    # pixel 10 (centre 10.5) is 3.5 from the centres at 7 and 14: the later patch wins
    assert near[0, 10] == 1 and near[10, 0] == 3
    assert near[0, 9] == 0 and near[0, 16] == 1 and near[0, 17] == 2
    maps = np.stack([ids, 2 * ids])
    from dinokit.tasks import attention
    up = attention._to_pixels(maps, geo, "nearest")
    assert np.array_equal(up[0], near) and np.array_equal(up[1], 2 * near)


def test_overlapping_patches_give_a_finer_grid(tiny_model):
    img = Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8))
    coarse = attention_maps(tiny_model, img, load_size=None, device="cpu")
    fine = attention_maps(tiny_model, img, load_size=None, stride=4, device="cpu")
    assert coarse.grid == (5, 6) and fine.grid == (9, 11)
    assert fine.attention.shape == coarse.attention.shape == (6, 40, 48)
    with pytest.raises(DinokitError, match="stride"):
        attention_maps(tiny_model, img, stride=3, device="cpu")


def test_save_pngs_and_arrays(tmp_path, ref, tiny_model):
    maps = attention_maps(tiny_model, _loaded(ref, "cat.input", "cat.resized_rgb"), device="cpu")
    files = save_attention_maps(maps, tmp_path / "cat", save_arrays=True)
    names = sorted(p.name for p in files)
    assert names == sorted(expected_files(6, 0.6, save_arrays=True))
    heat = np.asarray(Image.open(tmp_path / "cat" / "attn-head0.png"))
    assert heat.shape == (96, 128, 3) and len(np.unique(heat.reshape(-1, 3), axis=0)) > 10  # a colour map
    rgb = maps.image.astype(int)
    overlay = np.asarray(Image.open(tmp_path / "cat" / "overlay-mean.png")).astype(int)
    assert np.abs(overlay - rgb).mean() > 5  # blended, not a copy of the image
    # opacity follows the attention: the least attended patch shows the photo untouched, the most attended does not
    low, high = maps.mean == maps.mean.min(), maps.mean == maps.mean.max()
    assert np.array_equal(overlay[low], rgb[low]) and np.abs(overlay[high] - rgb[high]).mean() > 20
    # thresholded mask: the region left out is darkened, the kept region keeps the photo (but for its outline)
    mask = np.asarray(Image.open(tmp_path / "cat" / "mask-head0.png")).astype(int)
    kept = maps.masks[0]
    assert mask[~kept].mean() < 0.5 * rgb[~kept].mean()
    assert np.mean(np.all(mask[kept] == rgb[kept], axis=1)) > 0.5
    # summary: image, mean and the 6 heads side by side at the image's size (96 x 128), 6 px apart
    summary = np.asarray(Image.open(tmp_path / "cat" / "summary.png"))
    assert summary.shape == (96, 8 * 128 + 7 * 6, 3)
    assert np.array_equal(summary[40:, :128], maps.image[40:])  # first tile: the image (label at the top)
    head3 = summary[40:, 5 * 134 : 5 * 134 + 128]
    assert not np.array_equal(head3, summary[40:, 4 * 134 : 4 * 134 + 128])  # heads differ
    arrays = load_file(str(tmp_path / "cat" / "attention.safetensors"))
    np.testing.assert_allclose(arrays["grid_attention"].numpy(), maps.grid_attention)


def test_cli_writes_and_skips(tmp_path, golden_dir, tiny_weights):
    out = tmp_path / "att"
    args = ["attention", str(golden_dir / "images" / "ibex.jpg"), "-o", str(out), "--weights", str(tiny_weights),
            "--load-size", "64", "--stride", "4", "-q", "--device", "cpu"]
    assert main(args) == 0
    files = sorted(p.name for p in (out / "ibex").iterdir())
    assert files == sorted(expected_files(6, 0.6))
    stamp = (out / "ibex" / "attn-mean.png").stat().st_mtime_ns
    assert main(args) == 0  # finished images are skipped
    assert (out / "ibex" / "attn-mean.png").stat().st_mtime_ns == stamp
    assert main(args + ["--threshold", "none", "--overwrite"]) == 0
    assert main(["attention", str(tmp_path / "missing.jpg"), "-o", str(out), "--weights", str(tiny_weights), "-q"]) == 2
