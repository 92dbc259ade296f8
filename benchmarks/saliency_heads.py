"""How well each attention head's CLS attention separates the foreground (issue 7: saliency heads).

For every image of the co-segmentation sets with ground-truth masks (iCoseg
groups and MSRC cows of the shared data, or any ``<set>/images`` +
``<set>/masks`` folders) the script takes the CLS token's attention to the
patches in one block (registers taken out of the softmax, as dinokit's
saliency does) and measures, per head, the ROC-AUC of that map against the
patch labels (a patch is foreground when at least half of its pixels are).
AUC 0.5 is chance, 1 a perfect separation, below 0.5 a head that prefers the
background. Rows: each head alone, all heads averaged (dinokit's default for
models without a documented subset), the model's documented default when it
has one, and a greedy forward selection of heads (add the head that raises
the mean AUC most, stop when none does). The greedy subset is fitted on the
same images it is scored on: read it as a hint to check on other data, not as
a result.

    python benchmarks/saliency_heads.py --weights ../shared/golden/dino_vit_tiny16_shared_data_pretrain.pth
    python benchmarks/saliency_heads.py --model dinov2_vits14_reg --load-size 448 --stride 7
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import dinokit  # noqa: F401  (before torch: dinokit's allocator setting)
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import rankdata

from dinokit.features import Extractor
from dinokit.features.image import list_images
from dinokit.features.saliency import cls_patch_attention
from dinokit.models import load_model

ROOT = Path(__file__).resolve().parents[1]

DATA = Path(os.environ.get("DINOKIT_SHARED", ROOT.parent / "shared")) / "data"


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC-AUC (Mann-Whitney U with average ranks for ties); NaN when one class is empty."""
    pos = int(label.sum())
    neg = label.size - pos
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def find_sets(root: Path) -> dict[str, list[tuple[Path, Path]]]:
    """``name -> [(image, mask)]`` for every folder under ``root`` with ``images/`` and ``masks/``."""
    sets: dict[str, list[tuple[Path, Path]]] = {}
    for images in sorted(root.rglob("images")):
        masks = images.parent / "masks"
        if not masks.is_dir():
            continue
        by_stem = {p.stem: p for p in masks.iterdir()}
        pairs = [(p, by_stem[p.stem]) for p in list_images([images]) if p.stem in by_stem]
        if pairs:
            sets[images.parent.name if images.parent.name not in sets else str(images.parent.relative_to(root))] = pairs
    return sets


@torch.no_grad()
def head_maps(ex: Extractor, image: Path, mask: Path, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """``(heads, T)`` CLS attention to the patches and the ``(T,)`` boolean patch labels of one image."""
    img = ex.load(image)
    res = ex.model.run(img.tensor[None].to(ex.device, ex.dtype), {layer: ("cls_attn",)}, ex.stride)
    attn = cls_patch_attention(res.taps[max(res.taps)]["cls_attn"][0].float(), res.num_prefix_tokens).cpu()
    h, w = img.size
    gt = np.asarray(Image.open(mask).convert("L").resize((w, h), Image.NEAREST)) > 0
    frac = F.avg_pool2d(torch.from_numpy(gt).float()[None, None], ex.patch_size, ex.stride)[0, 0]
    if tuple(frac.shape) != tuple(res.grid):  # pragma: no cover - guards the grid rule
        raise RuntimeError(f"{image}: label grid {tuple(frac.shape)} vs patch grid {res.grid}")
    return attn.numpy(), (frac.reshape(-1) >= 0.5).numpy()


def score(maps, labels, heads) -> float:
    return float(np.nanmean([auc(m[list(heads)].mean(0), lab) for m, lab in zip(maps, labels)]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="named model (weights downloaded once, as everywhere in dinokit)")
    ap.add_argument("--weights", default=None, help="weights file or Hugging Face folder")
    ap.add_argument("--num-heads", type=int, default=None)
    ap.add_argument("--data", type=Path, default=DATA, help=f"folder searched for <set>/images + masks (default {DATA})")
    ap.add_argument("--load-size", type=int, default=224)
    ap.add_argument("--stride", default=None, help="patch stride (default: the patch size)")
    ap.add_argument("--layer", type=int, default=-1, help="block whose CLS attention is scored (default last)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.model is None and args.weights is None:
        ap.error("give --model NAME or --weights FILE")
    net = load_model(args.model, args.weights, num_heads=args.num_heads)
    stride = int(args.stride) if args.stride not in (None, "auto") else args.stride
    ex = Extractor(net, stride=stride, load_size=args.load_size, device=args.device)
    sets = find_sets(args.data)
    if not sets:
        ap.error(f"no <set>/images + <set>/masks folders under {args.data}")
    per_set: dict[str, tuple[list, list]] = {}
    for name, pairs in sets.items():
        maps, labels = zip(*(head_maps(ex, i, m, args.layer) for i, m in pairs))
        per_set[name] = (list(maps), list(labels))
    n = ex.num_heads
    rows: list[tuple[str, tuple[int, ...]]] = [(f"head {h}", (h,)) for h in range(n)]
    rows.append(("all heads", tuple(range(n))))
    default = ex.default_saliency_heads()
    if default is not None:
        rows.append((f"default {','.join(map(str, default))}", tuple(default)))
    all_maps = [m for ms, _ in per_set.values() for m in ms]
    all_labels = [lab for _, ls in per_set.values() for lab in ls]
    chosen: list[int] = []
    best = -1.0
    while len(chosen) < n:
        cand = max((h for h in range(n) if h not in chosen), key=lambda h: score(all_maps, all_labels, chosen + [h]))
        value = score(all_maps, all_labels, chosen + [cand])
        if value <= best:
            break
        chosen.append(cand)
        best = value
    rows.append((f"greedy {','.join(map(str, sorted(chosen)))}", tuple(sorted(chosen))))
    print(f"model {getattr(net, 'source', '?')}: {n} heads, layer {args.layer}, load size {args.load_size}, "
          f"stride {ex.stride}, {len(all_maps)} images")
    print("mean ROC-AUC of the CLS-attention map against the ground-truth foreground patches (0.5 = chance)\n")
    names = list(per_set)
    width = max(len(r[0]) for r in rows)
    print(" " * width + "  " + "  ".join(f"{s[:10]:>10}" for s in names) + "  " + f"{'mean':>6}")
    for label, heads in rows:
        vals = [score(*per_set[s], heads) for s in names]
        print(f"{label:<{width}}  " + "  ".join(f"{v:10.3f}" for v in vals) + f"  {np.mean(vals):6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
