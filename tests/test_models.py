"""Backbone construction and weight loading: official layouts, checkpoints, safety, clear errors."""

from __future__ import annotations

import pickle
import socket

import pytest
import torch

from dinokit.cli import main
from dinokit.errors import WeightsError
from dinokit.models import (
    ArchConfig,
    VisionTransformer,
    create_model,
    get_spec,
    load_model,
    model_names,
    read_weights,
    save_backbone,
)

DINO_NAMES = ["dino_vits8", "dino_vits16", "dino_vitb8", "dino_vitb16"]


def official_keys(depth: int) -> set[str]:
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    for i in range(depth):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"}
    return keys


@pytest.mark.parametrize("name", DINO_NAMES)
def test_named_dino_architectures_load_official_layout_strictly(tmp_path, name):
    spec = get_spec(name)
    a = spec.arch
    assert spec.url.startswith("https://dl.fbaipublicfiles.com/dino/") and spec.url.endswith("_pretrain.pth")
    # A state dict in the official file's layout, built here with random values (shapes from a meta-device model).
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VisionTransformer(a).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}
    assert set(state) == official_keys(a.depth)
    assert state["pos_embed"].shape == (1, 1 + (224 // a.patch_size) ** 2, a.embed_dim)
    path = tmp_path / spec.filename
    torch.save(state, path)
    model = load_model(name, weights=path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_named_models_listed():
    assert set(DINO_NAMES) <= set(model_names())
    assert get_spec("dino_vits8").saliency_heads == (0, 2, 4, 5)


def test_training_checkpoint_layout(tmp_path, golden_dir, tiny_weights):
    golden = load_model(weights=tiny_weights).state_dict()
    model = load_model(weights=golden_dir / "dino_training_checkpoint.pth", num_heads=6)
    for k, v in model.state_dict().items():
        assert torch.equal(v, golden[k])
    # The student branch carries DDP's "module." prefix on top of "backbone."; heads are dropped.
    student = read_weights(golden_dir / "dino_training_checkpoint.pth", checkpoint_key="student")
    assert set(student.state_dict) == set(golden)
    assert any(k.startswith("head.") for k in student.dropped)


def test_training_checkpoint_with_wrong_arch_hint_gives_clear_error(golden_dir):
    # args.arch says vit_tiny (192 wide) but the weights are 48 wide: no garbage model.
    with pytest.raises(WeightsError, match="arch=vit_tiny.*--num-heads"):
        load_model(weights=golden_dir / "dino_training_checkpoint.pth")


def test_synthetic_ddp_checkpoint(tmp_path):
    model = create_model(ArchConfig(patch_size=8, embed_dim=48, depth=2, num_heads=4, img_size=32), seed=3)
    ckpt = {"teacher": {f"backbone.{k}": v for k, v in model.state_dict().items()},
            "student": {f"module.backbone.{k}": v + 1 for k, v in model.state_dict().items()},
            "epoch": 3}
    ckpt["teacher"]["head.last_layer.weight_g"] = torch.ones(8, 1)
    path = tmp_path / "checkpoint.pth"
    torch.save(ckpt, path)
    loaded = load_model(weights=path, num_heads=4)
    assert torch.equal(loaded.pos_embed, model.pos_embed)
    student = load_model(weights=path, num_heads=4, checkpoint_key="student")
    assert torch.equal(student.pos_embed, model.pos_embed + 1)


def test_mismatched_weights_report(tmp_path):
    state = VisionTransformer(get_spec("dino_vits16").arch).state_dict()
    path = tmp_path / "vits16.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        load_model("dino_vits8", weights=path)
    msg = str(err.value)
    assert str(path) in msg and "mis-shaped" in msg and "patch_embed.proj.weight" in msg
    assert "\n" not in msg
    del state["norm.weight"]
    state["extra.thing"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(WeightsError, match="missing key.*norm.weight.*unexpected key.*extra.thing"):
        load_model("dino_vits16", weights=path)


def test_non_standard_width_needs_heads(tmp_path, tiny_weights):
    state = load_model(weights=tiny_weights).state_dict()
    path = tmp_path / "plain.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="--num-heads"):
        load_model(weights=path)
    assert load_model(weights=path, num_heads=6).cfg.num_heads == 6
    with pytest.raises(WeightsError, match=f"^{path}: embed_dim 48 is not divisible by num_heads 5"):
        load_model(weights=path, num_heads=5)


def test_safetensors_metadata_round_trip(tmp_path):
    cfg = ArchConfig(patch_size=14, embed_dim=40, depth=3, num_heads=5, img_size=56, mlp_ratio=2.0)
    model = create_model(cfg, seed=1)
    path = save_backbone(model, tmp_path / "m.safetensors")
    again = load_model(weights=path)
    assert again.cfg == cfg
    x = torch.randn(1, 3, 42, 70)
    torch.testing.assert_close(again(x), model(x))
    with pytest.raises(Exception):
        save_backbone(model, path, overwrite=False)


def test_golden_metadata_scheme_read_and_written_identically(tmp_path, tiny_weights):
    """The dinokit-arch-v1 header of the golden file parses, and saving writes the same strings back."""
    from safetensors import safe_open

    with safe_open(str(tiny_weights), "pt") as f:
        meta = f.metadata()
    cfg = ArchConfig.from_metadata(meta, str(tiny_weights))
    assert (cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.layernorm_eps) == (8, 48, 12, 6, 1e-6)
    model = load_model(weights=tiny_weights)  # no --num-heads needed: the header says 6
    assert model.cfg == cfg
    with safe_open(str(save_backbone(model, tmp_path / "again.safetensors")), "pt") as f:
        written = f.metadata()
    assert {k: written[k] for k in meta} == meta


def test_random_init_is_seeded():
    a = create_model("vit_tiny", seed=5, patch_size=16, depth=2)
    b = create_model("vit_tiny", seed=5, patch_size=16, depth=2)
    c = create_model("vit_tiny", seed=6, patch_size=16, depth=2)
    assert torch.equal(a.pos_embed, b.pos_embed) and not torch.equal(a.pos_embed, c.pos_embed)


def test_offline_download_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise OSError("network access blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(WeightsError) as err:
        load_model("dino_vits8", progress=False)
    msg = str(err.value)
    assert get_spec("dino_vits8").url in msg
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "dino_deitsmall8_pretrain.pth") in msg
    assert "--weights" in msg and "\n" not in msg
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(img)
    assert main(["extract", str(img), "-o", str(tmp_path / "out"), "-q"]) == 2
    err_text = capsys.readouterr().err.strip()
    assert err_text.startswith("dinokit: error: could not download") and "Traceback" not in err_text
    assert len(err_text.splitlines()) == 1


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch exploited_marker",))


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_malicious_pickle_refused(tmp_path, monkeypatch, suffix):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"evil{suffix}"
    torch.save({"pos_embed": torch.zeros(1), "payload": _Exploit()}, path)
    with pytest.raises(WeightsError, match="refused"):
        load_model(weights=path)
    assert not (tmp_path / "exploited_marker").exists()
    raw = tmp_path / f"raw{suffix}"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(WeightsError):
        load_model(weights=raw)
    assert not (tmp_path / "exploited_marker").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_unreadable_weight_files(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="bad.safetensors"):
        load_model(weights=path)
    with pytest.raises(WeightsError, match="no such weights file"):
        load_model(weights=tmp_path / "missing.pth")


def test_trained_release_format_loads(trained_weights):
    model = load_model(weights=trained_weights)
    assert (model.cfg.embed_dim, model.cfg.num_heads, model.cfg.patch_size) == (192, 3, 16)


def test_models_command_lists_cache_state(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / get_spec("dino_vits16").filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    for name in DINO_NAMES:
        spec = get_spec(name)
        assert spec.url in lines[name]
        assert lines[name].split()[-2] == ("yes" if name == "dino_vits16" else "no")
    assert "(default)" in lines["dino_vits8"]
    assert str(cached.parent) in lines["Weights"]


def test_num_heads_contradicting_the_stored_architecture_is_refused(tmp_path, tiny_weights):
    """--num-heads may only fill in what a file does not say, never overrule it."""
    cfg = ArchConfig(patch_size=8, embed_dim=48, depth=2, num_heads=4, img_size=32)
    path = save_backbone(create_model(cfg, seed=0), tmp_path / "m.safetensors")
    assert load_model(weights=path, num_heads=4).cfg.num_heads == 4  # agreeing is fine
    with pytest.raises(WeightsError, match=r"^\S*m\.safetensors: --num-heads 6 contradicts .* 4 heads") as err:
        load_model(weights=path, num_heads=6)
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match=r"model dino_vits16: --num-heads 3 contradicts .* 6 heads"):
        load_model("dino_vits16", pretrained=False, num_heads=3)
    plain = tmp_path / "plain.pth"
    torch.save(load_model(weights=tiny_weights).state_dict(), plain)
    with pytest.raises(WeightsError, match=r"\(model dino_vits8\): --num-heads 4 contradicts .* 6 heads"):
        load_model("dino_vits8", weights=plain, num_heads=4)
    image = str(tiny_weights.parent / "images" / "cat.jpg")
    args = ["extract", image, "-o", str(tmp_path / "out"), "--weights", str(path), "--num-heads", "6", "--load-size", "32"]
    assert main(args) == 2


def test_models_modules_import_each_other_acyclically():
    """No function-level imports between model modules, and no import cycle at module level."""
    import ast
    from pathlib import Path as _Path

    import dinokit.models as pkg

    folder = _Path(pkg.__file__).parent
    graph: dict[str, set[str]] = {}
    for file in folder.glob("*.py"):
        tree = ast.parse(file.read_text())
        top = set(tree.body)
        deps = graph.setdefault(file.stem, set())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                if node not in top and not _under_type_checking(tree, node):
                    raise AssertionError(f"{file.name}: function-level import of .{names[0]}")
                deps.update(n.split(".")[0] for n in names)
    graph.pop("__init__")
    seen: dict[str, int] = {}

    def visit(mod: str, path: tuple[str, ...]) -> None:
        if seen.get(mod) == 2 or mod not in graph:
            return
        assert seen.get(mod) != 1, f"import cycle: {' -> '.join(path + (mod,))}"
        seen[mod] = 1
        for dep in graph[mod]:
            visit(dep, path + (mod,))
        seen[mod] = 2

    for mod in graph:
        visit(mod, ())


def _under_type_checking(tree, node) -> bool:
    import ast

    return any(
        isinstance(n, ast.If) and getattr(n.test, "id", None) == "TYPE_CHECKING" and node in list(ast.walk(n))
        for n in tree.body
    )
