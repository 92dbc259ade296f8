"""Weighted k-NN classification of frozen features, DINO's evaluation protocol (``eval_knn.py``).

Each test image votes with its ``k`` most cosine-similar training images,
weighted by ``exp(similarity / T)`` (``k=20``, ``T=0.07`` in the paper); the
features are the backbone's CLS output, L2-normalised. Top-1 and top-5
accuracies are reported in percent.

Differences from the reference, all in what it can handle, not in the
result: any number of test images (the reference divides the test set into
100 chunks and fails below 100 images); memory bounded by chunking both test
and training features; several ``k`` from one neighbour search; features of
image folders cached on disk.

Shortfalls are said, not hidden: a ``k`` larger than the training set is
evaluated with every training image voting (what the search can do; the
reference would fail) and reported as ``k (=N)`` with a warning, and top-5
accuracy is reported as not applicable (``None``/``n/a``) with 5 classes or
fewer, where it cannot miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..devices import resolve_device
from ..errors import DinokitError, ImageError
from ..features.image import IMAGE_SUFFIXES, open_image
from ..io import save_json, save_tensors
from ..models.config import IMAGENET_MEAN, IMAGENET_STD, input_normalization
from ..errors import DinokitWarning, warn

PathLike = Union[str, os.PathLike]
FEATURE_FORMAT = "dinokit-features-v1"


# --------------------------------------------------------------------------- the classifier
def knn_search(
    train_features: Tensor,
    query_features: Tensor,
    k: int,
    train_chunk_size: int = 65536,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` training neighbours by dot product for each query row: ``(similarities, indices)``, sorted.

    The training set is scanned in chunks of ``train_chunk_size`` so the
    similarity block never exceeds ``queries x train_chunk_size``.
    """
    k = min(k, train_features.shape[0])
    best_sim: Optional[Tensor] = None
    best_idx: Optional[Tensor] = None
    for start in range(0, train_features.shape[0], train_chunk_size):
        block = query_features @ train_features[start : start + train_chunk_size].T
        kk = min(k, block.shape[1])
        sim, idx = block.topk(kk, dim=1, largest=True, sorted=True)
        idx = idx + start
        if best_sim is None:
            best_sim, best_idx = sim, idx
        else:
            sim = torch.cat((best_sim, sim), dim=1)
            idx = torch.cat((best_idx, idx), dim=1)
            best_sim, order = sim.topk(k, dim=1, largest=True, sorted=True)
            best_idx = idx.gather(1, order)
    assert best_sim is not None and best_idx is not None
    return best_sim, best_idx


def knn_votes(sim: Tensor, labels: Tensor, k: int, temperature: float, num_classes: int) -> Tensor:
    """Class scores ``(N, C)``: sum over the first ``k`` neighbours of ``exp(sim / T)`` per neighbour's class."""
    sim, labels = sim[:, :k], labels[:, :k]
    one_hot = torch.zeros(sim.shape[0] * k, num_classes, device=sim.device, dtype=sim.dtype)
    one_hot.scatter_(1, labels.reshape(-1, 1), 1)
    weights = (sim / temperature).exp()
    return (one_hot.view(sim.shape[0], k, num_classes) * weights.view(sim.shape[0], k, 1)).sum(1)


@dataclass
class KNNResult:
    """Accuracies (percent) for each ``k``: ``top1[k]``, ``top5[k]``; ``num_test`` images, ``temperature``.

    ``top5[k]`` is ``None`` (not applicable) with 5 classes or fewer, where the
    5 best guesses hold every class. ``k_used[k]`` is the number of neighbours
    that actually voted: ``k``, or the training-set size when ``k`` exceeds it.
    """

    top1: dict[int, float]
    top5: dict[int, Optional[float]]
    num_train: int
    num_test: int
    num_classes: int
    temperature: float
    predictions: dict[int, Tensor] = field(default_factory=dict, repr=False)
    k_used: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "num_classes": self.num_classes,
            "results": [{"k": k, "k_used": self.k_used.get(k, k), "top1": self.top1[k], "top5": self.top5[k]}
                        for k in sorted(self.top1)],
        }

    def table(self) -> str:
        """A text table; ``n/a`` for a top-5 that does not apply, ``k (=N)`` where only N neighbours exist."""
        def k_label(k: int) -> str:
            used = self.k_used.get(k, k)
            return str(k) if used == k else f"{k} (={used})"

        def pct(v: Optional[float]) -> str:
            return f"{v:7.2f}" if v is not None else f"{'n/a':>7}"

        width = max([5] + [len(k_label(k)) for k in self.top1])
        lines = [f"{'k':>{width}}  {'top-1':>7}  {'top-5':>7}"]
        lines += [f"{k_label(k):>{width}}  {pct(self.top1[k])}  {pct(self.top5[k])}" for k in sorted(self.top1)]
        return "\n".join(lines)


class KNNClassifier:
    """Weighted k-NN classifier on (L2-normalised) features, scikit-learn style.

    Args:
        k: neighbours (one value or several; several are evaluated from one search).
        temperature: ``T`` of the vote weights ``exp(sim / T)``.
        num_classes: number of classes (default: from the labels).
        normalize: L2-normalise features first (DINO's protocol); turn off
            for features that already are.
        chunk_size: test images per chunk; ``train_chunk_size``: training
            features per similarity block. Together they bound memory.
        device: where to compute (default: the features' device).

    After :meth:`fit`: ``train_features_``, ``train_labels_``, ``num_classes_``.
    """

    def __init__(
        self,
        k: Union[int, Sequence[int]] = 20,
        temperature: float = 0.07,
        num_classes: Optional[int] = None,
        normalize: bool = True,
        chunk_size: int = 256,
        train_chunk_size: int = 65536,
        device: Union[str, torch.device, None] = None,
    ) -> None:
        ks = [k] if isinstance(k, int) else list(k)
        if not ks or any(int(v) <= 0 for v in ks):
            raise DinokitError(f"k must be positive integers, got {k}")
        if not temperature > 0:
            raise DinokitError(f"temperature must be positive, got {temperature}")
        if chunk_size <= 0 or train_chunk_size <= 0:
            raise DinokitError("chunk sizes must be positive")
        self.k = k
        self.ks = sorted({int(v) for v in ks})
        self.temperature = float(temperature)
        self.num_classes = num_classes
        self.normalize = normalize
        self.chunk_size = chunk_size
        self.train_chunk_size = train_chunk_size
        self.device = resolve_device(device) if device is not None else None

    def _prep(self, features: Any) -> Tensor:
        t = torch.as_tensor(np.asarray(features) if not isinstance(features, Tensor) else features)
        if t.ndim != 2:
            raise DinokitError(f"features must be a 2-D array (images x dims), got shape {tuple(t.shape)}")
        t = t.float()
        if self.device is not None:
            t = t.to(self.device)
        return F.normalize(t, dim=1, p=2) if self.normalize else t

    def fit(self, features: Any, labels: Any) -> "KNNClassifier":
        feats = self._prep(features)
        labs = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels).long().to(feats.device)
        if labs.ndim != 1 or labs.shape[0] != feats.shape[0]:
            raise DinokitError(f"{feats.shape[0]} training features but labels of shape {tuple(labs.shape)}")
        if feats.shape[0] == 0:
            raise DinokitError("no training features")
        if (labs < 0).any():
            raise DinokitError("labels must be non-negative class indices")
        self.train_features_ = feats
        self.train_labels_ = labs
        self.num_classes_ = int(self.num_classes or int(labs.max()) + 1)
        if int(labs.max()) >= self.num_classes_:
            raise DinokitError(f"label {int(labs.max())} out of range for {self.num_classes_} classes")
        return self

    def _scores(self, feats: Tensor) -> Iterable[tuple[int, int, dict[int, Tensor]]]:
        kmax = max(self.ks)
        for start in range(0, feats.shape[0], self.chunk_size):
            chunk = feats[start : start + self.chunk_size].to(self.train_features_.device)
            sim, idx = knn_search(self.train_features_, chunk, kmax, self.train_chunk_size)
            neigh = self.train_labels_[idx]
            yield start, chunk.shape[0], {
                k: knn_votes(sim, neigh, min(k, sim.shape[1]), self.temperature, self.num_classes_) for k in self.ks
            }

    def predict_scores(self, features: Any, k: Optional[int] = None) -> Tensor:
        """Vote scores ``(N, num_classes)`` for ``k`` (default: the smallest configured)."""
        k = k or self.ks[0]
        if k not in self.ks:
            raise DinokitError(f"k={k} is not one of the configured {self.ks}")
        feats = self._prep(features)
        return torch.cat([scores[k] for _, _, scores in self._scores(feats)]) if len(feats) else torch.zeros(0, self.num_classes_)

    def predict(self, features: Any, k: Optional[int] = None) -> Tensor:
        """Predicted class of each row."""
        return self.predict_scores(features, k).argmax(dim=1)

    def evaluate(self, features: Any, labels: Any) -> KNNResult:
        """Top-1 / top-5 accuracy (percent) of every configured ``k`` on labelled test features.

        A ``k`` larger than the training set is evaluated with every training
        image voting (``k_used``), and top-5 is ``None`` with 5 classes or
        fewer; both are reported with a :class:`~dinokit.train.notices.DinokitWarning`.
        """
        feats = self._prep(features)
        labs = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels).long()
        if labs.ndim != 1 or labs.shape[0] != feats.shape[0]:
            raise DinokitError(f"{feats.shape[0]} test features but labels of shape {tuple(labs.shape)}")
        if feats.shape[0] == 0:
            raise DinokitError("no test features")
        k_used = self._warn_shortfalls()
        top1 = {k: 0 for k in self.ks}
        top5 = {k: 0 for k in self.ks}
        preds: dict[int, list[Tensor]] = {k: [] for k in self.ks}
        for start, n, scores in self._scores(feats):
            targets = labs[start : start + n].to(self.train_features_.device).view(-1, 1)
            for k, s in scores.items():
                _, order = s.sort(dim=1, descending=True)
                correct = order.eq(targets)
                top1[k] += int(correct[:, :1].sum())
                top5[k] += int(correct[:, : min(5, k, order.shape[1])].sum())
                preds[k].append(order[:, 0].cpu())
        n = feats.shape[0]
        top5_applies = self.num_classes_ > 5
        return KNNResult(
            {k: top1[k] * 100.0 / n for k in self.ks},
            {k: top5[k] * 100.0 / n if top5_applies else None for k in self.ks},
            int(self.train_features_.shape[0]),
            n,
            self.num_classes_,
            self.temperature,
            {k: torch.cat(v) for k, v in preds.items()},
            k_used,
        )

    def _warn_shortfalls(self) -> dict[int, int]:
        """Warn about ``k`` beyond the training set and a top-5 that cannot miss; returns the ``k`` actually used."""
        n_train = int(self.train_features_.shape[0])
        k_used = {k: min(k, n_train) for k in self.ks}
        too_big = [k for k in self.ks if k > n_train]
        if too_big:
            warn(f"k={', '.join(map(str, too_big))} exceed{'s' if len(too_big) == 1 else ''} the {n_train} training "
                 f"images: computed with k={n_train} (every training image votes), shown as '(={n_train})'",
                 stacklevel=4)
        if self.num_classes_ <= 5:
            warn(f"top-5 accuracy does not apply to {self.num_classes_} classes (the 5 best guesses hold every "
                 "class, so it would always be 100 %); reported as n/a", stacklevel=4)
        return k_used

    def score(self, features: Any, labels: Any) -> float:
        """Top-1 accuracy as a fraction (scikit-learn convention) for the smallest configured ``k``."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="top-5 accuracy does not apply", category=DinokitWarning)
            return self.evaluate(features, labels).top1[self.ks[0]] / 100.0


def knn_classify(
    train_features: Any,
    train_labels: Any,
    test_features: Any,
    test_labels: Any,
    k: Union[int, Sequence[int]] = 20,
    temperature: float = 0.07,
    num_classes: Optional[int] = None,
    normalize: bool = True,
    chunk_size: int = 256,
    device: Union[str, torch.device, None] = None,
) -> KNNResult:
    """Weighted k-NN accuracy in one call (see :class:`KNNClassifier`)."""
    if num_classes is None:
        labels = [torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x) for x in (train_labels, test_labels)]
        num_classes = int(max(int(lab.max()) for lab in labels if lab.numel())) + 1
    clf = KNNClassifier(k, temperature, num_classes, normalize, chunk_size, device=device)
    return clf.fit(train_features, train_labels).evaluate(test_features, test_labels)


# --------------------------------------------------------------------------- feature sets
@dataclass
class FeatureSet:
    """Features ``(N, D)``, integer labels ``(N,)``, class names and (optionally) the image paths."""

    features: Tensor
    labels: Tensor
    classes: list[str]
    paths: list[str] = field(default_factory=list)

    def save(self, path: PathLike, metadata: Optional[dict[str, str]] = None, overwrite: bool = True) -> Path:
        """Write as safetensors (``features``, ``labels``; class names in the metadata), atomically."""
        meta = {"format": FEATURE_FORMAT, "classes": json.dumps(self.classes)}
        meta.update(metadata or {})
        return save_tensors(path, {"features": self.features.float(), "labels": self.labels.long()}, meta, overwrite)


def load_feature_file(path: PathLike) -> FeatureSet:
    """Read features and labels from ``.safetensors`` (``features``/``labels``) or ``.npz`` (same names)."""
    path = Path(path)
    if not path.is_file():
        raise DinokitError(f"{path}: no such feature file")
    classes: Optional[list[str]] = None
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                names = set(f.keys())
                data = {k: f.get_tensor(k) for k in names & {"features", "labels"}}
            if "classes" in meta:
                classes = list(json.loads(meta["classes"]))
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                data = {k: torch.from_numpy(z[k]) for k in ("features", "labels") if k in z.files}
                if "classes" in z.files:
                    classes = [str(c) for c in z["classes"]]
        else:
            raise DinokitError(f"{path}: feature files must be .safetensors or .npz")
    except DinokitError:
        raise
    except Exception as exc:
        raise DinokitError(f"{path}: not a readable feature file ({str(exc).splitlines()[0] if str(exc) else exc})") from None
    for key in ("features", "labels"):
        if key not in data:
            raise DinokitError(f"{path}: no '{key}' array (expected 'features' (N x D) and 'labels' (N))")
    feats, labels = data["features"].float(), data["labels"].long()
    if feats.ndim != 2 or labels.ndim != 1 or feats.shape[0] != labels.shape[0]:
        raise DinokitError(f"{path}: 'features' must be N x D and 'labels' N, got {tuple(feats.shape)} and {tuple(labels.shape)}")
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if labels.numel() else 0)]
    return FeatureSet(feats, labels, classes)


def image_folder(root: PathLike) -> tuple[list[Path], list[int], list[str]]:
    """ImageFolder layout: one subfolder per class (sorted names), images at any depth below it."""
    root = Path(root)
    if not root.is_dir():
        raise DinokitError(f"{root}: no such folder (expected one subfolder of images per class)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    for i, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [i] * len(files)
    if not paths:
        raise DinokitError(f"{root}: no images in class subfolders (expected ImageFolder layout: {root}/<class>/<image>)")
    return paths, labels, classes


def eval_transform(
    image: Image.Image,
    image_size: int = 224,
    resize_size: Optional[int] = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """DINO's evaluation preprocessing: bicubic resize of the smaller edge to 256/224 of the crop, centre crop, normalise.

    ``mean``/``std`` default to ImageNet's (DINO's); pass the backbone's own for models trained with others.
    """
    resize = resize_size or int(round(image_size * 256 / 224))
    w, h = image.size
    if w <= h:
        nw, nh = resize, int(resize * h / w)
    else:
        nw, nh = int(resize * w / h), resize
    image = image.resize((nw, nh), Image.BICUBIC)
    left = int(round((nw - image_size) / 2.0))
    top = int(round((nh - image_size) / 2.0))
    image = image.crop((left, top, left + image_size, top + image_size))
    t = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(tuple(mean), dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(tuple(std), dtype=torch.float32).view(3, 1, 1)
    return (t - m) / s


class _EvalImages(torch.utils.data.Dataset):
    def __init__(
        self, paths: Sequence[Path], image_size: int, resize_size: Optional[int],
        mean: Sequence[float], std: Sequence[float],
    ) -> None:
        self.paths = list(paths)
        self.image_size = image_size
        self.resize_size = resize_size
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return eval_transform(open_image(self.paths[i]), self.image_size, self.resize_size, self.mean, self.std)


def _model_fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.blake2b(digest_size=16)
    cfg = getattr(model, "cfg", None)
    h.update(repr(cfg).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _files_fingerprint(paths: Sequence[Path], labels: Sequence[int], root: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    for p, lab in zip(paths, labels):
        st = p.stat()
        h.update(f"{p.relative_to(root)}|{lab}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$DINOKIT_CACHE/features`` or ``~/.cache/dinokit/features``."""
    base = os.environ.get("DINOKIT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dinokit"
    return Path(base) / "features"


@torch.no_grad()
def extract_folder_features(
    model: torch.nn.Module,
    folder: PathLike,
    image_size: int = 224,
    resize_size: Optional[int] = None,
    batch_size: int = 64,
    device: Union[str, torch.device, None] = None,
    num_workers: int = 0,
    cache_dir: Optional[PathLike] = None,
    progress: bool = True,
) -> FeatureSet:
    """CLS features (not yet normalised) of every image of an ImageFolder, cached in ``cache_dir`` if given.

    The cache key covers the model's weights and architecture, the
    preprocessing and every file's path, size and modification time, so a
    changed model or folder is never served stale features.
    """
    root = Path(folder)
    paths, labels, classes = image_folder(root)
    mean, std = input_normalization(model)
    model_key = _model_fingerprint(model)
    key = hashlib.blake2b(
        f"{model_key}|{image_size}|{resize_size}|{_files_fingerprint(paths, labels, root)}".encode(), digest_size=12
    ).hexdigest()
    cache_file = Path(cache_dir) / f"{root.resolve().name}-{key}.safetensors" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        try:
            cached = load_feature_file(cache_file)
            if cached.features.shape[0] == len(paths):
                return FeatureSet(cached.features, cached.labels, classes, [str(p) for p in paths])
        except DinokitError:
            pass  # a damaged cache entry is recomputed
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    loader = torch.utils.data.DataLoader(
        _EvalImages(paths, image_size, resize_size, mean, std), batch_size=batch_size, num_workers=num_workers,
        pin_memory=dev.type == "cuda",
    )
    feats: list[Tensor] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(paths), desc=f"features {root.name}", unit="img", dynamic_ncols=True)
    dtype = next(model.parameters()).dtype
    try:
        for batch in loader:
            feats.append(model(batch.to(dev, dtype)).float().cpu())
            if bar is not None:
                bar.update(batch.shape[0])
    except RuntimeError as exc:
        if "ImageError" in str(exc):
            raise ImageError(str(exc).strip().splitlines()[-1].split("ImageError:", 1)[-1].strip()) from None
        raise
    finally:
        if bar is not None:
            bar.close()
    result = FeatureSet(torch.cat(feats), torch.tensor(labels, dtype=torch.long), classes, [str(p) for p in paths])
    if cache_file is not None:
        result.save(cache_file, {"model": model_key, "folder": str(root.resolve()), "image_size": str(image_size)})
    return result


def _as_feature_set(source: Union[PathLike, FeatureSet], model, what: str, **kwargs: Any) -> FeatureSet:
    if isinstance(source, FeatureSet):
        return source
    path = Path(source)
    if path.is_file():
        return load_feature_file(path)
    if path.is_dir():
        if model is None:
            raise DinokitError(f"{path}: is an image folder; a model is needed to compute its features")
        return extract_folder_features(model, path, **kwargs)
    raise DinokitError(f"{path}: no such {what} folder or feature file")


def align_classes(train: FeatureSet, test: FeatureSet, test_name: str = "test set") -> FeatureSet:
    """Relabel ``test`` so its class indices match ``train``'s class names."""
    if train.classes == test.classes:
        return test
    index = {c: i for i, c in enumerate(train.classes)}
    missing = [c for c in test.classes if c not in index]
    used = set(test.labels.unique().tolist())
    missing = [c for i, c in enumerate(test.classes) if c not in index and i in used]
    if missing:
        raise DinokitError(
            f"{test_name}: class(es) {', '.join(missing[:5])} do not exist in the training set "
            f"(training classes: {', '.join(train.classes[:10])}{'...' if len(train.classes) > 10 else ''})"
        )
    mapping = torch.tensor([index.get(c, -1) for c in test.classes], dtype=torch.long)
    return FeatureSet(test.features, mapping[test.labels], list(train.classes), test.paths)


def knn_evaluate(
    train: Union[PathLike, FeatureSet],
    test: Union[PathLike, FeatureSet],
    model: Optional[torch.nn.Module] = None,
    k: Union[int, Sequence[int]] = 20,
    temperature: float = 0.07,
    image_size: int = 224,
    batch_size: int = 64,
    device: Union[str, torch.device, None] = None,
    num_workers: int = 0,
    cache_dir: Optional[PathLike] = None,
    progress: bool = True,
    chunk_size: int = 256,
) -> KNNResult:
    """k-NN accuracy of ``model`` from an ImageFolder (or feature file) of training and of test images."""
    kwargs = dict(image_size=image_size, batch_size=batch_size, device=device, num_workers=num_workers,
                  cache_dir=cache_dir, progress=progress)
    tr = _as_feature_set(train, model, "training", **kwargs)
    te = align_classes(tr, _as_feature_set(test, model, "test", **kwargs), str(test))
    return knn_classify(tr.features, tr.labels, te.features, te.labels, k, temperature,
                        num_classes=max(len(tr.classes), int(tr.labels.max()) + 1), chunk_size=chunk_size, device=device)


def save_result(path: PathLike, result: KNNResult, extra: Optional[dict[str, Any]] = None, overwrite: bool = True) -> Path:
    """Write a :class:`KNNResult` as JSON (atomically)."""
    data = result.as_dict()
    data.update(extra or {})
    return save_json(path, data, overwrite)


__all__ = [
    "FeatureSet",
    "KNNClassifier",
    "KNNResult",
    "align_classes",
    "default_cache_dir",
    "eval_transform",
    "extract_folder_features",
    "image_folder",
    "knn_classify",
    "knn_evaluate",
    "knn_search",
    "knn_votes",
    "load_feature_file",
    "save_result",
]
