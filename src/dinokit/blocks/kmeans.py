"""Seeded, deterministic k-means and the elbow rule of Amir et al. (2021).

:class:`KMeans` follows faiss's k-means exactly when faiss is available and the
work is on the CPU (it *is* ``faiss.Kmeans``, with the reference's ``niter=300,
nredo=10`` and faiss's default seed 1234, so a fixed seed reproduces the
reference's clusters). On a GPU, or without faiss, a torch implementation of
the same algorithm runs instead: training points subsampled to
``max_points_per_centroid * k``, ``nredo`` restarts from random training
points, ``niter`` Lloyd iterations, empty clusters split from the largest one,
the restart with the lowest objective kept.

Models are fitted on a sample; assigning all descriptors runs in batches over
anything that yields rows (an array, a tensor, or an object with
``iter_batches(batch_size)`` such as
:class:`~dinokit.blocks.store.DescriptorStore`), so memory stays
bounded however many descriptors there are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import DinokitError

ArrayLike = Union[np.ndarray, torch.Tensor]
DEFAULT_SEED = 1234  # faiss's default, i.e. what the reference's unseeded faiss.Kmeans used

__all__ = ["KMeans", "ElbowResult", "elbow_search", "iter_rows", "faiss_available", "DEFAULT_SEED"]


def faiss_available() -> bool:
    """Whether ``faiss`` can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _as_float32(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def iter_rows(data: Any, batch_size: int = 65536) -> Iterator[np.ndarray]:
    """Yield float32 row batches of ``data``: an array/tensor, or an object with ``iter_batches``.

    A batch is only valid until the next one is asked for (a store may refill one buffer).
    """
    if hasattr(data, "iter_batches"):
        try:
            batches = data.iter_batches(batch_size, reuse=True)
        except TypeError:  # an iter_batches(batch_size) without buffer reuse
            batches = data.iter_batches(batch_size)
        for batch in batches:
            yield _as_float32(batch)
        return
    if isinstance(data, (np.ndarray, torch.Tensor)):
        for start in range(0, data.shape[0], batch_size):
            yield _as_float32(data[start : start + batch_size])
        return
    for batch in data:
        yield _as_float32(batch)


class KMeans:
    """k-means with faiss's algorithm and defaults; configure here, then :meth:`fit`.

    Args:
        n_clusters: number of clusters ``k``.
        niter: Lloyd iterations per restart (reference: 300).
        nredo: restarts; the one with the lowest training objective is kept (reference: 10).
        seed: random seed; equal seeds give equal clusters.
        max_points_per_centroid: training points are subsampled to ``k`` times this (faiss default 256).
        backend: ``"faiss"``, ``"torch"`` or ``"auto"`` (faiss on the CPU when installed, else torch).
        device: where the torch backend and assignments run (default: CPU).
        batch_size: rows per batch when assigning.

    Attributes after :meth:`fit`: ``cluster_centers_`` ``(k, d)`` float32,
    ``inertia_`` (training objective: sum of squared distances of the
    training points), ``backend_``, ``n_features_in_``.
    """

    def __init__(
        self,
        n_clusters: int,
        *,
        niter: int = 300,
        nredo: int = 10,
        seed: int = DEFAULT_SEED,
        max_points_per_centroid: int = 256,
        backend: str = "auto",
        device: Union[str, torch.device, None] = None,
        batch_size: int = 32768,
    ) -> None:
        if int(n_clusters) < 1:
            raise DinokitError(f"k-means needs at least one cluster, got n_clusters={n_clusters}")
        if int(niter) < 1 or int(nredo) < 1:
            raise DinokitError(f"niter and nredo must be positive, got niter={niter}, nredo={nredo}")
        if backend not in ("auto", "faiss", "torch"):
            raise DinokitError(f"unknown k-means backend {backend!r}; choose auto, faiss or torch")
        if int(max_points_per_centroid) < 1 or int(batch_size) < 1:
            raise DinokitError("max_points_per_centroid and batch_size must be positive")
        self.n_clusters = int(n_clusters)
        self.niter = int(niter)
        self.nredo = int(nredo)
        self.seed = int(seed)
        self.max_points_per_centroid = int(max_points_per_centroid)
        self.backend = backend
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.batch_size = int(batch_size)

    # --- fitting --------------------------------------------------------------
    def _resolve_backend(self) -> str:
        if self.backend == "faiss":
            if not faiss_available():
                raise DinokitError("k-means backend 'faiss' requested but faiss is not installed (pip install faiss-cpu)")
            return "faiss"
        if self.backend == "torch":
            return "torch"
        return "faiss" if self.device.type == "cpu" and faiss_available() else "torch"

    def fit(self, x: ArrayLike) -> "KMeans":
        """Fit the centroids on the rows of ``x`` ``(n, d)``."""
        data = _as_float32(x)
        if data.ndim != 2:
            raise DinokitError(f"k-means expects a 2-D array of descriptors, got shape {data.shape}")
        n, d = data.shape
        if n < self.n_clusters:
            raise DinokitError(f"cannot make {self.n_clusters} clusters from {n} descriptors")
        self.backend_ = self._resolve_backend()
        self._index = self._torch_centers = None  # assignment caches of a previous fit
        if self.backend_ == "faiss":
            centers, obj = self._fit_faiss(data)
        else:
            centers, obj = self._fit_torch(data)
        self.cluster_centers_ = centers
        self.inertia_ = float(obj)
        self.n_features_in_ = d
        return self

    def _fit_faiss(self, data: np.ndarray) -> tuple[np.ndarray, float]:
        import faiss

        # min_points_per_centroid=1 only silences faiss's warning for small samples.
        km = faiss.Kmeans(
            data.shape[1], self.n_clusters, niter=self.niter, nredo=self.nredo, seed=self.seed,
            max_points_per_centroid=self.max_points_per_centroid, min_points_per_centroid=1, verbose=False,
        )
        km.train(data)
        obj = float(km.obj[-1]) if len(km.obj) else float("nan")
        return np.array(km.centroids, dtype=np.float32, copy=True), obj

    def _fit_torch(self, data: np.ndarray) -> tuple[np.ndarray, float]:
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.from_numpy(data)
        k = self.n_clusters
        cap = k * self.max_points_per_centroid
        if x.shape[0] > cap:
            x = x[torch.randperm(x.shape[0], generator=gen)[:cap]]
        x = x.to(self.device)
        x_sq = (x * x).sum(1)
        best_obj, best = float("inf"), None
        for _ in range(self.nredo):
            init = torch.randperm(x.shape[0], generator=gen)[:k].to(self.device)
            c = x[init].clone()
            prev = None
            for _ in range(self.niter):
                dist = (x_sq[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None]).clamp_min_(0)
                labels = dist.argmin(1)
                if prev is not None and torch.equal(labels, prev):
                    break
                prev = labels
                c = self._update_centroids(x, labels, c, gen)
            dist = (x_sq[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None]).clamp_min_(0)
            obj = float(dist.min(1).values.double().sum())
            if obj < best_obj:
                best_obj, best = obj, c
        return best.to("cpu", torch.float32).numpy().copy(), best_obj

    def _update_centroids(self, x: torch.Tensor, labels: torch.Tensor, old: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        k = old.shape[0]
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        sums = torch.zeros_like(old).index_add_(0, labels, x)
        c = sums / counts.clamp_min(1)[:, None]
        # Empty clusters: split the largest cluster in two, as faiss does.
        for j in torch.nonzero(counts == 0).flatten().tolist():
            big = int(torch.argmax(counts))
            eps = 1.0 / 1024
            sign = torch.where(torch.rand(c.shape[1], generator=gen) < 0.5, -eps, eps).to(x.device)
            c[j] = c[big] * (1 + sign)
            c[big] = c[big] * (1 - sign)
            counts[j] = counts[big] / 2
            counts[big] = counts[big] - counts[j]
        return c

    # --- assignment -----------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise DinokitError("this KMeans is not fitted yet; call fit() first")

    def assign(self, data: Any, batch_size: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """Squared distance to the nearest centroid and its index, for every row of ``data`` (batched)."""
        self._check_fitted()
        dists, labels = [], []
        for batch in iter_rows(data, batch_size or self.batch_size):
            if batch.shape[0] == 0:
                continue
            d, i = self._assign_batch(batch)
            dists.append(d)
            labels.append(i)
        if not dists:
            return np.zeros(0, np.float32), np.zeros(0, np.int32)
        return np.concatenate(dists), np.concatenate(labels)

    def _assign_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid of each row of one float32 batch: faiss's exact search for a faiss model (what
        the reference's ``index.search`` computes), else torch. Every assignment goes through here, so a
        model gives the same labels and distances whoever asks."""
        if batch.shape[1] != self.cluster_centers_.shape[1]:
            raise DinokitError(f"descriptors have {batch.shape[1]} dimensions, the centroids "
                               f"{self.cluster_centers_.shape[1]}")
        if getattr(self, "backend_", None) == "faiss":
            # keeping torch out of this loop also stops its OpenMP threads competing with faiss's
            index = getattr(self, "_index", None)
            if index is None:
                import faiss

                index = faiss.IndexFlatL2(self.cluster_centers_.shape[1])
                index.add(self.cluster_centers_)
                self._index = index
            d, i = index.search(batch, 1)
            return d[:, 0], i[:, 0].astype(np.int32)
        c = getattr(self, "_torch_centers", None)
        if c is None:
            c = torch.from_numpy(self.cluster_centers_).to(self.device)
            self._torch_centers = c
        x = torch.from_numpy(batch).to(self.device)
        # |x - c|^2 = |x|^2 + (|c|^2 - 2 x.c): the argmin needs only the bracket
        partial = torch.addmm((c * c).sum(1)[None], x, c.T, alpha=-2.0)
        v, i = partial.min(1)
        v = (v + torch.linalg.vector_norm(x, dim=1).square()).clamp_min_(0)
        return v.cpu().numpy(), i.to(torch.int32).cpu().numpy()

    def predict(self, data: Any, batch_size: Optional[int] = None) -> np.ndarray:
        """Index of the nearest centroid for every row of ``data``."""
        return self.assign(data, batch_size)[1]

    def transform(self, x: ArrayLike) -> np.ndarray:
        """Squared distances ``(n, k)`` of the rows of ``x`` to every centroid."""
        self._check_fitted()
        return squared_distances(x, self.cluster_centers_)


def squared_distances(x: ArrayLike, centers: ArrayLike) -> np.ndarray:
    """``(n, k)`` squared Euclidean distances between rows of ``x`` and ``centers``."""
    a = torch.from_numpy(_as_float32(x))
    c = torch.from_numpy(_as_float32(centers))
    if c.shape[0] == 0:
        return np.zeros((a.shape[0], 0), np.float32)
    d = torch.addmm((c * c).sum(1)[None], a, c.T, alpha=-2.0)
    return d.add_(torch.linalg.vector_norm(a, dim=1).square()[:, None]).clamp_min_(0).numpy()


@dataclass
class ElbowResult:
    """Outcome of :func:`elbow_search`: the chosen model, its labels for all data and the objectives.

    ``objectives[i]`` is the mean squared distance for ``n_clusters_tried[i]`` clusters.
    """

    model: KMeans
    labels: np.ndarray
    objectives: list[float] = field(default_factory=list)
    n_clusters_tried: list[int] = field(default_factory=list)

    @property
    def n_clusters(self) -> int:
        return self.model.n_clusters


def elbow_search(
    sample: ArrayLike,
    data: Any,
    elbow: float,
    n_clusters_range: Iterable[int] = range(1, 15),
    *,
    lookahead: int = 1,
    progress: bool = False,
    **kmeans_kwargs: Any,
) -> ElbowResult:
    """The reference's elbow rule: try k = 1, 2, ... fitting on ``sample`` and assigning all ``data``.

    Stops at the first k whose mean squared distance over ``data`` is above
    ``elbow`` times the previous one, and returns *that* model and its labels
    (as the reference does), else the last k. Values of k above the number of
    sample rows are not tried.

    ``lookahead`` k are fitted at a time and their objectives come from one
    pass over ``data``: 1 is the reference's loop (a pass per k, nothing fitted
    past the elbow); more means fewer passes (worth it when ``data`` is large
    or on disk) for at most ``lookahead - 1`` fits past the elbow. The result
    does not depend on it: every model is fitted as in the loop and assigns
    the same batches through the same code, and the objectives are summed
    in the same order.
    """
    if not 0.0 < elbow <= 1.0:
        raise DinokitError(f"elbow must be in (0, 1], got {elbow}")
    if int(lookahead) < 1:
        raise DinokitError(f"lookahead must be a positive integer, got {lookahead}")
    sample = _as_float32(sample)
    ks = [int(k) for k in n_clusters_range if int(k) <= sample.shape[0]]
    if not ks:
        raise DinokitError(f"too few descriptors ({sample.shape[0]}) sampled for clustering; lower sample_interval")
    from tqdm.auto import tqdm

    objectives: list[float] = []
    tried: list[int] = []
    bar = tqdm(total=len(ks), desc="elbow", unit="k", disable=not progress, leave=False)
    try:
        for start in range(0, len(ks), int(lookahead)):
            models = [KMeans(k, **kmeans_kwargs).fit(sample) for k in ks[start : start + int(lookahead)]]
            group_objectives, group_labels = _objectives_and_labels(models, data)
            for model, objective, labels in zip(models, group_objectives, group_labels):
                objectives.append(objective)
                tried.append(model.n_clusters)
                bar.update(1)
                if len(objectives) > 1 and objectives[-1] > elbow * objectives[-2]:
                    return ElbowResult(model, labels.astype(np.int32), objectives, tried)
    finally:
        bar.close()
    return ElbowResult(model, labels.astype(np.int32), objectives, tried)


def _objectives_and_labels(models: Sequence[KMeans], data: Any) -> tuple[list[float], list[np.ndarray]]:
    """Mean squared distance to the nearest centroid of each model, and each model's labels (uint8 for
    k <= 256, so several candidates cost about a byte per descriptor each), in one batched pass."""
    label_dtype = np.uint8 if max(m.n_clusters for m in models) <= 256 else np.int32
    sums = np.zeros(len(models), np.float64)
    labels: list[list[np.ndarray]] = [[] for _ in models]
    n = 0
    for batch in iter_rows(data, models[0].batch_size):
        if batch.shape[0] == 0:
            continue
        for j, m in enumerate(models):
            d, i = m._assign_batch(batch)
            sums[j] += float(d.sum(dtype=np.float64))
            labels[j].append(i.astype(label_dtype))
        n += batch.shape[0]
    flat = [np.concatenate(l) if l else np.zeros(0, label_dtype) for l in labels]
    return [float(v / max(n, 1)) for v in sums], flat


def split_labels(labels: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Split a flat label array into per-image arrays of the given sizes."""
    if sum(counts) != len(labels):
        raise ValueError(f"{len(labels)} labels do not match {sum(counts)} descriptors")
    return list(np.split(labels, np.cumsum(counts)[:-1]))


def kmeans_plusplus(
    x: Tensor,
    k: int,
    *,
    seed: int = 0,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> tuple[Tensor, Tensor, float]:
    """Lloyd's k-means with greedy k-means++ seeding, deterministic for a given ``seed``.

    Runs ``n_init`` seedings and keeps the lowest inertia (as scikit-learn's
    ``KMeans``). ``tol`` is relative to the mean per-feature variance.
    Returns ``(labels (N,), centers (k, D), inertia)``.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = x.shape[0]
    if n < k:
        raise ValueError(f"cannot form {k} clusters from {n} points")
    x = x.float()
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    tol_abs = tol * float(x.var(dim=0, unbiased=False).mean()) if n > 1 else 0.0
    d_in = x.shape[1]
    basis = None
    if n < d_in:
        # centres are means of points, so all distances live in the span of the points:
        # k-means on their coordinates in an orthonormal basis of that span is the same k-means.
        basis, r = torch.linalg.qr(x.T)  # (D, n), (n, n)
        x = r.T.contiguous()
    sq = (x * x).sum(1)
    trials = 2 + int(math.log(k))

    def dist2(c: Tensor) -> Tensor:
        return (sq[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None]).clamp_min_(0)

    best: Optional[tuple[Tensor, Tensor, float]] = None
    for _ in range(max(1, n_init)):
        first = int(torch.randint(n, (1,), generator=gen))
        centers = [x[first]]
        closest = dist2(x[first : first + 1])[:, 0]
        for _ in range(1, k):
            total = float(closest.sum())
            if total <= 0:  # all remaining points coincide with a centre
                cand = torch.randint(n, (trials,), generator=gen)
            else:
                probs = (closest / total).cpu().double()
                cand = torch.multinomial(probs, trials, replacement=True, generator=gen)
            d = dist2(x[cand.to(x.device)])  # (n, trials)
            pot = torch.minimum(closest[:, None], d).sum(0)
            j = int(torch.argmin(pot))
            centers.append(x[int(cand[j])])
            closest = torch.minimum(closest, d[:, j])
        c = torch.stack(centers)
        for _ in range(max_iter):
            labels = dist2(c).argmin(1)
            counts = torch.bincount(labels, minlength=k).to(x.dtype)
            sums = torch.zeros_like(c).index_add_(0, labels, x)
            new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
            shift = float(((new - c) ** 2).sum())
            c = new
            if shift <= tol_abs:
                break
        d = dist2(c)
        labels = d.argmin(1)
        inertia = float(d.gather(1, labels[:, None]).sum())
        if best is None or inertia < best[2]:
            best = (labels, c, inertia)
    assert best is not None
    labels, c, inertia = best
    return labels, (c @ basis.T if basis is not None else c), inertia
