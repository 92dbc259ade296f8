"""The folder pipeline of ``dinokit extract`` (loader workers, equal-size batches, background writer, torchrun).

Its files must be bit-identical, in float32 on the CPU, to the per-image
path (:func:`dinokit.features.export.write_descriptor_file`), whatever the
batch size and the number of loader workers, with images of mixed sizes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dinokit.cli import main
from dinokit.features import Extractor
from dinokit.features.export import write_descriptor_file
from dinokit.features.pipeline import PipelineOptions, _Loaded, batches_by_size, extract_folder
from dinokit.io import unique_output_names
from dinokit.runs import RECORD_NAME, ItemFailures, OutputFolder
from dinokit.settings import ExtractSettings

from .conftest import ROOT, TRAINED_WEIGHTS, torch_threads

FLAGS = ["--load-size", "64", "--stride", "8", "--layer", "5,-1", "--facet", "key,token", "--saliency"]
SETTINGS = ExtractSettings(load_size=64, stride=8, layer=(5, -1), facet=("key", "token"), saliency=True)


@pytest.fixture(scope="module")
def mixed_images(tmp_path_factory, data_dir) -> Path:
    """Seven real images of four resized sizes (pf-willow, msrc-cow, afhq), interleaved."""
    folder = tmp_path_factory.mktemp("mixed")
    picks = sorted((data_dir / "pf-willow").glob("*/*.png"))[:3] + sorted((data_dir / "msrc-cow" / "images").glob("*"))[:2] \
        + sorted((data_dir / "afhq").glob("*/*/*.jpg"))[:2]
    for i, src in enumerate(picks):
        shutil.copy(src, folder / f"{i:02d}_{src.name}")
    return folder


@pytest.fixture(scope="module")
def per_image(tmp_path_factory, mixed_images) -> Path:
    """The reference: one :func:`write_descriptor_file` call per image."""
    out = tmp_path_factory.mktemp("per_image")
    with torch_threads(1):
        ex = Extractor(str(TRAINED_WEIGHTS), stride=8, load_size=64, device="cpu")
        for path in sorted(mixed_images.iterdir()):
            write_descriptor_file(ex, path, out / f"{path.stem}.safetensors", SETTINGS)
    return out


def _read(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return load_file(str(path)), meta


def assert_same_files(got: Path, want: Path, names: list[str], same_paths: bool = True) -> None:
    for name in names:
        a, ma = _read(got / f"{name}.safetensors")
        b, mb = _read(want / f"{name}.safetensors")
        if not same_paths:  # the images were copied elsewhere: the recorded path differs, nothing else
            assert Path(ma.pop("image")).name == Path(mb.pop("image")).name
        assert ma == mb, name
        assert a.keys() == b.keys(), name
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), f"{name}: {key} differs"


def test_sizes_are_mixed(mixed_images):
    from PIL import Image

    from dinokit.features.image import resized_size

    sizes = {resized_size(*Image.open(p).size[::-1], 64) for p in mixed_images.iterdir()}
    assert len(sizes) >= 3


@pytest.mark.parametrize("batch,workers", [(1, 0), (3, 2)])
def test_cli_pipeline_is_bit_identical_to_per_image(tmp_path, mixed_images, per_image, batch, workers, one_thread):
    out = tmp_path / "out"
    args = ["extract", str(mixed_images), "-o", str(out), "--weights", str(TRAINED_WEIGHTS), "--device", "cpu",
            "--batch-size", str(batch), "--num-workers", str(workers), "-q", *FLAGS]
    assert main(args) == 0
    names = sorted(p.stem for p in mixed_images.iterdir())
    assert_same_files(out, per_image, names)
    record = json.loads((out / RECORD_NAME).read_text())
    assert sorted(record["finished"]) == names
    assert main(args) == 0  # a rerun skips everything


def test_bad_image_is_reported_and_the_others_go_on(tmp_path, mixed_images, per_image, capsys, one_thread):
    imgs = tmp_path / "imgs"
    shutil.copytree(mixed_images, imgs)
    (imgs / "03_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    common = ["--weights", str(TRAINED_WEIGHTS), "--device", "cpu", "--batch-size", "4", "--num-workers", "1", *FLAGS]
    assert main(["extract", str(imgs), "-o", str(out), "-q", *common]) == 1
    err = capsys.readouterr().err
    assert "03_broken.png" in err and "1 of 8 image(s) failed" in err
    good = sorted(p.stem for p in mixed_images.iterdir())
    assert_same_files(out, per_image, good, same_paths=False)
    assert not (out / "03_broken.safetensors").exists()
    assert sorted(json.loads((out / RECORD_NAME).read_text())["finished"]) == good
    # --fail-fast stops with the message (exit code 2, as for any refused run)
    assert main(["extract", str(imgs), "-o", str(tmp_path / "ff"), "-q", "--fail-fast", *common]) == 2
    assert "03_broken.png" in capsys.readouterr().err


def _loaded(i: int, size: tuple[int, int]) -> _Loaded:
    return _Loaded(i, f"n{i}", f"p{i}", torch.zeros(3, *size), size)


def test_batches_group_equal_sizes_and_hold_a_bounded_number():
    sizes = [(8, 8), (8, 16), (8, 8), (8, 8), (8, 16), (16, 8), (8, 8)]
    items = [_loaded(i, s) for i, s in enumerate(sizes)] + [_Loaded(7, "bad", "p7", error="unreadable")]
    batches = list(batches_by_size(iter(items), 3))
    assert sorted(i.index for b in batches for i in b) == list(range(8))
    for b in batches:
        assert len(b) <= 3 and len({tuple(i.tensor.shape) if i.tensor is not None else None for i in b}) == 1
    assert [i.index for i in batches[0]] == [0, 2, 3]  # the first full bucket
    assert any(b[0].error for b in batches)
    # with room for only two waiting images, buckets are released early: never more than 2 + 1 held
    small = list(batches_by_size(iter([_loaded(i, (8, 8 + 8 * i)) for i in range(6)]), 4, hold=2))
    assert sorted(i.index for b in small for i in b) == list(range(6)) and len(small) >= 3


def test_ranks_share_the_pending_items_without_overlap(tmp_path, mixed_images, one_thread):
    """Rank r of w takes pending items r, r + w, ...: together every item once, finished ones left out."""
    paths = sorted(mixed_images.iterdir())
    names = unique_output_names(paths)
    ex = Extractor(str(TRAINED_WEIGHTS), stride=8, load_size=64, device="cpu")
    folder = OutputFolder(tmp_path / "o", "extract", {"x": 1})
    folder.finish(names[1])
    seen = []
    for rank in range(3):
        view = OutputFolder(tmp_path / "o", "extract", {"x": 1}, write_record=False)
        report = extract_folder(ex, list(zip(names, paths)), tmp_path / "o", SETTINGS, view, ItemFailures(),
                                PipelineOptions(batch_size=2, rank=rank, world_size=3, progress=False))
        assert report.skipped == 1
        seen += report.finished
    assert sorted(seen) == sorted(n for n in names if n != names[1])
    assert json.loads((tmp_path / "o" / RECORD_NAME).read_text())["finished"] == [names[1]]  # views never write


@pytest.mark.slow
def test_torchrun_two_processes_write_each_file_once(tmp_path, mixed_images, per_image):
    """Two gloo processes: every file written once (a second write would be refused in a fresh folder), equal
    to the single-process files, and rank 0 records all of them."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in sorted(mixed_images.iterdir())[:5]:
        shutil.copy(p, imgs / p.name)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dinokit",
           "extract", str(imgs), "-o", str(out), "--weights", str(TRAINED_WEIGHTS), "--device", "cpu",
           "--batch-size", "2", "-q", *FLAGS]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.stem for p in imgs.iterdir())
    assert sorted(p.stem for p in out.glob("*.safetensors")) == names
    assert_same_files(out, per_image, names, same_paths=False)
    record = json.loads((out / RECORD_NAME).read_text())
    assert sorted(record["finished"]) == names
    assert proc.stderr.count("wrote descriptors of 5 image(s)") == 1  # one summary, from rank 0


def test_writer_records_in_groups_and_hands_errors_to_the_caller():
    from dinokit.errors import DinokitError
    from dinokit.features.pipeline import _Writer

    written, recorded = [], []

    def write(name, tensors, meta):
        if name == "bad":
            raise DinokitError("bad: cannot write")
        written.append(name)

    failures = ItemFailures()
    w = _Writer(write, recorded.append, failures, depth=2, record_every=2, record_seconds=3600)
    for name in ["a", "b", "bad", "c"]:
        w.put(name, {}, {})
    w.close()
    assert written == ["a", "b", "c"] and recorded == [["a", "b"], ["c"]]
    assert list(failures.failed) == ["bad"] and w.done == 3
    strict = _Writer(write, recorded.append, ItemFailures(fail_fast=True), depth=1)
    strict.put("bad", {}, {})
    with pytest.raises(DinokitError, match="cannot write"):
        strict.close()
