"""Benchmark runners: the papers' protocols on the standard datasets, resumable, with baseline rows.

One runner per task: :class:`CorrespondenceBenchmark` (PCK on PF-WILLOW,
SPair-71k, PF-PASCAL, CUB), :class:`CosegBenchmark` (Jaccard and precision
on iCoseg, MSRC, Internet, PASCAL-CO), :class:`VideoBenchmark` (DAVIS J and
F of the co-segmented foreground) and :class:`PartsBenchmark` (NMI and ARI of
part co-segmentation on PASCAL-Part and CUB). Each writes its settings, a
per-item log, a descriptor cache and the final tables into an output folder
(:mod:`.run_folder`); ``dinokit benchmark`` is the command line for them.
"""

from .base import Benchmark, spread
from .correspondence import CorrespondenceBenchmark
from .cosegmentation import COSEG_DEFAULTS, CosegBenchmark, SetBenchmark
from .report import BenchmarkResult, Column, format_table
from .parts import PartsBenchmark
from .run_folder import RunFolder
from .video import VideoBenchmark

__all__ = ["Benchmark", "BenchmarkResult", "COSEG_DEFAULTS", "Column", "CorrespondenceBenchmark", "CosegBenchmark", "PartsBenchmark",
           "SetBenchmark", "RunFolder", "format_table", "spread",
           "VideoBenchmark"]
