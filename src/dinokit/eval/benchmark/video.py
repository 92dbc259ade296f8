"""Video benchmark: DAVIS region similarity J and boundary accuracy F of the co-segmented foreground.

What is evaluated: the frames of each sequence (every ``frame_step``-th,
at most ``max_frames``) are co-segmented together as one set, with the
paper's co-segmentation and its defaults (``foreground="cosegmentation"``)
or with the part co-segmentation, whose parts together are the foreground
(``foreground="parts"``, the method behind ``dinokit parts --video``). No
mask is given to the method: this is the unsupervised protocol, so the one
predicted foreground is compared with the union of the annotated objects
(for DAVIS 2016, the single object). J and F follow the DAVIS evaluation
(:class:`~dinokit.eval.metrics.DavisAccumulator`; first and last frames
left out, void pixels ignored); per sequence, then mean, recall and decay
over sequences.

Baselines: ``centre-prior`` (a centred ellipse on every frame) and
``saliency`` (the model's saliency above each frame's mean).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from ...errors import DinokitError
from ..datasets import READERS, VideoSequence
from ..datasets.video import VOID_LABEL
from ..metrics import DavisAccumulator
from .cosegmentation import SetBenchmark, fit_quietly, warning_notes
from .report import BenchmarkResult, Column, plural
from .run_folder import RunFolder

FOREGROUNDS = ("cosegmentation", "parts")


class VideoBenchmark(SetBenchmark):
    """DAVIS J and F of each sequence's co-segmented frames (see the module docstring).

    Args (besides :class:`~dinokit.eval.benchmark.cosegmentation.SetBenchmark`'s):
        split, year, resolution, sequences: passed to :func:`~dinokit.eval.datasets.read_davis`.
        frame_step, max_frames: which frames of a sequence are co-segmented and scored.
        foreground: ``cosegmentation`` (GrabCut-refined masks) or ``parts`` (the part co-segmentation's parts).
        refine: GrabCut refinement for ``cosegmentation``; num_parts, crf: for ``parts``.
        bound_th, skip_first_last: the DAVIS F tolerance and frame selection.
    """

    kind = "video"
    BASELINES = ("centre-prior", "saliency")
    DATASETS = ("davis",)

    def __init__(self, root: Union[str, os.PathLike], output_dir: Union[str, os.PathLike], dataset: str = "davis", *,
                 split: Optional[str] = None, year: Optional[int] = None, resolution: str = "480p",
                 sequences: Optional[Sequence[str]] = None, frame_step: int = 1, max_frames: Optional[int] = None,
                 foreground: str = "cosegmentation", refine: bool = True, num_parts: int = 4, crf: bool = True,
                 bound_th: float = 0.008, skip_first_last: bool = True, **kwargs: Any) -> None:
        if kwargs.get("max_images") is not None:
            raise DinokitError("the video benchmark selects frames with max_frames and frame_step, not max_images")
        super().__init__(root, output_dir, dataset=dataset, **kwargs)
        if foreground not in FOREGROUNDS:
            raise DinokitError(f"foreground must be one of {', '.join(FOREGROUNDS)}, got {foreground!r}")
        if frame_step < 1:
            raise DinokitError(f"frame_step must be at least 1, got {frame_step}")
        if max_frames is not None and max_frames < 3:
            raise DinokitError(f"max_frames must be at least 3 (the first and last frames are not scored), "
                               f"got {max_frames}")
        self.split, self.year, self.resolution = split, year, resolution
        self.sequences = None if sequences is None else list(sequences)
        self.frame_step = int(frame_step)
        self.max_frames = max_frames
        self.foreground = foreground
        self.refine = bool(refine)
        self.num_parts = int(num_parts)
        self.crf = bool(crf)
        self.bound_th = float(bound_th)
        self.skip_first_last = bool(skip_first_last)

    def method_settings(self) -> dict[str, Any]:
        fg: dict[str, Any] = {"refine": self.refine} if self.foreground == "cosegmentation" else \
            {"num_parts": self.num_parts, "crf": self.crf}
        return {"protocol": "unsupervised: the frames of a sequence co-segmented as one set; the foreground is "
                            "compared with the union of the annotated objects",
                "foreground": self.foreground, **fg, **self.coseg, "frame_step": self.frame_step,
                "bound_th": self.bound_th, "skip_first_last": self.skip_first_last,
                "baselines": self.baseline_settings()}

    def dataset_options(self) -> dict[str, Any]:
        return {"split": self.split, "year": self.year, "resolution": self.resolution}

    def limits(self) -> dict[str, Any]:
        return {"sequences": self.sequences, "max_frames": self.max_frames}

    def load_dataset(self) -> list[VideoSequence]:
        return READERS[self.dataset](self.root, split=self.split, year=self.year, resolution=self.resolution,
                                     sequences=self.sequences)

    def frames(self, seq: VideoSequence) -> list[int]:
        idx = list(range(0, len(seq), self.frame_step))
        return idx[: self.max_frames] if self.max_frames is not None else idx

    def _foreground_model(self, feats: Any) -> tuple[Any, list[str]]:
        from ...tasks.cosegmentation import CoSegmentation
        from ...tasks.parts import PartCoSegmentation

        if self.foreground == "cosegmentation":
            return fit_quietly(CoSegmentation(self.extractor(), **self.coseg_kwargs()), feats)
        model = PartCoSegmentation(self.extractor(), **self.coseg_kwargs(), num_parts=self.num_parts, crf=self.crf)
        try:
            return fit_quietly(model, feats)
        except DinokitError as exc:  # e.g. no foreground cluster: the method predicts background everywhere
            return None, [str(exc)]

    def _mask(self, model: Any, index: int, size: tuple[int, int]) -> np.ndarray:
        from ...tasks.refine import upsample_mask

        if model is None:
            return np.zeros(size, bool)
        if self.foreground == "cosegmentation":
            return upsample_mask(model.mask(index, refine=self.refine), size)
        return upsample_mask(model.parts(index) >= 0, size)

    def evaluate(self, seqs: list[VideoSequence], folder: RunFolder) -> BenchmarkResult:
        from tqdm.auto import tqdm

        methods = ["model", *self.baselines]
        accs = {m: DavisAccumulator(self.bound_th, self.skip_first_last) for m in methods}
        warned: dict[str, list[str]] = {}
        for seq in tqdm(seqs, desc="sequences", unit="seq", disable=not self.progress):
            idx = self.frames(seq)
            if len(idx) < 2:
                raise DinokitError(f"sequence {seq.name}: {len(idx)} frame(s) selected; need at least 2")
            todo = [m for m in methods if folder.get(m, seq.name) is None]
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
                    scratch = DavisAccumulator(self.bound_th, self.skip_first_last)
                    scratch.add(seq.name, preds, gts, object_ids=[1])
                    per_frame = scratch.sequences[seq.name][1]
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

    def _result(self, seqs: list[VideoSequence], accs: dict[str, DavisAccumulator],
                warned: dict[str, list[str]]) -> BenchmarkResult:
        name = self.model_name()
        labels = {"model": (f"{name} ({'co-segmentation' if self.foreground == 'cosegmentation' else 'parts'})", "model"),
                  "centre-prior": ("centre prior (baseline)", "centre"),
                  "saliency": (f"{name} saliency only (baseline)", "saliency")}
        rows, group_rows, details = [], [], {}
        for m, acc in accs.items():
            res = acc.result()
            row: dict[str, Any] = {"method": m, "label": labels[m][0], "short": labels[m][1], "J&F": res.JF}
            for metric in ("J", "F"):
                row.update({f"{metric}_{s}": getattr(res, metric)[s] for s in ("mean", "recall", "decay")})
            row["sequences"] = len(res.per_sequence)
            rows.append(row)
            for seq_name, objs in res.per_sequence.items():
                o = objs[1]
                group_rows.append({"sequence": seq_name, "method": m, "J": o["J"]["mean"], "F": o["F"]["mean"],
                                   "J_recall": o["J"]["recall"], "F_recall": o["F"]["recall"],
                                   "J_decay": o["J"]["decay"], "F_decay": o["F"]["decay"]})
            details[m] = res.to_dict()
        n_frames = sum(len(self.frames(s)) for s in seqs)
        title = (f"DAVIS ({self.foreground} of each sequence's frames as one set, unsupervised): "
                 f"{plural(len(seqs), 'sequence')}, {plural(n_frames, 'frame')}"
                 f"{f' (every {self.frame_step})' if self.frame_step > 1 else ''}. "
                 f"J (region IoU) and F (boundary F-measure) in %; first and last frames not scored.")
        c = self.coseg
        notes = [f"model: {self.model_info()['source'] or name}; load size {c['load_size']}, stride {c['stride']}, "
                 f"layer {c['layer']} {c['facet']}, thresh {c['thresh']}, elbow {c['elbow']}, votes "
                 f"{c['votes_percentage']:g}%"] + warning_notes(warned)
        columns = [Column("J&F", "J&F"), Column("J_mean", "J"), Column("J_recall", "J recall"),
                   Column("J_decay", "J decay"), Column("F_mean", "F"), Column("F_recall", "F recall"),
                   Column("F_decay", "F decay"), Column("sequences", "sequences", "int")]
        return BenchmarkResult(
            benchmark=self.kind, dataset=self.dataset, title=title, columns=columns, rows=rows,
            group_name="sequence", group_columns=[Column("J", "J"), Column("F", "F")], group_rows=group_rows,
            details=details, notes=notes, info={"counts": {"sequences": len(seqs), "frames": n_frames}})


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
