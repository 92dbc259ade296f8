"""Benchmark runners: the papers' protocols on the standard datasets, resumable, with baseline rows.

One runner per task: :class:`CorrespondenceBenchmark` (PCK on PF-WILLOW,
SPair-71k, PF-PASCAL, CUB), :class:`CosegBenchmark` (Jaccard and precision
on iCoseg, MSRC, Internet, PASCAL-CO), :class:`VideoBenchmark` (DAVIS J and
F of the co-segmented foreground) and :class:`PartsBenchmark` (NMI and ARI of
part co-segmentation on PASCAL-Part and CUB). Each writes its settings, a
per-item log, a descriptor cache and the final tables into an output folder
(:mod:`.run_folder`); ``dinokit benchmark`` is the command line for them.

Metric conventions (what the published numbers use; every run records its own in ``results.json``):

* PCK@alpha: a keypoint is correct when its error is ``<= alpha * L``. PF-WILLOW (Ham et al.):
  ``L`` = max(h, w) of the target keypoints' bounding box, PCK@0.1 the headline number; SPair-71k:
  ``L`` from the annotated target box (``trg_bndbox``); PF-PASCAL: ``L`` = max(h, w) of the target
  image by default (``pck_by="bbox"`` gives the box convention some papers use); Amir et al. 2021
  report alpha = 0.05, 0.1, 0.15. Tables show the mean over pairs of each pair's PCK; the JSON also
  has the per-keypoint rate and the per-category breakdown.
* Co-segmentation (Rubinstein et al. 2013): precision = pixel accuracy, Jaccard = IoU of the
  foreground, averaged per set then over sets; Jaccard leaves out images without the object.
* DAVIS (official davis2017-evaluation): J = IoU, F = boundary F-measure with a disk tolerance of
  ``ceil(0.008 * diagonal)`` pixels; first and last frames not scored; mean/recall/decay per object.
  ``video`` defaults to DINO's semi-supervised label propagation (Caron et al. 2021, Table 5).
* Parts: NMI (arithmetic normalisation) and ARI over foreground samples only (annotated part
  pixels for PASCAL-Part, visible keypoints for CUB), pooled per category.
"""

from .base import Benchmark, spread
from .correspondence import CorrespondenceBenchmark
from .cosegmentation import CosegBenchmark, SetBenchmark
from .parts import PartsBenchmark
from .report import BenchmarkResult, Column, format_table
from .run_folder import RunFolder, safe_name
from .video import VideoBenchmark

__all__ = ["Benchmark", "BenchmarkResult", "Column", "CorrespondenceBenchmark", "CosegBenchmark", "PartsBenchmark",
           "SetBenchmark", "RunFolder", "format_table", "safe_name", "spread",
           "VideoBenchmark"]
