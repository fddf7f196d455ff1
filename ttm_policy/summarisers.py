"""Token summarisers: turn S tokens into K tokens (the TTM's read and write).

Dimensions: B batch, S tokens in, K tokens out, D width, W write heads (add-erase).

Each summariser returns `(out, weights)`: `out` (B, K, D) and, where the summary is a
weighted sum of the input tokens, `weights` (B, K, S) whose rows sum to 1 (None otherwise).
The weights are what memory introspection draws: which tokens were read / written when.
"""

from __future__ import annotations

import torch
from torch import nn

from ttm_policy.processing import Attention


class TokenLearner(nn.Module):
    """TokenLearner v1.1 (Ryoo et al. 2021; scenic `TokenLearnerModuleV11`), `tl`.

    LayerNorm, an MLP with a small bottleneck gives K scores per token, softmax over the S
    tokens, each output token is the weighted sum of the (un-normalised) input tokens.
    """

    def __init__(self, *, dim: int, num_tokens: int, bottleneck: int = 64, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(  # bottleneck 64: the official default
            nn.Linear(dim, bottleneck),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(bottleneck, num_tokens),
        )

    def forward(
        self,
        x: torch.Tensor,
        values: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S, D) -> (B, K, D), weights (B, K, S). `values` (B, S, D): sum these instead
        of x (the scores still come from x); `bias` (K, S): added to the scores."""
        scores = self.mlp(self.norm(x)).transpose(1, 2)  # (B, K, S)
        if bias is not None:
            scores = scores + bias
        weights = scores.float().softmax(dim=-1).to(x.dtype)  # softmax over the S input tokens
        return weights @ (x if values is None else values), weights  # (B, K, D), (B, K, S)


class TokenLearnerMHA(nn.Module):
    """`tl-mha`: K learned queries attend over the S tokens (scenic `TokenLearnerMHA`)."""

    def __init__(self, *, dim: int, num_tokens: int, heads: int = 8):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)  # BERT-style init
        self.attn = Attention(dim=dim, heads=heads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The (K, D) queries are shared by the batch: broadcast, never expanded to a size B.
        return self.attn(self.queries, x, need_weights=True)  # (B, K, D), (B, K, S) head mean


class LinearSummariser(nn.Module):
    """`linear` ablation: a learned, input-independent mixing matrix over a fixed S."""

    def __init__(self, *, num_in: int, num_tokens: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_tokens, num_in))  # starts as a uniform average

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] != self.logits.shape[1]:
            raise ValueError(
                f"linear summariser expects {self.logits.shape[1]} tokens, got {x.shape[1]}"
            )
        weights = self.logits.softmax(-1).to(x.dtype)  # (K, S), broadcast over the batch
        return weights @ x, weights.expand(x.shape[0], -1, -1)  # (B, K, D), (B, K, S)


class PoolSummariser(nn.Module):
    """`pool` ablation: parameter-free average pooling of the S tokens into K groups.

    `F.adaptive_avg_pool1d`'s groups (output k averages tokens floor(kS/K) to
    ceil((k+1)S/K) - 1), written as a (K, S) averaging matrix: ONNX has no adaptive pooling
    where K does not divide S. Weights None: pooling is no learned read/write to draw.
    """

    def __init__(self, *, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        S, K = x.shape[1], self.num_tokens
        k = torch.arange(K, device=x.device)[:, None]  # (K, 1)
        s = torch.arange(S, device=x.device)  # (S,)
        group = (s >= k * S // K) & (s < ((k + 1) * S + K - 1) // K)  # (K, S)
        pool = group / group.sum(-1, keepdim=True)  # (K, S), rows sum to 1
        return pool.to(x.dtype) @ x, None  # (B, K, D)


class AddEraseWrite(nn.Module):
    """`add-erase`: NTM-style write (scenic `TokenAddEraseWrite`).

    W write heads each pick memory slots (softmax over M from the memory itself) and carry an
    erase vector e and an add vector a derived from the control tokens (the processing
    unit's outputs): memory <- memory * prod_w(1 - s_w e_w) + sum_w s_w a_w.

    Departures from the official module, both deliberate: (1) the add term is
    `sum_w s_w a_w` as in the Neural Turing Machine; the official code adds
    `mean_w(1 - s_w a_w)`, which adds a constant 1 to every slot each step and lets memory
    grow without bound. (2) The W erase/add tokens come from a TokenLearner over the control
    tokens instead of an MLP over the token axis, so any number of control tokens works.
    The erase vector goes through a sigmoid so it stays in [0, 1] as in the NTM.
    """

    def __init__(self, *, dim: int, heads: int = 8, bottleneck: int = 64):
        super().__init__()
        self.select = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, bottleneck), nn.GELU(), nn.Linear(bottleneck, heads)
        )
        self.erase_tokens = TokenLearner(dim=dim, num_tokens=heads, bottleneck=bottleneck)
        self.add_tokens = TokenLearner(dim=dim, num_tokens=heads, bottleneck=bottleneck)
        self.erase = nn.Sequential(
            nn.Linear(dim, bottleneck), nn.GELU(), nn.Linear(bottleneck, dim)
        )
        self.add = nn.Sequential(nn.Linear(dim, bottleneck), nn.GELU(), nn.Linear(bottleneck, dim))

    def forward(
        self, memory: torch.Tensor, control: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        select = (
            self.select(memory).transpose(1, 2).float().softmax(-1).to(memory.dtype)
        )  # (B, W, M)
        e = torch.sigmoid(self.erase(self.erase_tokens(control)[0]))  # (B, W, D)
        a = self.add(self.add_tokens(control)[0])  # (B, W, D)
        keep = (1 - select.unsqueeze(-1) * e.unsqueeze(2)).prod(dim=1)  # (B, M, D)
        added = torch.einsum("bwm,bwd->bmd", select, a)  # (B, M, D)
        return memory * keep + added, select


class GatedWrite(nn.Module):
    """`write_gate`: memory' = g * memory + (1 - g) * summary, g = sigmoid(W [memory ‖ summary] + b)
    per slot and channel (a GRU-style update gate; not in the paper or the official module).

    The summariser's write is a convex mix of memory, outputs and inputs, rebuilt every step,
    so a fact seen once fades unless the write copies it exactly at every step. The gate
    keeps a slot's channels where g is near 1; b starts at `bias` (g ~ 0.88 for 2) so the
    memory holds by default and learns what to overwrite.
    """

    def __init__(self, *, dim: int, bias: float = 2.0):
        super().__init__()
        self.norm = nn.LayerNorm(2 * dim)
        self.gate = nn.Linear(2 * dim, dim)
        nn.init.constant_(self.gate.bias, bias)

    def forward(self, memory: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
        return self.mix(memory, summary)[0]

    def mix(self, memory: torch.Tensor, summary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory', g): the gated memory and the gate, (B, M, D) each (g = 1 keeps the old)."""
        g = torch.sigmoid(self.gate(self.norm(torch.cat([memory, summary], dim=-1))))  # (B, M, D)
        return g * memory + (1 - g) * summary, g
