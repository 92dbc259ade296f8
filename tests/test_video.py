"""Video part co-segmentation: frames from a folder or a video file, parts fitted once, per-frame outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dinokit.cli import main
from dinokit.errors import DinokitError, ImageError
from dinokit.tasks.video import video_frames, video_part_cosegmentation, write_video

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def swan(data_dir):
    return data_dir / "davis2016" / "blackswan" / "frames"


@pytest.fixture(scope="module")
def small_video(swan, tmp_path_factory):
    """A 6-frame 128x72 mp4 made from DAVIS frames."""
    frames = [np.asarray(Image.open(f).convert("RGB").resize((128, 72))) for f in sorted(swan.glob("*.jpg"))[:6]]
    path = tmp_path_factory.mktemp("video") / "swan.mp4"
    write_video(frames, path, fps=12)
    return path


def test_frames_from_a_folder(swan):
    frames = video_frames(swan, frame_step=10)
    assert [f.name for f in frames] == ["00000.jpg", "00010.jpg", "00020.jpg", "00030.jpg", "00040.jpg"]
    assert len(video_frames(swan, 1, max_frames=7)) == 7


def test_frames_from_a_video_file(small_video, tmp_path):
    frames = video_frames(small_video, frame_step=2, frames_dir=tmp_path)
    assert [f.name for f in frames] == ["00000.png", "00002.png", "00004.png"]
    assert np.asarray(Image.open(frames[0])).shape == (72, 128, 3)


def test_bad_sources(tmp_path):
    with pytest.raises(ImageError, match="no image files"):
        video_frames(tmp_path)
    with pytest.raises(ImageError, match="no such video"):
        video_frames(tmp_path / "missing.mp4", frames_dir=tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ImageError, match="not a video file"):
        video_frames(tmp_path / "notes.txt", frames_dir=tmp_path)
    with pytest.raises(DinokitError, match="frame step"):
        video_frames(tmp_path, frame_step=0)


def test_sequence_folder_holding_frames_is_found_as_the_positional_form_finds_it(data_dir):
    """``parts --video davis2016/blackswan`` (a sequence folder with frames/) reads the same frames as a set."""
    from dinokit.tasks.cosegmentation import images_of_set

    seq = data_dir / "davis2016" / "blackswan"
    frames = video_frames(seq, frame_step=10)
    assert frames and frames == images_of_set(seq)[::10]


def test_video_parts_on_a_davis_sequence(swan, tiny_weights, tmp_path):
    from dinokit.features import Extractor
    from dinokit.tasks.parts import PartCoSegmentation

    ext = Extractor(weights=tiny_weights, stride=4, load_size=64, device="cpu")
    kwargs = dict(load_size=64, stride=4, sample_interval=10, num_parts=3, progress=False)
    info = video_part_cosegmentation(swan, tmp_path, ext, frame_step=10, fit_every=2, **kwargs)
    assert info["frames"] == ["00000", "00010", "00020", "00030", "00040"]
    assert info["fit_frames"] == ["00000", "00020", "00040"]
    assert info["fps"] == pytest.approx(2.4)
    labels = {}
    for name in info["frames"]:
        lab = np.asarray(Image.open(tmp_path / "frames" / f"{name}_parts.png"))
        assert lab.shape == (480, 854) and lab.max() <= 3
        labels[name] = lab
    import imageio.v3 as iio

    video = iio.imread(tmp_path / "overlay.mp4")
    assert video.shape[0] == 5 and video.shape[2] == 112 and video.shape[1] > 64  # the frame, then the legend
    legend = video[0, 64:].reshape(-1, 3).astype(int)
    assert (np.abs(legend - [255, 0, 0]).sum(1) < 90).any()  # part 1's red swatch (lossy H.264)
    assert json.loads((tmp_path / "done.json").read_text())["method"] == "video_part_cosegmentation"
    # one part model for all frames: a fitted frame labelled again through predict() agrees with its fit labels
    model = PartCoSegmentation(ext, **kwargs).fit([swan / "00000.jpg", swan / "00020.jpg", swan / "00040.jpg"])
    fitted = model.parts(1)
    predicted, rgb = model.predict(swan / "00020.jpg")
    assert rgb.shape[:2] == fitted.shape
    assert (fitted == predicted).mean() > 0.99
    # neighbouring frames of a slow sequence share most labels (temporal consistency)
    a, b = labels["00000"], labels["00010"]
    assert (a == b).mean() > 0.6
    # rerun: skipped
    assert video_part_cosegmentation(swan, tmp_path, ext, frame_step=10, fit_every=2, **kwargs) is None


def test_cli_video_file_to_gif(small_video, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["parts", "--video", str(small_video), "-o", str(out), "--weights", str(tiny_weights),
                 "--load-size", "64", "--sample-interval", "10", "--num-parts", "2", "--frame-step", "2",
                 "--video-format", "gif", "-q"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["00000_parts.png", "00002_parts.png", "00004_parts.png"]
    assert np.asarray(Image.open(out / "frames" / "00000_parts.png")).shape == (72, 128)
    import imageio.v3 as iio

    gif = iio.imread(out / "overlay.gif")
    assert gif.shape[0] == 3
    # decoded frames cleaned up; the run record is the only hidden file
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".dinokit-run.json"]
    assert main(["parts", "--video", str(small_video), "img.jpg", "-o", str(out), "-q"]) == 2
    assert "do not give images" in capsys.readouterr().err
