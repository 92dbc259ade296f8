"""Video benchmark: DAVIS region similarity J and boundary accuracy F, under two protocols.

``protocol="propagation"`` (default): DINO's semi-supervised DAVIS protocol (Caron et al. 2021, Table 5):
the first frame's annotation is given and propagated to every later frame by feature similarity
(:mod:`.propagation`, the reference's defaults: 480-pixel frames, the first and 7 previous frames as
context, a 12-patch window, top 5, temperature 0.1). Every object of the first frame is scored on its
own, as the DAVIS 2017 semi-supervised evaluation does. Baselines: ``first-frame`` (the first mask
copied to every frame: no motion at all) and ``rgb-patches`` (the same propagation on raw pixel patches:
what the learned features add).

``protocol="unsupervised"``: the frames of each sequence (every ``frame_step``-th, at most
``max_frames``) are co-segmented together as one set with the paper's co-segmentation
(``foreground="cosegmentation"``) or part co-segmentation (``foreground="parts"``, the method behind
``dinokit parts --video``). No mask is given, so the one predicted foreground is compared with the
union of the annotated objects (for DAVIS 2016, the single object). Baselines: ``centre-prior`` (a
centred ellipse on every frame) and ``saliency`` (the model's saliency above each frame's mean).

J and F follow the official DAVIS evaluation (:class:`~dinokit.eval.metrics.DavisAccumulator`; first
and last frames left out, void pixels ignored); per object, then mean, recall and decay over objects.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ...errors import DinokitError
from ...settings import CoSegmentationSettings, PartSettings
from ..datasets import VideoSequence
from ..datasets.registry import PropagationSettings, benchmark
from ..datasets.video import VOID_LABEL
from ..metrics import DavisAccumulator
from .base import take_options
from .cosegmentation import SetBenchmark, coseg_note, fit_quietly, warning_notes
from .report import BenchmarkResult, Column, mean, plural
from .run_folder import RunFolder

FOREGROUNDS = ("cosegmentation", "parts")
PROTOCOLS = ("propagation", "unsupervised")
PROTOCOL_BASELINES = benchmark("video").default_baselines or {}


class VideoBenchmark(SetBenchmark):
    """DAVIS J and F by label propagation or unsupervised co-segmentation (see the module docstring).

    Args (besides :class:`~dinokit.eval.benchmark.cosegmentation.SetBenchmark`'s):
        protocol: ``propagation`` (semi-supervised, DINO's; default) or ``unsupervised``.
        split, year, resolution, sequences: passed to :func:`~dinokit.eval.datasets.read_davis`.
        frame_step, max_frames: which frames of a sequence are used and scored (all by default; with
            ``propagation`` a ``frame_step`` above 1 makes the motion between frames larger than the protocol's).
        propagation: :class:`~dinokit.eval.datasets.registry.PropagationSettings` (DINO's); keyword
            overrides short_side, multiple, n_last_frames, neighbourhood, topk, temperature change single fields.
        foreground: ``cosegmentation`` (GrabCut-refined masks) or ``parts`` (the part co-segmentation's parts),
            for ``unsupervised``; refine: GrabCut refinement for ``cosegmentation``.
        settings: :class:`~dinokit.settings.PartSettings`, the unsupervised protocol's method (its
            co-segmentation fields for ``cosegmentation``, all of them for ``parts``); keyword overrides
            such as ``num_parts=6`` change single fields.
        bound_th, skip_first_last: the DAVIS F tolerance and frame selection.
    """

    kind = "video"
    BASELINES = benchmark(kind).baselines
    PROTOCOL_SETTINGS = PartSettings()  # the tasks' own settings: no departure

    def __init__(self, root: Union[str, os.PathLike], output_dir: Union[str, os.PathLike], dataset: str = "davis",
                 settings: Optional[PartSettings] = None, *, protocol: str = "propagation", split: Optional[str] = None, year: Optional[int] = None,
                 resolution: str = "480p", sequences: Optional[Sequence[str]] = None, frame_step: int = 1,
                 max_frames: Optional[int] = None, propagation: Optional[PropagationSettings] = None,
                 foreground: str = "cosegmentation", refine: bool = True, bound_th: float = 0.008, skip_first_last: bool = True, **kwargs: Any) -> None:
        if kwargs.get("max_images") is not None:
            raise DinokitError("the video benchmark selects frames with max_frames and frame_step, not max_images")
        if protocol not in PROTOCOLS:
            raise DinokitError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        baselines = kwargs.pop("baselines", None)
        baselines = PROTOCOL_BASELINES[protocol] if baselines is None else tuple(baselines)
        wrong = [b for b in baselines if b in self.BASELINES and b not in PROTOCOL_BASELINES[protocol]]
        if wrong:
            raise DinokitError(f"baseline(s) {', '.join(wrong)} do not apply to the {protocol} protocol; "
                               f"choose from {', '.join(PROTOCOL_BASELINES[protocol])}")
        self.propagation_settings = take_options(PropagationSettings, propagation, kwargs)
        super().__init__(root, output_dir, dataset=dataset, settings=settings, baselines=baselines, **kwargs)
        if foreground not in FOREGROUNDS:
            raise DinokitError(f"foreground must be one of {', '.join(FOREGROUNDS)}, got {foreground!r}")
        if frame_step < 1:
            raise DinokitError(f"frame_step must be at least 1, got {frame_step}")
        if max_frames is not None and max_frames < 3:
            raise DinokitError(f"max_frames must be at least 3 (the first and last frames are not scored), "
                               f"got {max_frames}")
        self.protocol = protocol
        self.split, self.year, self.resolution = split, year, resolution
        self.sequences = None if sequences is None else list(sequences)
        self.frame_step = int(frame_step)
        self.max_frames = max_frames
        self.propagation = self.propagation_settings.to_record()
        self.foreground = foreground
        self.refine = bool(refine)
        self.bound_th = float(bound_th)
        self.skip_first_last = bool(skip_first_last)

    def method_settings(self) -> dict[str, Any]:
        common = {"frame_step": self.frame_step, "bound_th": self.bound_th, "skip_first_last": self.skip_first_last}
        if self.protocol == "propagation":
            return {"protocol": "propagation",
                    "description": "semi-supervised: the first frame's labels propagated by patch-feature "
                                   "similarity (DINO's DAVIS protocol); every object scored on its own",
                    "features": "last block, final norm, patch tokens", **self.propagation, **common}
        fg: dict[str, Any] = {"refine": self.refine} if self.foreground == "cosegmentation" else {}
        return {"protocol": "unsupervised",
                "description": "the frames of a sequence co-segmented as one set; the foreground is compared "
                               "with the union of the annotated objects",
                "foreground": self.foreground, **fg, **self.settings_record(self.foreground_settings()), **common,
                "baselines": self.baseline_settings()}

    def foreground_settings(self) -> Any:
        """The unsupervised method's settings: the co-segmentation's fields of ``settings``, or all of them (parts)."""
        if self.foreground == "parts":
            return self.settings
        shared = {k: v for k, v in vars(self.settings).items() if k in CoSegmentationSettings.__dataclass_fields__}
        return CoSegmentationSettings(**shared)

    def reader_values(self) -> dict[str, Any]:
        return {"split": self.split, "year": self.year, "resolution": self.resolution, "sequences": self.sequences}

    def limits(self) -> dict[str, Any]:
        return {"sequences": self.sequences, "max_frames": self.max_frames}

    def load_dataset(self) -> list[VideoSequence]:
        return self.read_dataset()

    def frames(self, seq: VideoSequence) -> list[int]:
        idx = list(range(0, len(seq), self.frame_step))
        return idx[: self.max_frames] if self.max_frames is not None else idx

    def _foreground_model(self, feats: Any) -> tuple[Any, list[str]]:
        from ...tasks.cosegmentation import CoSegmentation
        from ...tasks.parts import PartCoSegmentation

        if self.foreground == "cosegmentation":
            return fit_quietly(CoSegmentation(self.extractor(), self.foreground_settings(), **self.estimator_kwargs()),
                               feats)
        model = PartCoSegmentation(self.extractor(), self.settings, **self.estimator_kwargs())
        try:
            return fit_quietly(model, feats)
        except DinokitError as exc:  # e.g. no foreground cluster: the method predicts background everywhere
            return None, [str(exc)]

    def _mask(self, model: Any, index: int, size: tuple[int, int]) -> np.ndarray:
        from ...blocks.refine import upsample_mask

        if model is None:
            return np.zeros(size, bool)
        if self.foreground == "cosegmentation":
            return upsample_mask(model.mask(index, refine=self.refine), size)
        return upsample_mask(model.parts(index) >= 0, size)

    def evaluate(self, seqs: list[VideoSequence], folder: RunFolder) -> BenchmarkResult:
        if self.protocol == "propagation":
            return self._evaluate_propagation(seqs, folder)
        return self._evaluate_unsupervised(seqs, folder)

    def _pending(self, seqs: list[VideoSequence], folder: RunFolder, methods: list[str]):
        """Each sequence (with a progress bar), its selected frames, and the methods its log does not score yet."""
        from tqdm.auto import tqdm

        for seq in tqdm(seqs, desc="sequences", unit="seq", disable=not self.progress):
            idx = self.frames(seq)
            if len(idx) < 2:
                raise DinokitError(f"sequence {seq.name}: {len(idx)} frame(s) selected; need at least 2")
            yield seq, idx, [m for m in methods if folder.get(m, seq.name) is None]

    def _score_sequence(self, name: str, preds: list[np.ndarray], gts: list, objects: list[int]) -> dict:
        """Per-object, per-frame J and F of one sequence's predictions."""
        scratch = DavisAccumulator(self.bound_th, self.skip_first_last)
        scratch.add(name, preds, gts, object_ids=objects)
        return scratch.sequences[name]

    def _evaluate_unsupervised(self, seqs: list[VideoSequence], folder: RunFolder) -> BenchmarkResult:
        methods = ["model", *self.baselines]
        accs = {m: DavisAccumulator(self.bound_th, self.skip_first_last) for m in methods}
        warned: dict[str, list[str]] = {}
        for seq, idx, todo in self._pending(seqs, folder, methods):
            if todo:
                gts = [_binary_gt(seq.load_mask(i)) for i in idx]
                feats = self.set_features(seq.name, [seq.frames[i] for i in idx], folder)
                model, fit_warnings = self._foreground_model(feats) if "model" in todo else (None, [])
                for m in todo:
                    preds = []
                    for k, g in enumerate(gts):
                        size = g.shape if g is not None else _frame_size(seq, idx[k])
                        fg = self._mask(model, k, size) if m == "model" else self.baseline_mask(m, feats, k, size)
                        preds.append(fg.astype(np.uint8))
                    per_frame = self._score_sequence(seq.name, preds, gts, [1])[1]
                    extra = {"warnings": fit_warnings} if m == "model" else {}
                    folder.log(m, seq.name, {"sequence": seq.name, "frames": [seq.frames[i].stem for i in idx],
                                             "J": per_frame["J"], "F": per_frame["F"], **extra})
                    self._scored(True)
                if model is not None:
                    model.close()
                feats.store.close()
                self.drop_set_cache(seq.name, folder)
            for m in methods:
                rec = folder.get(m, seq.name)
                if m not in todo:
                    self._scored(False)
                if rec.get("warnings"):
                    warned[seq.name] = rec["warnings"]
                accs[m].sequences[seq.name] = {1: {"J": [_num(v) for v in rec["J"]], "F": [_num(v) for v in rec["F"]]}}
        return self._result(seqs, accs, warned)

    # --- semi-supervised: label propagation ---------------------------------------------------------
    def _evaluate_propagation(self, seqs: list[VideoSequence], folder: RunFolder) -> BenchmarkResult:
        methods = ["model", *self.baselines]
        accs = {m: DavisAccumulator(self.bound_th, self.skip_first_last) for m in methods}
        for seq, idx, todo in self._pending(seqs, folder, methods):
            if todo:
                first = seq.load_mask(idx[0])
                if first is None:
                    raise DinokitError(f"sequence {seq.name}: the first frame {seq.frames[idx[0]].name} has no mask")
                objects = [int(v) for v in np.unique(first) if v not in (0, VOID_LABEL)]
                gts = [seq.load_mask(i) for i in idx]
                for m in todo:
                    preds = self._propagated(m, seq, idx, first, folder)
                    per_obj = self._score_sequence(seq.name, preds, gts, objects)
                    folder.log(m, seq.name, {"sequence": seq.name, "frames": [seq.frames[i].stem for i in idx],
                                             "objects": {str(k): v for k, v in per_obj.items()}})
                    self._scored(True)
                self.drop_set_cache(seq.name, folder)
            for m in methods:
                rec = folder.get(m, seq.name)
                if m not in todo:
                    self._scored(False)
                accs[m].sequences[seq.name] = {
                    int(k): {"J": [_num(v) for v in o["J"]], "F": [_num(v) for v in o["F"]]}
                    for k, o in rec["objects"].items()}
        return self._result(seqs, accs, {})

    def _propagated(self, method: str, seq: VideoSequence, idx: list[int], first: np.ndarray,
                    folder: RunFolder) -> list[np.ndarray]:
        """Predicted label maps (original size) of the selected frames for ``method``."""
        from tqdm.auto import tqdm

        from .propagation import (
            model_frame_features,
            propagate_sequence,
            propagation_size,
            resize_frame,
            rgb_frame_features,
        )

        if method == "first-frame":
            return [first.copy() for _ in idx]
        net = self.backbone()
        patch = int(net.patch_size)
        size = propagation_size(first.shape[0], first.shape[1], self.propagation["short_side"],
                                self.propagation["multiple"])

        class Frames:
            def __len__(self) -> int:
                return len(idx)

            def __getitem__(self, k: int) -> np.ndarray:
                return resize_frame(seq.load_frame(idx[k]), size)

        if method == "model":
            device, dtype = self.resolved_device(), _torch_dtype(self.dtype)
            net.to(device=device, dtype=dtype) if dtype is not None else net.to(device)
            describe = self._cached(model_frame_features(net, device, dtype), seq, idx, folder)
        elif method == "rgb-patches":
            describe = rgb_frame_features(patch)
        else:
            raise DinokitError(f"unknown method {method!r} for the propagation protocol")
        p = self.propagation
        labels = propagate_sequence(Frames(), first, describe, patch, n_last_frames=p["n_last_frames"],
                                    neighbourhood=p["neighbourhood"], topk=p["topk"], temperature=p["temperature"])
        bar = tqdm(labels, total=len(idx), desc=f"{seq.name} ({method})", unit="frame", leave=False,
                   disable=not self.progress)
        return list(bar)

    def _cached(self, describe: Any, seq: VideoSequence, idx: list[int], folder: RunFolder) -> Any:
        """``describe`` with each frame's features kept in ``OUT/cache/sets/<seq>/`` (so an interrupted
        sequence does not pass its frames through the model again)."""
        from safetensors.torch import load_file

        from ...io import save_tensors
        from .propagation import FrameFeatures

        directory = folder.set_cache_dir(seq.name)
        calls = {"n": 0}

        def cached(rgb: np.ndarray) -> Any:
            k = calls["n"]
            calls["n"] += 1
            f = directory / f"{seq.frames[idx[k]].stem}-{rgb.shape[0]}x{rgb.shape[1]}.safetensors"
            if f.is_file():
                try:
                    t = load_file(str(f))
                    self.counts_["images_from_cache"] += 1
                    return FrameFeatures(t["features"], tuple(int(v) for v in t["grid"].tolist()))
                except Exception:  # an unreadable entry is computed again
                    pass
            out = describe(rgb)
            self.counts_["images_computed"] += 1
            save_tensors(f, {"features": out.features, "grid": torch.tensor(out.grid)})
            return out

        return cached

    # --- tables ---------------------------------------------------------------------------------------
    def _result(self, seqs: list[VideoSequence], accs: dict[str, DavisAccumulator],
                warned: dict[str, list[str]]) -> BenchmarkResult:
        name = self.model_name()
        if self.protocol == "propagation":
            labels = {"model": (f"{name} (label propagation)", "model"),
                      "first-frame": ("first-frame mask (baseline)", "first"),
                      "rgb-patches": ("RGB-patch propagation (baseline)", "rgb")}
        else:
            labels = {"model": (f"{name} ({'co-segmentation' if self.foreground == 'cosegmentation' else 'parts'})",
                                "model"),
                      "centre-prior": ("centre prior (baseline)", "centre"),
                      "saliency": (f"{name} saliency only (baseline)", "saliency")}
        rows, group_rows, details = [], [], {}
        for m, acc in accs.items():
            res = acc.result()
            row: dict[str, Any] = {"method": m, "label": labels[m][0], "short": labels[m][1], "J&F": res.JF}
            for metric in ("J", "F"):
                row.update({f"{metric}_{s}": getattr(res, metric)[s] for s in ("mean", "recall", "decay")})
            row["sequences"] = len(res.per_sequence)
            row["objects"] = sum(len(o) for o in res.per_sequence.values())
            rows.append(row)
            for seq_name, objs in res.per_sequence.items():
                g: dict[str, Any] = {"sequence": seq_name, "method": m, "objects": len(objs)}
                for metric in ("J", "F"):
                    for stat, key in (("mean", metric), ("recall", f"{metric}_recall"), ("decay", f"{metric}_decay")):
                        g[key] = mean([o[metric][stat] for o in objs.values()])
                group_rows.append(g)
            details[m] = res.to_dict()
        n_frames = sum(len(self.frames(s)) for s in seqs)
        n_objects = rows[0]["objects"] if rows else 0
        step = f" (every {self.frame_step})" if self.frame_step > 1 else ""
        if self.protocol == "propagation":
            p = self.propagation
            title = (f"DAVIS (semi-supervised label propagation from the first frame): "
                     f"{plural(len(seqs), 'sequence')}, {plural(n_objects, 'object')}, {plural(n_frames, 'frame')}"
                     f"{step}. J (region IoU) and F (boundary F-measure) in %, per object; first and last frames "
                     f"not scored.")
            notes = [f"model: {self.model_info()['source'] or name}; frames at short side {p['short_side']} "
                     f"(long side a multiple of {p['multiple']}), last-block features, context first + "
                     f"{p['n_last_frames']} previous frames, window {p['neighbourhood']}, top {p['topk']}, "
                     f"temperature {p['temperature']:g}"]
        else:
            title = (f"DAVIS ({self.foreground} of each sequence's frames as one set, unsupervised): "
                     f"{plural(len(seqs), 'sequence')}, {plural(n_frames, 'frame')}{step}. "
                     f"J (region IoU) and F (boundary F-measure) in %; first and last frames not scored.")
            c = self.settings_record(self.foreground_settings())
            notes = [f"model: {self.model_info()['source'] or name}; {coseg_note(c)}"]
        notes += warning_notes(warned)
        columns = [Column("J&F", "J&F"), Column("J_mean", "J"), Column("J_recall", "J recall"),
                   Column("J_decay", "J decay"), Column("F_mean", "F"), Column("F_recall", "F recall"),
                   Column("F_decay", "F decay"), Column("sequences", "sequences", "int"),
                   Column("objects", "objects", "int")]
        return BenchmarkResult(
            benchmark=self.kind, dataset=self.dataset, title=title, columns=columns, rows=rows,
            group_name="sequence", group_columns=[Column("J", "J"), Column("F", "F")], group_rows=group_rows,
            details=details, notes=notes,
            info={"counts": {"sequences": len(seqs), "frames": n_frames, "objects": n_objects}})


def _torch_dtype(dtype: Any) -> Optional[torch.dtype]:
    from ...features import parse_dtype

    return None if dtype is None else parse_dtype(dtype)


def _binary_gt(mask: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """Label map -> 1 on any object, 0 background, void kept (the unsupervised protocol's single foreground)."""
    if mask is None:
        return None
    out = ((mask > 0) & (mask != VOID_LABEL)).astype(np.uint8)
    out[mask == VOID_LABEL] = VOID_LABEL
    return out


def _frame_size(seq: VideoSequence, index: int) -> tuple[int, int]:
    from ..datasets import image_size

    w, h = image_size(seq.frames[index])
    return h, w


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)
