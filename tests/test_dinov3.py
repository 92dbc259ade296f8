"""DINOv3 backbones: parity with the release's arithmetic and with transformers, overlapping patches, loading, tasks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dinokit.cli import main
from dinokit.errors import WeightsError
from dinokit.models import create_model, get_spec, load_hf_model, load_model, save_backbone
from dinokit.models.dinov3 import DINOV3_DOWNLOADS, DINOV3_NAMES, dinov3_arch, dinov3_filename

DEPTH, DIM, HEADS = 3, 64, 4


def tiny_cfg(ffn: str = "mlp"):
    """The dinov3_vits16 layout (patch 16, 4 storage tokens, RoPE, masked key bias), only smaller."""
    hidden = 176 if ffn == "swiglu_split" else 4 * DIM
    return dinov3_arch("dinov3_vits16").replace(embed_dim=DIM, depth=DEPTH, num_heads=HEADS, ffn=ffn, ffn_hidden=hidden)


def tiny_state(ffn: str = "mlp", seed: int = 0) -> dict:
    """Random weights in the official layout, with visible layer scale and key bias, and bf16-rounded periods."""
    model = create_model(tiny_cfg(ffn), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, t in state.items():
        if name.endswith(("gamma", ".bias", "tokens", "cls_token")) and not name.endswith("bias_mask"):
            t.copy_(torch.randn(t.shape, generator=gen) * (0.5 if "gamma" in name else 0.1))
        elif name.endswith("attn.qkv.weight"):
            t.mul_(12.0)  # peaked attention, so that positions (RoPE) matter as in a trained model
    assert state["rope_embed.periods"].bfloat16().float().equal(state["rope_embed.periods"])
    return state


# --- the release's arithmetic, written out from the architecture -------------------
def release_forward(state: dict, x: torch.Tensor, heads: int = HEADS) -> list[torch.Tensor]:
    """Block outputs of DINOv3 as the release computes them (fused masked-bias qkv, RoPE from the periods buffer)."""
    w = state["patch_embed.proj.weight"]
    p = w.shape[-1]
    patches = F.conv2d(x, w, state["patch_embed.proj.bias"], stride=p)
    B, D, H, W = patches.shape
    tokens = torch.cat([state["cls_token"].expand(B, -1, -1) + 0 * state["mask_token"],
                        state["storage_tokens"].expand(B, -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
    ch = (torch.arange(0.5, H, dtype=torch.float32) / H)
    cw = (torch.arange(0.5, W, dtype=torch.float32) / W)
    coords = 2.0 * torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).flatten(0, 1) - 1.0
    angles = (2 * math.pi * coords[:, :, None] / state["rope_embed.periods"][None, None, :]).flatten(1, 2).tile(2)
    sin, cos = torch.sin(angles), torch.cos(angles)

    def rot(t):
        prefix, patch = t[:, :, : t.shape[2] - H * W], t[:, :, t.shape[2] - H * W:]
        half = patch.shape[-1] // 2
        patch = patch * cos + torch.cat([-patch[..., half:], patch[..., :half]], dim=-1) * sin
        return torch.cat([prefix, patch], dim=2)

    outs = []
    for i in range(1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))):
        g = lambda n: state[f"blocks.{i}.{n}"]  # noqa: E731
        h = F.layer_norm(tokens, (D,), g("norm1.weight"), g("norm1.bias"), 1e-5)
        qkv = F.linear(h, g("attn.qkv.weight"), g("attn.qkv.bias") * g("attn.qkv.bias_mask"))
        q, k, v = qkv.reshape(B, -1, 3, heads, D // heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(rot(q), rot(k), v).transpose(1, 2).reshape(B, -1, D)
        tokens = tokens + F.linear(a, g("attn.proj.weight"), g("attn.proj.bias")) * g("ls1.gamma")
        h = F.layer_norm(tokens, (D,), g("norm2.weight"), g("norm2.bias"), 1e-5)
        if f"blocks.{i}.mlp.w1.weight" in state:
            h = F.silu(F.linear(h, g("mlp.w1.weight"), g("mlp.w1.bias"))) * F.linear(h, g("mlp.w2.weight"), g("mlp.w2.bias"))
            h = F.linear(h, g("mlp.w3.weight"), g("mlp.w3.bias"))
        else:
            h = F.linear(F.gelu(F.linear(h, g("mlp.fc1.weight"), g("mlp.fc1.bias"))), g("mlp.fc2.weight"), g("mlp.fc2.bias"))
        tokens = tokens + h * g("ls2.gamma")
        outs.append(tokens)
    return outs


def to_transformers(state: dict, ffn: str = "mlp"):
    """The same weights in a transformers DINOv3ViTModel (split q/k/v, no key bias)."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    gated = ffn == "swiglu_split"
    cfg = DINOv3ViTConfig(hidden_size=DIM, num_attention_heads=HEADS, num_hidden_layers=DEPTH, num_register_tokens=4,
                          intermediate_size=state["blocks.0.mlp.w1.weight" if gated else "blocks.0.mlp.fc1.weight"].shape[0],
                          use_gated_mlp=gated, hidden_act="silu" if gated else "gelu")
    hf = DINOv3ViTModel(cfg).eval()
    new = {"embeddings.cls_token": state["cls_token"], "embeddings.mask_token": state["mask_token"][None],
           "embeddings.register_tokens": state["storage_tokens"], "norm.weight": state["norm.weight"],
           "norm.bias": state["norm.bias"], "embeddings.patch_embeddings.weight": state["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.bias": state["patch_embed.proj.bias"]}
    names = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.o_proj", "ls1": "layer_scale1",
             "ls2": "layer_scale2", "mlp.fc1": "mlp.up_proj", "mlp.fc2": "mlp.down_proj", "mlp.w1": "mlp.gate_proj",
             "mlp.w2": "mlp.up_proj", "mlp.w3": "mlp.down_proj"}
    for i in range(DEPTH):
        for ours, theirs in names.items():
            for param in ("weight", "bias", "gamma"):
                key = f"blocks.{i}.{ours}.{param}"
                if key in state:
                    new[f"model.layer.{i}.{theirs}.{'lambda1' if param == 'gamma' else param}"] = state[key]
        for j, part in enumerate("qkv"):
            new[f"model.layer.{i}.attention.{part}_proj.weight"] = state[f"blocks.{i}.attn.qkv.weight"].chunk(3)[j]
            if part != "k":
                new[f"model.layer.{i}.attention.{part}_proj.bias"] = state[f"blocks.{i}.attn.qkv.bias"].chunk(3)[j]
    hf.load_state_dict(new, strict=True)
    return hf


SIZES = [(224, 224), (100, 75), (53, 130)]  # square; not multiples of 16 and not square


@pytest.mark.parametrize("ffn", ["mlp", "swiglu_split"])
@pytest.mark.parametrize("size", SIZES)
def test_tokens_match_the_release_arithmetic(ffn, size):
    state = tiny_state(ffn)
    net = load_model(weights=None, arch=tiny_cfg(ffn), pretrained=False)
    net.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, *size)
    ref = release_forward(state, x)
    with torch.no_grad():
        res = net.run(x, {i: ("token",) for i in range(DEPTH)})
        res16 = net.run(x, {DEPTH - 1: ("token",)}, stride=16)  # stride 16 is the plain model
    for i in range(DEPTH):
        torch.testing.assert_close(res.taps[i]["token"], ref[i], atol=2e-6, rtol=1e-5)
    assert torch.equal(res16.taps[DEPTH - 1]["token"], res.taps[DEPTH - 1]["token"])
    assert res.grid == (size[0] // 16, size[1] // 16) and res.num_prefix_tokens == 5


def _hf_qkv(hf, x):
    """Pre-rotation queries, keys, values of every transformers layer, by forward hooks."""
    got: dict = {}
    hooks = [getattr(layer.attention, f"{p}_proj").register_forward_hook(
        lambda m, i, o, key=(n, p): got.__setitem__(key, o)) for n, layer in enumerate(hf.model.layer) for p in "qkv"]
    with torch.no_grad():
        out = hf(x, output_hidden_states=True)
    for h in hooks:
        h.remove()
    return out, got


@pytest.mark.parametrize("ffn", ["mlp", "swiglu_split"])
@pytest.mark.parametrize("size", SIZES)
def test_parity_with_transformers(ffn, size):
    """With transformers' own periods dinokit reproduces DINOv3ViTModel; with the release's it differs slightly."""
    state = tiny_state(ffn)
    hf = to_transformers(state, ffn)
    net = load_hf_model(hf, interpolation="transformers")
    x = torch.randn(2, 3, *size)
    out, qkv = _hf_qkv(hf, x)
    facets = ("query", "key", "value", "token")
    with torch.no_grad():
        res = net.run(x, {i: facets for i in range(DEPTH)}, final_norm=True)
    B, N = x.shape[0], res.taps[0]["token"].shape[1]
    for i in range(DEPTH):
        torch.testing.assert_close(res.taps[i]["token"], out.hidden_states[i + 1], atol=1e-5, rtol=1e-5)
        for p, facet in zip("qkv", facets):
            theirs = qkv[(i, p)].reshape(B, N, HEADS, DIM // HEADS).transpose(1, 2)
            torch.testing.assert_close(res.taps[i][facet], theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.output, out.last_hidden_state, atol=1e-5, rtol=1e-5)
    # transformers recomputes the periods instead of using the release's bf16-rounded buffer
    release = release_forward(state, x)
    deviation = (out.hidden_states[DEPTH] - release[-1]).abs().max().item()
    assert 1e-6 < deviation < 1e-2


def test_transformers_folder_loads_with_release_periods(tmp_path):
    state = tiny_state("swiglu_split")
    to_transformers(state, "swiglu_split").save_pretrained(tmp_path / "hf")
    net = load_model(weights=tmp_path / "hf")
    assert net.cfg.pos == "rope" and net.cfg.ffn == "swiglu_split" and net.num_prefix_tokens == 5
    assert torch.equal(net.state_dict()["rope_embed.periods"], state["rope_embed.periods"])
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        tokens = net.run(x, {DEPTH - 1: ("token",)}).taps[DEPTH - 1]["token"]
    torch.testing.assert_close(tokens, release_forward(state, x)[-1], atol=2e-6, rtol=1e-5)
    with pytest.raises(WeightsError, match="--num-heads 2 contradicts .* 4 heads"):
        load_model(weights=tmp_path / "hf", num_heads=2)


def test_official_pth_layout_loads_strictly(tmp_path):
    state = tiny_state()
    path = tmp_path / "dinov3_tiny.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, path)
    net = load_model(weights=path)
    assert (net.cfg.num_heads, net.cfg.num_register_tokens, net.cfg.pos) == (HEADS, 4, "rope")  # heads from periods
    assert net.cfg.mask_k_bias and net.cfg.layernorm_eps == 1e-5
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(WeightsError, match=r"--num-heads 8 contradicts .* 4 heads"):
        load_model(weights=path, num_heads=8)
    del state["blocks.1.attn.qkv.bias_mask"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match="missing key.*bias_mask"):
        load_model("dinov3_vits16", weights=path)


def test_named_architectures():
    """Dims, depths, heads and FFN sizes of the release; parameter counts as published."""
    expected = {  # name: (dim, depth, heads, ffn, hidden, params in millions)
        "dinov3_vits16": (384, 12, 6, "mlp", 1536, 21.6), "dinov3_vits16plus": (384, 12, 6, "swiglu_split", 1536, 28.7),
        "dinov3_vitb16": (768, 12, 12, "mlp", 3072, 85.7), "dinov3_vitl16": (1024, 24, 16, "mlp", 4096, 303.1),
        "dinov3_vith16plus": (1280, 32, 20, "swiglu_split", 5120, 840.6),
        "dinov3_vit7b16": (4096, 40, 32, "swiglu_split", 8192, 6716.0),
    }
    for name, (dim, depth, heads, ffn, hidden, millions) in expected.items():
        a = get_spec(name).arch
        assert (a.embed_dim, a.depth, a.num_heads, a.ffn, a.ffn_hidden, a.patch_size) == (dim, depth, heads, ffn, hidden, 16)
        assert a.num_prefix_tokens == 5 and a.head_dim == (128 if dim == 4096 else 64) and a.layernorm_eps == 1e-5
        with torch.device("meta"):
            count = sum(p.numel() for p in create_model(a).parameters()) / 1e6
        assert abs(count - millions) / millions < 0.01, (name, count)
    assert not get_spec("dinov3_vit7b16").arch.qkv_bias and get_spec("dinov3_vit7b16").arch.local_cls_norm
    assert dinov3_filename("dinov3_vits16") == "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"
    assert set(DINOV3_NAMES) >= set(expected)


def test_missing_named_weights_say_where_to_request_them(tmp_path, monkeypatch, capsys, golden_dir):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as err:
        load_model("dinov3_vitb16")
    msg = str(err.value)
    assert "\n" not in msg and DINOV3_DOWNLOADS in msg and "dinov3_vitb16_pretrain_lvd1689m-73cec8be.pth" in msg
    assert str(tmp_path / "hub") in msg and "--weights FILE" in msg
    image = str(golden_dir / "images" / "cat.jpg")
    assert main(["extract", image, "-o", str(tmp_path / "o"), "--model", "dinov3_vits16", "-q"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert DINOV3_DOWNLOADS in out and "dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth" in out


# --- overlapping patches ---------------------------------------------------------------
def test_stride8_positions_are_true_patch_centres():
    net = create_model(tiny_cfg())
    cos16, sin16, _ = net.rope((96, 80), (6, 5), 16)
    cos8, sin8, _ = net.rope((96, 80), (11, 9), 8)
    even = (torch.arange(11)[:, None] % 2 == 0) & (torch.arange(9)[None] % 2 == 0)
    assert torch.equal(cos8[even.flatten()], cos16) and torch.equal(sin8[even.flatten()], sin16)


def _naive_rope(net, grid):
    """The stride-8 grid treated as a plain grid of its own size (what a stride-unaware model would do)."""
    return net.rope_embed(grid, grid, 16, 16)


def test_shifted_crop_lines_up_better_with_true_centres():
    """A crop shifted by 8 px, at stride 8, matches the full image's stride-8 tokens better with dinokit's rule."""
    state = tiny_state(seed=1)
    net = load_model(arch=tiny_cfg(), pretrained=False)
    net.load_state_dict(state)
    gen = torch.Generator().manual_seed(0)
    image = F.interpolate(torch.randn(1, 3, 12, 12, generator=gen), size=(232, 232), mode="bilinear")
    full, crop = image, image[:, :, 8:, 8:]  # 232 (14 patches) and 224 (14 patches)

    def tokens(x, naive):
        if naive:
            net.rope = lambda hw, grid, stride=None: (*_naive_rope(net, grid), 5)
        with torch.no_grad():
            res = net.run(x, {DEPTH - 1: ("token",)}, stride=8)
        if naive:
            del net.rope
        return res.taps[DEPTH - 1]["token"][0, 5:].reshape(*res.grid, -1)

    scores = {}
    for naive in (False, True):
        a, b = tokens(full, naive), tokens(crop, naive)
        n = min(a.shape[0] - 1, b.shape[0])
        scores[naive] = F.cosine_similarity(a[1:1 + n, 1:1 + n], b[:n, :n], dim=-1).mean().item()
    print(f"mean cosine of corresponding tokens: true centres {scores[False]:.4f}, naive grid {scores[True]:.4f}")
    assert scores[False] > scores[True], scores


# --- every task with a saved tiny DINOv3 -------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dinov3_file(tmp_path_factory):
    net = load_model(arch=tiny_cfg("swiglu_split"), pretrained=False)
    net.load_state_dict(tiny_state("swiglu_split"))
    return save_backbone(net, tmp_path_factory.mktemp("v3") / "tiny_dinov3.safetensors")


def _images(data_dir, n):
    paths = sorted((data_dir / "icoseg" / "cheetah" / "images").glob("*.jpg"))[:n]
    assert len(paths) == n
    return [str(p) for p in paths]


def test_cli_extract_all_facets_bin_saliency(tmp_path, tiny_dinov3_file, data_dir):
    from safetensors.torch import load_file

    img = _images(data_dir, 1)
    args = ["extract", *img, "-o", str(tmp_path), "--weights", str(tiny_dinov3_file), "--device", "cpu", "-q",
            "--load-size", "64", "--bin", "--saliency", "--layer", "2"]
    for facet in ("key", "query", "value", "token"):
        args += ["--facet", facet]
    assert main(args) == 0
    (out,) = tmp_path.glob("*.safetensors")
    t = load_file(str(out))
    rows, cols = 1 + (88 - 16) // 8, 1 + (64 - 16) // 8  # 363x500 (W x H) -> 64 x 88, default stride 8
    for facet in ("key", "query", "value", "token"):
        assert t[f"descriptors.l2.{facet}"].shape == (rows * cols, 17 * DIM)
    sal = t["saliency"]
    assert sal.shape == (rows * cols,) and float(sal.min()) >= 0 and float(sal.max()) <= 1


def test_correspond_and_cosegment(tmp_path, tiny_dinov3_file, data_dir):
    a, b, c = _images(data_dir, 3)
    common = ["--weights", str(tiny_dinov3_file), "--device", "cpu", "-q", "--load-size", "64", "--layer", "2"]
    assert main(["correspond", a, b, "-o", str(tmp_path / "c"), *common, "--num-pairs", "3", "--thresh", "0.0"]) == 0
    info = json.loads((tmp_path / "c" / "correspondences.json").read_text())
    assert info["geometry_a"]["patch_size"] == 16 and 1 <= len(info["pairs"]) <= 3
    assert main(["cosegment", a, b, c, "-o", str(tmp_path / "s"), *common]) == 0
    assert len(list((tmp_path / "s").rglob("*_mask.png"))) == 3


def test_default_stride_is_8_and_licence_note_shown_once(tmp_path, monkeypatch, capsys, tiny_dinov3_file):
    import dinokit.models.dinov3 as v3
    from dinokit.features.extractor import resolve_stride

    assert resolve_stride("auto", 16) == 8
    monkeypatch.setattr(v3, "_noticed", False)
    load_model(weights=tiny_dinov3_file)
    load_model(weights=tiny_dinov3_file)
    load_model(arch=tiny_cfg(), pretrained=False)
    err = capsys.readouterr().err
    assert err.count("DINOv3 License") == 1


def test_attention_pca_parts_leave_storage_tokens_out(tmp_path, tiny_dinov3_file, data_dir):
    """Storage tokens are neither locations nor part of the CLS softmax, exactly as DINOv2's registers."""
    from safetensors.torch import load_file

    from dinokit.features import preprocess

    imgs = _images(data_dir, 3)
    common = ["--weights", str(tiny_dinov3_file), "--device", "cpu", "-q", "--load-size", "64"]
    assert main(["attention", imgs[0], "-o", str(tmp_path / "a"), *common, "--save-arrays"]) == 0
    (arrays,) = (tmp_path / "a").rglob("attention.safetensors")
    grid = load_file(str(arrays))["grid_attention"]
    assert grid.shape == (HEADS, 5, 4)  # 88x64 at stride 16
    net = load_model(weights=tiny_dinov3_file)
    x = preprocess(imgs[0], 64, net.cfg.mean, net.cfg.std).tensor[None]
    with torch.no_grad():
        cls_attn = net.run(x, {-1: ("cls_attn",)}).taps[DEPTH - 1]["cls_attn"][0]
    kept = cls_attn[:, :1] + cls_attn[:, 5:].sum(-1, keepdim=True)
    torch.testing.assert_close(grid, (cls_attn[:, 5:] / kept).reshape(HEADS, 5, 4))
    assert main(["pca", *imgs[:2], "-o", str(tmp_path / "p"), *common, "--layer", "2", "--components", "3"]) == 0
    assert main(["parts", *imgs, "-o", str(tmp_path / "q"), *common, "--layer", "2", "--num-parts", "2", "--no-crf"]) == 0
    assert len(list((tmp_path / "q").rglob("*_parts.png"))) == 3


def test_similarity_knn_inspect_video_benchmark_and_train_init(tmp_path, tiny_dinov3_file, data_dir, monkeypatch):
    """The other commands take a DINOv3 as they take any backbone (default stride 8, storage tokens as registers)."""
    import json
    import shutil

    from dinokit.inspect import server

    imgs = _images(data_dir, 3)
    common = ["--weights", str(tiny_dinov3_file), "--device", "cpu", "-q"]
    assert main(["similarity", *imgs[:2], "--point", "100", "100", "-o", str(tmp_path / "s"), *common,
                 "--load-size", "64", "--layer", "2"]) == 0
    sim = json.loads((tmp_path / "s" / "similarity.json").read_text())
    assert sim["settings"]["stride"] == 8 and len(sim["points"][0]["matches"]) == 2
    for split, names in (("train", imgs[:2]), ("test", imgs[2:])):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for p in names:
                shutil.copy(p, tmp_path / split / cls / Path(p).name)
    assert main(["knn", "--train", str(tmp_path / "train"), "--test", str(tmp_path / "test"), "-k", "1",
                 "--image-size", "64", "--no-cache", *common]) == 0
    served = {}
    monkeypatch.setattr(server.InspectorServer, "serve_forever",
                        lambda self: served.setdefault("status", self.session.status()))
    assert main(["inspect", *imgs[:2], *common, "--load-size", "64", "--layer", "2"]) == 0
    assert served["status"]["state"] == "ready" and served["status"]["settings"]["stride"] == 8
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, p in enumerate(imgs):
        shutil.copy(p, frames / f"{i:05d}.jpg")
    assert main(["parts", "--video", str(frames), "-o", str(tmp_path / "v"), *common, "--load-size", "64",
                 "--layer", "2", "--num-parts", "2", "--no-crf", "--video-format", "gif"]) == 0
    assert len(list((tmp_path / "v" / "frames").glob("*_parts.png"))) == 3
    root = data_dir / "pf-willow"
    assert main(["benchmark", "correspondence", "--dataset", "pf-willow", "--root", str(root),
                 "-o", str(tmp_path / "b"), *common, "--load-size", "64", "--layer", "2", "--max-pairs", "2"]) == 0
    assert (tmp_path / "b" / "results.json").is_file()
    run = tmp_path / "run"
    assert main(["train", "--data", str(frames), "-o", str(run), "--weights", str(tiny_dinov3_file), "--preset",
                 "small-data", "--epochs", "1", "--batch-size", "2", "--global-size", "32", "--local-size", "16",
                 "--local-crops-number", "1", "--out-dim", "64", "--device", "cpu", "-q"]) == 0
    trained = load_model(weights=run / "teacher_backbone.safetensors")
    assert trained.cfg.pos == "rope" and trained.num_prefix_tokens == 5
