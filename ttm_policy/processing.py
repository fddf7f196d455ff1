"""Processing units: what the TTM does with the R tokens it read (paper §3.2).

Dimensions: B batch, R tokens, D width. Every unit maps (B, R, D) -> (B, R, D) and ends
with a LayerNorm, as the official module's encoders do.
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(dim: int, hidden: int, dropout: float = 0.0, out: int | None = None) -> nn.Sequential:
    """Two-layer GELU MLP (ViT `MlpBlock`)."""
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out or dim)
    )


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(LN(x)); x + mlp(LN(x))."""

    def __init__(self, *, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp(dim, mlp_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
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
