"""Building blocks of the Vision Transformer, with the official parameter names.

Each block can *tap* its intermediate tensors (query, key, value, attention,
block output) during the normal forward pass, so several layers and facets
come from one pass and nothing is computed twice.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Names a caller may request from a block.
TAP_NAMES = frozenset({"query", "key", "value", "token", "attn", "cls_attn"})


def trunc_normal_(t: Tensor, std: float = 0.02, generator: Optional[torch.Generator] = None) -> Tensor:
    """DINO's ``trunc_normal_(std=std)`` initialisation, in place, fast.

    DINO keeps the default bounds of +-2 in absolute terms (100 std at 0.02),
    so the truncation practically never acts: a clamped normal has the same
    distribution and is far faster than inverse-CDF sampling. The values are
    drawn on the CPU (from ``generator`` when given, for a reproducible
    seed) and copied to ``t``'s device.
    """
    with torch.no_grad():
        return t.copy_((torch.randn(t.shape, generator=generator) * std).clamp_(-2.0, 2.0))


class PatchEmbed(nn.Module):
    """Image to patch tokens with a convolution whose stride is chosen per call.

    A stride smaller than the patch size gives overlapping patches (the
    "stride trick" of Amir et al.) with the same weights.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor, stride: Optional[int] = None) -> tuple[Tensor, tuple[int, int]]:
        s = stride or self.patch_size
        x = F.conv2d(x, self.proj.weight, self.proj.bias, stride=s)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid


class LinearKMaskedBias(nn.Linear):
    """The fused ``qkv`` projection of DINOv3: its bias is multiplied by ``bias_mask`` (1, 0, 1 per third).

    The mask zeroes the key bias; it is a buffer of the official checkpoints
    (``attn.qkv.bias_mask``) and is applied as stored.
    """

    def __init__(self, dim_in: int, dim_out: int, bias: bool = True) -> None:
        super().__init__(dim_in, dim_out, bias=bias)
        if bias:
            mask = torch.ones(dim_out)
            mask[dim_out // 3: 2 * dim_out // 3] = 0.0
            self.register_buffer("bias_mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.bias_mask.to(self.bias.dtype) if self.bias is not None else None
        return F.linear(x, self.weight, bias)


def rope_apply(x: Tensor, cos: Tensor, sin_signed: Tensor, prefix: int) -> Tensor:
    """Rotate the patch tokens of ``x`` (``(..., N, head_dim)``), leaving the first ``prefix`` tokens alone.

    DINOv3's rotation ``x * cos + [-x2, x1] * sin``, written as ``x * cos +
    [x2, x1] * [-sin, sin]`` (``sin_signed``, see :class:`RopeEmbedding`),
    which is the same arithmetic bit for bit with one operation less;
    computed in float32 and cast back to ``x``'s dtype, as the release does.
    """
    patches = x[..., prefix:, :].float()
    half = patches.shape[-1] // 2
    rotated = patches * cos + torch.cat((patches[..., half:], patches[..., :half]), dim=-1) * sin_signed
    return torch.cat((x[..., :prefix, :], rotated.to(x.dtype)), dim=-2)


class Attention(nn.Module):
    """Multi-head self-attention (``qkv`` and ``proj`` linear layers).

    Uses fused scaled-dot-product attention unless the attention weights are
    requested; the CLS row alone (``cls_attn``) costs one extra row, never a
    tokens x tokens matrix. With ``rope=(cos, sin, prefix)`` the queries and
    keys of the patch tokens are rotated (DINOv3); the ``query``/``key`` taps
    are the projections *before* the rotation (content, not position), the
    ``attn``/``cls_attn`` taps what the rotated queries and keys give.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, mask_k_bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = LinearKMaskedBias(dim, dim * 3, qkv_bias) if mask_k_bias else nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, taps: Optional[dict] = None, want: frozenset = frozenset(), rope: Optional[tuple] = None
    ) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if taps is not None:
            for i, name in enumerate(("query", "key", "value")):
                if name in want:
                    taps[name] = qkv[i]
        if rope is not None:  # queries and keys rotated together, in one pass
            cos, sin_signed, prefix = rope
            q, k = rope_apply(qkv[:2], cos, sin_signed, prefix).unbind(0)
        if taps is not None and "cls_attn" in want:  # one row, in float32 even for a half-precision model
            taps["cls_attn"] = _cls_attention(q, k, self.scale)
        if taps is not None and "attn" in want:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            taps["attn"] = attn
            out = attn @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj(out)


def _cls_attention(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """The CLS row of the softmax attention, ``(B, heads, N)``, in float32.

    Computed image by image: a batched product of a single query row picks a
    kernel by the batch size, and the saliency of an image must not depend on
    which images share its batch (bit for bit, as the descriptors).
    """
    rows = [((qb[:, :1].float() * scale) @ kb.float().transpose(-2, -1)).softmax(dim=-1)[:, 0]
            for qb, kb in zip(q, k)]
    return torch.stack(rows)


class Mlp(nn.Module):
    """Two-layer feed-forward network (``fc1``, GELU, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """DINOv2's SwiGLU feed-forward (``w12``, ``w3``) used by ViT-g/14."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class SwiGLUSplit(nn.Module):
    """DINOv3's SwiGLU feed-forward with three layers: ``w3(silu(w1(x)) * w2(x))``.

    ``hidden`` is the size as the release rounds it (``int(dim * ratio * 2/3)``
    up to a multiple of 8, or of 64 for the 7B), stored in the config.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class LayerScale(nn.Module):
    """Per-channel residual scaling (``gamma``), as in DINOv2."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth per sample (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        eps: float = 1e-6,
        layerscale: bool = False,
        ffn: str = "mlp",
        drop_path: float = 0.0,
        mask_k_bias: bool = False,
        ffn_hidden: int = 0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, mask_k_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = ffn_hidden or int(dim * mlp_ratio)
        if ffn == "swiglu":
            self.mlp: nn.Module = SwiGLUFFN(dim, hidden)
        elif ffn == "swiglu_split":
            self.mlp = SwiGLUSplit(dim, hidden)
        else:
            self.mlp = Mlp(dim, hidden)
        if layerscale:
            self.ls1 = LayerScale(dim)
            self.ls2 = LayerScale(dim)
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: Tensor, taps: Optional[dict] = None, want: frozenset = frozenset(), rope: Optional[tuple] = None
    ) -> Tensor:
        y = self.attn(self.norm1(x), taps, want, rope)
        if hasattr(self, "ls1"):
            y = self.ls1(y)
        x = x + self.drop_path(y)
        y = self.mlp(self.norm2(x))
        if hasattr(self, "ls2"):
            y = self.ls2(y)
        x = x + self.drop_path(y)
        if taps is not None and "token" in want:
            taps["token"] = x
        return x


def release_periods(head_dim: int, base: float = 100.0) -> Tensor:
    """RoPE periods as DINOv3 trains them: ``base ** (2 i / (head_dim / 2))``, computed in bfloat16.

    The released checkpoints store these bfloat16-rounded values in
    ``rope_embed.periods``; a loaded checkpoint's buffer is always used as
    stored. Returned in float32, length ``head_dim // 4``.
    """
    exponents = 2 * torch.arange(head_dim // 4, dtype=torch.bfloat16) / (head_dim // 2)
    return (base**exponents).float()


class RopeEmbedding(nn.Module):
    """DINOv3's axial rotary position embedding, with the true patch centres at any stride.

    Each axis is normalised to [-1, 1] over the patch grid the plain model
    would see (``n = image // patch`` patches): a patch whose top-left corner
    is at ``i * stride`` pixels has its centre at ``i * stride / patch + 0.5``
    in units of the patch, and gets the coordinate ``2 * centre / n - 1``. At
    ``stride == patch`` this is the release's ``(i + 0.5) / n`` grid exactly; a
    smaller stride places the extra (overlapping) patches between them, so
    stride 8 describes the same image as stride 16, only more densely.
    Angles are ``2 pi * coordinate / period`` per axis (``periods`` is the
    checkpoint's buffer), computed in float32; cos and ``sin_signed`` (the
    sine with its first half negated, which folds the sign of the rotation
    into the table) are cached per grid, stride and device.
    """

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE needs a head size divisible by 4, got {head_dim}")
        self.register_buffer("periods", release_periods(head_dim, base))
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def forward(self, grid: tuple[int, int], plain_grid: tuple[int, int], stride: int, patch: int) -> tuple[Tensor, Tensor]:
        """``(cos, sin_signed)``, each ``(rows * cols, head_dim)`` float32, for a ``grid`` at ``stride``."""
        periods = self.periods
        key = (grid, plain_grid, stride, patch, periods.device, periods.data_ptr(), periods._version)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        axes = [
            2.0 * ((torch.arange(n, dtype=torch.float32, device=periods.device) * stride / patch + 0.5) / plain) - 1.0
            for n, plain in zip(grid, plain_grid)
        ]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).flatten(0, 1)  # (HW, 2)
        angles = 2 * math.pi * coords[:, :, None] / periods.float()[None, None, :]  # (HW, 2, head_dim / 4)
        angles = angles.flatten(1, 2).tile(2)  # (HW, head_dim)
        if len(self._cache) >= 16:
            self._cache.clear()
        sin = torch.sin(angles)
        half = sin.shape[-1] // 2
        self._cache[key] = (torch.cos(angles), torch.cat((-sin[:, :half], sin[:, half:]), dim=-1))
        return self._cache[key]


def interpolate_pos_embed(
    pos_embed: Tensor,
    rows: int,
    cols: int,
    image_hw: tuple[int, int],
    mode: str = "dino",
    offset: float = 0.1,
    antialias: bool = False,
) -> Tensor:
    """Resize a ``(1, 1 + M*M, D)`` positional embedding to a ``rows x cols`` grid.

    Bicubic with ``align_corners=False``; the table is returned unchanged when
    the grid has ``M*M`` patches and the image is square. With ``offset > 0``
    the resize uses the scale factors ``(rows + offset) / M`` and
    ``(cols + offset) / M`` (DINO and DINOv2 without registers, offset 0.1);
    with ``offset == 0`` it resizes to ``(rows, cols)`` exactly (DINOv2 with
    registers, together with ``antialias=True``). ``mode="dinov2"`` always
    interpolates in float32, as DINOv2 does; ``"dino"`` only for half types.
    """
    n = pos_embed.shape[1] - 1
    if rows * cols == n and image_hw[0] == image_hw[1]:
        return pos_embed
    m = int(math.sqrt(n))
    dim = pos_embed.shape[-1]
    dtype = pos_embed.dtype
    table = pos_embed.float() if (mode == "dinov2" or dtype in (torch.float16, torch.bfloat16)) else pos_embed
    cls_pe, patch_pe = table[:, :1], table[:, 1:]
    if offset > 0:
        resize: dict = dict(scale_factor=((rows + offset) / m, (cols + offset) / m), recompute_scale_factor=False)
    else:
        resize = dict(size=(rows, cols))
    patch_pe = F.interpolate(
        patch_pe.reshape(1, m, m, dim).permute(0, 3, 1, 2),
        mode="bicubic",
        align_corners=False,
        antialias=antialias,
        **resize,
    )
    if patch_pe.shape[-2:] != (rows, cols):  # pragma: no cover - guards the offset rule
        raise RuntimeError(f"positional embedding resized to {tuple(patch_pe.shape[-2:])}, expected {(rows, cols)}")
    patch_pe = patch_pe.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
    return torch.cat((cls_pe, patch_pe), dim=1).to(dtype)
