"""Hugging Face transformers models: conversion to the official layout and numerical parity.

The reference is ``transformers``' own ``Dinov2Model`` / ``Dinov2WithRegistersModel``
/ ``ViTModel`` built from a small random configuration (eager attention, so it
returns attention weights).
"""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from dinokit.cli import main  # noqa: E402
from dinokit.errors import WeightsError  # noqa: E402
from dinokit.features import Extractor  # noqa: E402
from dinokit.models import convert_hf_state_dict, load_hf_model, load_model, read_weights  # noqa: E402

DIM, HEADS, DEPTH = 48, 4, 3


@pytest.fixture(autouse=True)
def _seeded():
    """Every test draws the same random inputs, whatever ran before it."""
    torch.manual_seed(0)


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial values everywhere (layer scales, norms, biases, mask and register tokens)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.2
            ones = name.endswith(("norm1.weight", "norm2.weight", "layernorm.weight", "layernorm_before.weight",
                                  "layernorm_after.weight", "lambda1"))
            p.copy_(noise + (1.0 if ones else 0.0))


def make_dinov2(registers: int = 0, swiglu: bool = False, seed: int = 0):
    common = dict(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS, image_size=56, patch_size=14,
                  use_swiglu_ffn=swiglu, attn_implementation="eager")
    if registers:
        cfg = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **common)
        model = transformers.Dinov2WithRegistersModel(cfg)
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**common))
    _randomise(model.eval(), seed)
    return model


def make_vit(seed: int = 0):
    cfg = transformers.ViTConfig(hidden_size=DIM, num_hidden_layers=2, num_attention_heads=6, intermediate_size=100,
                                 image_size=32, patch_size=8, attn_implementation="eager")
    model = transformers.ViTModel(cfg, add_pooling_layer=True).eval()
    _randomise(model, seed)
    return model


def assert_parity(hf, ours, x: torch.Tensor, **hf_kwargs) -> None:
    """Every block's output, every attention map, the normalised output and its CLS agree to float precision."""
    with torch.no_grad():
        ref = hf(pixel_values=x, output_hidden_states=True, output_attentions=True, **hf_kwargs)
        depth = len(ours.blocks)
        res = ours.run(x, {i: ("token", "attn") for i in range(depth)}, final_norm=True)
        cls = ours(x)
    assert len(ref.hidden_states) == depth + 1 and len(ref.attentions) == depth
    for i in range(depth):
        h = ref.hidden_states[i + 1]
        torch.testing.assert_close(res.taps[i]["token"], h, rtol=1e-5, atol=1e-5 * h.abs().max().item())
        torch.testing.assert_close(res.taps[i]["attn"], ref.attentions[i], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.output, ref.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls, ref.last_hidden_state[:, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("registers,swiglu", [(0, False), (0, True), (4, False)], ids=["plain", "swiglu", "registers"])
def test_dinov2_parity_with_transformers_at_native_grid(tmp_path, registers, swiglu):
    hf = make_dinov2(registers, swiglu)
    hf.save_pretrained(tmp_path)
    ours = load_model(weights=tmp_path)
    assert ours.cfg.num_register_tokens == registers and ours.cfg.ffn == ("swiglu" if swiglu else "mlp")
    assert ours.num_prefix_tokens == 1 + registers
    assert_parity(hf, ours, torch.randn(2, 3, 56, 56))


@pytest.mark.parametrize("hw", [(70, 98), (42, 28)], ids=["upsampled", "downsampled"])
@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_parity_with_interpolated_positions(tmp_path, registers, hw):
    """Other sizes: ``interpolation='transformers'`` reproduces transformers exactly; the default is the official rule.

    The positional table is 4 x 4 (image 56); 70 x 98 resizes it up to 5 x 7, 42 x 28 down to 3 x 2, where
    the antialiasing of the register model (official and transformers alike) changes the result.
    """
    hf = make_dinov2(registers)
    hf.save_pretrained(tmp_path)
    x = torch.randn(1, 3, *hw)
    assert_parity(hf, load_hf_model(tmp_path, interpolation="transformers"), x)
    official = load_hf_model(tmp_path)
    if registers:  # transformers' register model resizes as the official one (exact size, antialiased)
        assert_parity(hf, official, x)
        if hw == (42, 28):  # downsampling: without the antialiasing the outputs would differ
            official.cfg = official.cfg.replace(interpolate_antialias=False)
            with torch.no_grad():
                diff = (official.run(x, {}, final_norm=True).output - hf(pixel_values=x).last_hidden_state).abs().max()
            assert diff > 1e-3
    else:  # the official +0.1 scale-factor rule differs from transformers' exact-size resize
        with torch.no_grad():
            diff = (official.run(x, {}, final_norm=True).output - hf(pixel_values=x).last_hidden_state).abs().max()
        assert diff > 1e-3
        assert official.cfg.interpolate_offset == pytest.approx(0.1)


def test_vit_parity_with_transformers(tmp_path):
    hf = make_vit()
    hf.save_pretrained(tmp_path)
    ours = load_model(weights=tmp_path)
    assert ours.cfg.layernorm_eps == 1e-12 and ours.cfg.mean == (0.5, 0.5, 0.5)
    assert_parity(hf, ours, torch.randn(2, 3, 32, 32))
    assert_parity(hf, load_hf_model(tmp_path, interpolation="transformers"), torch.randn(1, 3, 40, 56),
                  interpolate_pos_encoding=True)


def test_in_memory_models_use_transformers_v5_names():
    """``state_dict()`` of a live model has q_proj / gate_proj names; files have query / weights_in."""
    hf = make_dinov2(swiglu=True)
    if int(transformers.__version__.split(".")[0]) >= 5:
        assert any(".q_proj." in k for k in hf.state_dict())
    ours = load_hf_model(hf)
    assert_parity(hf, ours, torch.randn(1, 3, 56, 56))
    vit = make_vit()
    assert_parity(vit, load_hf_model(vit), torch.randn(1, 3, 32, 32))


def test_facets_are_the_attention_projections_of_the_same_pass(tmp_path):
    """Key / query / value descriptors equal transformers' projection outputs, head-interleaved as the reference."""
    hf = make_dinov2(registers=4)
    hf.save_pretrained(tmp_path)
    ex = Extractor(load_model(weights=tmp_path), device="cpu")
    x = torch.randn(1, 3, 56, 56)
    seen: dict[str, torch.Tensor] = {}
    attn = hf.encoder.layer[1].attention
    projections = {n: getattr(attn, f"{n}_proj", None) or getattr(attn.attention, full)  # v5 names, else v4
                   for n, full in (("q", "query"), ("k", "key"), ("v", "value"))}
    hooks = [projections[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o)) for n in ("q", "k", "v")]
    with torch.no_grad():
        hf(pixel_values=x)
    for h in hooks:
        h.remove()
    feats = ex.extract(x, layers=1, facets=["query", "key", "value"])
    for facet, n in (("query", "q"), ("key", "k"), ("value", "v")):
        proj = seen[n][:, 5:]  # drop CLS and the 4 registers
        expected = proj.reshape(1, 16, HEADS, DIM // HEADS).permute(0, 1, 3, 2).flatten(2)  # index = c * heads + h
        torch.testing.assert_close(feats.get(1, facet), expected, rtol=1e-5, atol=1e-5)


def test_loading_routes(tmp_path):
    hf = make_dinov2(registers=4)
    hf.save_pretrained(tmp_path / "hf")
    x = torch.randn(1, 3, 56, 56)
    ref = load_hf_model(tmp_path / "hf")(x)
    for net in (load_model(str(tmp_path / "hf")),  # folder as the model argument
                load_model(weights=tmp_path / "hf" / "model.safetensors"),  # the weights file inside the folder
                load_model("dinov2_vits14_reg", weights=tmp_path / "hf")):  # a name keeps its spec
        torch.testing.assert_close(net(x), ref)
    assert load_model("dinov2_vits14_reg", weights=tmp_path / "hf").spec.name == "dinov2_vits14_reg"
    # Sharded safetensors.
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    torch.testing.assert_close(load_model(weights=tmp_path / "sharded")(x), ref)
    # A transformers state dict without its config: converted, heads from --num-heads.
    from safetensors.torch import save_file

    save_file(dict(hf.state_dict()), str(tmp_path / "bare.safetensors"))
    torch.testing.assert_close(load_model(weights=tmp_path / "bare.safetensors", num_heads=HEADS)(x), ref)
    assert "blocks.0.attn.qkv.weight" in read_weights(tmp_path / "bare.safetensors").state_dict


def test_classification_wrapper_prefix_is_stripped():
    cfg = transformers.Dinov2Config(hidden_size=DIM, num_hidden_layers=2, num_attention_heads=HEADS, image_size=28,
                                    patch_size=14, num_labels=3)
    clf = transformers.Dinov2ForImageClassification(cfg).eval()
    state = convert_hf_state_dict(clf.state_dict())
    assert "cls_token" in state and not any(k.startswith(("classifier", "dinov2.")) for k in state)
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        ref = clf.dinov2(pixel_values=x).last_hidden_state[:, 0]
    torch.testing.assert_close(load_hf_model(clf)(x), ref, rtol=1e-5, atol=1e-5)


def test_clear_errors(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="not a Hugging Face model folder"):
        load_model(weights=tmp_path / "empty")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (bert / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match="model_type 'bert' is not supported"):
        load_hf_model(bert)

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", offline)
    with pytest.raises(WeightsError) as err:
        load_model("hf:facebook/dinov2-small")
    assert "facebook/dinov2-small" in str(err.value) and "--weights FOLDER" in str(err.value)


def test_cli_extract_with_a_hugging_face_folder(tmp_path):
    from PIL import Image
    from safetensors.torch import load_file

    hf = make_dinov2(registers=4)
    hf.save_pretrained(tmp_path / "hf")
    Image.new("RGB", (80, 60), (200, 30, 40)).save(tmp_path / "red.png")
    code = main(["extract", str(tmp_path / "red.png"), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "hf"),
                 "--load-size", "56", "--stride", "7", "--layer", "1", "--saliency", "-q", "--device", "cpu"])
    assert code == 0
    files = list((tmp_path / "out").glob("*.safetensors"))
    assert len(files) == 1
    tensors = load_file(str(files[0]))
    rows, cols = 1 + (56 - 14) // 7, 1 + (74 - 14) // 7  # 80x60 -> 74x56 pixels at load size 56
    assert tensors["descriptors.l1.key"].shape == (rows * cols, DIM)  # patches only: no CLS, no registers
    assert tensors["saliency"].shape == (rows * cols,)
    ex = Extractor(load_model(weights=tmp_path / "hf"), stride=7, load_size=56, device="cpu")
    ref = ex.extract(tmp_path / "red.png", layers=1, facets="key", saliency=True)
    torch.testing.assert_close(tensors["descriptors.l1.key"], ref.get()[0])
    torch.testing.assert_close(tensors["saliency"], ref.saliency[0])


def test_pytorch_model_bin_folder(tmp_path):
    """Older folders hold pytorch_model.bin; it is read with weights_only (plain tensors)."""
    hf = make_dinov2(registers=4)
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save({k: v.clone() for k, v in load_file_dict(hf).items()}, tmp_path / "hf" / "pytorch_model.bin")
    assert_parity(hf, load_model(weights=tmp_path / "hf"), torch.randn(1, 3, 56, 56))
    torch.save({"weights": object()}, tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="pytorch_model.bin"):
        load_model(weights=tmp_path / "hf")


def load_file_dict(model) -> dict:
    """The model's tensors under the names transformers writes to disk."""
    import tempfile

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return load_file(f"{d}/model.safetensors")
