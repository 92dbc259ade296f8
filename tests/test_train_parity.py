"""Parity of the DINO training pieces with the reference implementation's outputs (golden files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dinokit.train import DINOHead, DINOLoss, MultiCropWrapper, cosine_schedule, teacher_temp_schedule
from dinokit.train.head import WeightNormLinear


@pytest.fixture(scope="module")
def ref(golden_dir):
    return load_file(str(golden_dir / "reference_training.safetensors"))


@pytest.fixture(scope="module")
def cases(golden_dir):
    return json.loads((golden_dir / "training_cases.json").read_text())


def test_cases_describe_what_we_reproduce(cases):
    # The parameters below are copied from training_cases.json; fail loudly if the golden file changes.
    assert "base=0.0005, final=1e-6, epochs=10, niter_per_ep=7, warmup_epochs=2" in cases["sched.lr"]
    assert "base=0.996, final=1.0, epochs=10, niter_per_ep=7, warmup_epochs=0" in cases["sched.momentum"]
    assert "out_dim=64, ncrops=6, warmup_teacher_temp=0.04, teacher_temp=0.07" in cases["loss"]
    assert "in_dim=48, out_dim=96" in cases["head"] and "hidden_dim=64, bottleneck_dim=32" in cases["head"]
    assert "k=20, T=0.07, num_classes=10" in cases["knn"]


def test_learning_rate_schedule(ref):
    got = cosine_schedule(0.0005, 1e-6, epochs=10, niter_per_ep=7, warmup_epochs=2, start_warmup_value=0)
    assert got.dtype == np.float64 and got.shape == (70,)
    np.testing.assert_allclose(got, ref["sched.lr"].numpy(), rtol=0, atol=1e-15)


def test_momentum_schedule(ref):
    got = cosine_schedule(0.996, 1.0, epochs=10, niter_per_ep=7)
    np.testing.assert_allclose(got, ref["sched.momentum"].numpy(), rtol=0, atol=1e-15)


def test_schedule_edge_cases():
    # warm-up longer than the run is cut; the teacher temperature warm-up likewise
    s = cosine_schedule(1.0, 0.0, epochs=2, niter_per_ep=3, warmup_epochs=5)
    assert s.shape == (6,) and s[0] == 0.0 and s[-1] == 1.0
    t = teacher_temp_schedule(0.04, 0.07, warmup_epochs=30, epochs=10)
    assert t.shape == (10,) and t[0] == pytest.approx(0.04) and t[-1] == pytest.approx(0.07)
    t = teacher_temp_schedule(0.04, 0.07, warmup_epochs=3, epochs=10)
    np.testing.assert_allclose(t[:4], [0.04, 0.055, 0.07, 0.07])


def test_three_loss_steps_with_center(ref):
    loss = DINOLoss(out_dim=64, ncrops=6, warmup_teacher_temp=0.04, teacher_temp=0.07,
                    warmup_teacher_temp_epochs=3, nepochs=10, student_temp=0.1, center_momentum=0.9)
    assert torch.count_nonzero(loss.center) == 0
    for step, epoch in enumerate((0, 1, 5)):
        value = loss(ref[f"loss.step{step}.student"], ref[f"loss.step{step}.teacher"], epoch)
        torch.testing.assert_close(value.reshape(1), ref[f"loss.step{step}.value"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loss.center, ref[f"loss.step{step}.center_after"], rtol=1e-5, atol=1e-6)


def test_loss_depends_on_center_history(ref):
    # A fresh loss object at step 1 (zero center) must not reproduce the reference: the center matters.
    fresh = DINOLoss(64, 6, 0.04, 0.07, 3, 10)
    value = fresh(ref["loss.step1.student"], ref["loss.step1.teacher"], 1)
    assert abs(value.item() - ref["loss.step1.value"].item()) > 1e-3


def test_head_output_from_reference_parameters(ref):
    head = DINOHead(in_dim=48, out_dim=96, use_bn=False, norm_last_layer=True, nlayers=3, hidden_dim=64, bottleneck_dim=32)
    params = {k[len("head.param."):]: v for k, v in ref.items() if k.startswith("head.param.")}
    assert set(params) == set(head.state_dict())  # official names, incl. last_layer.weight_g / weight_v
    head.load_state_dict(params, strict=True)
    with torch.no_grad():
        out = head(ref["head.input"])
    torch.testing.assert_close(out, ref["head.output"], rtol=1e-4, atol=1e-5)


def test_head_parameter_names_and_frozen_norms():
    head = DINOHead(16, 10, hidden_dim=8, bottleneck_dim=4)
    names = set(head.state_dict())
    assert {"last_layer.weight_g", "last_layer.weight_v", "mlp.0.weight", "mlp.4.bias"} <= names
    assert head.last_layer.weight_g.shape == (10, 1) and not head.last_layer.weight_g.requires_grad
    assert DINOHead(16, 10, norm_last_layer=False, hidden_dim=8, bottleneck_dim=4).last_layer.weight_g.requires_grad


def test_weight_norm_linear_matches_torch_weight_norm():
    torch.manual_seed(0)
    ours = WeightNormLinear(5, 3)
    torch.nn.init.normal_(ours.weight_v)
    with torch.no_grad():
        ours.weight_g.uniform_(0.5, 2.0)
    plain = torch.nn.Linear(5, 3, bias=False)
    with torch.no_grad():
        plain.weight.copy_(ours.weight)
    x = torch.randn(4, 5)
    torch.testing.assert_close(ours(x), plain(x))
    row_norms = ours.weight.norm(dim=1, keepdim=True)
    torch.testing.assert_close(row_norms, ours.weight_g.detach())


def test_multicrop_wrapper_groups_by_resolution():
    calls = []

    class Backbone(torch.nn.Module):
        def forward(self, x):
            calls.append(tuple(x.shape))
            return x.mean(dim=(2, 3))

    wrapper = MultiCropWrapper(Backbone(), torch.nn.Identity())
    crops = [torch.full((2, 3, 8, 8), float(i)) for i in range(2)] + [torch.full((2, 3, 4, 4), float(i)) for i in range(2, 5)]
    out = wrapper(crops)
    assert calls == [(4, 3, 8, 8), (6, 3, 4, 4)]
    # crop-major rows: crop 0's two images, then crop 1's, ...
    assert out[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_initialisation_follows_the_reference():
    # DINO: trunc_normal_(std=.02) (bounds +-2 in absolute terms, so a plain normal in practice) for the tokens,
    # the positional embedding and every Linear; PyTorch's default (Kaiming-uniform) for the patch embedding;
    # weight-normalised last layer with g = 1.
    from dinokit.train import TrainConfig, build_networks
    from dinokit.train.trainer import backbone_arch

    cfg = TrainConfig(arch="vit_small", depth=2, out_dim=512)
    student, _ = build_networks(cfg, backbone_arch(cfg)[0])
    w = student.backbone.blocks[0].mlp.fc1.weight.detach()
    assert abs(w.std().item() - 0.02) < 0.0005 and w.abs().max() > 0.08  # tails beyond 2 std are kept
    assert (w.abs() >= 0.04 - 1e-7).float().mean().item() == pytest.approx(0.0455, abs=0.004)
    assert torch.count_nonzero(student.backbone.blocks[0].mlp.fc1.bias) == 0
    conv = student.backbone.patch_embed.proj
    bound = 1 / (3 * 16 * 16) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.95 * bound  # uniform(-b, b)
    assert torch.count_nonzero(conv.bias) > 0 and conv.bias.abs().max() <= bound
    head = student.head
    assert torch.equal(head.last_layer.weight_g, torch.ones_like(head.last_layer.weight_g))
    assert abs(head.mlp[0].weight.std().item() - 0.02) < 0.001
