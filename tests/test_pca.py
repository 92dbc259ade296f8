"""PCA of descriptors: known principal axes, joint vs per-image bases, pictures and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dinokit.cli import main
from dinokit.errors import DinokitError
from dinokit.features import Extractor, GridGeometry
from dinokit.tasks.pca import DescriptorPCA, PCAResult, component_images, pca_descriptors, pca_images

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _anisotropic(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    scales = torch.tensor([10.0, 5.0, 2.0] + [0.1] * (d - 3), dtype=torch.float64)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ q.T + 3.0
    return x.float(), q.T[:3].float()  # rows: the true principal axes


@pytest.mark.parametrize("n,d", [(400, 8), (6, 20)])  # covariance path and SVD path
def test_pca_finds_known_axes_and_matches_svd(n, d):
    x, axes = _anisotropic(n, d)
    k = min(3, n - 1)
    pca = DescriptorPCA(k).fit(x)
    xc = x.double() - x.double().mean(0)
    _, s, vh = torch.linalg.svd(xc, full_matrices=False)
    for i in range(k):
        assert abs(float(pca.components_[i].double() @ vh[i])) == pytest.approx(1.0, abs=1e-4)
        big = int(pca.components_[i].abs().argmax())
        assert pca.components_[i, big] > 0  # sign convention
    np.testing.assert_allclose(pca.explained_variance_.numpy(), (s[:k] ** 2 / (n - 1)).numpy(), rtol=1e-4)
    assert np.all(np.diff(pca.explained_variance_ratio_.numpy()) <= 0)
    if n > d:
        for i in range(3):
            assert abs(float(pca.components_[i] @ axes[i])) > 0.99
    proj = pca.transform(x)
    np.testing.assert_allclose(proj.mean(0).numpy(), 0.0, atol=1e-4)
    with pytest.raises(DinokitError):
        DescriptorPCA(d + n).fit(x)
    with pytest.raises(DinokitError):
        DescriptorPCA(0)


@pytest.mark.parametrize("n,d", [(400, 40), (30, 60)])
def test_randomized_path_for_large_dimensions_matches_the_exact_one(n, d):
    """Log-binned descriptors have thousands of dimensions: there the randomized SVD gives the same components."""
    x, _ = _anisotropic(n, d, seed=3)
    exact = DescriptorPCA(3).fit(x)
    fast = DescriptorPCA(3, exact_max_dim=10).fit(x)  # forces the randomized path
    again = DescriptorPCA(3, exact_max_dim=10).fit(x)
    torch.testing.assert_close(fast.components_, exact.components_, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast.explained_variance_ratio_, exact.explained_variance_ratio_, atol=1e-5, rtol=1e-4)
    assert torch.equal(fast.components_, again.components_)  # seeded
    state = torch.random.get_rng_state()
    DescriptorPCA(3, exact_max_dim=10).fit(x)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is left alone


def test_joint_and_per_image():
    geos = [GridGeometry((5, 7), 8, 4, (24, 32), (48, 64)), GridGeometry((4, 4), 8, 4, (20, 20), (20, 20))]
    x1, _ = _anisotropic(35, 6, seed=1)
    x2, _ = _anisotropic(16, 6, seed=2)
    x2 = x2 + 50.0  # far from image 1: the joint first component separates the images
    joint = pca_descriptors([x1, x2], geos, 2, joint=True)
    per = pca_descriptors([x1, x2], geos, 2, joint=False)
    assert joint[0].components.shape == (5, 7, 2) and joint[1].components.shape == (4, 4, 2)
    j1, j2 = joint[0].components[..., 0].ravel(), joint[1].components[..., 0].ravel()
    assert j1.max() < j2.min() or j2.max() < j1.min()
    for r, x in zip(per, (x1, x2)):  # per image: centred on that image
        np.testing.assert_allclose(r.components.reshape(-1, 2).mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.concatenate([r.components.reshape(-1, 2) for r in joint]).mean(0), 0.0, atol=1e-3)


def test_component_images():
    geo = GridGeometry((5, 7), 8, 4, (24, 32), (45, 61))
    comps = np.random.default_rng(0).normal(size=(5, 7, 4)).astype(np.float32)
    res = PCAResult(comps, geo, None, np.ones(4) / 4)
    grays, rgb = component_images(res)
    assert len(grays) == 4 and all(g.shape == (45, 61) and g.dtype == np.uint8 for g in grays)
    assert all(g.min() == 0 and g.max() == 255 for g in grays)
    np.testing.assert_array_equal(rgb, np.stack(grays[1:], -1))
    grid_grays, _ = component_images(res, to=None)
    expected = (comps[..., 0] - comps[..., 0].min()) / np.ptp(comps[..., 0]) * 255
    np.testing.assert_array_equal(grid_grays[0], np.rint(expected).astype(np.uint8))
    two, none = component_images(PCAResult(comps[..., :2], geo, None, np.ones(2)))
    assert none is None and len(two) == 2


def test_pca_images_and_cli(tmp_path, data_dir, tiny_model, tiny_weights):
    files = sorted((data_dir / "pf-willow" / "motorbike(G)").glob("*.png"))[:2]
    res = pca_images(Extractor(tiny_model, stride=8, load_size=64, device="cpu"), files, components=3)
    assert [r.components.shape[-1] for r in res] == [3, 3]
    out = tmp_path / "pca"
    args = ["pca", *map(str, files), "-o", str(out), "--weights", str(tiny_weights), "--load-size", "64",
            "--stride", "8", "--components", "4", "--save-arrays", "-q"]
    assert main(args) == 0
    for f, r in zip(files, res):
        size = Image.open(f).size
        for i in range(4):
            assert Image.open(out / f"{f.stem}_pca{i}.png").size == size
        rgb = Image.open(out / f"{f.stem}_pca_rgb.png")
        assert rgb.mode == "RGB" and rgb.size == size
        arr = np.load(out / f"{f.stem}_pca.npy")
        assert arr.shape == (*r.geometry.grid, 4)
    stamp = (out / f"{files[0].stem}_pca0.png").stat().st_mtime_ns
    assert main(args) == 0  # everything exists: skipped
    assert (out / f"{files[0].stem}_pca0.png").stat().st_mtime_ns == stamp
    assert main(args + ["--per-image", "--overwrite"]) == 0
    per = np.load(out / f"{files[0].stem}_pca.npy")
    np.testing.assert_allclose(per.reshape(-1, 4).mean(0), 0.0, atol=1e-3)
    assert main(["pca", str(files[0]), "-o", str(out), "--weights", str(tiny_weights), "--components", "0", "-q"]) == 2
