"""``benchmarks/gpu.py``: its inputs can be prepared and carried, and a check runs on the CPU."""

from __future__ import annotations

import importlib.util

from .conftest import ROOT, SHARED


def _load():
    spec = importlib.util.spec_from_file_location("dinokit_gpu_check", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_copies_the_inputs_and_one_check_runs(tmp_path, capsys):
    gpu = _load()
    data = gpu.prepare(tmp_path / "data", SHARED)
    assert (data / gpu.WEIGHTS).is_file()
    for sub, n in [("pair", 2), ("images", 6), ("coseg", 3), ("parts", 3), ("video/frames", 4), ("train", 16)]:
        assert len(list((data / sub).iterdir())) == n, sub
    assert len(list((data / "knn" / "train").glob("*/*.jpg"))) == 12
    assert gpu.main(["--device", "cpu", "--data", str(data), "--work", str(tmp_path / "work"),
                     "--only", "extract float32", "similarity"]) == 0
    out = capsys.readouterr().out
    assert "| extract float32" in out and "| similarity" in out and "2 of 2 checks ok" in out
