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
def images():
    """The two preprocessed images, decoded once (the photos are 12 and 7 megapixels)."""
    return {name: preprocess(GOLDEN / path, LOAD_SIZE) for name, path in CASES["images"].items()}


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
def test_descriptor_case(ref, extractors, images, case):
    ex = extractors[case["stride"]]
    feats = ex.extract(images[case["image"]], case["layer"], case["facet"],
                       bin=case["bin"], include_cls=case["include_cls"])
    assert feats.grid == tuple(case["num_patches"])
    assert feats.geometry[0].resized_size == tuple(case["load_size"])
    assert_close(feats.get()[0], ref[case["name"]], relative=case["bin"] or case["facet"] == "token")


@pytest.mark.parametrize("case", SAL_CASES, ids=lambda c: c["name"])
def test_saliency_case(ref, extractors, images, case):
    sal = extractors[case["stride"]].saliency(images[case["image"]], case["layer"], case["heads"])
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


def test_training_checkpoint_teacher_reproduces_golden(ref, golden_dir, images):
    """DINO's training-layout checkpoint (teacher backbone = golden model) gives the same outputs."""
    model = load_model(weights=golden_dir / "dino_training_checkpoint.pth", num_heads=6)
    ex = Extractor(model, stride=4, load_size=LOAD_SIZE, device="cpu")
    assert_close(ex.descriptors(images["cat"], 11, "key")[0], ref["cat.s4.key.l11.bin0.cls0"])


def test_best_buddies_inputs(ref, extractors, images):
    """The descriptors behind bb.* reproduce its similarity, nearest neighbours and mask."""
    a = extractors[8].descriptors(images["cat"], 9, "key", bin=True)[0]
    b = extractors[8].descriptors(images["ibex"], 9, "key", bin=True)[0]
    sim = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    torch.testing.assert_close(sim, ref["bb.similarity"], atol=1e-4, rtol=1e-4)
    nn1, nn2 = sim.argmax(dim=1), sim.argmax(dim=0)
    assert torch.equal(nn1, ref["bb.nn_1"]) and torch.equal(nn2, ref["bb.nn_2"])
    mask = nn2[nn1] == torch.arange(len(nn1))
    assert torch.equal(mask, ref["bb.mask"].bool())


# One `dinokit extract` run per (stride, bin, include_cls) group computes all of its layers and facets
# (and the saliency) for both images in one pass each.
CLI_GROUPS = sorted({(c["stride"], c["bin"], c["include_cls"]) for c in DESC_CASES})


@pytest.mark.parametrize("stride,binned,cls", CLI_GROUPS, ids=lambda v: str(int(v)))
def test_cli_extract_reproduces_every_case(ref, tmp_path, tiny_weights, stride, binned, cls):
    cases = [c for c in DESC_CASES if (c["stride"], c["bin"], c["include_cls"]) == (stride, binned, cls)]
    sal_cases = [c for c in SAL_CASES if c["stride"] == stride]
    (sal_layer,), (sal_heads,) = {c["layer"] for c in sal_cases}, {tuple(c["heads"]) for c in sal_cases}
    args = ["extract", str(GOLDEN / "images"), "-o", str(tmp_path), "--weights", str(tiny_weights),
            "--load-size", str(LOAD_SIZE), "--stride", str(stride), "--device", "cpu", "-q",
            "--saliency", "--saliency-layer", str(sal_layer), "--saliency-heads", ",".join(map(str, sal_heads))]
    for layer in sorted({c["layer"] for c in cases}):
        args += ["--layer", str(layer)]
    for facet in sorted({c["facet"] for c in cases}):
        args += ["--facet", facet]
    args += ["--bin"] * binned + ["--include-cls"] * cls
    assert main(args) == 0
    files = {}
    for name in ("cat", "ibex"):
        files[name] = read_descriptor_file(tmp_path / f"{name}.safetensors")
        tensors, meta = files[name]
        rows, cols = map(int, meta["grid"].split(","))
        assert rows * cols == tensors["saliency"].shape[0] and meta["stride"] == str(stride)
    for c in cases:
        tensors, meta = files[c["image"]]
        assert meta["grid"] == ",".join(map(str, c["num_patches"]))
        assert meta["resized_size"] == ",".join(map(str, c["load_size"]))
        assert_close(tensors[f"descriptors.l{c['layer']}.{c['facet']}"], ref[c["name"]],
                     relative=c["bin"] or c["facet"] == "token")
    for c in sal_cases:
        assert_close(files[c["image"]][0]["saliency"], ref[c["name"]])
