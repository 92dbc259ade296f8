"""Image loading, the extractor's shapes and options, log-binning and patch geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dinokit.errors import DinokitError, ImageError
from dinokit.features import Extractor, GridGeometry, list_images, log_bin, preprocess, resized_size
from dinokit.models import ArchConfig, create_model


@pytest.fixture(scope="module")
def small_model():
    return create_model(ArchConfig(patch_size=8, embed_dim=32, depth=3, num_heads=4, img_size=64), seed=0)


def reference_log_bin(desc: torch.Tensor, rows: int, cols: int, hierarchy: int = 2) -> torch.Tensor:
    """The reference's per-position loop (Amir et al.'s _log_bin), for comparison."""
    B, T, D = desc.shape
    x = desc.transpose(1, 2).reshape(B, D, rows, cols)
    pools = [torch.nn.AvgPool2d(3**k, stride=1, padding=3**k // 2, count_include_pad=False)(x) for k in range(hierarchy)]
    out = torch.zeros(B, D * (1 + 8 * hierarchy), rows, cols)
    for y in range(rows):
        for xx in range(cols):
            part = 0
            for k in range(hierarchy):
                ks = 3**k
                for i in range(y - ks, y + ks + 1, ks):
                    for j in range(xx - ks, xx + ks + 1, ks):
                        if i == y and j == xx and k != 0:
                            continue
                        ii, jj = max(0, min(i, rows - 1)), max(0, min(j, cols - 1))
                        out[:, part * D:(part + 1) * D, y, xx] = pools[k][:, :, ii, jj]
                        part += 1
    return out.flatten(2).permute(0, 2, 1)


@pytest.mark.parametrize("rows,cols,hierarchy,dim", [(5, 7, 2, 6), (1, 4, 2, 6), (9, 3, 3, 6), (2, 2, 1, 6),
                                                      (1, 1, 2, 5), (2, 13, 3, 7), (11, 12, 2, 48), (17, 9, 2, 384)])
def test_log_bin_matches_reference_loop_bit_for_bit(rows, cols, hierarchy, dim):
    desc = torch.randn(2, rows * cols, dim) * 3
    expected = reference_log_bin(desc, rows, cols, hierarchy)
    assert torch.equal(log_bin(desc, (rows, cols), hierarchy), expected)
    # a batch with the CLS row sliced off (not contiguous) and a caller's output buffer
    with_cls = torch.cat([torch.randn(2, 1, dim), desc], dim=1)
    out = torch.full((2, rows * cols, (1 + 8 * hierarchy) * dim), float("nan"))
    assert log_bin(with_cls[:, 1:], (rows, cols), hierarchy, out=out) is out
    assert torch.equal(out, expected)


def test_log_bin_rejects_wrong_grid_and_buffer():
    with pytest.raises(ValueError):
        log_bin(torch.zeros(1, 10, 3), (3, 3))
    with pytest.raises(ValueError, match="out must be"):
        log_bin(torch.zeros(1, 9, 3), (3, 3), out=torch.zeros(1, 9, 50))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_pil_mode_becomes_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray((np.arange(600, dtype=np.uint16).reshape(20, 30) * 100))
        assert img.mode.startswith("I;16")
    else:
        img = rgb.convert(mode)
    suffix = ".tiff" if mode in ("I;16", "I", "F", "CMYK") else ".png"
    path = tmp_path / f"img{suffix}"
    img.save(path)
    out = preprocess(path, None)
    assert out.rgb.shape == (20, 30, 3) and out.rgb.dtype == np.uint8
    if mode == "I;16":  # 16-bit range rescaled, not clipped to white
        assert 0 < out.rgb.mean() < 255 and out.rgb.max() > 200


def test_alpha_is_composited_over_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    out = preprocess(img, None)
    assert (out.rgb == 255).all()


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    img.paste((10, 10, 200), (20, 0, 40, 20))  # left half red, right half blue
    img.save(path, exif=exif)
    out = preprocess(path, None)
    assert out.original_size == (40, 20)
    # displayed as stored rotated 90 degrees clockwise: the red left half is now on top
    top, bottom = out.rgb[:15].reshape(-1, 3).mean(0), out.rgb[25:].reshape(-1, 3).mean(0)
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]


def test_resize_rule():
    assert resized_size(3024, 4032, 96) == (96, 128)
    assert resized_size(2751, 2686, 96) == (98, 96)
    assert resized_size(100, 50, None) == (100, 50)
    assert resized_size(100, 50, (32, 48)) == (32, 48)


def test_bad_images_named_in_errors(tmp_path, small_model):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("hello, not an image")
    truncated = tmp_path / "trunc.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (5, 40)).save(tiny)
    ex = Extractor(small_model, load_size=None, device="cpu")
    for path, pattern in [(empty, "empty"), (text, "not an image"), (truncated, "cannot read"),
                          (tiny, "smaller than one 8-pixel patch"), (tmp_path / "missing.png", "no such file")]:
        with pytest.raises(ImageError, match=pattern) as err:
            ex.extract(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_list_images_expands_folders_and_globs(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".cache").mkdir()
    for name in ("a.jpg", "b.PNG", "sub/c.png", "notes.txt", "._a.jpg", ".cache/d.png", ".a.png.x1.tmp.png"):
        p = tmp_path / name
        if name.endswith("txt"):
            p.write_text("x")
        else:
            Image.new("RGB", (8, 8)).save(p, format="PNG")
    found = list_images([tmp_path])
    assert [p.name for p in found] == ["a.jpg", "b.PNG", "c.png"]
    assert [p.name for p in list_images([str(tmp_path / "*.jpg"), tmp_path / "a.jpg"])] == ["a.jpg"]
    assert [p.name for p in list_images([tmp_path / "._a.jpg"])] == ["._a.jpg"]  # named explicitly: taken
    with pytest.raises(ImageError, match="matches no file"):
        list_images([str(tmp_path / "*.gif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no image files"):
        list_images([tmp_path / "empty"])


@pytest.mark.parametrize("size,stride", [((37, 53), 4), ((64, 64), 8), ((33, 41), 2), ((40, 31), 1)])
def test_any_size_and_stride(small_model, size, stride):
    ex = Extractor(small_model, stride=stride, device="cpu")
    x = torch.randn(2, 3, *size)
    feats = ex.extract(x, [0, 2], ["key", "token"], saliency=True)
    rows, cols = 1 + (size[0] - 8) // stride, 1 + (size[1] - 8) // stride
    assert feats.grid == (rows, cols)
    assert feats.get(0, "key").shape == (2, rows * cols, 32)
    assert feats.get(2, "token").shape == (2, rows * cols, 32)
    assert feats.saliency.shape == (2, rows * cols)
    assert torch.allclose(feats.saliency.amin(1), torch.zeros(2)) and torch.allclose(feats.saliency.amax(1), torch.ones(2))
    binned = ex.extract(x, 1, "value", bin=True).get()
    assert binned.shape == (2, rows * cols, 17 * 32)


def test_batch_equals_single_images(small_model):
    ex = Extractor(small_model, stride=4, device="cpu")
    x = torch.randn(3, 3, 40, 48)
    batch = ex.extract(x, 2, "query", include_cls=True).get()
    for i in range(3):
        torch.testing.assert_close(batch[i:i + 1], ex.extract(x[i], 2, "query", include_cls=True).get(), atol=1e-5, rtol=1e-5)


def test_extract_many_mixed_sizes(small_model):
    ex = Extractor(small_model, load_size=None, device="cpu")
    imgs = [Image.new("RGB", s, c) for s, c in [((40, 32), "red"), ((40, 32), "blue"), ((24, 56), "green")]]
    out = ex.extract_many(imgs, batch_size=4, layers=1, facets="key")
    assert [f.grid for f in out] == [(4, 5), (4, 5), (7, 3)]
    with pytest.raises(DinokitError, match="different sizes"):
        ex.extract(imgs)


def test_invalid_options(small_model):
    with pytest.raises(DinokitError, match="must divide"):
        Extractor(small_model, stride=3, device="cpu")
    ex = Extractor(small_model, device="cpu")
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(DinokitError, match="layer 5 does not exist"):
        ex.extract(x, 5)
    with pytest.raises(DinokitError, match="unknown facet"):
        ex.extract(x, 0, "keys")
    with pytest.raises(DinokitError, match="cannot be combined"):
        ex.extract(x, 0, "key", bin=True, include_cls=True)
    with pytest.raises(ValueError, match="out of range"):
        ex.extract(x, 0, saliency=True, saliency_heads=[7])


def test_deepest_block_bounds_the_pass(small_model, monkeypatch):
    calls = []
    for i, blk in enumerate(small_model.blocks):
        monkeypatch.setattr(blk, "forward", (lambda f, i: lambda *a, **k: (calls.append(i), f(*a, **k))[1])(blk.forward, i))
    Extractor(small_model, device="cpu").extract(torch.randn(1, 3, 32, 32), 1, "key")
    assert calls == [0, 1]


def test_fused_attention_matches_explicit(small_model):
    """The fused path (no weights requested) equals the explicit softmax path."""
    x = torch.randn(1, 3, 40, 40)
    fused = small_model.run(x, {2: {"token"}}).taps[2]["token"]
    explicit = small_model.run(x, {0: {"attn"}, 1: {"attn"}, 2: {"attn", "token"}}).taps[2]["token"]
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision(small_model, dtype):
    x = torch.randn(1, 3, 40, 48)
    ref = Extractor(small_model, stride=4, device="cpu").extract(x, [1, 2], ["key", "token"], bin=True, saliency=True)
    # the Extractor converts the model it is given: use a copy with the same weights
    low = Extractor(create_model(small_model.cfg, seed=0), stride=4, device="cpu", dtype=dtype)
    assert next(low.model.parameters()).dtype == getattr(torch, dtype)
    feats = low.extract(x, [1, 2], ["key", "token"], bin=True, saliency=True)
    assert feats.settings["dtype"] == dtype
    for key, want in ref.descriptors.items():
        got = feats.descriptors[key]
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert F.cosine_similarity(want.flatten(), got.flatten(), dim=0) > 0.99
        assert not torch.equal(got, want)  # really computed in low precision
    assert feats.saliency.dtype == torch.float32
    assert (feats.saliency - ref.saliency).abs().max() < 0.1


def test_geometry_round_trips_non_square():
    geo = GridGeometry(grid=(1 + (83 - 8) // 4, 1 + (117 - 8) // 4), patch_size=8, stride=4,
                       resized_size=(83, 117), original_size=(301, 425))
    idx = np.arange(geo.num_patches)
    xy = geo.index_to_xy(idx)
    assert np.array_equal(geo.xy_to_index(xy), idx)
    assert np.array_equal(geo.xy_to_index(geo.index_to_xy(idx, original=True), original=True), idx)
    np.testing.assert_allclose(geo.to_resized(geo.to_original(xy)), xy)
    assert xy[:, 0].max() < 117 and xy[:, 1].max() < 83 and xy.min() >= 4
    torch.testing.assert_close(geo.centers(), torch.from_numpy(xy))
    first = geo.index_to_xy(geo.grid[1] + 2)  # row 1, column 2
    assert tuple(first) == (2 * 4 + 4.0, 1 * 4 + 4.0)
    corner = geo.to_original(np.array([117.0, 83.0]))
    np.testing.assert_allclose(corner, [425.0, 301.0])
    with pytest.raises(IndexError):
        geo.index_to_xy(geo.num_patches)


# --- dinokit extract: files, folders, globs, skipping, atomic writes, progress --------------------


@pytest.fixture()
def extract_setup(tmp_path, small_model):
    from dinokit.models import save_backbone

    weights = save_backbone(small_model, tmp_path / "small.safetensors")
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in [("a.png", (48, 40)), ("b.jpg", (40, 56)), ("sub/c.png", (33, 47))]:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(imgs / name)
    (imgs / "notes.txt").write_text("not an image")
    common = ["--weights", str(weights), "--load-size", "none", "--device", "cpu"]
    return imgs, common


def test_cli_extract_folder_glob_skip_overwrite(tmp_path, extract_setup, capsys, monkeypatch):
    from dinokit.cli import main
    from dinokit.features.export import read_descriptor_file

    imgs, common = extract_setup
    out = tmp_path / "out"
    assert main(["extract", str(imgs), "-o", str(out), *common, "--layer", "1", "--bin"]) == 0
    err = capsys.readouterr().err
    assert "extract" in err and "3/3" in err and "wrote descriptors of 3 image(s)" in err  # progress and summary
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    # no temporary files left behind; the run record is the only hidden file
    assert files == [".dinokit-run.json", "a.safetensors", "b.safetensors", "sub/c.safetensors"]
    tensors, meta = read_descriptor_file(out / "a.safetensors")
    rows, cols = 1 + (40 - 8) // 4, 1 + (48 - 8) // 4  # default stride 'auto': half the 8-pixel patch
    assert meta["grid"] == f"{rows},{cols}" and meta["stride"] == "4" and meta["resized_size"] == "40,48"
    assert tensors["descriptors.l1.key"].shape == (rows * cols, 17 * 32)
    assert json_settings(meta)["dtype"] == "float32" and json_settings(meta)["bin"] is True

    # a rerun with the same settings skips finished files without touching them, without loading the model
    stamp = (out / "a.safetensors").stat().st_mtime_ns
    import dinokit.models

    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(dinokit.models, "load_model", no_model)
    assert main(["extract", str(imgs), "-o", str(out), *common, "--layer", "1", "--bin"]) == 0
    assert "skipped 3 already done with these settings" in capsys.readouterr().err
    assert (out / "a.safetensors").stat().st_mtime_ns == stamp
    monkeypatch.undo()
    # other settings (here another layer) or other weights: refused with the differences, nothing touched
    assert main(["extract", str(imgs), "-o", str(out), *common, "--layer", "2", "--bin"]) == 2
    assert "layer: [1] -> [2]" in capsys.readouterr().err
    assert main(["extract", str(imgs), "-o", str(out), "--weights", str(tmp_path / "gone.safetensors"),
                 "--layer", "1", "--bin"]) == 2
    assert "weights" in capsys.readouterr().err
    assert (out / "a.safetensors").stat().st_mtime_ns == stamp
    # a glob plus one more file: the new one is written, the finished one skipped; --quiet hides the progress
    # bar but keeps the summary
    extra = tmp_path / "extra.png"
    Image.new("RGB", (24, 24), "white").save(extra)
    assert main(["extract", str(imgs / "*.png"), str(extra), "-o", str(out), *common, "--layer", "1", "--bin",
                 "-q"]) == 0
    err = capsys.readouterr().err
    assert "wrote descriptors of 1 image(s)" in err and "skipped 1" in err and "it/s" not in err
    assert (out / "extra.safetensors").is_file() and (out / "a.safetensors").stat().st_mtime_ns == stamp
    # --overwrite redoes the file with the new settings
    assert main(["extract", str(imgs / "a.png"), "-o", str(out), *common, "--stride", "8", "--overwrite", "-q"]) == 0
    tensors, meta = read_descriptor_file(out / "a.safetensors")
    assert meta["grid"] == "5,6" and set(tensors) == {"descriptors.l2.key"}


def json_settings(meta: dict) -> dict:
    import json

    return json.loads(meta["settings"])


def test_cli_extract_bad_images_are_reported_and_skipped(tmp_path, extract_setup, capsys):
    """A truncated image, an empty file and a text file named .jpg each get one line; the others are written,
    a summary lists the bad ones, the exit code says some failed; --fail-fast stops at the first."""
    from dinokit.cli import main

    imgs, common = extract_setup
    (imgs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (imgs / "empty.jpg").write_bytes(b"")
    (imgs / "notes.jpg").write_text("not a picture")
    out = tmp_path / "out"
    assert main(["extract", str(imgs), "-o", str(out), *common, "-q"]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("dinokit: error: ")]
    assert len(lines) == 3 and all(any(n in ln for n in ("broken.png", "empty.jpg", "notes.jpg")) for ln in lines)
    assert "3 of 6 image(s) failed: broken, empty, notes" in err
    assert (out / "a.safetensors").is_file() and (out / "sub" / "c.safetensors").is_file()
    assert not list(out.rglob("*.tmp*"))
    for bad in ("broken.png", "empty.jpg", "notes.jpg"):
        (imgs / bad).unlink()
    assert main(["extract", str(imgs), "-o", str(out), *common]) == 0
    assert "skipped 3 already done" in capsys.readouterr().err
    (imgs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main(["extract", str(imgs), "-o", str(tmp_path / "ff"), *common, "-q", "--fail-fast"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dinokit: error: ") and "broken.png" in err and len(err.splitlines()) == 1


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    from dinokit.io import save_tensors, write_atomic

    target = tmp_path / "x.safetensors"
    save_tensors(target, {"a": torch.zeros(3)})
    before = target.read_bytes()

    def crash_midway(tmp):
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, crash_midway)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "new.bin", crash_midway)
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
    with pytest.raises(DinokitError, match="already exists"):
        save_tensors(target, {"a": torch.ones(3)}, overwrite=False)


def test_cli_unwritable_output_is_one_line(tmp_path, extract_setup, capsys):
    from dinokit.cli import main

    imgs, common = extract_setup
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["extract", str(imgs / "a.png"), "-o", str(blocker / "out"), *common, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dinokit: error: ") and str(blocker) in err and len(err.splitlines()) == 1
