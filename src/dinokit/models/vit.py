"""The Vision Transformer backbone in the layout of the official DINO, DINOv2 and DINOv3 checkpoints.

Parameter names match ``facebookresearch/dino`` (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``) and, with registers / layer scale / SwiGLU enabled, DINOv2, so the
official files load with strict key checking. With ``cfg.pos == "rope"`` the
same class is DINOv3 (``storage_tokens``, ``rope_embed.periods``,
``attn.qkv.bias_mask``, ``mlp.w1/w2/w3``, ``local_cls_norm``; no ``pos_embed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Optional

import torch
from torch import Tensor, nn

from .config import ArchConfig
from .layers import TAP_NAMES, Block, PatchEmbed, RopeEmbedding, interpolate_pos_embed, trunc_normal_

if TYPE_CHECKING:  # the registry is only needed for the annotation
    from .registry import ModelSpec


@dataclass
class ForwardResult:
    """What one tapped forward pass returns.

    ``taps[layer][name]``: ``query``/``key``/``value`` are ``(B, heads, N, head_dim)``,
    ``token`` is ``(B, N, D)``, ``attn`` is ``(B, heads, N, N)`` and ``cls_attn``
    ``(B, heads, N)``, where ``N`` counts the prefix tokens (CLS, registers)
    followed by the ``grid[0] * grid[1]`` patch tokens in row-major order.
    """

    taps: dict[int, dict[str, Tensor]]
    grid: tuple[int, int]
    num_prefix_tokens: int
    output: Optional[Tensor] = None


class VisionTransformer(nn.Module):
    """ViT backbone whose patch stride can be changed per call (overlapping patches).

    Built with DINO's random initialisation (reproducible with ``seed``); on
    the meta device nothing is initialised, for loading weights. ``spec`` is
    the named model it was loaded as (``None`` for a bare file) and
    ``source`` where its weights came from (``"random"``, a path, a URL).
    """

    spec: Optional["ModelSpec"] = None
    source: str = ""

    def __init__(self, cfg: ArchConfig, drop_path_rate: float = 0.0, seed: Optional[int] = None) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.embed_dim = d
        self.num_heads = cfg.num_heads
        self.num_prefix_tokens = cfg.num_prefix_tokens
        self.patch_embed = PatchEmbed(cfg.patch_size, 3, d)
        grid = cfg.img_size // cfg.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        rope = cfg.pos == "rope"
        if rope:
            self.rope_embed = RopeEmbedding(cfg.head_dim, cfg.rope_base)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, d))
        if cfg.num_register_tokens:  # DINOv3 calls its register tokens storage tokens
            extra = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, d))
            setattr(self, "storage_tokens" if rope else "register_tokens", extra)
        if cfg.mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, d))
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, cfg.depth, device="cpu")]
        self.blocks = nn.ModuleList(
            Block(
                d,
                cfg.num_heads,
                cfg.mlp_ratio,
                cfg.qkv_bias,
                cfg.layernorm_eps,
                layerscale=cfg.layerscale,
                ffn=cfg.ffn,
                drop_path=dpr[i],
                mask_k_bias=cfg.mask_k_bias,
                ffn_hidden=cfg.ffn_hidden,
            )
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(d, eps=cfg.layernorm_eps)
        if cfg.local_cls_norm:  # present in some DINOv3 checkpoints, used by their training only
            self.local_cls_norm = nn.LayerNorm(d, eps=cfg.layernorm_eps)
        self.head = nn.Identity()
        self.init_weights(seed)

    def set_origin(self, spec: Optional["ModelSpec"], source: str) -> "VisionTransformer":
        """Record the named model and the weights' origin (shown by ``inspect`` and the CLI)."""
        self.spec = spec
        self.source = source
        return self

    def init_weights(self, seed: Optional[int] = None) -> None:
        """Random initialisation as in DINO (truncated normal, std 0.02); skipped on the meta device."""
        if self.cls_token.is_meta:
            return
        gen = torch.Generator().manual_seed(seed) if seed is not None else None

        def trunc(t: Tensor) -> None:
            trunc_normal_(t, 0.02, gen)

        if hasattr(self, "pos_embed"):
            trunc(self.pos_embed)
        trunc(self.cls_token)
        for name in ("register_tokens", "storage_tokens"):
            if hasattr(self, name):
                trunc(getattr(self, name))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                # DINO leaves the patch embedding at PyTorch's default Conv2d initialisation.
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
                if m.bias is not None:
                    bound = 1.0 / math.sqrt(m.weight[0].numel())
                    nn.init.uniform_(m.bias, -bound, bound, generator=gen)

    # --- token preparation -------------------------------------------------
    def grid_size(self, height: int, width: int, stride: Optional[int] = None) -> tuple[int, int]:
        """Number of patch rows and columns for an image of this size at ``stride``."""
        s = stride or self.patch_size
        p = self.patch_size
        return 1 + (height - p) // s, 1 + (width - p) // s

    def prepare_tokens(self, x: Tensor, stride: Optional[int] = None) -> tuple[Tensor, tuple[int, int]]:
        """Patch-embed ``x``, prepend CLS, add positional embedding, insert registers.

        For a RoPE model: ``[CLS, storage tokens, patches]``, no position added
        (positions enter every block's attention, see :meth:`rope`).
        """
        B, _, H, W = x.shape
        tokens, grid = self.patch_embed(x, stride)
        if self.cfg.pos == "rope":
            prefix = [self.cls_token.expand(B, -1, -1)]
            if hasattr(self, "storage_tokens"):
                prefix.append(self.storage_tokens.expand(B, -1, -1))
            return torch.cat([t.to(tokens.dtype) for t in prefix] + [tokens], dim=1), grid
        tokens = torch.cat((self.cls_token.expand(B, -1, -1).to(tokens.dtype), tokens), dim=1)
        cfg = self.cfg
        pos = interpolate_pos_embed(
            self.pos_embed, grid[0], grid[1], (H, W), cfg.pos_embed_mode, cfg.interpolate_offset, cfg.interpolate_antialias
        )
        tokens = tokens + pos.to(tokens.dtype)
        if hasattr(self, "register_tokens"):
            regs = self.register_tokens.expand(B, -1, -1).to(tokens.dtype)
            tokens = torch.cat((tokens[:, :1], regs, tokens[:, 1:]), dim=1)
        return tokens, grid

    def rope(self, image_hw: tuple[int, int], grid: tuple[int, int], stride: Optional[int] = None) -> Optional[tuple]:
        """``(cos, sin_signed, prefix)`` for the blocks of a RoPE model (``None`` for a table model).

        Overlapping patches get their true centres: see
        :class:`~dinokit.models.layers.RopeEmbedding` for the rule.
        """
        if self.cfg.pos != "rope":
            return None
        p = self.patch_size
        plain = self.grid_size(image_hw[0], image_hw[1], p)
        cos, sin = self.rope_embed(grid, plain, stride or p, p)
        return cos, sin, self.num_prefix_tokens

    # --- forward passes ------------------------------------------------------
    def run(
        self,
        x: Tensor,
        taps: Mapping[int, Iterable[str]],
        stride: Optional[int] = None,
        final_norm: bool = False,
    ) -> ForwardResult:
        """Forward pass that records the requested tensors of the requested blocks.

        Stops after the deepest requested block unless ``final_norm`` asks for
        the full pass (then ``output`` is the normalised token sequence).
        Layers may be negative (``-1`` is the last block).
        """
        want: dict[int, frozenset] = {}
        for layer, names in taps.items():
            idx = layer + len(self.blocks) if layer < 0 else layer
            if not 0 <= idx < len(self.blocks):
                raise ValueError(f"layer {layer} out of range for a {len(self.blocks)}-block model")
            names = frozenset(names)
            unknown = names - TAP_NAMES
            if unknown:
                raise ValueError(f"unknown facet(s) {sorted(unknown)}; choose from {sorted(TAP_NAMES)}")
            want[idx] = want.get(idx, frozenset()) | names
        last = len(self.blocks) - 1 if final_norm or not want else max(want)
        h, grid = self.prepare_tokens(x, stride)
        rope = self.rope(x.shape[-2:], grid, stride)
        out: dict[int, dict[str, Tensor]] = {}
        for i in range(last + 1):
            if i in want:
                out[i] = {}
                h = self.blocks[i](h, out[i], want[i], rope)
            else:
                h = self.blocks[i](h, rope=rope)
        result = ForwardResult(out, grid, self.num_prefix_tokens)
        if final_norm:
            result.output = self.norm(h)
        return result

    def forward(self, x: Tensor, stride: Optional[int] = None) -> Tensor:
        """CLS token after the final norm, as DINO's ``model(x)``."""
        return self.run(x, {}, stride, final_norm=True).output[:, 0]

    def get_last_selfattention(self, x: Tensor, stride: Optional[int] = None) -> Tensor:
        """Attention weights of the last block, ``(B, heads, N, N)``."""
        return self.run(x, {-1: ("attn",)}, stride).taps[len(self.blocks) - 1]["attn"]

    def get_intermediate_layers(self, x: Tensor, n: int = 1, stride: Optional[int] = None) -> list[Tensor]:
        """Normalised outputs of the last ``n`` blocks, as DINO's method of the same name."""
        depth = len(self.blocks)
        res = self.run(x, {i: ("token",) for i in range(depth - n, depth)}, stride)
        return [self.norm(res.taps[i]["token"]) for i in range(depth - n, depth)]
