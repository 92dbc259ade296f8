"""Dataset readers of dinokit.eval.datasets: the real subsets in shared/data and small
files written here in each benchmark's official layout, including broken ones."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from dinokit.errors import DatasetError, DinokitError
from dinokit.eval.datasets import (
    READERS,
    pairs_within_categories,
    read_binary_mask,
    read_coseg,
    read_cub_keypoints,
    read_cub_pairs,
    read_davis,
    read_label_mask,
    read_part_masks,
    read_pascal_part,
    read_pf_pascal,
    read_pf_willow,
    read_pf_willow_images,
    read_spair,
)

SHARED = Path(os.environ.get("DINOKIT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared benchmark data not available")


def write_image(path: Path, w: int, h: int, color=(120, 60, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), color).save(path)
    return path


def write_mask(path: Path, arr: np.ndarray, mode: str = "L", palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w = arr.shape
    if palette:
        im = Image.frombytes("P", (w, h), arr.tobytes())
        im.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [255, 255, 255] * 253)
    elif mode == "1":
        im = Image.fromarray(arr.astype(bool))
    else:
        im = Image.frombytes("L", (w, h), arr.tobytes())
    im.save(path)
    return path


# ============================================================================ real data


@needs_data
def test_pf_willow_real_all_ordered_pairs():
    images = read_pf_willow_images(DATA / "pf-willow")
    assert len(images) == 100 and len({im.category for im in images}) == 10
    pairs = read_pf_willow(DATA / "pf-willow")
    assert len(pairs) == 900
    per_cat: dict[str, int] = {}
    for p in pairs:
        per_cat[p.category] = per_cat.get(p.category, 0) + 1
        assert p.src_path != p.trg_path
        assert p.src_kps.shape == p.trg_kps.shape == (10, 2)
        w, h = Image.open(p.trg_path).size
        assert (p.trg_kps >= 0).all() and (p.trg_kps[:, 0] <= w).all() and (p.trg_kps[:, 1] <= h).all()
    assert set(per_cat.values()) == {90}
    assert len({p.key for p in pairs}) == 900  # stems repeat across classes; keys do not
    p = next(q for q in pairs if q.trg_path.stem == "Cars_007a" and q.src_path.stem == "Cars_006a")
    raw = scipy.io.loadmat(str(p.trg_path.with_suffix(".mat")))["pts_coord"]
    np.testing.assert_allclose(p.trg_kps, raw.T)
    side = max(raw[0].max() - raw[0].min(), raw[1].max() - raw[1].min())
    assert p.pck_length("bbox") == pytest.approx(side)
    assert p.pck_length("image") == max(Image.open(p.trg_path).size)
    assert p.meta["bbox_from"] == "keypoints"


@needs_data
def test_icoseg_real_sets_and_masks():
    sets = read_coseg(DATA / "icoseg")
    assert [s.name for s in sets] == ["brown-bear", "cheetah", "elephants", "ferrari", "goose", "pandas-taiwan"]
    assert sum(len(s) for s in sets) == 134
    for s in sets:
        for it in s.items[:3]:
            mask = it.load_mask()
            img = it.load_image()
            assert mask.dtype == bool and mask.shape == img.shape[:2]
            assert 0.01 < mask.mean() < 0.99


@needs_data
def test_msrc_real_single_set():
    (s,) = read_coseg(DATA / "msrc-cow")
    assert s.name == "msrc-cow" and len(s) == 30
    masks = [it.load_mask() for it in s]
    assert all(m.shape == (213, 320) for m in masks)
    assert all(0 < m.mean() < 1 for m in masks)


@needs_data
def test_davis2016_real_compact_layout():
    seqs = read_davis(DATA / "davis2016")
    assert {s.name: len(s) for s in seqs} == {"blackswan": 50, "camel": 90, "dog": 60}
    for s in seqs:
        assert s.annotated == list(range(len(s)))
        assert s.object_ids() == [1]
        m = s.load_mask(len(s) // 2)
        assert m.shape == (480, 854) and set(np.unique(m)) == {0, 1}
        assert s.load_frame(0).shape == (480, 854, 3)
    assert read_davis(DATA / "davis2016", sequences=["dog"])[0].frame_names[:2] == ["00000", "00001"]
    with pytest.raises(DatasetError, match="no sequence named cat"):
        read_davis(DATA / "davis2016", sequences=["cat"])


@needs_data
def test_pascal_part_real():
    items = read_pascal_part(DATA / "pascal-part")
    assert len(items) == 18
    anns = [it.load() for it in items]
    assert sum(len(a.objects) for a in anns) == 53
    for a in anns:
        w, h = a.size
        for o in a.objects:
            assert o.mask.shape == (h, w) and o.mask.any()
            for m in o.parts.values():
                assert m.shape == (h, w) and not (m & ~o.mask).any()  # parts lie on their object
    cats = read_pascal_part(DATA / "pascal-part", categories=["cat"])
    assert [c.name for c in cats] == ["2008_003228", "2008_006462", "2010_005275"]
    a = next(x for x in anns if x.name == "2008_006462")
    labels = a.label_map(["head", "torso"], categories=["cat"])
    fg = a.foreground(["cat"])
    assert set(np.unique(labels)) <= {0, 1, 2, 255} and {1, 2} <= set(np.unique(labels))
    np.testing.assert_array_equal(labels > 0, fg)


def test_readers_registry_names_callables():
    assert {"pf-willow", "spair", "pf-pascal", "cub", "icoseg", "davis", "pascal-part"} <= set(READERS)
    assert all(callable(f) for f in READERS.values())


# ============================================================================ PF-WILLOW layout


def _willow(tmp_path: Path, n=3, k=4) -> Path:
    root = tmp_path / "willow"
    for i in range(n):
        write_image(root / "duck(S)" / f"d{i}.png", 40, 30)
        pts = np.stack([np.linspace(1, 30, k) + i, np.linspace(2, 20, k)])
        scipy.io.savemat(str(root / "duck(S)" / f"d{i}.mat"), {"pts_coord": pts})
    return root


def test_pf_willow_layout_written(tmp_path):
    root = _willow(tmp_path)
    pairs = read_pf_willow(root)
    assert len(pairs) == 6 and all(p.num_points == 4 for p in pairs)
    assert pairs[0].src_kps[0].tolist() == [1.0, 2.0]


def test_pf_willow_bad_mat_names_the_file(tmp_path):
    root = _willow(tmp_path)
    scipy.io.savemat(str(root / "duck(S)" / "d1.mat"), {"pts_coord": np.zeros((3, 4))})
    with pytest.raises(DatasetError, match=r"d1\.mat.*2 x K"):
        read_pf_willow(root)
    scipy.io.savemat(str(root / "duck(S)" / "d1.mat"), {"points": np.zeros((2, 4))})
    with pytest.raises(DatasetError, match=r"d1\.mat.*pts_coord"):
        read_pf_willow(root)
    (root / "duck(S)" / "d1.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match=r"d1\.mat"):
        read_pf_willow(root)


def test_pf_willow_keypoint_outside_image_and_missing_image(tmp_path):
    root = _willow(tmp_path)
    scipy.io.savemat(str(root / "duck(S)" / "d2.mat"), {"pts_coord": np.array([[1, 2, 3, 90.0], [1, 2, 3, 4]])})
    with pytest.raises(DatasetError, match=r"d2\.mat.*outside the 40x30 image"):
        read_pf_willow(root)
    assert len(read_pf_willow(root, check=False)) == 6
    (root / "duck(S)" / "d2.png").unlink()
    with pytest.raises(DatasetError, match=r"d2\.mat.*no image"):
        read_pf_willow(root)


# ============================================================================ SPair-71k layout


def _spair(tmp_path: Path) -> Path:
    root = tmp_path / "SPair-71k"
    write_image(root / "JPEGImages" / "cat" / "2008_000001.jpg", 60, 40)
    write_image(root / "JPEGImages" / "cat" / "2008_000002.jpg", 50, 45)
    write_image(root / "JPEGImages" / "dog" / "2009_000003.jpg", 30, 30)
    write_image(root / "JPEGImages" / "dog" / "2009_000004.jpg", 30, 30)
    ann = {
        "pair_id": 1, "src_imname": "2008_000001.jpg", "trg_imname": "2008_000002.jpg",
        "src_imsize": [60, 40, 3], "trg_imsize": [50, 45, 3],
        "src_bndbox": [5, 5, 55, 35], "trg_bndbox": [10, 2, 40, 44], "category": "cat",
        "src_kps": [[10, 10], [20, 15], [50, 30]], "trg_kps": [[12, 8], [25, 20], [39, 40]],
        "kps_ids": ["0", "3", "7"], "mirror": 0, "viewpoint_variation": 1, "scale_variation": 0,
        "truncation": 0, "occlusion": 1,
    }  # fmt: skip
    d = root / "PairAnnotation" / "test"
    d.mkdir(parents=True)
    (d / "000001-2008_000001-2008_000002:cat.json").write_text(json.dumps(ann))
    ann2 = dict(ann, pair_id=2, src_imname="2009_000003.jpg", trg_imname="2009_000004.jpg", category="dog",
                src_imsize=[30, 30, 3], trg_imsize=[30, 30, 3], src_bndbox=[0, 0, 29, 29], trg_bndbox=[1, 1, 20, 28],
                src_kps=[[3, 3]], trg_kps=[[4, 4]], kps_ids=["2"])
    (d / "000002-2009_000003-2009_000004:dog.json").write_text(json.dumps(ann2))
    t = root / "PairAnnotation" / "trn"
    t.mkdir(parents=True)
    (t / "000003-2009_000004-2009_000003:dog.json").write_text(json.dumps(dict(ann2, pair_id=3)))
    return root


def test_spair_official_layout(tmp_path):
    root = _spair(tmp_path)
    pairs = read_spair(root)
    assert [p.category for p in pairs] == ["cat", "dog"]
    p = pairs[0]
    assert p.name == "000001-2008_000001-2008_000002:cat"
    assert p.src_path == root / "JPEGImages" / "cat" / "2008_000001.jpg"
    assert p.trg_kps.tolist() == [[12, 8], [25, 20], [39, 40]] and p.kp_ids.tolist() == [0, 3, 7]
    assert p.trg_size == (50, 45) and p.trg_bbox.tolist() == [10, 2, 40, 44]
    assert p.pck_length("bbox") == 42 and p.pck_length("image") == 50
    assert p.meta["viewpoint_variation"] == 1 and p.meta["occlusion"] == 1
    src, trg = p.load_images()
    assert src.shape == (40, 60, 3) and trg.shape == (45, 50, 3)
    assert len(read_spair(root, split="train")) == 1
    assert [p.category for p in read_spair(root, categories=["dog"])] == ["dog"]
    with pytest.raises(DatasetError, match="no pairs for category horse"):
        read_spair(root, categories=["horse"])
    with pytest.raises(ValueError):
        read_spair(root, split="dev")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"trg_kps": [[12, 8], [25, 20]]}, "3 src_kps but 2 trg_kps"),
        ({"src_bndbox": [5, 5, 1, 35]}, "x2 < x1"),
        ({"trg_kps": [[12, 8], [25, 20], [80, 40]]}, "outside the 50x45 image"),
        ({"trg_imsize": [51, 45, 3]}, "annotation says 2008_000002.jpg is 51x45"),
        ({"trg_imname": "missing.jpg"}, "missing.jpg: image not found"),
        ({"src_kps": "oops"}, "keypoints"),
    ],
)
def test_spair_validation_names_the_file(tmp_path, change, message):
    root = _spair(tmp_path)
    f = next((root / "PairAnnotation" / "test").glob("000001*.json"))
    ann = json.loads(f.read_text())
    ann.update(change)
    f.write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match=message) as err:
        read_spair(root)
    assert "000001-2008_000001-2008_000002" in str(err.value) or "missing.jpg" in str(err.value)


def test_spair_missing_field_and_bad_json(tmp_path):
    root = _spair(tmp_path)
    f = next((root / "PairAnnotation" / "test").glob("000001*.json"))
    ann = json.loads(f.read_text())
    del ann["trg_bndbox"]
    f.write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match=r"000001.*missing field\(s\) trg_bndbox"):
        read_spair(root)
    f.write_text("{not json")
    with pytest.raises(DatasetError, match=r"000001.*not valid JSON"):
        read_spair(root)


# ============================================================================ PF-PASCAL layout


def _pf_pascal(tmp_path: Path) -> Path:
    root = tmp_path / "PF-PASCAL"
    for name, (w, h) in {"2009_000001": (50, 40), "2009_000002": (60, 30), "2010_000003": (40, 40)}.items():
        write_image(root / "JPEGImages" / f"{name}.jpg", w, h)
    (root / "test_pairs.csv").write_text(
        "source_image,target_image,class,XA,YA,XB,YB\n"
        "JPEGImages/2009_000001.jpg,JPEGImages/2009_000002.jpg,8,10;20;30,5;6;7,11;21;31,8;9;10\n"
        "JPEGImages/2009_000002.jpg,JPEGImages/2010_000003.jpg,8,1.5;2.5,3;4,5;6,7;8\n"
    )
    return root


def test_pf_pascal_csv(tmp_path):
    root = _pf_pascal(tmp_path)
    pairs = read_pf_pascal(root)
    assert len(pairs) == 2 and {p.category for p in pairs} == {"cat"}  # class 8 = cat
    p = pairs[0]
    assert p.src_kps.tolist() == [[10, 5], [20, 6], [30, 7]]
    assert p.trg_kps.tolist() == [[11, 8], [21, 9], [31, 10]]
    assert p.trg_path == root / "JPEGImages" / "2009_000002.jpg"
    assert p.meta["bbox_from"] == "keypoints" and p.trg_bbox.tolist() == [11, 8, 31, 10]
    assert p.pck_length("image") == 60
    # the csv path works as well, and a bbox from Annotations/<class>/<stem>.mat is used when present
    ann = root / "Annotations" / "cat"
    ann.mkdir(parents=True)
    for stem in ("2009_000001", "2009_000002", "2010_000003"):
        scipy.io.savemat(str(ann / f"{stem}.mat"), {"kps": np.zeros((2, 2)), "bbox": np.array([[1, 2, 21, 12]])})
    p = read_pf_pascal(root / "test_pairs.csv")[0]
    assert p.meta["bbox_from"] == "annotation" and p.pck_length("bbox") == 20


def test_pf_pascal_train_list_uses_annotations_and_flip(tmp_path):
    root = _pf_pascal(tmp_path)
    ann = root / "Annotations" / "cat"
    ann.mkdir(parents=True)
    nan = np.nan
    scipy.io.savemat(str(ann / "2009_000001.mat"),
                     {"kps": np.array([[1, 1], [nan, nan], [3, 3]]), "bbox": np.array([[0, 0, 40, 30]])})
    scipy.io.savemat(str(ann / "2009_000002.mat"),
                     {"kps": np.array([[2, 2], [5, 5], [nan, nan]]), "bbox": np.array([[0, 0, 50, 25]])})
    (root / "trn_pairs.csv").write_text(
        "source_image,target_image,class,flip\nJPEGImages/2009_000001.jpg,JPEGImages/2009_000002.jpg,8,1\n")
    (p,) = read_pf_pascal(root, split="trn")
    assert p.kp_ids.tolist() == [0] and p.src_kps.tolist() == [[1, 1]] and p.trg_kps.tolist() == [[2, 2]]
    assert p.meta["flip"] == 1 and p.trg_bbox.tolist() == [0, 0, 50, 25]


def test_pf_pascal_weakalign_layout_finds_annotations_beside_the_images(tmp_path):
    """``test_pairs_pf_pascal.csv`` next to ``PF-dataset-PASCAL/{JPEGImages,Annotations}`` (the layout of the
    CNNGeometric/WeakAlign download), image paths relative to the CSV folder."""
    root = tmp_path / "proposal-flow-pascal"
    data = root / "PF-dataset-PASCAL"
    for name in ("2009_000001", "2009_000002"):
        write_image(data / "JPEGImages" / f"{name}.jpg", 50, 40)
        (data / "Annotations" / "cat").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(str(data / "Annotations" / "cat" / f"{name}.mat"),
                         {"kps": np.array([[1.0, 2.0], [3.0, 4.0]]), "bbox": np.array([[2, 3, 32, 23]])})
    (root / "test_pairs_pf_pascal.csv").write_text(
        "source_image,target_image,class,XA,YA,XB,YB\n"
        "PF-dataset-PASCAL/JPEGImages/2009_000001.jpg,PF-dataset-PASCAL/JPEGImages/2009_000002.jpg,8,1;3,2;4,5;6,7;8\n")
    (p,) = read_pf_pascal(root)
    assert p.src_path == data / "JPEGImages" / "2009_000001.jpg" and p.trg_kps.tolist() == [[5, 7], [6, 8]]
    assert p.meta["bbox_from"] == "annotation" and p.pck_length("bbox") == 30 and p.pck_length("image") == 50


def test_pf_pascal_errors_name_the_line(tmp_path):
    root = _pf_pascal(tmp_path)
    csv_path = root / "test_pairs.csv"
    csv_path.write_text("source_image,target_image,class,XA,YA,XB,YB\n"
                        "JPEGImages/2009_000001.jpg,JPEGImages/2009_000002.jpg,8,1;2,1;2,1,1\n")
    with pytest.raises(DatasetError, match=r"test_pairs\.csv:2: XA/YA/XB/YB have 2/2/1/1"):
        read_pf_pascal(root)
    csv_path.write_text("source_image,target_image,class,XA,YA,XB,YB\n"
                        "JPEGImages/nope.jpg,JPEGImages/2009_000002.jpg,8,1,1,1,1\n")
    with pytest.raises(DatasetError, match=r"test_pairs\.csv:2: image 'JPEGImages/nope.jpg' not found"):
        read_pf_pascal(root)
    csv_path.write_text("src,trg\n")
    with pytest.raises(DatasetError, match="no 'source_image' column"):
        read_pf_pascal(root)
    with pytest.raises(DatasetError, match="no val_pairs.csv"):
        read_pf_pascal(root, split="val")


# ============================================================================ CUB layout


def _cub(tmp_path: Path) -> Path:
    base = tmp_path / "CUB_200_2011"
    names = ["001.Albatross/a1.jpg", "001.Albatross/a2.jpg", "001.Albatross/a3.jpg", "002.Auklet/b1.jpg"]
    for n in names:
        write_image(base / "images" / n, 40, 30)
    (base / "images.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, 1)))
    (base / "train_test_split.txt").write_text("1 0\n2 0\n3 1\n4 0\n")
    (base / "bounding_boxes.txt").write_text("1 2.0 3.0 20.0 10.0\n2 0 0 40 30\n3 0 0 10 10\n4 1 1 5 5\n")
    (base / "parts").mkdir()
    (base / "parts" / "parts.txt").write_text("1 back\n2 beak\n3 left eye\n")
    (base / "parts" / "part_locs.txt").write_text(
        "1 1 10.0 12.0 1\n1 2 20.0 5.0 1\n1 3 0.0 0.0 0\n"
        "2 1 11.0 13.0 1\n2 2 0.0 0.0 0\n2 3 30.0 25.0 1\n"
        "3 1 1.0 1.0 1\n3 2 2.0 2.0 1\n3 3 3.0 3.0 1\n"
        "4 1 0.0 0.0 0\n4 2 0.0 0.0 0\n4 3 0.0 0.0 0\n"
    )
    return tmp_path


def test_cub_keypoints_official_files(tmp_path):
    root = _cub(tmp_path)
    ims = read_cub_keypoints(root)  # finds CUB_200_2011/ inside root; test split by default
    assert [im.name for im in ims] == ["a1", "a2", "b1"]
    a1 = ims[0]
    assert a1.category == "001.Albatross" and a1.meta["part_names"] == ("back", "beak", "left eye")
    np.testing.assert_array_equal(a1.keypoints[:2], [[10, 12], [20, 5]])
    assert np.isnan(a1.keypoints[2]).all() and a1.visible.tolist() == [True, True, False]
    assert a1.bbox.tolist() == [2, 3, 22, 13]  # x, y, w, h -> x1, y1, x2, y2
    assert len(read_cub_keypoints(root, split="train")) == 1 and len(read_cub_keypoints(root, split="all")) == 4


def test_cub_pairs_within_class_and_from_list(tmp_path):
    root = _cub(tmp_path)
    pairs = read_cub_pairs(root)  # a1<->a2 share only 'back'; b1 has no visible part
    assert [p.name for p in pairs] == ["a1-a2", "a2-a1"]
    assert pairs[0].kp_ids.tolist() == [0] and pairs[0].trg_kps.tolist() == [[11, 13]]
    assert pairs[0].meta["bbox_from"] == "annotation" and pairs[0].pck_length("bbox") == 40
    all_pairs = read_cub_pairs(root, split="all")
    assert len(all_pairs) == 6  # a1, a2, a3 in one class
    assert len(read_cub_pairs(root, split="all", max_pairs_per_category=2, seed=1)) == 2
    lst = tmp_path / "pairs.txt"
    lst.write_text("001.Albatross/a3.jpg 001.Albatross/a1.jpg\n3,2\n")
    listed = read_cub_pairs(root, pairs_file=lst)
    assert [p.name for p in listed] == ["a3-a1", "a3-a2"]
    assert listed[0].kp_ids.tolist() == [0, 1] and listed[1].kp_ids.tolist() == [0, 2]
    lst.write_text("1 99\n")
    with pytest.raises(DatasetError, match=r"pairs\.txt:1: image '99'"):
        read_cub_pairs(root, pairs_file=lst)


def test_cub_bad_part_locs_named(tmp_path):
    root = _cub(tmp_path)
    locs = root / "CUB_200_2011" / "parts" / "part_locs.txt"
    locs.write_text(locs.read_text() + "9 1 1.0 1.0 1\n")
    with pytest.raises(DatasetError, match=r"part_locs\.txt.*image id 9 is not in images\.txt"):
        read_cub_keypoints(root)
    locs.write_text("1 1 10.0 12.0\n")
    with pytest.raises(DatasetError, match=r"part_locs\.txt:1: expected 5 fields"):
        read_cub_keypoints(root)
    with pytest.raises(DatasetError, match="not a CUB-200-2011 folder"):
        read_cub_keypoints(tmp_path / "CUB_200_2011" / "images")


def test_pairs_within_categories_rejects_mismatched_keypoint_counts(tmp_path):
    root = _willow(tmp_path, n=2, k=4)
    scipy.io.savemat(str(root / "duck(S)" / "d1.mat"), {"pts_coord": np.ones((2, 3))})
    ims = read_pf_willow_images(root)
    with pytest.raises(DatasetError, match=r"d1\.mat: has 3 keypoints.*d0\.mat.*has 4"):
        pairs_within_categories(ims)


# ============================================================================ co-segmentation layouts


def _internet(tmp_path: Path) -> Path:
    root = tmp_path / "Data"
    for cls in ("Car100", "Horse100"):
        for i in range(3):
            write_image(root / cls / f"{cls}_{i}.jpg", 16, 12)
            m = np.zeros((12, 16), np.uint8)
            if i:  # image 0 has no object: an empty mask is legal
                m[2:8, 3:10] = 255
            write_mask(root / cls / "GroundTruth" / f"{cls}_{i}.png", m)
    return root


def test_internet_layout(tmp_path):
    sets = read_coseg(_internet(tmp_path))
    assert [s.name for s in sets] == ["Car100", "Horse100"] and all(len(s) == 3 for s in sets)
    masks = [it.load_mask() for it in sets[0]]
    assert masks[0].sum() == 0 and masks[1].sum() == 42 and masks[1].shape == (12, 16)
    assert [s.name for s in read_coseg(tmp_path / "Data", sets=["Horse100"])] == ["Horse100"]


def test_pascal_co_split_layout(tmp_path):
    root = tmp_path / "PASCAL_coseg"
    for cls in ("aeroplane", "bus"):
        for i in range(2):
            write_image(root / "images" / cls / f"{i}.jpg", 10, 8)
            write_mask(root / "GT" / cls / f"{i}.png", np.eye(8, 10, dtype=np.uint8) * 255)
    sets = read_coseg(root)
    assert [s.name for s in sets] == ["aeroplane", "bus"]
    assert sets[1].items[0].load_mask().sum() == 8
    assert read_coseg(root, layout="split")[0].image_paths[0] == root / "images" / "aeroplane" / "0.jpg"


def test_icoseg_official_release_layout(tmp_path):
    """The iCoseg download: ``images/<group>/*.jpg`` and ``ground_truth/<group>/*.png``, group names with spaces."""
    root = tmp_path / "iCoseg"
    for group in ("Alaskan Brown Bear", "Kite Panda"):
        for i in range(2):
            write_image(root / "images" / group / f"{i}.jpg", 12, 9)
            m = np.zeros((9, 12), np.uint8)
            m[2:5, 3:9] = 255
            write_mask(root / "ground_truth" / group / f"{i}.png", m)
    sets = read_coseg(root)
    assert [s.name for s in sets] == ["Alaskan Brown Bear", "Kite Panda"] and all(len(s) == 2 for s in sets)
    assert sets[0].items[1].load_mask().sum() == 18


def test_mask_formats_binary_palette_jpeg(tmp_path):
    arr = np.zeros((6, 6), np.uint8)
    arr[1:3, 1:4] = 1
    one_bit = write_mask(tmp_path / "a.png", arr, mode="1")
    assert read_binary_mask(one_bit).sum() == 6
    pal = arr.copy()
    pal[5, 5] = 255  # VOC void border is not foreground
    assert read_binary_mask(write_mask(tmp_path / "p.png", pal, palette=True)).sum() == 6
    Image.fromarray(arr * 255).save(tmp_path / "j.jpg", quality=70)
    assert abs(int(read_binary_mask(tmp_path / "j.jpg").sum()) - 6) <= 1


def test_coseg_errors_name_files(tmp_path):
    root = _internet(tmp_path)
    (root / "Car100" / "GroundTruth" / "Car100_1.png").unlink()
    with pytest.raises(DatasetError, match=r"Car100_1\.jpg: no mask named Car100_1"):
        read_coseg(root)
    assert len(read_coseg(root, require_masks=False)[0]) == 2
    write_mask(root / "Car100" / "GroundTruth" / "Car100_1.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DatasetError, match=r"Car100_1\.png: mask is 5x5 but its image Car100_1\.jpg is 16x12"):
        read_coseg(root)
    write_mask(root / "Car100" / "GroundTruth" / "Car100_1.png", np.zeros((12, 16), np.uint8))
    write_mask(root / "Car100" / "GroundTruth" / "stray.png", np.zeros((12, 16), np.uint8))
    with pytest.raises(DatasetError, match=r"stray\.png: mask has no image"):
        read_coseg(root)
    (root / "Car100" / "GroundTruth" / "stray.png").unlink()
    (root / "Horse100" / "Horse100_2.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"Horse100_2\.jpg: not a readable image"):
        read_coseg(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no co-segmentation sets"):
        read_coseg(tmp_path / "empty")
    write_image(tmp_path / "nomasks" / "x.jpg", 4, 4)
    with pytest.raises(DatasetError, match=r"nomasks: no mask folder"):
        read_coseg(tmp_path / "nomasks", layout="single")


# ============================================================================ DAVIS official layout


def _davis(tmp_path: Path) -> Path:
    root = tmp_path / "DAVIS"
    for seq, n in (("bear", 3), ("car-race", 2)):
        for t in range(n):
            write_image(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", 24, 16)
            lab = np.zeros((16, 24), np.uint8)
            lab[2:6, 2:6] = 1
            lab[8:12, 10:20] = 2
            lab[15, :] = 255
            write_mask(root / "Annotations" / "480p" / seq / f"{t:05d}.png", lab, palette=True)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("car-race\n")
    (root / "ImageSets" / "480p").mkdir(parents=True)
    (root / "ImageSets" / "480p" / "val.txt").write_text(
        "/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png\n"
        "/JPEGImages/480p/bear/00001.jpg /Annotations/480p/bear/00001.png\n")
    return root


def test_davis_official_layout_palette_masks(tmp_path):
    root = _davis(tmp_path)
    seqs = read_davis(root)
    assert [(s.name, len(s)) for s in seqs] == [("bear", 3), ("car-race", 2)]
    m = seqs[0].load_mask(0)
    assert m.shape == (16, 24) and set(np.unique(m)) == {0, 1, 2, 255}
    assert seqs[0].object_ids() == [1, 2] and seqs[0].load_masks().shape == (3, 16, 24)
    assert [s.name for s in read_davis(root, split="val")] == ["car-race"]  # 2017 list first
    assert [s.name for s in read_davis(root, split="val", year=2016)] == ["bear"]  # via ImageSets/480p


def test_davis_binary_2016_masks_and_missing_annotations(tmp_path):
    root = _davis(tmp_path)
    seq_dir = root / "Annotations" / "480p" / "bear"
    binary = np.zeros((16, 24), np.uint8)
    binary[3:9, 4:8] = 255
    write_mask(seq_dir / "00001.png", binary)
    assert set(np.unique(read_label_mask(seq_dir / "00001.png"))) == {0, 1}
    (seq_dir / "00002.png").unlink()
    bear = read_davis(root, sequences=["bear"])[0]
    assert bear.annotated == [0, 1] and bear.load_mask(2) is None
    with pytest.raises(DatasetError, match="no mask for frame 00002"):
        bear.load_masks()
    (seq_dir / "00000.png").unlink()
    with pytest.raises(DatasetError, match="no mask for the first frame 00000.jpg"):
        read_davis(root, sequences=["bear"])


def test_davis_errors_name_files(tmp_path):
    root = _davis(tmp_path)
    write_mask(root / "Annotations" / "480p" / "bear" / "00001.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"bear/00001\.png: mask is 10x10, but the frames are 24x16"):
        read_davis(root)
    (root / "ImageSets" / "2017" / "val.txt").write_text("car-race\nghost\n")
    with pytest.raises(DatasetError, match=r"val\.txt: lists sequence 'ghost'"):
        read_davis(root, split="val", check=False)
    with pytest.raises(DatasetError, match="no test.txt"):
        read_davis(root, split="test")


# ============================================================================ parts


def test_pascal_part_official_layout_and_bad_file(tmp_path):
    if not DATA.is_dir():
        pytest.skip("shared benchmark data not available")
    root = tmp_path / "VOC2010"
    (root / "Annotations_Part").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for stem in ("2008_006462", "2010_000145"):
        (root / "Annotations_Part" / f"{stem}.mat").write_bytes((DATA / "pascal-part" / f"{stem}.mat").read_bytes())
        (root / "JPEGImages" / f"{stem}.jpg").write_bytes((DATA / "pascal-part" / f"{stem}.jpg").read_bytes())
    items = read_pascal_part(root)
    assert [it.image_path.parent.name for it in items] == ["JPEGImages", "JPEGImages"]
    boat = items[1].load()
    assert boat.categories == ["boat"] and boat.part_names == []  # an object without parts
    assert set(np.unique(boat.label_map(["head"]))) == {0, 255}
    scipy.io.savemat(str(root / "Annotations_Part" / "2008_006462.mat"), {"other": np.zeros(3)})
    with pytest.raises(DatasetError, match=r"2008_006462\.mat: no 'anno' variable"):
        items[0].load()
    (root / "JPEGImages" / "2010_000145.jpg").unlink()
    with pytest.raises(DatasetError, match=r"2010_000145\.mat: no image"):
        read_pascal_part(root)


def test_part_label_masks(tmp_path):
    write_image(tmp_path / "images" / "001.Albatross" / "a1.jpg", 8, 6)
    write_image(tmp_path / "images" / "001.Albatross" / "a2.jpg", 8, 6)  # no part mask: skipped
    lab = np.zeros((6, 8), np.uint8)
    lab[1:3, 1:3] = 1
    lab[3:5, 2:6] = 2
    lab[0, 0] = 255
    write_mask(tmp_path / "parts" / "001.Albatross" / "a1.png", lab)
    (item,) = read_part_masks(tmp_path / "images", tmp_path / "parts", part_names=["head", "body"])
    ann = item.load()
    assert item.category == "001.Albatross" and ann.part_names == ["body", "head"]
    obj = ann.objects[0]
    assert obj.mask.sum() == 12 and obj.parts["head"].sum() == 4 and obj.parts["body"].sum() == 8
    np.testing.assert_array_equal(ann.label_map({"head": 1, "body": 2}), np.where(lab == 255, 0, lab))
    write_mask(tmp_path / "parts" / "001.Albatross" / "a2.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"a2\.png: mask is 3x3, image is 8x6"):
        read_part_masks(tmp_path / "images", tmp_path / "parts")


def test_dataset_error_is_a_dinokit_error():
    assert issubclass(DatasetError, DinokitError)


def test_benchmark_dataset_registry_is_what_runners_and_cli_use(monkeypatch, tmp_path, data_dir):
    """Adding a dataset is one reader plus one entry: the CLI offers it and the runner reads it."""
    from dinokit.cli import build_parser
    from dinokit.eval.benchmark import CorrespondenceBenchmark
    from dinokit.eval.datasets import registry

    for kind in registry.BENCHMARKS:
        assert registry.datasets_of(kind), kind
    assert registry.dataset_entry("correspondence", "pf-pascal").pck_by == "image"
    parts_cub, corr_cub = registry.dataset_entry("parts", "cub"), registry.dataset_entry("correspondence", "cub")
    assert parts_cub.reader_function() is not corr_cub.reader_function()
    with pytest.raises(DinokitError, match="unknown cosegment dataset 'nope'; choose from icoseg"):
        registry.dataset_entry("cosegment", "nope")
    entry = registry.BenchmarkDataset("my-willow", "correspondence", "My WILLOW", read_pf_willow, pck_by="image",
                                      box="the target keypoints' box")
    monkeypatch.setattr(registry, "DATASETS", (*registry.DATASETS, entry))
    args = build_parser().parse_args(["benchmark", "correspondence", "--dataset", "my-willow", "--root", "r", "-o", "o"])
    assert args.dataset == "my-willow"
    bench = CorrespondenceBenchmark(data_dir / "pf-willow", tmp_path / "o", "my-willow", max_pairs=3)
    assert len(bench.load_dataset()) == 3 and bench.pck_by == "image"
