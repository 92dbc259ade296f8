"""One rule per situation, the same in every command: devices, reruns, output folders, own outputs, help."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from dinokit.cli import build_parser, main
from dinokit.runs import RECORD_NAME


def _pair(data_dir: Path) -> list[str]:
    folder = data_dir / "pf-willow" / "motorbike(G)"
    return [str(p) for p in sorted(folder.glob("*.png"))[:2]]


def _small(tmp_path: Path, n: int = 2) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (40 + 8 * i, 48), (40 * i, 120, 200)).save(folder / f"im{i}.png")
    return folder


def _commands(images: list[str], out: Path) -> dict[str, list[str]]:
    """A minimal invocation of every command that takes a model (without its --device)."""
    a, b = images[:2]
    folder = str(Path(a).parent)
    return {
        "extract": ["extract", a, "-o", str(out)],
        "correspond": ["correspond", a, b, "-o", str(out)],
        "similarity": ["similarity", a, b, "--point", "5", "5", "-o", str(out)],
        "pca": ["pca", a, b, "-o", str(out)],
        "attention": ["attention", a, "-o", str(out)],
        "cosegment": ["cosegment", a, b, "-o", str(out)],
        "parts": ["parts", a, b, "-o", str(out)],
        "inspect": ["inspect", a, b],
        "knn": ["knn", "--train", folder, "--test", folder],
        "train": ["train", "--data", folder, "-o", str(out)],
    }


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "foo"])
def test_every_command_refuses_a_missing_device_in_one_line(tmp_path, data_dir, tiny_weights, capsys, device):
    import torch

    if torch.cuda.is_available() and device != "foo":
        pytest.skip("CUDA is present here")
    for name, args in _commands(_pair(data_dir), tmp_path / "out").items():
        code = main([*args, "--weights", str(tiny_weights), "--device", device, "-q"])
        err = capsys.readouterr().err.strip()
        assert code == 2, (name, err)
        assert err.startswith("dinokit: error: ") and len(err.splitlines()) == 1, (name, err)
        assert device in err and "available" in err and "cpu" in err, (name, err)


def test_unwritable_output_is_found_before_the_model_loads(tmp_path, data_dir, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    gone = str(tmp_path / "missing-weights.pth")  # the model would fail to load: the folder check must come first
    for name, args in _commands(_pair(data_dir), blocker).items():
        if name in ("inspect", "knn"):
            continue
        code = main([*args, "--weights", gone, "-q"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and str(blocker) in err and "not a folder" in err, (name, err)
        assert ".tmp" not in err and len(err.splitlines()) == 1


def test_reruns_with_other_settings_refuse_and_overwrite_redoes(tmp_path, data_dir, tiny_weights, capsys):
    a, b = _pair(data_dir)
    common = ["--weights", str(tiny_weights), "--load-size", "48", "-q"]
    sim = tmp_path / "sim"
    assert main(["similarity", a, b, "--point", "10", "10", "-o", str(sim), *common]) == 0
    capsys.readouterr()
    assert main(["similarity", a, b, "--point", "10", "10", "-o", str(sim), *common]) == 0
    assert "already done" in capsys.readouterr().err
    assert main(["similarity", a, b, "--point", "20", "20", "-o", str(sim), *common]) == 2
    assert "points" in capsys.readouterr().err
    assert main(["similarity", a, b, "--point", "20", "20", "-o", str(sim), *common, "--overwrite"]) == 0
    assert "[20.0, 20.0]" in (sim / "similarity.json").read_text().replace("\n", "").replace(" ", "").replace(
        ",", ", ")
    cor = tmp_path / "cor"
    assert main(["correspond", a, b, "-o", str(cor), *common, "--num-pairs", "3"]) == 0
    capsys.readouterr()
    assert main(["correspond", a, b, "-o", str(cor), *common, "--num-pairs", "4"]) == 2
    assert "num_pairs: 3 -> 4" in capsys.readouterr().err
    other = tmp_path / "other.pth"
    shutil.copy(tiny_weights, other)
    assert main(["correspond", a, b, "-o", str(cor), "--weights", str(other), "--load-size", "48", "-q",
                 "--num-pairs", "3"]) == 2
    assert "weights" in capsys.readouterr().err


def test_commands_never_read_their_own_outputs(tmp_path, tiny_weights, capsys):
    imgs = _small(tmp_path)
    args = ["attention", str(imgs), "-o", str(imgs / "attn"), "--weights", str(tiny_weights), "--load-size", "48",
            "-q"]
    assert main(args) == 0
    assert "of 2 image(s)" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0  # the PNGs written into imgs/attn are not taken as inputs
    assert "of 2 image(s)" in capsys.readouterr().err
    assert (imgs / "attn" / RECORD_NAME).is_file()
    other = tmp_path / "more"
    shutil.copytree(imgs / "attn", other)  # a copy elsewhere is still recognised by its record
    from dinokit.features import list_images

    assert list_images([tmp_path]) == sorted(imgs.glob("*.png"))


def test_correspond_says_why_fewer_pairs_came_back(tmp_path, data_dir, tiny_weights, capsys):
    a, b = _pair(data_dir)
    code = main(["correspond", a, b, "-o", str(tmp_path), "--weights", str(tiny_weights), "--load-size", "48",
                 "--num-pairs", "50", "-q"])
    assert code == 0
    err = capsys.readouterr().err
    assert "warning" in err and "of 50 correspondences" in err and "best buddies" in err


def test_help_texts_name_the_options_as_they_are():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    extract = sub.choices["extract"].format_help()
    assert "OUTDIR" not in extract and "(the reference's default)" not in extract
    assert sub.choices["models"].description
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.dest not in ("help",):
                assert action.help, f"{name} {action.option_strings} has no help"
    quiet = next(a for a in sub.choices["extract"]._actions if a.dest == "quiet")
    assert "summary" in quiet.help


def test_a_run_that_finished_nothing_does_not_block_the_next(tmp_path, data_dir, tiny_weights, capsys):
    """The README's first command offline: the download fails; the same command with --weights then runs."""
    a, b = _pair(data_dir)
    out = tmp_path / "out"
    assert main(["correspond", a, b, "-o", str(out), "--weights", str(tmp_path / "missing.pth"), "-q"]) == 2
    capsys.readouterr()
    assert main(["correspond", a, b, "-o", str(out), "--weights", str(tiny_weights), "--load-size", "48", "-q"]) == 0
    assert (out / "correspondences.json").is_file()
