"""Shared fixtures: where the golden files and benchmark data live, and small models."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DINOKIT_SHARED", ROOT.parent / "shared"))
GOLDEN = SHARED / "golden"
DATA = SHARED / "data"
TINY_WEIGHTS = GOLDEN / "tiny_vit_p8_d48_h6_l12.safetensors"
TRAINED_WEIGHTS = GOLDEN / "dino_vit_tiny16_shared_data_pretrain.pth"


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch threads, then restore the previous count.

    Tiny models and tensors gain nothing from threads, and on a busy machine
    idle-spinning workers stall small ops, so most tests run single-threaded.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """One torch thread for a whole test module (``pytestmark = pytest.mark.usefixtures(...)``)."""
    with torch_threads(1):
        yield


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for one test."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared data not found at {SHARED} (set DINOKIT_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    return shared_dir / "golden"


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    return shared_dir / "data"


@pytest.fixture(scope="session")
def tiny_weights(golden_dir: Path) -> Path:
    return golden_dir / "tiny_vit_p8_d48_h6_l12.safetensors"


@pytest.fixture(scope="session")
def trained_weights(golden_dir: Path) -> Path:
    return golden_dir / "dino_vit_tiny16_shared_data_pretrain.pth"


@pytest.fixture(scope="session")
def tiny_model(tiny_weights: Path):
    from dinokit.models import load_model

    return load_model(weights=tiny_weights)
