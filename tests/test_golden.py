"""Parity with the reference implementations (../shared/golden): preprocessing,
every extractor case, saliency, the plain DINO forward and attention, best buddies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dinokit.cli import main
from dinokit.features import Extractor, preprocess
from dinokit.features.export import read_descriptor_file
from dinokit.models import load_model

from .conftest import GOLDEN

CASES = json.loads((GOLDEN / "cases.json").read_text())
LOAD_SIZE = CASES["load_size"]
DESC_CASES = [c for c in CASES["cases"] if "kind" not in c]
SAL_CASES = [c for c in CASES["cases"] if c.get("kind") == "saliency"]


@pytest.fixture(scope="module")
def ref():
    return load_file(str(GOLDEN / "reference_outputs.safetensors"))


@pytest.fixture(scope="module")
def extractors(tiny_model):
    return {s: Extractor(tiny_model, stride=s, load_size=LOAD_SIZE, device="cpu") for s in (4, 8)}


def assert_close(out: torch.Tensor, expected: torch.Tensor, relative: bool = False) -> None:
    assert tuple(out.shape) == tuple(expected.shape)
    if relative:  # binned and token facets have larger magnitudes
        scale = expected.abs().max().item()
        torch.testing.assert_close(out / scale, expected / scale, atol=1e-4, rtol=1e-4)
    else:
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["cat", "ibex"])
def test_preprocessing(ref, name):
    img = preprocess(GOLDEN / CASES["images"][name], LOAD_SIZE)
    np.testing.assert_array_equal(img.rgb, ref[f"{name}.resized_rgb"].numpy())
    torch.testing.assert_close(img.tensor, ref[f"{name}.input"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("case", DESC_CASES, ids=lambda c: c["name"])
def test_descriptor_case(ref, extractors, case):
    ex = extractors[case["stride"]]
    feats = ex.extract(GOLDEN / CASES["images"][case["image"]], case["layer"], case["facet"],
                       bin=case["bin"], include_cls=case["include_cls"])
    assert feats.grid == tuple(case["num_patches"])
    assert feats.geometry[0].resized_size == tuple(case["load_size"])
    assert_close(feats.get()[0], ref[case["name"]], relative=case["bin"] or case["facet"] == "token")


@pytest.mark.parametrize("case", SAL_CASES, ids=lambda c: c["name"])
def test_saliency_case(ref, extractors, case):
    sal = extractors[case["stride"]].saliency(GOLDEN / CASES["images"][case["image"]], case["layer"], case["heads"])
    assert_close(sal[0], ref[case["name"]])


def test_one_pass_gives_all_cases(ref, extractors):
    """Several layers, facets and the saliency from ONE forward pass equal the single-case outputs."""
    cases = [c for c in DESC_CASES if c["image"] == "cat" and c["stride"] == 4 and not c["bin"] and not c["include_cls"]]
    feats = extractors[4].extract(GOLDEN / "images/cat.jpg", sorted({c["layer"] for c in cases}),
                                  sorted({c["facet"] for c in cases}), saliency=True, saliency_heads=[0, 2, 4, 5])
    for c in cases:
        assert_close(feats.descriptors[(c["layer"], c["facet"])][0], ref[c["name"]], relative=c["facet"] == "token")
    assert_close(feats.saliency[0], ref["cat.s4.saliency"])


@pytest.mark.parametrize("name", ["cat", "ibex"])
def test_plain_forward_and_last_attention(ref, tiny_model, name):
    x = ref[f"{name}.crop96.input"][None]
    with torch.no_grad():
        assert_close(tiny_model(x)[0], ref[f"{name}.crop96.cls_out"])
        assert_close(tiny_model.get_last_selfattention(x)[0], ref[f"{name}.crop96.last_attn"])


def test_training_checkpoint_teacher_reproduces_golden(ref, golden_dir):
    """DINO's training-layout checkpoint (teacher backbone = golden model) gives the same outputs."""
    model = load_model(weights=golden_dir / "dino_training_checkpoint.pth", num_heads=6)
    ex = Extractor(model, stride=4, load_size=LOAD_SIZE, device="cpu")
    assert_close(ex.descriptors(GOLDEN / "images/cat.jpg", 11, "key")[0], ref["cat.s4.key.l11.bin0.cls0"])


def test_best_buddies_inputs(ref, extractors):
    """The descriptors behind bb.* reproduce its similarity, nearest neighbours and mask."""
    a = extractors[8].descriptors(GOLDEN / "images/cat.jpg", 9, "key", bin=True)[0]
    b = extractors[8].descriptors(GOLDEN / "images/ibex.jpg", 9, "key", bin=True)[0]
    sim = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    torch.testing.assert_close(sim, ref["bb.similarity"], atol=1e-4, rtol=1e-4)
    nn1, nn2 = sim.argmax(dim=1), sim.argmax(dim=0)
    assert torch.equal(nn1, ref["bb.nn_1"]) and torch.equal(nn2, ref["bb.nn_2"])
    mask = nn2[nn1] == torch.arange(len(nn1))
    assert torch.equal(mask, ref["bb.mask"].bool())


def test_cli_extract_reproduces_golden(ref, tmp_path, tiny_weights):
    out = tmp_path / "out"
    code = main(["extract", str(GOLDEN / "images"), "-o", str(out), "--weights", str(tiny_weights),
                 "--load-size", str(LOAD_SIZE), "--stride", "4", "--layer", "11", "--layer", "5",
                 "--facet", "key", "--facet", "query", "--saliency", "--saliency-heads", "0,2,4,5",
                 "--device", "cpu", "-q"])
    assert code == 0
    for name in ("cat", "ibex"):
        tensors, meta = read_descriptor_file(out / f"{name}.safetensors")
        assert_close(tensors["descriptors.l11.key"], ref[f"{name}.s4.key.l11.bin0.cls0"])
        assert_close(tensors["descriptors.l5.query"], ref[f"{name}.s4.query.l5.bin0.cls0"])
        assert_close(tensors["saliency"], ref[f"{name}.s4.saliency"])
        rows, cols = map(int, meta["grid"].split(","))
        assert rows * cols == tensors["saliency"].shape[0]
    binned = tmp_path / "binned"
    assert main(["extract", str(GOLDEN / "images/cat.jpg"), "-o", str(binned), "--weights", str(tiny_weights),
                 "--load-size", str(LOAD_SIZE), "--stride", "8", "--layer", "9", "--bin", "-q"]) == 0
    tensors, _ = read_descriptor_file(binned / "cat.safetensors")
    assert_close(tensors["descriptors.l9.key"], ref["cat.s8.key.l9.bin1.cls0"], relative=True)
