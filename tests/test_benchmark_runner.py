"""The benchmark runner end to end: real PF-WILLOW pairs, an iCoseg group, a DAVIS sequence and PASCAL-Part
images with the golden tiny model at a small load size; plus the baselines and the run folder."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import shutil

import numpy as np
import pytest
import torch

from dinokit.cli import main
from dinokit.errors import DatasetError, DinokitError
from dinokit.eval.baselines import centre_prior_mask, grid_parts, identity_points, rgb_patch_descriptors, saliency_mask
from dinokit.eval.benchmark import (
    CorrespondenceBenchmark,
    CosegBenchmark,
    PartsBenchmark,
    RunFolder,
    VideoBenchmark,
    spread,
)
from dinokit.eval.datasets import image_size, read_pf_willow
from dinokit.eval.metrics import pck

from .conftest import torch_threads

LOAD = 64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: fastest single-threaded


@pytest.fixture(scope="module")
def willow(data_dir):
    return data_dir / "pf-willow"


def _corr(willow, out, tiny_weights, **kw):
    kw.setdefault("max_pairs", 6)
    return CorrespondenceBenchmark(willow, out, "pf-willow", weights=tiny_weights, load_size=LOAD, device="cpu",
                                   progress=False, **kw)


def _lines(path):
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


# --------------------------------------------------------------------------- correspondence


@pytest.fixture(scope="module")
def corr_run(willow, tiny_weights, tmp_path_factory):
    """One CLI run on 6 PF-WILLOW pairs: its folder and what it printed (tests that change the folder copy it)."""
    out = tmp_path_factory.mktemp("corr") / "run"
    argv = ["benchmark", "correspondence", "--dataset", "pf-willow", "--root", str(willow), "-o", str(out),
            "--weights", str(tiny_weights), "--load-size", str(LOAD), "--device", "cpu", "--max-pairs", "6", "-q"]
    buf = io.StringIO()
    with torch_threads(1), contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return out, buf.getvalue()


def test_correspondence_cli_writes_table_and_files(corr_run, tiny_weights):
    out, printed = corr_run
    assert "PF-WILLOW: 6 pairs in 6 categories" in printed
    for text in ("PCK@0.05", "PCK@0.1", "PCK@0.15", "identity (baseline)", "RGB patches (baseline)", "car(G)"):
        assert text in printed
    for name in ("run.json", "items.jsonl", "results.json", "results.csv", "results_per_category.csv"):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in res["results"]}
    assert set(rows) == {"model", "identity", "rgb-patches"}
    for r in rows.values():
        assert r["pairs"] == 6 and r["points"] == 60
        for a in ("0.05", "0.1", "0.15"):
            assert 0.0 <= r[f"pck@{a}"] <= 1.0
        assert r["pck@0.05"] <= r["pck@0.1"] <= r["pck@0.15"]
    # the exact settings, model and software are recorded
    m = res["settings"]["method"]
    assert (m["layer"], m["facet"], m["bin"], m["stride"], m["load_size"], m["pck_by"]) == (9, "key", True, 4, LOAD, "bbox")
    assert res["model"]["weights_sha256"] == hashlib.sha256(tiny_weights.read_bytes()).hexdigest()
    assert res["model"]["weights_bytes"] == tiny_weights.stat().st_size
    assert res["environment"]["dinokit"] and res["counts"]["pairs"] == 6
    # one log line per pair and method; CSV has the three rows
    assert len(_lines(out / "items.jsonl")) == 18
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("method,label") and len(csv_lines) == 4
    # the descriptor cache is removed once every pair is done
    assert not (out / "cache").exists()


def test_identity_baseline_matches_direct_computation(corr_run, willow):
    out, _ = corr_run
    res = json.loads((out / "results.json").read_text())
    pairs = spread(read_pf_willow(willow), 6, key=lambda p: p.category)
    direct = []
    for p in pairs:
        pred = identity_points(p.src_kps, image_size(p.src_path), image_size(p.trg_path))
        direct.append(pck(pred, p.trg_kps, p.pck_length("bbox"))[0.1])
    row = next(r for r in res["results"] if r["method"] == "identity")
    assert row["pck@0.1"] == pytest.approx(float(np.mean(direct)), abs=1e-9)


def test_correspondence_rerun_skips_everything(corr_run, willow, tiny_weights):
    out, _ = corr_run
    before = json.loads((out / "results.json").read_text())["results"]
    bench = _corr(willow, out, tiny_weights)
    after = bench.run()
    assert bench.counts_["items_scored"] == 0 and bench.counts_["items_from_log"] == 18
    assert bench.counts_["images_computed"] == 0
    for a, b in zip(before, after.rows):
        assert a["pck@0.1"] == pytest.approx(b["pck@0.1"], abs=1e-12)


def test_correspondence_resume_after_interruption_and_determinism(corr_run, willow, tiny_weights, tmp_path):
    out, _ = corr_run
    full = json.loads((out / "results.json").read_text())["results"]
    # a fresh run elsewhere gives the same numbers (deterministic) ...
    fresh = _corr(willow, tmp_path / "fresh", tiny_weights, keep_cache=True)
    res = fresh.run()
    assert [r["pck@0.1"] for r in res.rows] == pytest.approx([r["pck@0.1"] for r in full], abs=1e-12)
    assert fresh.counts_["images_computed"] == 12
    assert len(list((tmp_path / "fresh" / "cache").rglob("*.safetensors"))) == 12
    # ... and a run killed mid-way (last 4 records lost, one half-written) resumes to the same numbers
    log = tmp_path / "fresh" / "items.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-4]) + "\n" + lines[-4][: len(lines[-4]) // 2])
    again = _corr(willow, tmp_path / "fresh", tiny_weights, keep_cache=True)
    res2 = again.run()
    assert again.counts_["items_scored"] == 4 and again.counts_["items_from_log"] == 14
    assert again.counts_["images_computed"] == 0 and again.counts_["images_from_cache"] > 0
    assert [r["pck@0.1"] for r in res2.rows] == pytest.approx([r["pck@0.1"] for r in full], abs=1e-12)
    assert len(_lines(log)) == 18


def test_correspondence_other_settings_refused_then_overwritten(corr_run, willow, tiny_weights, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(corr_run[0], out)
    with pytest.raises(DinokitError, match="layer: 9 -> 8"):
        _corr(willow, out, tiny_weights, layer=8).run()
    bench = _corr(willow, out, tiny_weights, layer=8, max_pairs=2, overwrite=True)
    bench.run()
    assert bench.counts_["items_from_log"] == 0
    assert json.loads((out / "results.json").read_text())["settings"]["method"]["layer"] == 8


def test_max_images_per_category_keeps_the_pairs_among_the_first_images(willow, tiny_weights, tmp_path):
    pairs = _corr(willow, tmp_path / "x", tiny_weights, max_pairs=None, max_images_per_category=3).load_dataset()
    images = {p.src_path for p in pairs} | {p.trg_path for p in pairs}
    assert len(pairs) == 60 and len(images) == 30  # 10 classes x 3 images x 2 partners
    assert all(sum(q.category == c for q in pairs) == 6 for c in {p.category for p in pairs})
    with pytest.raises(DinokitError, match="at least 2"):
        _corr(willow, tmp_path / "x", tiny_weights, max_images_per_category=1)


def test_wrong_root_is_a_clear_error(tmp_path, tiny_weights, capsys):
    out = tmp_path / "out"
    rc = main(["benchmark", "correspondence", "--dataset", "pf-willow", "--root", str(tmp_path / "missing"),
               "-o", str(out), "--weights", str(tiny_weights), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("dinokit: error: ") and "missing" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    (tmp_path / "not-a-set").mkdir()
    with pytest.raises(DatasetError, match="no mask folder"):
        CosegBenchmark(tmp_path, out, weights=tiny_weights, progress=False).run()
    assert not out.exists()


# --------------------------------------------------------------------------- co-segmentation


def _coseg(data_dir, out, tiny_weights):
    return CosegBenchmark(data_dir / "icoseg", out, "icoseg", sets=["ferrari"], max_images=4, load_size=LOAD,
                          weights=tiny_weights, device="cpu", progress=False)


def test_cosegment_one_icoseg_group(data_dir, tiny_weights, tmp_path):
    bench = _coseg(data_dir, tmp_path / "a", tiny_weights)
    res = bench.run()
    assert [r["method"] for r in res.rows] == ["model", "centre-prior", "saliency"]
    for r in res.rows:
        assert r["sets"] == 1 and r["images"] == 4
        assert 0.0 <= r["jaccard"] <= 1.0 and 0.0 <= r["precision"] <= 1.0
    assert bench.counts_["images_computed"] == 4
    text = res.report()
    assert "iCoseg co-segmentation: 1 set, 4 images" in text and "ferrari" in text and "centre prior (baseline)" in text
    for name in ("results.json", "results.csv", "results_per_set.csv", "items.jsonl"):
        assert (tmp_path / "a" / name).is_file()
    details = json.loads((tmp_path / "a" / "results.json").read_text())
    assert details["settings"]["method"]["layer"] == 11 and details["settings"]["method"]["elbow"] == 0.975
    # rerun: nothing recomputed; a second folder: the same numbers
    again = _coseg(data_dir, tmp_path / "a", tiny_weights)
    again.run()
    assert again.counts_["items_scored"] == 0 and again.counts_["images_computed"] == 0
    other = _coseg(data_dir, tmp_path / "b", tiny_weights).run()
    for a, b in zip(res.rows, other.rows):
        assert (a["jaccard"], a["precision"]) == pytest.approx((b["jaccard"], b["precision"]), abs=1e-12)


def test_cosegment_failure_is_scored_and_reported(data_dir, tiny_weights, tmp_path):
    """No cluster above an impossible vote threshold: empty masks score J = 0 and the table says why."""
    res = CosegBenchmark(data_dir / "icoseg", tmp_path / "w", "icoseg", sets=["ferrari"], max_images=3,
                         load_size=LOAD, thresh=0.999, weights=tiny_weights, device="cpu", progress=False,
                         baselines=[]).run()
    assert res.row("model")["jaccard"] == 0.0 and 0.0 < res.row("model")["precision"] < 1.0
    assert "ferrari: no cluster got votes" in res.report()
    log = _lines(tmp_path / "w" / "items.jsonl")
    assert log[0]["salient_labels"] == [] and log[0]["warnings"]


def test_centre_prior_row_is_independent_of_the_model(data_dir, tiny_weights, tmp_path):
    from dinokit.eval.datasets import read_coseg
    from dinokit.eval.metrics import jaccard

    res = _coseg(data_dir, tmp_path / "c", tiny_weights).run()
    items = read_coseg(data_dir / "icoseg", sets=["ferrari"])[0].items[:4]
    direct = []
    for it in items:
        gt = it.load_mask()
        direct.append(jaccard(centre_prior_mask(*gt.shape), gt))
    assert res.row("centre-prior")["jaccard"] == pytest.approx(float(np.mean(direct)), abs=1e-12)


# --------------------------------------------------------------------------- video and parts


def test_video_unsupervised_davis_sequence(data_dir, tiny_weights, tmp_path):
    bench = VideoBenchmark(data_dir / "davis2016", tmp_path / "v", protocol="unsupervised", sequences=["blackswan"],
                           frame_step=10, max_frames=4, load_size=LOAD, weights=tiny_weights, device="cpu",
                           progress=False)
    res = bench.run()
    assert [r["method"] for r in res.rows] == ["model", "centre-prior", "saliency"]
    for r in res.rows:
        assert r["sequences"] == 1
        for k in ("J&F", "J_mean", "F_mean", "J_recall"):
            assert 0.0 <= r[k] <= 1.0
    log = _lines(tmp_path / "v" / "items.jsonl")
    assert len(log) == 3 and all(len(r["J"]) == 2 for r in log)  # 4 frames, first and last not scored
    assert "blackswan" in res.report()


def _propagation(data_dir, out, tiny_weights, **kw):
    return VideoBenchmark(data_dir / "davis2016", out, sequences=["blackswan"], frame_step=5, max_frames=5,
                          short_side=64, multiple=8, weights=tiny_weights, device="cpu", progress=False, **kw)


def test_video_propagation_davis_sequence(data_dir, tiny_weights, tmp_path):
    bench = _propagation(data_dir, tmp_path / "p", tiny_weights, keep_cache=True)
    res = bench.run()
    assert [r["method"] for r in res.rows] == ["model", "first-frame", "rgb-patches"]
    for r in res.rows:
        assert r["sequences"] == 1 and r["objects"] == 1
        for k in ("J&F", "J_mean", "F_mean", "J_recall", "F_recall"):
            assert 0.0 <= r[k] <= 1.0, (r["method"], k)
    # the first-frame baseline is the first mask scored against frames 5, 10 and 15
    from dinokit.eval.datasets import read_davis
    from dinokit.eval.metrics import jaccard

    seq = read_davis(data_dir / "davis2016", sequences=["blackswan"])[0]
    first = seq.load_mask(0) == 1
    direct = np.mean([jaccard(first, seq.load_mask(i) == 1) for i in (5, 10, 15)])
    assert res.row("first-frame")["J_mean"] == pytest.approx(direct, abs=1e-12) and direct < 0.9
    log = _lines(tmp_path / "p" / "items.jsonl")
    assert len(log) == 3 and all(len(r["objects"]["1"]["J"]) == 3 for r in log)  # 5 frames, 3 scored
    settings = json.loads((tmp_path / "p" / "results.json").read_text())["settings"]["method"]
    assert settings["protocol"] == "propagation" and (settings["n_last_frames"], settings["topk"]) == (7, 5)
    assert bench.counts_["images_computed"] == 5
    assert len(list((tmp_path / "p" / "cache").rglob("*.safetensors"))) == 5
    assert "label propagation" in res.report() and "first-frame mask (baseline)" in res.report()
    # the model's sequence lost from the log: recomputed from the cached frame features, same numbers
    lines = (tmp_path / "p" / "items.jsonl").read_text().splitlines()
    (tmp_path / "p" / "items.jsonl").write_text("\n".join(lines[1:]) + "\n")
    again = _propagation(data_dir, tmp_path / "p", tiny_weights)
    res2 = again.run()
    assert again.counts_["items_scored"] == 1 and again.counts_["images_computed"] == 0
    assert again.counts_["images_from_cache"] == 5
    assert res2.row("model")["J&F"] == pytest.approx(res.row("model")["J&F"], abs=1e-12)
    assert not (tmp_path / "p" / "cache").exists()


def test_video_baselines_must_fit_the_protocol(data_dir, tiny_weights, tmp_path):
    with pytest.raises(DinokitError, match="centre-prior do not apply to the propagation protocol"):
        _propagation(data_dir, tmp_path / "x", tiny_weights, baselines=["centre-prior"])
    with pytest.raises(DinokitError, match="protocol must be one of"):
        _propagation(data_dir, tmp_path / "x", tiny_weights, protocol="oracle")


def test_parts_pascal_part(data_dir, tiny_weights, tmp_path):
    bench = PartsBenchmark(data_dir / "pascal-part", tmp_path / "p", categories=["cat"], max_images=2,
                           load_size=LOAD, weights=tiny_weights, device="cpu", progress=False)
    res = bench.run()
    assert [r["method"] for r in res.rows] == ["model", "grid"]
    for r in res.rows:
        assert r["images"] == 2 and r["samples"] > 1000
        assert -1.0 <= r["ari"] <= 1.0 and 0.0 <= r["nmi"] <= 1.0
    again = PartsBenchmark(data_dir / "pascal-part", tmp_path / "p", categories=["cat"], max_images=2,
                           load_size=LOAD, weights=tiny_weights, device="cpu", progress=False)
    res2 = again.run()
    assert again.counts_["items_scored"] == 0
    assert res2.row("model")["nmi"] == pytest.approx(res.row("model")["nmi"], abs=1e-12)


# --------------------------------------------------------------------------- pieces


def test_baselines():
    m = centre_prior_mask(300, 400, area=0.5)
    assert abs(m.mean() - 0.5) < 0.01 and m[150, 200] and not m[0, 0]
    g = grid_parts(30, 40, 4)
    assert sorted(np.unique(g)) == [0, 1, 2, 3] and g[0, 0] == 0 and g[-1, -1] == 3
    assert len(np.unique(grid_parts(10, 50, 3))) == 3
    pts = identity_points([[10, 20]], (100, 200), (50, 400))
    assert pts.tolist() == [[5.0, 40.0]]
    sal = np.array([[0.0, 1.0], [0.2, 0.9]])
    assert saliency_mask(sal, (4, 4)).tolist()[0] == [False, False, True, True]


def test_rgb_patches_share_the_model_grid(data_dir, tiny_weights):
    from dinokit.features import Extractor

    img = sorted((data_dir / "pf-willow" / "car(G)").glob("*.png"))[0]
    desc, geo = rgb_patch_descriptors(img, patch_size=8, stride=4, load_size=LOAD)
    feats = Extractor(weights=tiny_weights, stride=4, load_size=LOAD, device="cpu").extract(img, 9, "key")
    assert geo.grid == feats.grid and desc.shape == (geo.num_patches, 3 * 8 * 8)
    assert torch.allclose(desc.mean(dim=1), torch.zeros(desc.shape[0]), atol=1e-5)
    # a patch matched against itself is its own nearest neighbour
    from dinokit.tasks.correspondences import match_points

    q = geo.index_to_xy([37], original=True)
    assert match_points(desc, geo, desc, geo, q).indices.tolist() == [37]


def test_spread_takes_every_group_in_turn():
    items = [("a", i) for i in range(5)] + [("b", i) for i in range(2)] + [("c", 0)]
    got = spread(items, 5, key=lambda t: t[0])
    assert got == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0)]
    assert spread(items, None, key=lambda t: t[0]) == items
    with pytest.raises(DinokitError):
        spread(items, 0, key=lambda t: t[0])


def test_run_folder_log(tmp_path):
    f = RunFolder(tmp_path, {"a": 1})
    f.log("m", "x", {"v": float("nan")})
    with open(tmp_path / "items.jsonl", "a") as fh:
        fh.write('{"method": "m", "item": "y", "v"')  # killed mid-write
    g = RunFolder(tmp_path, {"a": 1})
    assert g.get("m", "y") is None and math.isnan(g.get("m", "x")["v"])
    g.log("m", "y", {"v": 2})
    assert RunFolder(tmp_path, {"a": 1}).get("m", "y")["v"] == 2
    with pytest.raises(DinokitError, match="a: 1 -> 2"):
        RunFolder(tmp_path, {"a": 2})


def test_spair_and_cub_layouts_run(tmp_path, tiny_weights):
    """The other readers' layouts go through the runners (synthetic files from the reader tests)."""
    from .test_datasets import _cub, _spair

    spair = CorrespondenceBenchmark(_spair(tmp_path / "s"), tmp_path / "out-spair", "spair", weights=tiny_weights,
                                    load_size=LOAD, device="cpu", progress=False).run()
    assert spair.row("model")["pairs"] == 2 and spair.row("model")["points"] == 4
    assert {r["category"] for r in spair.group_rows} == {"cat", "dog"}
    cub_root = _cub(tmp_path / "c")
    cub = CorrespondenceBenchmark(cub_root, tmp_path / "out-cub", "cub", weights=tiny_weights, load_size=LOAD,
                                  device="cpu", progress=False, baselines=["identity"]).run()
    assert cub.row("model")["pairs"] == 2 and 0.0 <= cub.row("identity")["pck@0.1"] <= 1.0
    parts = PartsBenchmark(cub_root, tmp_path / "out-parts", "cub", weights=tiny_weights, load_size=LOAD,
                           device="cpu", progress=False, sample_interval=1, num_parts=2).run()
    assert parts.row("grid")["samples"] == 4 and parts.row("grid")["categories"] == 1  # the 1-image class is left out
    assert 0.0 <= parts.row("model")["nmi"] <= 1.0


def test_propagation_size_and_window():
    from dinokit.eval.benchmark.propagation import neighbourhood_mask, propagation_size

    assert propagation_size(480, 854) == (480, 832)  # DAVIS 480p: long side down to a multiple of 64
    assert propagation_size(854, 480) == (832, 480)
    assert propagation_size(100, 150, short_side=64, multiple=8) == (64, 96)
    m = neighbourhood_mask((3, 4), 1)
    assert m.shape == (12, 12) and int(m[0].sum()) == 4 and int(m[5].sum()) == 9  # a corner, an inner patch
    assert bool(m[0, 1]) and not bool(m[0, 2]) and neighbourhood_mask((3, 4), 0) is None


def test_propagate_votes_of_the_nearest_context_patches():
    from dinokit.eval.benchmark.propagation import neighbourhood_mask, propagate

    gen = torch.Generator().manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(12, 16, generator=gen), dim=1)
    labels = torch.nn.functional.one_hot(torch.arange(12) % 3, 3).T.float()
    assert torch.equal(propagate(f, [f], [labels], None, topk=1), labels)  # each patch finds its twin
    # every patch voting with equal weight (huge temperature): the mean label
    flat = propagate(f, [f], [labels], None, topk=12, temperature=1e6)
    assert torch.allclose(flat, labels.mean(dim=1, keepdim=True).expand(-1, 12), atol=1e-4)
    # the twin of patch 0 sits in a context frame at the far corner: outside a 1-patch window it cannot vote
    shuffled = f.flip(0)
    far = propagate(f[:1], [shuffled], [labels.flip(1)], None, topk=1)
    assert torch.equal(far[:, 0], labels[:, 0])
    near = propagate(f, [shuffled], [labels.flip(1)], neighbourhood_mask((3, 4), 1), topk=1)
    assert not torch.equal(near[:, 0], labels[:, 0])
    assert torch.allclose(near.sum(dim=0), torch.ones(12))  # soft labels stay a distribution


def test_propagation_tracks_a_moving_textured_square():
    """Raw-pixel propagation on a synthetic video: a textured square moving one patch per frame."""
    from dinokit.eval.benchmark.propagation import propagate_sequence, rgb_frame_features
    from dinokit.eval.metrics import jaccard

    rng = np.random.default_rng(0)
    background = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    texture = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    frames, truth = [], []
    for t in range(4):
        img, lab = background.copy(), np.zeros((64, 64), np.uint8)
        img[16:32, 8 + 8 * t: 24 + 8 * t] = texture
        lab[16:32, 8 + 8 * t: 24 + 8 * t] = 1
        frames.append(img)
        truth.append(lab)
    preds = list(propagate_sequence(frames, truth[0], rgb_frame_features(8), 8, neighbourhood=2, topk=1))
    assert len(preds) == 4 and np.array_equal(preds[0], truth[0])
    for t in range(1, 4):
        assert preds[t].shape == (64, 64)
        assert jaccard(preds[t] == 1, truth[t] == 1) > 0.75, t
        assert jaccard(truth[0] == 1, truth[t] == 1) < 0.6  # copying the first mask would not do


def test_pascal_part_groupings(data_dir, tiny_weights, tmp_path):
    from dinokit.eval.benchmark.parts import part_group

    assert [part_group(n) for n in ("wheel_1", "wheel_2", "lfleg", "torso")] == ["wheel", "wheel", "lfleg", "torso"]
    assert [part_group(n, "coarse") for n in ("lfleg", "rbpa", "muzzle", "leye", "neck", "tail", "wheel_2")] == \
        ["limbs", "limbs", "head", "head", "torso", "tail", "wheel"]
    assert part_group("wheel_1", "annotated") == "wheel_1"
    with pytest.raises(DinokitError, match="part grouping"):
        part_group("head", "fine")

    def labels(grouping):
        bench = PartsBenchmark(data_dir / "pascal-part", tmp_path / grouping, categories=["car", "dog"],
                               weights=tiny_weights, progress=False, part_grouping=grouping)
        return {s.name: s.parts for s in bench.load_dataset()}

    inst, coarse, raw = labels("instances"), labels("coarse"), labels("annotated")
    assert inst["car"]["wheel_1"] == inst["car"]["wheel_2"] != inst["car"]["door_1"]
    assert raw["car"]["wheel_1"] != raw["car"]["wheel_2"]
    assert len(set(coarse["dog"].values())) == 4 and coarse["dog"]["lfleg"] == coarse["dog"]["rbpa"]


def test_video_cli_propagation_defaults(data_dir, tiny_weights, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["benchmark", "video", "--root", str(data_dir / "davis2016"), "-o", str(out), "--weights",
               str(tiny_weights), "--device", "cpu", "--sequences", "dog", "--max-frames", "3", "--frame-step", "10",
               "--short-side", "64", "--multiple", "8", "--baselines", "first-frame", "-q"])
    printed = capsys.readouterr().out
    assert rc == 0 and "semi-supervised label propagation" in printed and "first-frame mask (baseline)" in printed
    res = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in res["results"]] == ["model", "first-frame"]
    assert res["settings"]["method"]["short_side"] == 64 and res["settings"]["method"]["neighbourhood"] == 12
    rc = main(["benchmark", "video", "--root", str(data_dir / "davis2016"), "-o", str(tmp_path / "bad"), "--weights",
               str(tiny_weights), "--baselines", "saliency", "-q"])
    assert rc == 2 and "do not apply to the propagation protocol" in capsys.readouterr().err


# --------------------------------------------------------------------------- settings: one home for the defaults


def test_runners_hold_the_task_settings(tmp_path):
    """No default lives in a runner: each holds its task's settings object, overridden by keyword."""
    from dinokit.settings import CoSegmentationSettings, CorrespondenceSettings, PartSettings

    out = tmp_path / "o"
    assert CorrespondenceBenchmark(tmp_path, out).settings == CorrespondenceSettings()
    assert CosegBenchmark(tmp_path, out).settings == CoSegmentationSettings()
    assert PartsBenchmark(tmp_path, out).settings == PartSettings()
    assert VideoBenchmark(tmp_path, out).settings == PartSettings()
    bench = CosegBenchmark(tmp_path, out, settings=CoSegmentationSettings(layer=9), elbow=0.9)
    assert (bench.settings.layer, bench.settings.elbow, bench.settings.stride) == (9, 0.9, "auto")
    corr = CorrespondenceBenchmark(tmp_path, out, refine=True, temperature=0.05)
    assert (corr.matching.refine, corr.matching.temperature, corr.matching.window) == (True, 0.05, 5)
    assert CosegBenchmark(tmp_path, out, centre_prior_area=0.3).baseline.centre_prior_area == 0.3
    with pytest.raises(DinokitError, match="num_pairs do\\(es\\) not apply to the correspondence benchmark"):
        CorrespondenceBenchmark(tmp_path, out, num_pairs=3)
    with pytest.raises(DinokitError, match="unknown setting"):
        CosegBenchmark(tmp_path, out, bogus=1)


@pytest.mark.parametrize("kind", ["correspondence", "cosegment", "video", "parts"])
def test_benchmark_flags_come_from_the_settings(kind):
    """Untyped flags leave the settings' defaults; --stride takes 'auto' and --saliency-heads commas."""
    from dinokit.cli import build_parser
    from dinokit.cli.common import settings_from_args
    from dinokit.eval.datasets.registry import benchmark

    spec = benchmark(kind)
    base = ["benchmark", kind, "--root", "r", "-o", "o"] + (["--dataset", "pf-willow"] if kind == "correspondence" else [])
    parser = build_parser()
    args = parser.parse_args(base)
    assert settings_from_args(args, spec.settings) == spec.settings()
    args = parser.parse_args(base + ["--stride", "auto", "--saliency-heads", "0,2", "--layer", "8"])
    st = settings_from_args(args, spec.settings)
    assert (st.stride, st.saliency_heads, st.layer) == ("auto", (0, 2), 8)
    for name in spec.exclude:  # fields that don't apply are no flags
        with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            parser.parse_args(base + ["--" + name.replace("_", "-"), "1"])


def test_cli_stride_auto_and_4_are_the_same_run_for_a_patch_8_model(corr_run, willow, tiny_weights):
    """run.json records the stride the model uses, so '--stride 4' resumes an 'auto' run of a /8 model."""
    out, _ = corr_run
    argv = ["benchmark", "correspondence", "--dataset", "pf-willow", "--root", str(willow), "-o", str(out),
            "--weights", str(tiny_weights), "--load-size", str(LOAD), "--device", "cpu", "--max-pairs", "6", "-q",
            "--stride", "4"]
    with torch_threads(1), contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["run"]["items_scored"] == 0 and res["run"]["items_from_log"] == 18
