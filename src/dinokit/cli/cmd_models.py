"""``dinokit models``: the named models, their sources and whether they are cached."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the named models and whether their weights are cached",
                       description="The named models (use them with --model NAME): architecture, the attention heads "
                                   "averaged for saliency, whether the weights are in the local cache, and where "
                                   "they come from. Weights are downloaded once, on first use.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models import DEFAULT_MODEL, cache_dir, cached_file, list_models

    rows = [("name", "arch", "saliency heads", "cached", "source")]
    for spec in list_models():
        a = spec.arch
        arch = f"ViT d{a.embed_dim} L{a.depth} H{a.num_heads} /{a.patch_size}" + (f" +{a.num_register_tokens}reg" if a.num_register_tokens else "")
        path = cached_file(spec)
        name = spec.name + (" (default)" if spec.name == DEFAULT_MODEL else "")
        heads = ",".join(str(h) for h in spec.saliency_heads) if spec.saliency_heads is not None else "all"
        rows.append((name, arch, heads, "yes" if path is not None and path.is_file() else "no",
                     spec.url or (f"request at {spec.request_url} (file {spec.filename})" if spec.request_url else "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    print(f"\nWeights are downloaded once into {cache_dir()}. Without network, pass a downloaded file with "
          "--weights FILE, or save it in that folder (the download error names the exact file). Gated weights "
          "(DINOv3, DINOv3 License) are never downloaded: request them where shown and save the file under "
          "the name shown in that folder, or pass it with --weights FILE.")
    return 0
