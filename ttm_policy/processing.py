"""Processing units: what the TTM does with the R tokens it read (paper §3.2).

Dimensions: B batch, R tokens, D width, H heads, Dh = D / H head width; for attention,
Lq query and Lk key tokens. Every unit maps (B, R, D) -> (B, R, D) and ends with a
LayerNorm, as the official module's encoders do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(dim: int, hidden: int, dropout: float = 0.0, out: int | None = None) -> nn.Sequential:
    """Two-layer GELU MLP (ViT `MlpBlock`)."""
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out or dim)
    )


class Attention(nn.Module):
    """Multi-head attention, batch first: `nn.MultiheadAttention`'s maths, parameters (names,
    shapes, init) and state-dict keys, with bias and without `bias_k` / `add_zero_attn`.

    Why not nn.MultiheadAttention itself: traced for export, its forward bakes the batch size
    into a reshape (`bsz * num_heads`) and its inference fast path is one fused op with no
    ONNX form. Here no reshape names the batch, so a traced graph keeps B dynamic.
    """

    def __init__(self, *, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"Attention dim={dim} must be divisible by heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))  # q, k, v stacked
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, *, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, Lq, D) queries, or (Lq, D) shared by every sample; context (B, Lk, D) keys and
        values (None: self-attention, context = x). -> out (B, Lq, D), and with `need_weights`
        the attention weights (B, Lq, Lk) averaged over heads (else None)."""
        W, b, D = self.in_proj_weight, self.in_proj_bias, self.out_proj.in_features
        if context is None:  # one projection for q, k and v
            q, k, v = F.linear(x, W, b).chunk(3, dim=-1)  # (B, L, D) each
        else:
            q = F.linear(x, W[:D], b[:D])  # (B, Lq, D) or (Lq, D)
            k, v = F.linear(context, W[D:], b[D:]).chunk(2, dim=-1)  # (B, Lk, D) each
        q, k, v = (y.unflatten(-1, (self.heads, -1)).transpose(-2, -3) for y in (q, k, v))
        # q (B, H, Lq, Dh) or (H, Lq, Dh); k, v (B, H, Lk, Dh)
        p = self.dropout if self.training else 0.0
        if need_weights:  # explicit softmax: the fused kernel does not return weights
            w = ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).softmax(-1)  # (B, H, Lq, Lk)
            att = F.dropout(w, p) @ v  # (B, H, Lq, Dh)
        else:
            w, att = None, F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        out = self.out_proj(att.transpose(-2, -3).flatten(-2))  # (B, Lq, D)
        return out, None if w is None else w.mean(-3)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(LN(x)); x + mlp(LN(x))."""

    def __init__(self, *, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim=dim, heads=heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp(dim, mlp_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h)[0]
        return x + self.mlp(self.norm2(x))


class TransformerUnit(nn.Module):
    """`transformer`: a small ViT encoder over the R read tokens."""

    def __init__(self, *, dim: int, layers: int, heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.Sequential(
            *[Block(dim=dim, heads=heads, mlp_dim=mlp_dim, dropout=dropout) for _ in range(layers)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(x))


class MixerBlock(nn.Module):
    """MLP-Mixer block: an MLP across tokens, then an MLP across channels."""

    def __init__(self, *, dim: int, tokens: int, token_mlp_dim: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = mlp(tokens, token_mlp_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = mlp(dim, mlp_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)  # mix over R
        return x + self.channel_mlp(self.norm2(x))


class MixerUnit(nn.Module):
    """`mixer`: MLP-Mixer blocks (token-mixing width 128, as the official module)."""

    def __init__(self, *, dim: int, tokens: int, layers: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.Sequential(
            *[
                MixerBlock(
                    dim=dim, tokens=tokens, token_mlp_dim=128, mlp_dim=mlp_dim, dropout=dropout
                )
                for _ in range(layers)
            ]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(x))


class MLPUnit(nn.Module):
    """`mlp`: per-token MLPs, no mixing across tokens.

    Departure: the official unit is `x = MLP(LN(x))` without a residual; we keep the residual
    (`x + MLP(LN(x))`) so stacked layers train like the other units.
    """

    def __init__(self, *, dim: int, layers: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Sequential(nn.LayerNorm(dim), mlp(dim, mlp_dim, dropout)) for _ in range(layers)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return self.norm(x)
