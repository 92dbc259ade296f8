"""What every benchmark shares: the model, the output folder, progress and the result's provenance."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence, TypeVar, Union

import torch

from ...errors import DinokitError
from ...settings import TaskSettings
from ..datasets.registry import BenchmarkDataset, benchmark, dataset_entry
from .provenance import describe_model, environment
from .report import BenchmarkResult
from .run_folder import RunFolder

S = TypeVar("S", bound=TaskSettings)
ModelArg = Union[str, os.PathLike, torch.nn.Module, Any, None]


def take_options(cls: type[S], given: Optional[S], kwargs: dict[str, Any]) -> S:
    """``given`` (default: ``cls()``) with the fields of ``cls`` found in ``kwargs`` applied (and popped)."""
    return cls.resolve(given, **{k: kwargs.pop(k) for k in cls.__dataclass_fields__ if k in kwargs})


def spread(items: Sequence[Any], limit: Optional[int], key: Any) -> list[Any]:
    """At most ``limit`` items spread over the groups given by ``key(item)``: the first item of every
    group, then the second of every group, and so on (dataset order kept within a group)."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise DinokitError(f"the limit must be at least 1, got {limit}")
    groups: dict[Any, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(key(it), []).append(i)
    picked: list[int] = []
    depth = 0
    while len(picked) < limit:
        for idx in groups.values():
            if depth < len(idx) and len(picked) < limit:
                picked.append(idx[depth])
        depth += 1
    return [items[i] for i in sorted(picked)]


class Benchmark:
    """Base of the benchmark runners: configure in ``__init__``, call :meth:`run`.

    Args shared by every benchmark:
        root: the dataset folder.
        output_dir: the run's folder (settings, per-item log, cache, results;
            see :mod:`dinokit.eval.benchmark.run_folder`).
        dataset: which dataset (a name of :data:`dinokit.eval.datasets.registry.DATASETS` for this benchmark).
        settings: the method's settings (the class of :data:`~dinokit.eval.datasets.registry.BENCHMARKS`;
            default: the runner's ``PROTOCOL_SETTINGS``); keyword ``overrides`` change single fields.
        model: a model name, a weights file, a loaded backbone or an
            :class:`~dinokit.features.Extractor` (its backbone is used).
        weights, num_heads: weights file for ``model`` / heads for files that do not say.
        device, dtype: where and in which precision the backbone runs.
        baselines: which weight-free baseline rows to add (names from ``BASELINES``).
        keep_cache: keep cached descriptors once no pending item needs them.
        overwrite: start again in a folder that holds another run.
        progress: show progress bars.

    After :meth:`run`: ``result_`` (:class:`BenchmarkResult`), ``folder_``
    (:class:`RunFolder`), ``counts_`` (items scored now / read from the log,
    images passed through the model / read from the cache).
    """

    kind = ""
    BASELINES: tuple[str, ...] = ()  # subclasses: benchmark(kind).baselines
    PROTOCOL_SETTINGS: TaskSettings
    """The method settings of the protocol: the one place where a benchmark may depart from the task defaults."""

    def __init__(
        self,
        root: Union[str, os.PathLike],
        output_dir: Union[str, os.PathLike],
        *,
        dataset: str,
        settings: Optional[TaskSettings] = None,
        model: ModelArg = None,
        weights: Optional[Union[str, os.PathLike]] = None,
        num_heads: Optional[int] = None,
        device: Union[str, torch.device, None] = None,
        dtype: Union[str, torch.dtype, None] = None,
        baselines: Optional[Sequence[str]] = None,
        keep_cache: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        **overrides: Any,
    ) -> None:
        self.entry: BenchmarkDataset = dataset_entry(self.kind, dataset)
        self.settings = self._settings(settings, overrides)
        self.root = Path(root)
        self.output_dir = Path(output_dir)
        self.dataset = dataset
        self.model = model
        self.weights = None if weights is None else str(weights)
        self.num_heads = num_heads
        self.device = device
        self.dtype = dtype
        self.baselines = tuple(self.BASELINES if baselines is None else baselines)
        unknown = [b for b in self.baselines if b not in self.BASELINES]
        if unknown:
            raise DinokitError(f"unknown baseline(s) {', '.join(unknown)} for the {self.kind} benchmark; "
                               f"choose from {', '.join(self.BASELINES)}")
        self.keep_cache = bool(keep_cache)
        self.overwrite = bool(overwrite)
        self.progress = bool(progress)

    def _settings(self, settings: Optional[TaskSettings], overrides: dict[str, Any]) -> Any:
        spec = benchmark(self.kind)
        unused = sorted(set(overrides) & set(spec.exclude))
        if unused:
            raise DinokitError(f"{', '.join(unused)} do(es) not apply to the {self.kind} benchmark")
        return spec.settings.resolve(settings if settings is not None else self.PROTOCOL_SETTINGS, **overrides)

    def settings_record(self, settings: Optional[TaskSettings] = None) -> dict[str, Any]:
        """The settings fields the protocol uses, stride resolved for the model, saliency heads named."""
        from ...features.extractor import resolve_stride

        st = settings if settings is not None else self.settings
        record = st.to_record()
        out = {k: record[k] for k in benchmark(self.kind).method_fields() if k in record}
        net = getattr(self, "backbone_", None)
        if net is not None and "stride" in out:
            out["stride"] = resolve_stride(st.stride, int(net.patch_size))
        if net is not None and out.get("saliency_heads", 0) is None:
            default = getattr(getattr(net, "spec", None), "saliency_heads", None)
            out["saliency_heads"] = list(default) if default is not None else "all"
        return out

    def extractor(self) -> Any:
        """The extractor of the settings' stride, load size and saliency heads (built once)."""
        if getattr(self, "extractor_", None) is None:
            from ...features import as_extractor

            st = self.settings
            self.extractor_ = as_extractor(self.backbone(), stride=st.stride, load_size=st.load_size,
                                           device=self.device, dtype=self.dtype, saliency_heads=st.saliency_heads,
                                           progress=self.progress)
        return self.extractor_

    # --- to implement ------------------------------------------------------------
    def method_settings(self) -> dict[str, Any]:
        """Every hyperparameter that changes the model's results."""
        raise NotImplementedError

    def load_dataset(self) -> Any:
        """Read (and validate) the dataset; raise :class:`~dinokit.errors.DatasetError` on a bad root."""
        raise NotImplementedError

    def evaluate(self, data: Any, folder: RunFolder) -> BenchmarkResult:
        """Score every method on ``data``, logging each finished item in ``folder``."""
        raise NotImplementedError

    def limits(self) -> dict[str, Any]:
        """Options that select a subset of the dataset (recorded, not part of the run's identity)."""
        return {}

    # --- shared ------------------------------------------------------------------
    def backbone(self) -> torch.nn.Module:
        """The backbone, loaded once (a name, a weights file, a module or an Extractor's model)."""
        if getattr(self, "backbone_", None) is not None:
            return self.backbone_
        from ...features import Extractor
        from ...models import load_model

        m = self.model
        if isinstance(m, Extractor):
            net = m.model
        elif isinstance(m, torch.nn.Module):
            net = m
        else:
            name = None if m is None else str(m)
            net = load_model(name if (name or self.weights) else None, self.weights, num_heads=self.num_heads,
                             progress=self.progress)
        self.backbone_ = net
        return net

    def model_name(self) -> str:
        return self.model_info()["name"]

    def model_info(self) -> dict[str, Any]:
        if getattr(self, "model_info_", None) is None:
            name, weights = None, self.weights
            if isinstance(self.model, (str, os.PathLike)):
                if weights is None and Path(self.model).is_file():
                    weights = str(self.model)
                else:
                    name = str(self.model)
            self.model_info_ = describe_model(self.backbone(), name, weights)
        return self.model_info_

    def resolved_device(self) -> torch.device:
        from ...devices import resolve_device

        return resolve_device(self.device)

    def run_settings(self) -> dict[str, Any]:
        """What identifies the run (a rerun into the same folder must match it)."""
        info = self.model_info()
        return {
            "benchmark": self.kind,
            "dataset": {"name": self.dataset, "root": str(self.root.resolve()), **self.dataset_options()},
            # the weights' hash identifies them wherever the file lives; without a file, where they came from
            "model": {k: info.get(k) for k in ("name", "weights_sha256", "arch")}
                     | ({} if info.get("weights_sha256") else {"source": info.get("source")}),
            "dtype": _dtype_name(self.dtype),
            "method": self.method_settings(),
        }

    def dataset_options(self) -> dict[str, Any]:
        """Reader options that change which items exist (split, layout ...: the registry entry's ``options``)."""
        return self.entry.recorded(self.reader_values())

    def reader_values(self) -> dict[str, Any]:
        """Every reader option and filter this runner knows (the registry entry picks its own)."""
        return {}

    def read_dataset(self) -> Any:
        """The registry entry's reader called with its options and filters."""
        return self.entry.read(self.root, self.reader_values())

    def run(self) -> BenchmarkResult:
        """Run the benchmark (resuming from ``output_dir`` when it holds the same run) and write the results."""
        t0 = time.perf_counter()
        data = self.load_dataset()  # a wrong root fails here, before any model is loaded
        self.backbone()
        folder = RunFolder(self.output_dir, self.run_settings(), overwrite=self.overwrite)
        self.folder_ = folder
        self.counts_ = {"items_scored": 0, "items_from_log": 0, "images_computed": 0, "images_from_cache": 0}
        result = self.evaluate(data, folder)
        result.info = {
            "settings": {"method": self.method_settings(), "baselines": list(self.baselines),
                         "limits": self.limits(), "dtype": _dtype_name(self.dtype)},
            "model": self.model_info(),
            "dataset": {"name": self.dataset, "root": str(self.root.resolve()), **self.dataset_options()},
            "environment": environment(self.resolved_device()),
            "run": {**self.counts_, "seconds": round(time.perf_counter() - t0, 3),
                    "output_dir": str(self.output_dir.resolve())},
            **result.info,
        }
        result.write(folder)
        if not self.keep_cache:  # every item of this run is in the log: the descriptors are not needed again
            shutil.rmtree(folder.cache_dir, ignore_errors=True)
        self.result_ = result
        return result

    def _scored(self, fresh: bool) -> None:
        self.counts_["items_scored" if fresh else "items_from_log"] += 1


def _dtype_name(dtype: Any) -> str:
    if dtype is None:
        return "float32"
    return str(dtype).replace("torch.", "")
