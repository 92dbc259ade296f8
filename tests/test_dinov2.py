"""DINOv2 backbones: official checkpoint layouts, positional-embedding rules, stride trick, registers."""

from __future__ import annotations

import math
import re
import urllib.error

import pytest
import torch
import torch.nn.functional as F

from dinokit.errors import DinokitError, WeightsError
from dinokit.features import Extractor
from dinokit.models import (
    DINOV2_NAMES,
    ArchConfig,
    VisionTransformer,
    get_spec,
    infer_arch,
    load_model,
    model_names,
)
from dinokit.models.layers import interpolate_pos_embed
from dinokit.models.weights import build_and_load, shape_report

# Official sizes (facebookresearch/dinov2 vit_small/base/large/giant2 at patch 14, img 518).
OFFICIAL = {
    "dinov2_vits14": (384, 12, "mlp"),
    "dinov2_vitb14": (768, 12, "mlp"),
    "dinov2_vitl14": (1024, 24, "mlp"),
    "dinov2_vitg14": (1536, 40, "swiglu"),
}
# Hidden width of the official ViT-g's fused SwiGLU (w12 is 2x this): int(6144 * 2 / 3) rounded up to 8.
GIANT_SWIGLU_HIDDEN = 4096


@pytest.fixture(autouse=True)
def _seeded():
    """Every test draws the same random inputs, whatever ran before it."""
    torch.manual_seed(0)


def official_shapes(dim: int, depth: int, ffn: str, registers: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official DINOv2 ``*_pretrain.pth`` (hub models: block_chunks=0)."""
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1 + 37 * 37, dim),
        "mask_token": (1, dim),
        "patch_embed.proj.weight": (dim, 3, 14, 14),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    if registers:
        shapes["register_tokens"] = (1, registers, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            shapes[b + norm + ".weight"] = (dim,)
            shapes[b + norm + ".bias"] = (dim,)
        shapes[b + "attn.qkv.weight"] = (3 * dim, dim)
        shapes[b + "attn.qkv.bias"] = (3 * dim,)
        shapes[b + "attn.proj.weight"] = (dim, dim)
        shapes[b + "attn.proj.bias"] = (dim,)
        shapes[b + "ls1.gamma"] = (dim,)
        shapes[b + "ls2.gamma"] = (dim,)
        if ffn == "mlp":
            shapes[b + "mlp.fc1.weight"] = (4 * dim, dim)
            shapes[b + "mlp.fc1.bias"] = (4 * dim,)
            shapes[b + "mlp.fc2.weight"] = (dim, 4 * dim)
            shapes[b + "mlp.fc2.bias"] = (dim,)
        else:
            h = GIANT_SWIGLU_HIDDEN
            shapes[b + "mlp.w12.weight"] = (2 * h, dim)
            shapes[b + "mlp.w12.bias"] = (2 * h,)
            shapes[b + "mlp.w3.weight"] = (dim, h)
            shapes[b + "mlp.w3.bias"] = (dim,)
    return shapes


def test_all_eight_dinov2_models_are_registered_with_official_urls():
    assert sorted(DINOV2_NAMES) == sorted(n for n in model_names() if n.startswith("dinov2_"))
    assert len(DINOV2_NAMES) == 8
    for base in OFFICIAL:
        plain, reg = get_spec(base), get_spec(base + "_reg")
        assert plain.url == f"https://dl.fbaipublicfiles.com/dinov2/{base}/{base}_pretrain.pth"
        assert reg.url == f"https://dl.fbaipublicfiles.com/dinov2/{base}/{base}_reg4_pretrain.pth"
        assert plain.filename != reg.filename  # distinct cache files
        assert plain.arch.num_register_tokens == 0 and reg.arch.num_register_tokens == 4


@pytest.mark.parametrize("name", sorted(DINOV2_NAMES))
def test_official_layout_loads_strictly(name):
    """Every named architecture accepts exactly the official keys and shapes (meta tensors: no memory)."""
    dim, depth, ffn = OFFICIAL[name.replace("_reg", "")]
    shapes = official_shapes(dim, depth, ffn, 4 if name.endswith("_reg") else 0)
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    spec = get_spec(name)
    with torch.device("meta"):
        model = VisionTransformer(spec.arch)
    assert shape_report(model, state) == []
    model.load_state_dict(state, strict=True, assign=True)
    # The architecture read back from the shapes alone is the registered one.
    assert infer_arch(state) == spec.arch
    # The loader load_model uses (build on meta, strict, assign) takes the file as is ...
    loaded = build_and_load(spec.arch, state, name)
    assert set(loaded.state_dict()) == set(shapes)
    assert all(tuple(v.shape) == shapes[k] for k, v in loaded.state_dict().items())
    # ... and refuses a file with a missing, an extra or a mis-shaped entry, naming it.
    for broken, words in (
        ({k: v for k, v in state.items() if k != "blocks.0.ls1.gamma"}, "missing key(s): blocks.0.ls1.gamma"),
        (dict(state, **{"head.weight": torch.empty(3, dim, device="meta")}), "unexpected key(s): head.weight"),
        (dict(state, mask_token=torch.empty(1, 1, dim, device="meta")), "mis-shaped key(s): mask_token"),
    ):
        with pytest.raises(WeightsError, match=re.escape(words)):
            build_and_load(spec.arch, broken, name)
    # A plain file does not fit a register model, nor the reverse.
    other = get_spec(name[:-4] if name.endswith("_reg") else name + "_reg").arch
    with pytest.raises(WeightsError, match="register_tokens"):
        build_and_load(other, state, name)


def test_dinov2_vits14_reg_file_loads_by_name_from_the_cache(tmp_path, monkeypatch):
    """Random weights in the official layout, placed where the download would put them."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    spec = get_spec("dinov2_vits14_reg")
    shapes = official_shapes(384, 12, "mlp", 4)
    sizes = [math.prod(s) for s in shapes.values()]
    flat = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(0)) * 0.02
    state = {k: t.reshape(s).clone() for (k, s), t in zip(shapes.items(), flat.split(sizes))}
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / spec.filename)

    def no_network(*a, **k):  # pragma: no cover - must not be called
        raise AssertionError("the cached file must be used")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    model = load_model("dinov2_vits14_reg")
    assert model.spec is spec and model.cfg == spec.arch
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # Features exclude the 4 registers: 16 x 16 patches at 224 pixels.
    feats = Extractor(model, device="cpu").extract(torch.randn(1, 3, 224, 224), layers=-1, facets="token")
    assert feats.get().shape == (1, 256, 384)


def test_offline_message_names_url_cache_and_weights_option(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(url, dst, progress=True):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as err:
        load_model("dinov2_vitb14_reg")
    msg = str(err.value)
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth" in msg
    assert str(tmp_path / "checkpoints" / "dinov2_vitb14_reg4_pretrain.pth") in msg
    assert "--weights" in msg and "\n" not in msg


def _official_rule(pos: torch.Tensor, rows: int, cols: int, offset: float, antialias: bool) -> torch.Tensor:
    """DINOv2's ``interpolate_pos_encoding`` written out (official code: float32, bicubic)."""
    n = pos.shape[1] - 1
    m = int(math.sqrt(n))
    patch = pos[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    if offset:
        kw = dict(scale_factor=(float(rows + offset) / m, float(cols + offset) / m))
    else:
        kw = dict(size=(rows, cols))
    patch = F.interpolate(patch, mode="bicubic", antialias=antialias, **kw)
    return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], dim=1)


@pytest.mark.parametrize("registers", [False, True])
@pytest.mark.parametrize("hw", [(70, 98), (140, 56), (42, 42)])
def test_positional_embedding_follows_the_official_rule(registers, hw):
    spec = get_spec("dinov2_vits14_reg" if registers else "dinov2_vits14")
    cfg = spec.arch
    pos = torch.randn(1, 1 + 37 * 37, 8)
    rows, cols = hw[0] // 14, hw[1] // 14
    ours = interpolate_pos_embed(pos, rows, cols, hw, cfg.pos_embed_mode, cfg.interpolate_offset, cfg.interpolate_antialias)
    offset, antialias = (0.0, True) if registers else (0.1, False)
    torch.testing.assert_close(ours, _official_rule(pos, rows, cols, offset, antialias), rtol=0, atol=1e-6)
    # The two official rules really differ, so the test above tells them apart.
    other = _official_rule(pos, rows, cols, 0.1 if registers else 0.0, not antialias)
    assert (ours - other).abs().max() > 1e-3


def test_positional_embedding_in_float32_for_half_models():
    pos = torch.randn(1, 1 + 16, 8)
    half = interpolate_pos_embed(pos.half(), 5, 3, (70, 42), "dinov2", 0.1)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), interpolate_pos_embed(pos.half().float(), 5, 3, (70, 42), "dinov2", 0.1).half().float())


def tiny_dinov2(registers: int = 4, ffn: str = "mlp", depth: int = 3, seed: int = 0) -> VisionTransformer:
    """A DINOv2-layout model small enough for tests, with random layer scales and registers."""
    from dinokit.models import create_model

    cfg = get_spec("dinov2_vits14_reg" if registers else "dinov2_vits14").arch.replace(
        embed_dim=32, depth=depth, num_heads=4, img_size=56, num_register_tokens=registers, ffn=ffn
    )
    model = create_model(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or name == "register_tokens":
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5 if name.endswith("gamma") else torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize("stride", [14, 7, 2, 1])
def test_stride_trick_for_patch_14(stride):
    model = tiny_dinov2()
    ex = Extractor(model, stride=stride, device="cpu")
    x = torch.randn(1, 3, 42, 56)
    feats = ex.extract(x, layers=[0, -1], facets=["key", "token"], saliency=True)
    rows, cols = 1 + (42 - 14) // stride, 1 + (56 - 14) // stride
    assert feats.grid == (rows, cols)
    assert feats.get(0, "key").shape == (1, rows * cols, 32)
    assert feats.saliency.shape == (1, rows * cols)
    # Overlapping patches: the stride-s embedding at every (14/s)-th position is the plain one.
    plain, _ = model.patch_embed(x)
    dense, grid = model.patch_embed(x, stride)
    k = 14 // stride
    dense = dense.reshape(1, *grid, -1)[:, ::k, ::k].reshape(1, -1, 32)
    torch.testing.assert_close(dense, plain)


def test_stride_must_divide_14():
    with pytest.raises(DinokitError, match="divide"):
        Extractor(tiny_dinov2(), stride=4, device="cpu")


def test_registers_are_not_patches():
    """Descriptors and saliency skip the registers; CLS attention is read over patch columns only."""
    model = tiny_dinov2(registers=4)
    x = torch.randn(2, 3, 56, 70, generator=torch.Generator().manual_seed(0))
    ex = Extractor(model, device="cpu")
    feats = ex.extract(x, layers=-1, facets="token", include_cls=True, saliency=True)
    res = model.run(x, {2: ("token", "attn")})
    assert res.num_prefix_tokens == 5 and res.grid == (4, 5)
    tokens = res.taps[2]["token"]
    assert tokens.shape[1] == 1 + 4 + 20
    torch.testing.assert_close(feats.get()[:, 0], tokens[:, 0])  # row 0 is CLS, not a register
    torch.testing.assert_close(feats.get()[:, 1:], tokens[:, 5:])  # then the 20 patches
    # Saliency: each head's CLS row as a softmax over CLS + patches only (the registers taken out), then
    # the CLS column dropped, heads averaged, min-max normalised.
    row = res.taps[2]["attn"][:, :, 0]
    per_head = row[:, :, 5:] / (row[:, :, :1] + row[:, :, 5:].sum(-1, keepdim=True))
    cls_to_patches = per_head.mean(1)
    lo, hi = cls_to_patches.min(1, keepdim=True).values, cls_to_patches.max(1, keepdim=True).values
    torch.testing.assert_close(feats.saliency, (cls_to_patches - lo) / (hi - lo))
    # ... which differs from merely dropping the register columns: the registers hold real mass.
    from dinokit.features.saliency import saliency_from_cls_attention

    assert (row[:, :, 1:5].sum(-1) > 0.05).all()
    raw = saliency_from_cls_attention(row, 5, normalize=False)
    torch.testing.assert_close(raw, cls_to_patches)
    assert ((raw / row[:, :, 5:].mean(1)) > 1.05).all()
    # The registers do influence the patches (they take part in attention) ...
    with torch.no_grad():
        model.register_tokens.mul_(-3)
    assert not torch.allclose(Extractor(model, device="cpu").extract(x, layers=-1, facets="token").get(), feats.get()[:, 1:])


def test_cls_patch_attention_is_a_softmax_without_the_register_keys():
    """Computed independently from the block's query and key: logits, registers masked out, softmax, CLS dropped."""
    from dinokit.features.saliency import cls_patch_attention

    model = tiny_dinov2(registers=4)
    x = torch.randn(2, 3, 42, 56)
    taps = model.run(x, {1: ("query", "key", "cls_attn")}).taps[1]
    logits = (taps["query"][:, :, :1] @ taps["key"].transpose(-2, -1))[:, :, 0] * (32 // 4) ** -0.5
    logits[:, :, 1:5] = float("-inf")
    expected = logits.softmax(-1)[:, :, 5:]
    torch.testing.assert_close(cls_patch_attention(taps["cls_attn"], 5), expected)
    # Without registers: the reference's attn[:, :, 0, 1:] of the softmax over all tokens, bit for bit.
    plain = tiny_dinov2(registers=0)
    res = plain.run(x, {1: ("attn", "cls_attn")})
    assert torch.equal(cls_patch_attention(res.taps[1]["cls_attn"], 1), res.taps[1]["cls_attn"][:, :, 1:])
    torch.testing.assert_close(res.taps[1]["cls_attn"][:, :, 1:], res.taps[1]["attn"][:, :, 0, 1:])


def test_bad_saliency_heads_are_a_clear_error():
    ex = Extractor(tiny_dinov2(), device="cpu")
    x = torch.randn(1, 3, 28, 28)
    with pytest.raises(DinokitError, match=r"saliency heads \[4\] out of range for a 4-head model"):
        ex.saliency(x, heads=[0, 4])
    with pytest.raises(DinokitError, match="empty"):
        ex.saliency(x, heads=[])


def test_swiglu_block_matches_its_definition():
    model = tiny_dinov2(ffn="swiglu", depth=1)
    mlp = model.blocks[0].mlp
    hidden = (int(32 * 4 * 2 / 3) + 7) // 8 * 8
    assert mlp.w12.weight.shape == (2 * hidden, 32) and mlp.w3.weight.shape == (32, hidden)
    x = torch.randn(3, 32)
    a, b = (x @ mlp.w12.weight.T + mlp.w12.bias).split(hidden, dim=-1)
    torch.testing.assert_close(mlp(x), (F.silu(a) * b) @ mlp.w3.weight.T + mlp.w3.bias)


def test_saliency_defaults_documented_per_named_model():
    """dino_vits8 keeps the reference heads; every other named model averages all heads."""
    for name in model_names():
        heads = get_spec(name).saliency_heads
        assert heads == ((0, 2, 4, 5) if name == "dino_vits8" else None), name
    model = tiny_dinov2()
    model.spec = get_spec("dinov2_vits14_reg")
    ex = Extractor(model, device="cpu")
    x = torch.randn(1, 3, 56, 56)
    feats = ex.extract(x, [], [], saliency=True)
    assert feats.settings["saliency_heads"] is None
    torch.testing.assert_close(feats.saliency, ex.saliency(x, heads=[0, 1, 2, 3]))
    assert not torch.allclose(feats.saliency, ex.saliency(x, heads=[1]))


def test_arch_metadata_round_trip_keeps_the_interpolation_rule(tmp_path):
    from dinokit.models import save_backbone

    model = tiny_dinov2()
    path = save_backbone(model, tmp_path / "tiny.safetensors")
    again = load_model(weights=path)
    assert again.cfg == model.cfg
    assert again.cfg.interpolate_offset == 0.0 and again.cfg.interpolate_antialias
    x = torch.randn(1, 3, 70, 42)
    torch.testing.assert_close(again.run(x, {-1: ("token",)}).taps[2]["token"], model.run(x, {-1: ("token",)}).taps[2]["token"])


def test_bad_interpolation_offset_is_refused():
    with pytest.raises(WeightsError, match="interpolate_offset"):
        ArchConfig(interpolate_offset=-1)
