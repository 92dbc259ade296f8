"""Every backbone in every task: supervised / timm ViTs, and each task's CLI with a tiny DINOv2 model with registers."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from dinokit.cli import build_parser, main
from dinokit.errors import WeightsError
from dinokit.models import (
    SUPERVISED_NAMES,
    VisionTransformer,
    convert_timm_state_dict,
    create_model,
    get_spec,
    load_model,
)

# --- a tiny DINOv2-layout backbone with registers --------------------------------


def tiny_dinov2_state(seed: int = 0, registers: int = 4, ffn: str = "mlp") -> tuple[dict, VisionTransformer]:
    """Official DINOv2 key names (ls1/ls2, mask_token, register_tokens), 12 blocks of width 48, 4 heads."""
    cfg = get_spec("dinov2_vits14_reg").arch.replace(
        embed_dim=48, num_heads=4, img_size=56, num_register_tokens=registers, ffn=ffn
    )
    model = create_model(cfg, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif name == "register_tokens":
                p.copy_(torch.randn(p.shape, generator=gen))
    return {k: v.clone() for k, v in model.state_dict().items()}, model


@pytest.fixture(scope="module")
def tiny_reg_weights(tmp_path_factory):
    """The tiny model saved as an official-style ``.pth`` (plain state dict, no metadata)."""
    state, _ = tiny_dinov2_state()
    assert "register_tokens" in state and "blocks.0.ls1.gamma" in state and "mask_token" in state
    path = tmp_path_factory.mktemp("tiny") / "tiny_dinov2_reg4.pth"
    torch.save(state, path)
    return path


MODEL_ARGS = ["--num-heads", "4", "--device", "cpu", "-q"]


@pytest.fixture(autouse=True)
def _seeded():
    """Every test draws the same random inputs, whatever ran before it."""
    torch.manual_seed(0)


def _images(data_dir, n: int):
    paths = sorted((data_dir / "icoseg" / "cheetah" / "images").glob("*.jpg"))[:n]
    assert len(paths) == n
    return [str(p) for p in paths]


def test_tiny_model_is_read_as_dinov2_with_registers(tiny_reg_weights):
    net = load_model(weights=tiny_reg_weights, num_heads=4)
    assert net.cfg.num_register_tokens == 4 and net.num_prefix_tokens == 5
    assert net.cfg.layerscale and net.cfg.mask_token and net.cfg.pos_embed_mode == "dinov2"
    assert (net.cfg.interpolate_offset, net.cfg.interpolate_antialias) == (0.0, True)


def test_cli_extract(tmp_path, tiny_reg_weights, data_dir):
    from safetensors.torch import load_file

    img = _images(data_dir, 1)
    code = main(["extract", *img, "-o", str(tmp_path), "--weights", str(tiny_reg_weights), *MODEL_ARGS,
                 "--load-size", "56", "--saliency", "--layer", "9", "--facet", "key"])
    assert code == 0
    (out,) = tmp_path.glob("*.safetensors")
    t = load_file(str(out))
    rows, cols = 1 + (77 - 14) // 7, 1 + (56 - 14) // 7  # 363x500 (W x H) -> 56x77
    assert t["descriptors.l9.key"].shape == (rows * cols, 48)
    assert t["saliency"].shape == (rows * cols,)


def test_cli_correspond(tmp_path, tiny_reg_weights, data_dir):
    a, b = _images(data_dir, 2)
    code = main(["correspond", a, b, "-o", str(tmp_path), "--weights", str(tiny_reg_weights), *MODEL_ARGS,
                 "--load-size", "56", "--num-pairs", "3", "--thresh", "0.0"])
    assert code == 0
    info = json.loads((tmp_path / "correspondences.json").read_text())
    assert (tmp_path / "pair.png").is_file()
    assert info["geometry_a"]["grid_rows_cols"] == [10, 7] and info["geometry_a"]["patch_size"] == 14
    assert 1 <= len(info["pairs"]) <= 3
    for pair in info["pairs"]:  # points inside the original images (363x500 and 500x340, W x H)
        assert 0 <= pair["a"][0] < 363 and 0 <= pair["a"][1] < 500
        assert 0 <= pair["b"][0] < 500 and 0 <= pair["b"][1] < 340


def test_cli_pca(tmp_path, tiny_reg_weights, data_dir):
    imgs = _images(data_dir, 2)
    code = main(["pca", *imgs, "-o", str(tmp_path), "--weights", str(tiny_reg_weights), *MODEL_ARGS,
                 "--load-size", "56", "--components", "3", "--save-arrays"])
    assert code == 0
    arrays = sorted(tmp_path.glob("*_pca.npy"))
    assert len(arrays) == 2
    import numpy as np

    grid = np.load(arrays[0])
    assert grid.shape[-1] == 3 and grid.shape[0] * grid.shape[1] in (7 * 10, 10 * 7)  # patches only
    assert len(list(tmp_path.glob("*_pca_rgb.png"))) == 2


def test_cli_similarity(tmp_path, tiny_reg_weights, data_dir):
    a, b = _images(data_dir, 2)
    code = main(["similarity", a, b, "--point", "100", "120", "-o", str(tmp_path),
                 "--weights", str(tiny_reg_weights), *MODEL_ARGS, "--load-size", "56", "--save-arrays"])
    assert code == 0
    assert (tmp_path / "point1.png").is_file() and (tmp_path / "similarity.json").is_file()
    from safetensors.torch import load_file

    maps = load_file(str(tmp_path / "point1_maps.safetensors"))
    assert all(m.numel() == 70 for m in maps.values())  # 7 x 10 patches: registers are not locations


def test_cli_cosegment(tmp_path, tiny_reg_weights, data_dir):
    imgs = _images(data_dir, 3)
    code = main(["cosegment", *imgs, "-o", str(tmp_path), "--weights", str(tiny_reg_weights), *MODEL_ARGS,
                 "--load-size", "56", "--saliency-heads", "1,3"])
    assert code == 0
    assert len(list(tmp_path.rglob("*_mask.png"))) == 3
    (done,) = tmp_path.rglob("done.json")
    assert json.loads(done.read_text())["model"]["saliency_heads"] == [1, 3]


def test_cosegmentation_saliency_uses_the_chosen_heads(tiny_reg_weights, data_dir):
    """The heads given to the extractor reach the co-segmentation's own saliency pass (low-res or not)."""
    from dinokit.features import Extractor
    from dinokit.tasks.cosegmentation import CoSegmentation

    net = load_model(weights=tiny_reg_weights, num_heads=4)
    imgs = _images(data_dir, 2)
    for low_res in (False, True):
        maps = {}
        for heads in ([1], [3]):
            ex = Extractor(net, stride=7, load_size=56, device="cpu", saliency_heads=heads)
            seg = CoSegmentation(extractor=ex, load_size=56, stride=7, low_res_saliency_maps=low_res,
                                 progress=False).fit(imgs)
            maps[heads[0]] = np.concatenate([m.reshape(-1) for m in seg.saliency_])
            if not low_res:
                direct = np.concatenate([ex.saliency(i).reshape(-1).numpy() for i in imgs])
                np.testing.assert_allclose(maps[heads[0]], direct, atol=1e-6)
        assert np.abs(maps[1] - maps[3]).max() > 0.05


def test_cli_bad_saliency_heads_is_one_line(tmp_path, tiny_reg_weights, data_dir, capsys):
    code = main(["cosegment", *_images(data_dir, 2), "-o", str(tmp_path), "--weights", str(tiny_reg_weights),
                 *MODEL_ARGS, "--load-size", "56", "--saliency-heads", "0,4"])
    assert code != 0
    err = capsys.readouterr().err
    assert "saliency heads [0, 4] do not fit a 4-head model" in err and err.count("\n") == 1


def test_cli_parts(tmp_path, tiny_reg_weights, data_dir):
    imgs = _images(data_dir, 3)
    code = main(["parts", *imgs, "-o", str(tmp_path), "--weights", str(tiny_reg_weights), *MODEL_ARGS,
                 "--load-size", "56", "--num-parts", "2", "--no-crf"])
    assert code == 0
    assert len(list(tmp_path.rglob("*_parts.png"))) == 3 and list(tmp_path.rglob("done.json"))


BENCHMARK_RUNS = {  # every ``dinokit benchmark`` kind on a little data, every method flag at its default
    "correspondence": ["--dataset", "pf-willow", "--root", "pf-willow", "--max-pairs", "2"],
    "cosegment": ["--root", "icoseg", "--sets", "cheetah", "--max-images", "2"],
    "video": ["--root", "davis2016", "--sequences", "blackswan", "--frame-step", "10", "--max-frames", "3"],
    "parts": ["--root", "pascal-part", "--categories", "cat", "--max-images", "2"],
}


def test_cli_benchmark(tmp_path, tiny_reg_weights, data_dir):
    """A patch-14 model through every benchmark without --stride: 'auto' gives 7 (a fixed 4 cannot divide 14)."""
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["benchmark"]
    kinds = next(a for a in sub._actions if a.dest == "benchmark").choices
    assert set(kinds) == set(BENCHMARK_RUNS)
    for kind, argv in BENCHMARK_RUNS.items():
        argv = [str(data_dir / a) if i and argv[i - 1] == "--root" else a for i, a in enumerate(argv)]
        out = tmp_path / kind
        code = main(["benchmark", kind, *argv, "-o", str(out), "--weights", str(tiny_reg_weights), *MODEL_ARGS])
        assert code == 0, kind
        settings = json.loads((out / "run.json").read_text())
        method = settings.get("settings", settings)["method"]
        if kind != "video":  # the video benchmark's default protocol (propagation) uses the patch grid itself
            assert method["stride"] == 7, kind


def test_cli_attention(tmp_path, tiny_reg_weights, data_dir):
    """The CLS attention maps cover the patches only: registers are neither rows nor columns of the maps."""
    from safetensors.torch import load_file

    img = _images(data_dir, 1)[0]
    code = main(["attention", img, "-o", str(tmp_path), "--weights", str(tiny_reg_weights), *MODEL_ARGS,
                 "--load-size", "56", "--save-arrays"])
    assert code == 0
    (arrays,) = tmp_path.rglob("attention.safetensors")
    grid = load_file(str(arrays))["grid_attention"]
    assert grid.shape == (4, 5, 4)  # heads x rows x cols of 14-pixel patches (77x56 -> 5x4)
    assert (arrays.parent / "attn-head3.png").is_file() and (arrays.parent / "mask-mean.png").is_file()
    net = load_model(weights=tiny_reg_weights, num_heads=4)
    from dinokit.features import preprocess

    x = preprocess(img, 56, net.cfg.mean, net.cfg.std).tensor[None]
    with torch.no_grad():
        cls_attn = net.run(x, {-1: ("cls_attn",)}).taps[11]["cls_attn"][0]
    # Registers are taken out of each head's softmax: the row is renormalised over CLS + patches.
    kept = cls_attn[:, :1] + cls_attn[:, 5:].sum(-1, keepdim=True)
    torch.testing.assert_close(grid, (cls_attn[:, 5:] / kept).reshape(4, 5, 4))
    assert (cls_attn[:, 1:5].sum(-1) > 1e-3).all()  # the registers did hold mass, so this is not a no-op
    torch.testing.assert_close(grid.sum((1, 2)), 1 - cls_attn[:, 0] / kept[:, 0])  # only CLS's own share is left out


def test_cli_knn(tmp_path, tiny_reg_weights, data_dir):
    from safetensors.torch import load_file

    for split, count in (("train", 2), ("test", 1)):
        for group in ("cheetah", "pandas-taiwan"):
            (tmp_path / split / group).mkdir(parents=True)
            images = sorted((data_dir / "icoseg" / group / "images").glob("*.jpg"))
            chosen = images[:count] if split == "train" else images[-count:]
            for p in chosen:
                (tmp_path / split / group / p.name).symlink_to(p)
    code = main(["knn", "--train", str(tmp_path / "train"), "--test", str(tmp_path / "test"),
                 "--weights", str(tiny_reg_weights), *MODEL_ARGS, "--image-size", "56", "-k", "1", "3",
                 "--no-cache", "--save-features", str(tmp_path / "feats"), "-o", str(tmp_path / "knn.json")])
    assert code == 0
    feats = load_file(str(tmp_path / "feats" / "train_features.safetensors"))["features"]
    assert feats.shape == (4, 48)  # one CLS feature per image
    result = json.loads((tmp_path / "knn.json").read_text())
    assert (result["num_train"], result["num_test"], result["num_classes"]) == (4, 2, 2)
    assert [r["k"] for r in result["results"]] == [1, 3]
    assert all(r["top1"] in (0.0, 50.0, 100.0) for r in result["results"])
    assert str(tiny_reg_weights) in result["model"]


def test_inspector_session_with_registers(tiny_reg_weights, data_dir):
    """The inspector's API (what ``dinokit inspect`` serves): grids are patches only, at every stride."""
    from dinokit.features import Extractor
    from dinokit.inspect import InspectorSession

    net = load_model(weights=tiny_reg_weights, num_heads=4)
    imgs = _images(data_dir, 2)
    ex = Extractor(net, load_size=56, device="cpu", saliency_heads=[2])
    session = InspectorSession(imgs, ex, layer=5, stride=7)
    try:
        assert session.strides() == [1, 2, 7, 14]
        session.compute()
        answer = session.query(0, 100.0, 200.0, scores=True)
        grids = [m["grid"] for m in answer["maps"]]
        assert grids == [[10, 7], [7, 10]]  # 56x77 and 77x56 pixels at stride 7
        assert all(np.array(m["scores"]).shape == tuple(m["grid"]) for m in answer["maps"])
        assert answer["maps"][0]["best_score"] == pytest.approx(1.0, abs=1e-5)  # the query patch itself
        sal = session.saliency()["maps"]
        assert [m["grid"] for m in sal] == grids
        # The session's stride-7 extractor keeps the heads chosen on the stride-14 one.
        direct = Extractor(net, stride=7, load_size=56, device="cpu").saliency(imgs[0], heads=[2])
        torch.testing.assert_close(session.view().saliency[0].float(), direct[0])
        assert session.correspondences(0, 1, num_pairs=3, thresh=0.0)["pairs"]
    finally:
        session.close()


def test_cli_inspect(tiny_reg_weights, data_dir, monkeypatch, capsys):
    """``dinokit inspect`` with default flags on a patch-14 model: descriptors at stride 7, then the server."""
    from dinokit.inspect import server

    served = {}

    def serve_once(self):
        served["settings"] = self.session.status()["settings"]

    monkeypatch.setattr(server.InspectorServer, "serve_forever", serve_once)
    code = main(["inspect", *_images(data_dir, 2), "--weights", str(tiny_reg_weights), *MODEL_ARGS,
                 "--load-size", "56"])
    assert code == 0, capsys.readouterr().err
    assert served["settings"]["stride"] == 7 and served["settings"]["layer"] == 11


def test_cli_models_lists_every_backbone(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("dino_vits8", "dinov2_vits14", "dinov2_vitg14_reg", *SUPERVISED_NAMES):
        assert name in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert "0,2,4,5" in lines["dino_vits8"] and "all" in lines["dinov2_vits14_reg"]  # the saliency defaults


# The tasks of the issue ("every task must work with every backbone") and their command names.
# Each runs with default flags (no --stride): 'auto' must give 7 for patch 14.
TASK_COMMANDS = {"extract", "correspond", "cosegment", "parts", "pca", "similarity", "attention", "knn", "inspect",
                 "benchmark"}


def test_every_task_command_is_covered():
    """Fails when a task command exists that this file does not run with the DINOv2 model."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    tested = {name[len("test_cli_"):] for name in globals() if name.startswith("test_cli_")}
    missing = sorted((TASK_COMMANDS & set(sub.choices)) - tested)
    assert not missing, f"task commands without a DINOv2-with-registers test: {missing}"


# --- supervised ViTs and timm checkpoints -----------------------------------------


def test_supervised_models_registered_as_in_the_paper():
    """timm's AugReg ViTs (the reference extractor's vit_* names), normalised with 0.5 / 0.5."""
    for name in SUPERVISED_NAMES:
        spec = get_spec(name)
        short = name.split(".")[0]
        assert get_spec(short) is spec
        assert spec.url == f"https://huggingface.co/timm/{name}/resolve/main/model.safetensors"
        assert spec.arch.mean == (0.5, 0.5, 0.5) and spec.arch.std == (0.5, 0.5, 0.5)
        assert spec.saliency_heads is None
    names = [get_spec(n).filename for n in SUPERVISED_NAMES]
    assert len(set(names)) == len(names)  # all hub files are called model.safetensors: cache names must differ
    assert get_spec("vit_base_patch8_224").arch.patch_size == 8


def test_timm_checkpoint_loads_by_name_from_the_cache(tmp_path, monkeypatch):
    """A hub safetensors file with timm names (and the classifier head) loads strictly into the same ViT."""
    from safetensors.torch import save_file

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    spec = get_spec("vit_small_patch16_224")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VisionTransformer(spec.arch).state_dict().items()}
    flat = torch.randn(sum(s.numel() for s in shapes.values()), generator=torch.Generator().manual_seed(3))
    state = dict(zip(shapes, (t.reshape(s).clone() for t, s in zip(flat.split([s.numel() for s in shapes.values()]),
                                                                      shapes.values()))))
    timm_file = dict(state, **{"head.weight": torch.randn(1000, 384), "head.bias": torch.zeros(1000)})
    (tmp_path / "checkpoints").mkdir()
    save_file(timm_file, str(tmp_path / "checkpoints" / spec.filename), metadata={"format": "pt"})
    net = load_model("vit_small_patch16_224")
    assert net.spec is spec and net.cfg.mean == (0.5, 0.5, 0.5)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_timm_registers_and_positions_without_cls_row(tmp_path):
    """timm's ``reg_token`` and CLS-less ``pos_embed`` convert to an exactly equivalent model."""
    _, model = tiny_dinov2_state(seed=1)
    with torch.no_grad():
        model.pos_embed[:, 0] = 0  # timm adds no position to the CLS token
    state = model.state_dict()
    timm_state = {("reg_token" if k == "register_tokens" else k): v.clone() for k, v in state.items()}
    timm_state["pos_embed"] = state["pos_embed"][:, 1:].clone()
    timm_state["head.weight"] = torch.randn(10, 48)
    torch.save(timm_state, tmp_path / "timm.pth")
    net = load_model(weights=tmp_path / "timm.pth", num_heads=4)
    x = torch.randn(1, 3, 42, 70)
    torch.testing.assert_close(net(x), model(x))
    assert net.num_prefix_tokens == 5


def test_timm_packed_swiglu_is_renamed():
    state, model = tiny_dinov2_state(ffn="swiglu", registers=0)
    timm_state = {k.replace("mlp.w12", "mlp.fc1").replace("mlp.w3", "mlp.fc2"): v for k, v in state.items()}
    converted = convert_timm_state_dict(timm_state)
    assert set(converted) == set(state)
    assert all(torch.equal(converted[k], state[k]) for k in state)


def test_unsupported_timm_variant_is_refused():
    state, _ = tiny_dinov2_state(registers=0)
    state["fc_norm.weight"] = torch.ones(48)
    with pytest.raises(WeightsError, match="fc_norm"):
        convert_timm_state_dict(state, "avgpool.pth")


def test_timm_name_without_timm_names_the_extra(tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(WeightsError, match=r"pip install 'dinokit\[timm\]'"):
        load_model("timm:vit_small_patch16_224.augreg_in21k_ft_in1k")
    code = main(["extract", *_images(data_dir, 1), "-o", str(tmp_path), "--model", "timm:vit_small_patch16_224",
                 "--device", "cpu", "-q"])
    assert code == 2
    err = capsys.readouterr().err
    assert "dinokit[timm]" in err and err.count("\n") == 1


class _FakeTimmViT(torch.nn.Module):
    """What ``timm.create_model`` returns for a ViT, as far as dinokit looks: blocks, patch_embed, timm-named state."""

    def __init__(self, net: VisionTransformer, state: dict) -> None:
        super().__init__()
        self.blocks, self.patch_embed = net.blocks, net.patch_embed
        self._timm_state = state
        self.pretrained_cfg = {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}

    def state_dict(self, *args, **kwargs):  # noqa: D102 - timm's names
        return self._timm_state


def test_timm_model_by_name_with_timm_installed(tmp_path, monkeypatch, data_dir):
    """``--model timm:NAME``: the weights, head count, LayerNorm eps and normalisation come from timm's model."""
    import types

    _, ref = tiny_dinov2_state(seed=2)
    with torch.no_grad():
        ref.pos_embed[:, 0] = 0  # timm's register models add no position to the CLS token
    for m in ref.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-5
    state = {("reg_token" if k == "register_tokens" else k): v.clone() for k, v in ref.state_dict().items()}
    state["pos_embed"] = state["pos_embed"][:, 1:].clone()
    state["head.weight"], state["head.bias"] = torch.randn(7, 48), torch.zeros(7)
    calls = []

    def create_model(name, pretrained=True):
        calls.append((name, pretrained))
        if name == "resnet50":
            return torch.nn.Linear(2, 2)
        if name != "vit_tiny_reg4_test":
            raise RuntimeError(f"Unknown model ({name})")
        return _FakeTimmViT(ref, state)

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    net = load_model("timm:vit_tiny_reg4_test")
    assert calls[-1] == ("vit_tiny_reg4_test", True)
    assert net.num_heads == 4 and net.num_prefix_tokens == 5 and net.cfg.layernorm_eps == 1e-5
    assert net.cfg.mean == (0.1, 0.2, 0.3) and net.cfg.std == (0.4, 0.5, 0.6)
    assert net.source == "timm:vit_tiny_reg4_test" and net.spec is None
    x = torch.randn(1, 3, 56, 42)
    torch.testing.assert_close(net(x), ref(x))
    with pytest.raises(WeightsError, match=r"could not create the timm model 'nope' \(Unknown model \(nope\)\)"):
        load_model("timm:nope")
    with pytest.raises(WeightsError, match="not a plain ViT"):
        load_model("timm:resnet50")
    # The CLI takes the same route.
    code = main(["extract", *_images(data_dir, 1), "-o", str(tmp_path), "--model", "timm:vit_tiny_reg4_test",
                 "--device", "cpu", "-q", "--load-size", "56", "--layer", "3"])
    assert code == 0 and len(list(tmp_path.glob("*.safetensors"))) == 1


def test_hf_name_without_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(WeightsError, match=r"pip install 'dinokit\[hf\]'"):
        load_model("hf:facebook/dinov2-small")
