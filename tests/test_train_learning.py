"""Learning for real: DINO on a small generated dataset beats random features, and the result works with dinokit.

Four classes of two-tone textures (horizontal stripes, vertical stripes,
checkerboard, noise) whose hue families overlap between classes: a randomly
initialised ViT separates them only partly through colour; DINO's invariance
to its augmentations (colour jitter, grayscale, crops) has to pick up the
texture. The run is the first 420 steps of a 400-epoch schedule, so the
learning rate and teacher momentum are still near their working values.
"""

from __future__ import annotations

import numpy as np
import pytest

from dinokit.cli import main
from dinokit.eval.knn import knn_evaluate
from dinokit.models import VisionTransformer, load_model
from dinokit.train import DinoTrainer, read_metrics

from .test_train_data import make_texture_folder

CONFIG = dict(
    arch="vit_tiny", patch_size=8, embed_dim=48, depth=3, num_heads=3, img_size=32,
    out_dim=128, head_hidden_dim=128, head_bottleneck_dim=32, batch_size=32,
    global_size=32, local_size=16, local_crops_number=2, epochs=400,
    lr=0.01, warmup_epochs=2, momentum_teacher=0.99, teacher_temp=0.02, warmup_teacher_temp=0.02,
    warmup_teacher_temp_epochs=0, drop_path_rate=0.0, num_workers=0, log_every=1, seed=0,
)
STEPS = 420  # 70 epochs of 6 steps (192 images, batch 32)


@pytest.mark.slow
def test_dino_learns_texture_classes(tmp_path, one_thread):
    train = make_texture_folder(tmp_path / "train", per_class=48, seed=0)
    test = make_texture_folder(tmp_path / "test", per_class=20, seed=1)
    run = tmp_path / "run"
    trainer = DinoTrainer(train, run, progress=False, **CONFIG).fit(stop_at_step=STEPS)
    assert trainer.step_ == STEPS and trainer.interrupted_ is None

    losses = np.array([r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["type"] == "step"])
    assert len(losses) == STEPS and np.isfinite(losses).all()
    first, last = losses[:30].mean(), losses[-30:].mean()
    assert last < 0.85 * first, f"loss did not go down: first 30 steps {first:.3f}, last 30 steps {last:.3f}"

    random_init = VisionTransformer(trainer.backbone_.cfg)
    random_init.init_weights(CONFIG["seed"])
    random_init.eval()
    before = knn_evaluate(train, test, random_init, k=20, image_size=32, progress=False).top1[20]
    after = knn_evaluate(train, test, trainer.backbone_, k=20, image_size=32, progress=False).top1[20]
    # chance is 25 %; random features get part of the way through colour alone
    assert after >= 80.0, f"k-NN top-1 {after:.1f}% after training"
    assert after >= before + 8.0, f"k-NN top-1 {before:.1f}% -> {after:.1f}%: no better than random features"

    # the exported teacher backbone is a normal dinokit model
    weights = run / "teacher_backbone.safetensors"
    model = load_model(weights=weights)
    after_file = knn_evaluate(train, test, model, k=20, image_size=32, progress=False).top1[20]
    assert after_file == after
    out = tmp_path / "desc"
    image = next((test / "class0").iterdir())
    rc = main(["extract", str(image), "-o", str(out), "--weights", str(weights), "--load-size", "32",
               "--facet", "key", "--layer", "-1", "--device", "cpu", "-q"])
    assert rc == 0
    files = list(out.rglob("*.safetensors"))
    assert len(files) == 1
    from safetensors.torch import load_file

    tensors = load_file(str(files[0]))
    assert any(t.ndim >= 2 and t.shape[-1] == 48 for t in tensors.values())  # 48-dim keys of the trained model
