"""k-means (faiss and torch backends), the elbow rule and the bounded-memory descriptor store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinokit.blocks.kmeans import KMeans, elbow_search, faiss_available, split_labels
from dinokit.blocks.store import DescriptorStore, l2_normalize
from dinokit.errors import DinokitError


def planted(n_clusters: int, per_cluster: int, dim: int = 32, noise: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    protos = l2_normalize(rng.standard_normal((n_clusters, dim)))
    truth = np.repeat(np.arange(n_clusters), per_cluster)
    x = protos[truth] + noise * rng.standard_normal((len(truth), dim)).astype(np.float32)
    perm = rng.permutation(len(truth))
    return l2_normalize(x[perm]), truth[perm]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Labels equal up to a renaming of the clusters."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


BACKENDS = ["torch"] + (["faiss"] if faiss_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_recovers_planted_clusters(backend):
    x, truth = planted(5, 60)
    km = KMeans(5, backend=backend, seed=3).fit(x)
    assert km.backend_ == backend
    assert km.cluster_centers_.shape == (5, 32)
    assert same_partition(km.predict(x), truth)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_for_a_seed(backend):
    x, _ = planted(4, 80, noise=0.4, seed=1)
    a = KMeans(6, backend=backend, seed=7).fit(x)
    b = KMeans(6, backend=backend, seed=7).fit(x)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


def test_faiss_default_seed_matches_plain_faiss():
    faiss = pytest.importorskip("faiss")
    x, _ = planted(3, 100, noise=0.3, seed=2)
    ours = KMeans(3).fit(x)  # the reference's faiss.Kmeans(niter=300, nredo=10) with faiss's default seed
    ref = faiss.Kmeans(x.shape[1], 3, niter=300, nredo=10)
    ref.train(x)
    np.testing.assert_allclose(ours.cluster_centers_, ref.centroids, atol=1e-6)


def test_batched_assignment_equals_brute_force():
    x, _ = planted(4, 50, noise=0.5, seed=4)
    km = KMeans(4, backend="torch", seed=0).fit(x)
    dist, lab = km.assign(x, batch_size=7)
    brute = ((x[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(lab, brute.argmin(1))
    np.testing.assert_allclose(dist, brute.min(1), atol=1e-5)


def test_empty_clusters_are_split_in_torch_backend():
    # 3 distinct points, 3 clusters, many duplicates: every cluster must end non-empty.
    x = np.repeat(np.eye(3, dtype=np.float32), [50, 2, 2], axis=0)
    km = KMeans(3, backend="torch", seed=0, nredo=3).fit(x)
    assert len(np.unique(km.predict(x))) == 3


def test_invalid_parameters():
    with pytest.raises(DinokitError, match="at least one cluster"):
        KMeans(0)
    with pytest.raises(DinokitError, match="backend"):
        KMeans(2, backend="sklearn")
    with pytest.raises(DinokitError, match="cannot make 5 clusters from 3"):
        KMeans(5).fit(np.zeros((3, 4), np.float32))
    with pytest.raises(DinokitError, match="not fitted"):
        KMeans(2).predict(np.zeros((3, 4), np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_elbow_stops_at_first_weak_improvement(backend):
    x, truth = planted(4, 100, noise=0.03, seed=5)
    res = elbow_search(x[::5], x, elbow=0.975, backend=backend)
    # k = 1..4 each cut the error a lot; k = 5 only splits noise, so the search stops there and,
    # as in the reference, keeps the model of that last k.
    assert res.n_clusters_tried == [1, 2, 3, 4, 5]
    assert res.n_clusters == 5
    assert res.objectives[4] > 0.975 * res.objectives[3]
    assert all(res.objectives[i + 1] < 0.975 * res.objectives[i] for i in range(3))
    # the 5-cluster labels refine the planted 4 clusters: every found cluster lies inside one planted cluster
    for c in np.unique(res.labels):
        assert len(np.unique(truth[res.labels == c])) == 1


def test_elbow_objective_is_mean_squared_distance():
    x, _ = planted(3, 40, noise=0.2, seed=6)
    res = elbow_search(x, x, elbow=1.0, n_clusters_range=[1, 2], backend="torch")
    d, _ = res.model.assign(x)
    assert res.objectives[-1] == pytest.approx(d.mean(), rel=1e-5)
    one = x.mean(0)
    assert res.objectives[0] == pytest.approx(((x - one) ** 2).sum(1).mean(), rel=1e-4)


def test_elbow_skips_k_larger_than_sample():
    x, _ = planted(2, 20, seed=7)
    res = elbow_search(x[:3], x, elbow=0.999, n_clusters_range=range(1, 15), backend="torch")
    assert max(res.n_clusters_tried) <= 3
    with pytest.raises(DinokitError, match="elbow"):
        elbow_search(x, x, elbow=1.5)


def test_split_labels():
    parts = split_labels(np.arange(6), [2, 3, 1])
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3, 4], [5]]
    with pytest.raises(ValueError):
        split_labels(np.arange(5), [2, 2])


@pytest.mark.parametrize("location", ["memory", "disk"])
def test_descriptor_store_roundtrip(tmp_path, location):
    rng = np.random.default_rng(0)
    mats = [rng.standard_normal((n, 8)).astype(np.float32) for n in (5, 7, 3)]
    store = DescriptorStore(location, directory=tmp_path)
    for m in mats:
        store.append(torch.from_numpy(m))
    assert store.on_disk == (location == "disk")
    assert store.counts == [5, 7, 3] and store.nbytes == 15 * 8 * 2
    for i, m in enumerate(mats):
        got = store.get(i)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, l2_normalize(m), atol=1e-3)  # float16 storage
    batches = list(store.iter_batches(6))
    np.testing.assert_allclose(np.concatenate(batches), np.concatenate([store.get(i) for i in range(3)]))
    # a reused buffer holds each batch until the next one: same rows, one allocation
    reused = [(b.copy(), b.base if b.base is not None else b) for b in store.iter_batches(6, reuse=True)]
    for (got, _), want in zip(reused, batches):
        np.testing.assert_array_equal(got, want)
    assert len({id(base) for _, base in reused}) == 1
    masks = [np.arange(5) % 2 == 0, None, np.zeros(3, bool)]
    sub = np.concatenate(list(store.subset(masks).iter_batches(100)))
    assert sub.shape == (3 + 7, 8)
    samp = store.sample(3, masks=masks)
    np.testing.assert_allclose(samp, np.concatenate([store.get(0)[::2][::3], store.get(1)[::3]]))
    files = list(tmp_path.rglob("*.bin"))
    assert bool(files) == (location == "disk")
    store.close()
    assert not list(tmp_path.rglob("*.bin"))


def test_descriptor_store_auto_spills_to_disk(tmp_path):
    store = DescriptorStore("auto", directory=tmp_path, memory_limit_bytes=1000)
    a = np.ones((20, 8), np.float32)  # 320 bytes each in float16
    store.append(a)
    store.append(a * 2)
    assert not store.on_disk
    store.append(a * 3)
    store.append(a * 4)
    assert store.on_disk
    np.testing.assert_allclose(store.get(0), l2_normalize(a), atol=1e-3)
    assert len(store) == 4
    store.close()
    # with an expected size, the choice is made from the first image
    est = DescriptorStore("auto", directory=tmp_path, memory_limit_bytes=1000, expected_images=10)
    est.append(a)
    assert est.on_disk
    est.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_elbow_lookahead_gives_the_step_by_step_result(backend, monkeypatch):
    x, _ = planted(5, 60, noise=0.2, seed=8)
    store = DescriptorStore("memory", normalize=False, dtype="float32")
    for chunk in np.array_split(x, 4):
        store.append(chunk)
    fits = []
    real_fit = KMeans.fit
    monkeypatch.setattr(KMeans, "fit", lambda self, data: fits.append(self.n_clusters) or real_fit(self, data))
    slow = elbow_search(x[::3], store, 0.975, backend=backend)  # lookahead 1: the reference's loop
    assert fits == slow.n_clusters_tried  # nothing fitted past the elbow
    assert 2 < slow.n_clusters < 14
    # each step's objective and labels are what the chosen model's own assignment gives
    d, lab = slow.model.assign(store, batch_size=50)
    np.testing.assert_array_equal(slow.labels, lab)
    assert slow.objectives[-1] == pytest.approx(d.astype(np.float64).mean(), rel=1e-6)
    for lookahead in (2, 3, 14):
        fits.clear()
        fast = elbow_search(x[::3], store, 0.975, lookahead=lookahead, backend=backend)
        assert len(fits) < len(slow.n_clusters_tried) + lookahead
        assert fast.n_clusters_tried == slow.n_clusters_tried
        assert fast.objectives == slow.objectives  # bit for bit: same fits, same batches, same sums
        np.testing.assert_array_equal(fast.labels, slow.labels)
        np.testing.assert_array_equal(fast.model.cluster_centers_, slow.model.cluster_centers_)
    with pytest.raises(DinokitError, match="lookahead"):
        elbow_search(x, store, 0.975, lookahead=0)


def test_faiss_assignment_is_the_reference_search():
    faiss = pytest.importorskip("faiss")
    x, _ = planted(4, 50, noise=0.5, seed=9)
    km = KMeans(4).fit(x)
    ref = faiss.Kmeans(x.shape[1], 4, niter=300, nredo=10)
    ref.train(x)
    d_ref, l_ref = ref.index.search(x, 1)
    d, lab = km.assign(x, batch_size=64)
    np.testing.assert_array_equal(lab, l_ref[:, 0])
    np.testing.assert_allclose(d, d_ref[:, 0], rtol=1e-6, atol=1e-7)
