"""Weighted k-NN evaluation: parity with DINO's eval_knn, chunking, several k, folders, cache and CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dinokit.cli import main
from dinokit.errors import DinokitError
from dinokit.eval.knn import (
    FeatureSet,
    KNNClassifier,
    extract_folder_features,
    knn_classify,
    knn_evaluate,
    knn_search,
    load_feature_file,
)


@pytest.fixture(scope="module")
def golden(golden_dir):
    d = load_file(str(golden_dir / "reference_training.safetensors"))
    return d["knn.train_features"], d["knn.train_labels"], d["knn.test_features"], d["knn.test_labels"], d["knn.top1_top5"]


def brute_force(train, train_labels, test, k, T, num_classes):
    """Straightforward numpy weighted k-NN (one test image at a time) to check the batched code against."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    scores = np.zeros((len(test), num_classes))
    for i, q in enumerate(test):
        sim = train @ q
        nn = np.argsort(-sim, kind="stable")[:k]
        for j in nn:
            scores[i, train_labels[j]] += np.exp(sim[j] / T)
    return scores


@pytest.mark.parametrize("normalize", [False, True])
def test_golden_top1_top5_exact(golden, normalize):
    tr, trl, te, tel, expected = golden
    res = knn_classify(tr, trl, te, tel, k=20, temperature=0.07, num_classes=10, normalize=normalize)
    assert (res.top1[20], res.top5[20]) == (expected[0].item(), expected[1].item())


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_chunking_does_not_change_results(golden, chunk):
    tr, trl, te, tel, expected = golden
    clf = KNNClassifier(k=20, temperature=0.07, num_classes=10, chunk_size=chunk, train_chunk_size=64 if chunk == 7 else 65536)
    res = clf.fit(tr, trl).evaluate(te, tel)
    assert (res.top1[20], res.top5[20]) == (expected[0].item(), expected[1].item())


@pytest.mark.parametrize("n", [1, 3, 37, 99])
def test_fewer_than_100_test_images(golden, n):
    # The reference divides the test set into 100 chunks and fails below 100 images.
    tr, trl, te, tel, _ = golden
    full = KNNClassifier(k=20, num_classes=10).fit(tr, trl)
    res = full.evaluate(te[:n], tel[:n])
    pred_all = full.evaluate(te, tel).predictions[20]
    assert res.num_test == n
    assert torch.equal(res.predictions[20], pred_all[:n])
    assert res.top1[20] == pytest.approx(100.0 * (pred_all[:n] == tel[:n]).float().mean().item())


def test_several_k_in_one_run_match_separate_runs(golden):
    tr, trl, te, tel, _ = golden
    together = knn_classify(tr, trl, te, tel, k=[1, 5, 20, 100], num_classes=10)
    for k in (1, 5, 20, 100):
        alone = knn_classify(tr, trl, te, tel, k=k, num_classes=10)
        assert together.top1[k] == alone.top1[k] and together.top5[k] == alone.top5[k]
    assert len({together.top1[k] for k in (1, 5, 20, 100)}) > 1  # k actually changes something


def test_scores_match_brute_force():
    g = torch.Generator().manual_seed(1)
    tr = torch.randn(120, 16, generator=g)
    trl = torch.randint(0, 6, (120,), generator=g)
    te = torch.randn(15, 16, generator=g)
    clf = KNNClassifier(k=[3, 10], temperature=0.1, num_classes=6, chunk_size=4, train_chunk_size=50).fit(tr, trl)
    for k in (3, 10):
        want = brute_force(tr.numpy(), trl.numpy(), te.numpy(), k, 0.1, 6)
        np.testing.assert_allclose(clf.predict_scores(te, k).numpy(), want, rtol=1e-4)
        assert torch.equal(clf.predict(te, k), torch.from_numpy(want.argmax(1)))


def test_knn_search_merges_training_chunks():
    g = torch.Generator().manual_seed(0)
    tr = torch.nn.functional.normalize(torch.randn(300, 8, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=1)
    sim_full, idx_full = knn_search(tr, q, 10, train_chunk_size=10_000)
    sim_chunk, idx_chunk = knn_search(tr, q, 10, train_chunk_size=7)
    assert torch.equal(idx_full, idx_chunk)
    torch.testing.assert_close(sim_full, sim_chunk)  # different matmul shapes may round differently
    # k larger than the training set is clipped
    assert knn_search(tr[:4], q, 10)[1].shape == (5, 4)


def test_score_is_a_fraction_and_validation():
    tr = torch.eye(4)
    labels = torch.arange(4)
    clf = KNNClassifier(k=1).fit(tr, labels)
    assert clf.score(tr, labels) == 1.0
    with pytest.raises(DinokitError, match="k must be positive"):
        KNNClassifier(k=0)
    with pytest.raises(DinokitError, match="temperature"):
        KNNClassifier(temperature=0)
    with pytest.raises(DinokitError, match="labels of shape"):
        KNNClassifier().fit(tr, labels[:3])


def _image_folder(root, classes=("blue", "red"), per_class=3, seed=0):
    rng = np.random.default_rng(seed)
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.clip(np.array(colours[c]) + rng.normal(0, 20, (24, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


class CountingModel(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_folder_features_are_cached_and_invalidated(tmp_path, tiny_model):
    root = _image_folder(tmp_path / "train")
    model = CountingModel(tiny_model)
    cache = tmp_path / "cache"
    a = extract_folder_features(model, root, image_size=32, batch_size=4, cache_dir=cache, progress=False)
    assert a.features.shape == (6, 48) and a.classes == ["blue", "red"] and a.labels.tolist() == [0, 0, 0, 1, 1, 1]
    calls = model.calls
    b = extract_folder_features(model, root, image_size=32, batch_size=4, cache_dir=cache, progress=False)
    assert model.calls == calls and torch.equal(a.features, b.features)
    # a changed image, or a different preprocessing, is recomputed
    Image.fromarray(np.zeros((24, 20, 3), np.uint8)).save(root / "red" / "0.png")
    c = extract_folder_features(model, root, image_size=32, batch_size=4, cache_dir=cache, progress=False)
    assert model.calls > calls and not torch.equal(a.features, c.features)
    calls = model.calls
    extract_folder_features(model, root, image_size=40, batch_size=4, cache_dir=cache, progress=False)
    assert model.calls > calls


def test_folders_end_to_end_and_class_alignment(tmp_path, tiny_model):
    train = _image_folder(tmp_path / "train", ("blue", "green", "red"), 4, seed=0)
    test = _image_folder(tmp_path / "test", ("blue", "red"), 3, seed=1)  # subset of the classes, other indices
    res = knn_evaluate(train, test, tiny_model, k=[1, 3], image_size=32, progress=False)
    assert res.num_test == 6 and res.num_classes == 3
    assert res.top1[1] == 100.0  # solid colours are trivially separable even for random weights
    bad = _image_folder(tmp_path / "bad", ("green", "red"), 1)
    (bad / "purple").mkdir()
    Image.fromarray(np.zeros((24, 20, 3), np.uint8)).save(bad / "purple" / "x.png")
    with pytest.raises(DinokitError, match="purple"):
        knn_evaluate(train, bad, tiny_model, image_size=32, progress=False)


def test_feature_files_roundtrip_and_errors(tmp_path, golden):
    tr, trl, _, _, _ = golden
    path = FeatureSet(tr, trl, [f"c{i}" for i in range(10)]).save(tmp_path / "f.safetensors")
    back = load_feature_file(path)
    assert torch.equal(back.features, tr) and torch.equal(back.labels, trl) and back.classes[3] == "c3"
    np.savez(tmp_path / "g.npz", features=tr.numpy(), labels=trl.numpy())
    assert torch.equal(load_feature_file(tmp_path / "g.npz").labels, trl)
    np.savez(tmp_path / "nolabels.npz", features=tr.numpy())
    with pytest.raises(DinokitError, match="labels"):
        load_feature_file(tmp_path / "nolabels.npz")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(DinokitError, match="junk.safetensors"):
        load_feature_file(tmp_path / "junk.safetensors")


def test_cli_on_feature_files(tmp_path, golden, capsys):
    tr, trl, te, tel, expected = golden
    FeatureSet(tr, trl, [str(i) for i in range(10)]).save(tmp_path / "train.safetensors")
    FeatureSet(te, tel, [str(i) for i in range(10)]).save(tmp_path / "test.safetensors")
    out = tmp_path / "knn.json"
    rc = main(["knn", "--train", str(tmp_path / "train.safetensors"), "--test", str(tmp_path / "test.safetensors"),
               "-k", "20", "200", "-o", str(out), "-q", "--device", "cpu"])
    assert rc == 0
    data = json.loads(out.read_text())
    row = next(r for r in data["results"] if r["k"] == 20)
    assert (row["top1"], row["top5"]) == (expected[0].item(), expected[1].item())
    assert "top-1" in capsys.readouterr().out
    # existing results are not overwritten silently
    assert main(["knn", "--train", str(tmp_path / "train.safetensors"), "--test", str(tmp_path / "test.safetensors"),
                 "-o", str(out), "-q", "--device", "cpu"]) == 2


def test_cli_on_folders_with_weights(tmp_path, tiny_weights):
    train = _image_folder(tmp_path / "train", ("blue", "red"), 3, seed=0)
    test = _image_folder(tmp_path / "test", ("blue", "red"), 2, seed=1)
    out = tmp_path / "r.json"
    rc = main(["knn", "--train", str(train), "--test", str(test), "--weights", str(tiny_weights), "--image-size", "32",
               "-k", "3", "--cache-dir", str(tmp_path / "cache"), "--save-features", str(tmp_path / "feats"),
               "-o", str(out), "-q", "--device", "cpu"])
    assert rc == 0
    assert json.loads(out.read_text())["results"][0]["top1"] == 100.0
    assert load_feature_file(tmp_path / "feats" / "train_features.safetensors").features.shape == (6, 48)


def test_folder_features_use_the_models_normalisation(tmp_path, tiny_weights):
    # A backbone trained with other statistics (e.g. mean = std = 0.5) must get its own normalisation.
    from dinokit.eval.knn import eval_transform
    from dinokit.models import load_model

    root = _image_folder(tmp_path / "train", ("blue",), 2)
    model = load_model(weights=tiny_weights)
    model.cfg = model.cfg.replace(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    got = extract_folder_features(model, root, image_size=32, progress=False).features
    image = Image.open(sorted((root / "blue").iterdir())[0]).convert("RGB")
    x = eval_transform(image, 32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    with torch.no_grad():
        want = model(x[None])[0]
        imagenet = model(eval_transform(image, 32)[None])[0]
    torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[0], imagenet, atol=1e-3)


def test_unavailable_device_is_one_line_error(tmp_path, golden, capsys, monkeypatch):
    tr, trl, te, tel, _ = golden
    FeatureSet(tr, trl, [str(i) for i in range(10)]).save(tmp_path / "train.safetensors")
    FeatureSet(te, tel, [str(i) for i in range(10)]).save(tmp_path / "test.safetensors")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["knn", "--train", str(tmp_path / "train.safetensors"), "--test", str(tmp_path / "test.safetensors"),
               "-q", "--device", "cuda"])
    captured = capsys.readouterr()
    assert rc == 2 and captured.err.count("\n") == 1 and "device cuda requested" in captured.err
    assert "Traceback" not in captured.err and "top-1" not in captured.out
    with pytest.raises(DinokitError, match="'foo' is not a device"):
        KNNClassifier(device="foo")


def _three_class_set(n_train: int = 20):
    g = torch.Generator().manual_seed(3)
    tr = torch.randn(n_train, 8, generator=g)
    trl = torch.arange(n_train) % 3
    te = tr[:6] + 0.01 * torch.randn(6, 8, generator=g)
    return tr, trl, te, trl[:6]


def test_k_beyond_the_training_set_is_said_and_uses_every_image():
    tr, trl, te, tel = _three_class_set(20)
    with pytest.warns(UserWarning, match="k=50 exceeds the 20 training images: computed with k=20"):
        res = knn_classify(tr, trl, te, tel, k=[3, 50], num_classes=3)
    assert res.k_used == {3: 3, 50: 20}
    with pytest.warns(UserWarning):
        every = knn_classify(tr, trl, te, tel, k=20, num_classes=3)
    assert res.top1[50] == every.top1[20]
    assert "50 (=20)" in res.table() and res.as_dict()["results"][1]["k_used"] == 20


def test_top5_is_not_applicable_with_five_classes_or_fewer(golden):
    tr, trl, te, tel = _three_class_set()
    with pytest.warns(UserWarning, match="top-5 accuracy does not apply to 3 classes"):
        res = knn_classify(tr, trl, te, tel, k=3, num_classes=3)
    assert res.top5 == {3: None} and res.top1[3] > 0
    assert res.table().splitlines()[1].split()[-1] == "n/a"
    # ten classes: a real top-5, no warning
    gtr, gtrl, gte, gtel, _ = golden
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert knn_classify(gtr, gtrl, gte, gtel, k=20, num_classes=10).top5[20] is not None


def test_cli_knn_warnings_are_one_line_even_when_quiet(tmp_path, capsys):
    tr, trl, te, tel = _three_class_set(20)
    FeatureSet(tr, trl, ["a", "b", "c"]).save(tmp_path / "train.safetensors")
    FeatureSet(te, tel, ["a", "b", "c"]).save(tmp_path / "test.safetensors")
    out = tmp_path / "r.json"
    rc = main(["knn", "--train", str(tmp_path / "train.safetensors"), "--test", str(tmp_path / "test.safetensors"),
               "-k", "10", "200", "-o", str(out), "-q", "--device", "cpu"])
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if not line.startswith("dinokit: wrote ")]  # the summary
    assert rc == 0 and len(err) == 2 and all(line.startswith("dinokit: warning: ") for line in err), err
    assert "k=200 exceeds the 20 training images" in err[0] and "top-5" in err[1]
    assert "200 (=20)" in captured.out and "n/a" in captured.out
    rows = json.loads(out.read_text())["results"]
    assert [r["top5"] for r in rows] == [None, None] and rows[1]["k_used"] == 20
