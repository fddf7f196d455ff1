"""Temporal baselines with the TTM's interface: `init_memory`, `step`, sequence `forward`.

Dimensions: B batch, T time steps, N input tokens per step, D width, L layers, H heads,
Dh head width, S cached tokens (keys/values of earlier steps).

State is explicit and batch-first, so the policy, the trainer and the exporter treat every
core alike: the LSTM's state is `(h, c)`, each (B, L, D); the causal Transformer's is its
KV cache `(k, v, valid, pos)`: k, v (B, L, H, S, Dh), valid (B, S) bool, pos (B,) the
step index (since the episode start) of the next step.

The exporter traces `step` as it is, so the code here never sizes a tensor by a Python int
B (a trace keeps it as a constant; reshapes use flatten/unflatten, new tensors take their
batch from a tensor) and uses only ops that ONNX has (no `cummax`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ttm_policy.processing import mlp
from ttm_policy.state import unroll, where_reset


def _check_tokens(tokens: torch.Tensor, n: int, d: int, seq: bool) -> None:
    want = f"(B, T, {n}, {d})" if seq else f"(B, {n}, {d})"
    if tokens.ndim != (4 if seq else 3) or tuple(tokens.shape[-2:]) != (n, d):
        raise ValueError(f"tokens must have shape {want}, got {tuple(tokens.shape)}")


# ----------------------------------------------------------------------------- LSTM


@dataclass
class LSTMConfig:
    dim: int = 128
    """D: token width in and out."""
    input_tokens: int = 8
    """N: tokens per step; they are flattened into one vector per step."""
    hidden: int = 400
    """LSTM width; robomimic BC-RNN uses 400."""
    layers: int = 2
    """LSTM depth; robomimic BC-RNN uses 2."""

    def to_dict(self) -> dict:
        return asdict(self)


class LSTMCore(nn.Module):
    """BC-RNN style: the step's N tokens flattened, a 2-layer LSTM, one output token."""

    STATE = {"lstm_h": "B, L, Hd", "lstm_c": "B, L, Hd"}  # name -> axes (ttm_policy.cores)

    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.out_tokens = 1
        self.inp = nn.Linear(cfg.input_tokens * cfg.dim, cfg.hidden)
        self.lstm = nn.LSTM(cfg.hidden, cfg.hidden, cfg.layers, batch_first=True)
        self.out = nn.Linear(cfg.hidden, cfg.dim)

    def init_memory(self, batch_size: int, device=None, dtype=None):
        w = self.inp.weight
        z = torch.zeros(
            batch_size,
            self.cfg.layers,
            self.cfg.hidden,
            device=device or w.device,
            dtype=dtype or w.dtype,
        )
        return (z, z.clone())

    def reset_memory(self, state, mask: torch.Tensor):
        """Samples where mask (B,) is True start a new episode."""
        return where_reset(
            mask, self.init_memory(mask.shape[0], state[0].device, state[0].dtype), state
        )

    def _check_state(self, state, batch: int) -> None:
        want = (batch, self.cfg.layers, self.cfg.hidden)
        for name, s in zip(("h", "c"), state):
            if tuple(s.shape) != want:
                raise ValueError(
                    f"LSTM state {name} must have shape {want} (B, L, hidden), got {tuple(s.shape)}"
                )

    def _run(self, tokens: torch.Tensor, state):  # tokens (B, T, N, D)
        x = self.inp(tokens.flatten(2))  # (B, T, hidden)
        # The recurrence runs outside autocast, in the parameters' dtype (float32): under CUDA
        # autocast cuDNN runs LSTMs in float16 whatever dtype autocast asks for (and nothing
        # scales the loss), on CPU bf16 autocast runs them in bf16; either rounds the state
        # at every step of the unroll. The input and output projections stay under autocast.
        dtype = self.lstm.weight_ih_l0.dtype
        with torch.autocast(tokens.device.type, enabled=False):
            h, c = (s.transpose(0, 1).to(dtype).contiguous() for s in state)  # (L, B, hidden)
            y, (h, c) = self.lstm(x.to(dtype), (h, c))  # (B, T, hidden)
        return self.out(y).unsqueeze(2), (h.transpose(0, 1), c.transpose(0, 1))  # (B, T, 1, D)

    def step(self, tokens: torch.Tensor, state):
        """tokens (B, N, D), state -> out (B, 1, D), state."""
        _check_tokens(tokens, self.cfg.input_tokens, self.cfg.dim, seq=False)
        self._check_state(state, tokens.shape[0])
        out, state = self._run(tokens.unsqueeze(1), state)
        return out[:, 0], state

    def forward(self, tokens, memory=None, reset=None, bptt=None):
        """tokens (B, T, N, D) -> outs (B, T, 1, D), state. reset/bptt as in the TTM."""
        _check_tokens(tokens, self.cfg.input_tokens, self.cfg.dim, seq=True)
        B, T = tokens.shape[:2]
        # The state takes the parameters' dtype, not that of autocast's lower-precision tokens.
        state = self.init_memory(B, tokens.device) if memory is None else memory
        self._check_state(state, B)
        if reset is None and not bptt:
            return self._run(tokens, state)  # one cuDNN/MKL call over the whole sequence
        return unroll(self.step, tokens, state, self.reset_memory, reset, bptt)


# ----------------------------------------------------------------------------- Transformer


@dataclass
class CausalTransformerConfig:
    dim: int = 128
    """D: token width in and out."""
    input_tokens: int = 8
    """N: tokens per step; each gets a learned slot embedding."""
    window: int | None = 6
    """K: steps attended (the current one included); RT-1 uses 6. None = the full history."""
    layers: int = 4
    """Depth, equal to the TTM's processing unit by default."""
    heads: int = 8
    """Attention heads."""
    mlp_dim: int = 512
    """MLP hidden width."""
    dropout: float = 0.0
    """Dropout in attention and MLPs."""

    def __post_init__(self):
        if self.window is not None and self.window < 1:
            raise ValueError(
                f"CausalTransformerConfig.window must be >= 1 or None, got {self.window}"
            )
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(
                f"dim={self.dim} / heads={self.heads} must give an even head width (RoPE)"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _per_token(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, T) per step -> (B, T*n), each step's value repeated for its n tokens."""
    return x[:, :, None].expand(-1, -1, n).flatten(1)


def rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotary embedding over time. x (B, H, S, Dh), pos (B, S) step indices."""
    half = x.shape[-1] // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device) / half)  # (Dh/2,)
    ang = pos.to(torch.float32)[:, None, :, None] * freqs  # (B, 1, S, Dh/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CachedBlock(nn.Module):
    """Pre-LN Transformer block whose attention also reads cached keys/values."""

    def __init__(self, cfg: CausalTransformerConfig):
        super().__init__()
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = mlp(cfg.dim, cfg.mlp_dim, cfg.dropout)
        self.dropout = cfg.dropout

    def forward(self, x, pos, ck, cv, allowed):
        """x (B, S', D) new tokens at step indices pos (B, S'); ck, cv (B, H, S, Dh) cached
        (already rotated); allowed (B, S', S+S') bool. Returns x, and k, v (B, H, S+S', Dh)."""
        qkv = self.qkv(self.norm1(x)).unflatten(-1, (3, self.heads, -1))  # (B, S', 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, S', Dh) each
        q, k = rope(q, pos), rope(k, pos)
        k, v = torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)  # (B, H, S+S', Dh)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed[:, None], dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, S', Dh)
        x = x + self.proj(att.transpose(1, 2).flatten(2))  # (B, S', D)
        return x + self.mlp(self.norm2(x)), k, v


def _tracing() -> bool:
    """Inside an export trace (shapes must not depend on data there)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


class CausalTransformerCore(nn.Module):
    """Causal Transformer over the last K steps' tokens (RT-1 style), or the whole history.

    Tokens within a step attend to each other; across steps attention is causal and limited
    to K steps (a sliding window, as Mistral's). Time enters through rotary embeddings of the
    step index, so the KV cache stays valid as it slides and any history length works.
    Streaming keeps a KV cache of the previous K-1 steps (fixed size; exportable); with
    `window=None` it keeps every past step and grows.
    """

    # name -> axes (ttm_policy.cores); S = (window-1)*N cached tokens, 0 for window 1 (`none`)
    STATE = {
        "kv_keys": "B, L, Hh, S, Dh",
        "kv_values": "B, L, Hh, S, Dh",
        "kv_valid": "B, S",
        "kv_pos": "B",
    }

    def __init__(self, cfg: CausalTransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.out_tokens = cfg.input_tokens
        self.slot = nn.Parameter(torch.randn(cfg.input_tokens, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList([CachedBlock(cfg) for _ in range(cfg.layers)])
        self.norm = nn.LayerNorm(cfg.dim)

    @property
    def cache_steps(self) -> int | None:
        return None if self.cfg.window is None else self.cfg.window - 1

    def init_memory(self, batch_size: int, device=None, dtype=None):
        cfg, w = self.cfg, self.slot
        device, dtype = device or w.device, dtype or w.dtype
        S = 0 if cfg.window is None else (cfg.window - 1) * cfg.input_tokens
        kv = torch.zeros(
            batch_size, cfg.layers, cfg.heads, S, cfg.dim // cfg.heads, device=device, dtype=dtype
        )
        valid = torch.zeros(batch_size, S, dtype=torch.bool, device=device)
        pos = torch.zeros(batch_size, dtype=torch.long, device=device)
        return (kv, kv.clone(), valid, pos)

    def reset_memory(self, state, mask: torch.Tensor):
        """Samples where mask (B,) is True start a new episode: their cache is invalidated
        (it keeps its shape, so this works for the growing full-history cache too)."""
        k, v, valid, pos = state
        return (k, v, valid & ~mask[:, None], torch.where(mask, torch.zeros_like(pos), pos))

    def step(self, tokens: torch.Tensor, state):
        """tokens (B, N, D), state -> out (B, N, D), state."""
        _check_tokens(tokens, self.cfg.input_tokens, self.cfg.dim, seq=False)
        out, state = self.forward(tokens.unsqueeze(1), state)
        return out[:, 0], state

    def forward(self, tokens, memory=None, reset=None, bptt=None):
        """tokens (B, T, N, D) -> outs (B, T, N, D), state. `bptt` has no meaning here (no
        recurrence) and is ignored."""
        cfg = self.cfg
        _check_tokens(tokens, cfg.input_tokens, cfg.dim, seq=True)
        B, T, N, D = tokens.shape
        dev = tokens.device
        # The cache takes the parameters' dtype, not that of autocast's lower-precision tokens.
        ck, cv, valid, pos0 = self.init_memory(B, dev) if memory is None else memory
        if ck.shape[0] != B or valid.shape != ck.shape[:1] + ck.shape[3:4]:
            raise ValueError(
                f"KV cache shapes {tuple(ck.shape)}, {tuple(valid.shape)} do not fit batch {B}"
            )
        S = ck.shape[3]
        if reset is None:
            reset = torch.zeros_like(pos0, dtype=torch.bool)[:, None].expand(-1, T)  # (B, T)
        reset = reset.to(dev)
        if tuple(reset.shape) != (B, T):
            raise ValueError(f"reset must have shape (B, T) = {(B, T)}, got {tuple(reset.shape)}")

        t = torch.arange(T, device=dev)
        seg = reset.long().cumsum(1)  # (B, T) episode index within the window; 0 = the cache's
        # Index of the last reset at or before each step (-1: none): a max over earlier steps
        # (cummax has no ONNX form).
        earlier = t[None, :] <= t[:, None]  # (T, T') step t' at or before step t
        last_reset = torch.where(reset[:, None, :] & earlier, t, -1).amax(-1)  # (B, T)
        step_pos = torch.where(
            seg == 0, pos0[:, None] + t, t - last_reset
        )  # (B, T) steps since episode start

        # Who may attend to whom: token i (step ti) to cached slot j (step sj < 0) or new token j.
        t_new = t[:, None].expand(-1, N).flatten()  # (T*N,)
        seg_new = _per_token(seg, N)  # (B, T*N)
        t_cache = torch.arange(S, device=dev) // N - S // N  # (S,) steps before the window, < 0
        t_all = torch.cat([t_cache, t_new])  # (S+T*N,)
        seg_all = torch.cat([torch.zeros_like(valid, dtype=torch.long), seg_new], dim=1)
        ok_all = torch.cat([valid, torch.ones_like(seg_new, dtype=torch.bool)], dim=1)
        dt = t_new[:, None] - t_all[None, :]  # (T*N, S+T*N)
        j = torch.arange(S + T * N, device=dev)
        itself = j[S:, None] == j  # (T*N, S+T*N): new token i is entry S+i
        in_window = (dt >= 0) if cfg.window is None else (dt >= 0) & (dt < cfg.window)
        same_episode = seg_new[:, :, None] == seg_all[:, None, :]  # (B, T*N, S+T*N)
        # A token always sees itself: never an empty row.
        allowed = (in_window & same_episode & ok_all[:, None, :]) | itself  # (B, T*N, S+T*N)

        x = (tokens + self.slot).flatten(1, 2)  # (B, T*N, D)
        pos = _per_token(step_pos, N)  # (B, T*N)
        ks, vs = [], []
        for layer, block in enumerate(self.blocks):
            x, k, v = block(x, pos, ck[:, layer], cv[:, layer], allowed)
            ks.append(k)
            vs.append(v)
        out = self.norm(x).unflatten(1, (T, N))  # (B, T, N, D)

        # New cache: everything still in the window after this step, from the last episode.
        # In the cache's dtype: under autocast the new keys/values come out of bf16 matmuls.
        k_all = torch.stack(ks, 1).to(ck.dtype)  # (B, L, H, S+T*N, Dh)
        v_all = torch.stack(vs, 1).to(cv.dtype)
        valid_all = ok_all & (seg_all == seg[:, -1:])
        if cfg.window is not None:  # the last (window-1)*N tokens
            keep = (cfg.window - 1) * cfg.input_tokens
            # Sliced from the end by a constant (not from a size), so a trace keeps the cache
            # size static.
            last = slice(-keep, None) if keep else slice(0, 0)
            k_all, v_all, valid_all = k_all[:, :, :, last], v_all[:, :, :, last], valid_all[:, last]
        elif not _tracing():
            # The full history: drop the oldest steps that no row can attend to any more
            # (earlier episodes, invalidated by a reset). Training streams episode after
            # episode through each batch row; without this the cache kept every one of them,
            # masked out, and a training step's cost grew with the run (0.06 s to 4.5 s a step
            # over 440 steps on SequenceCue). The outputs are the same: only masked keys go.
            live = valid_all.unflatten(1, (-1, N)).any(-1).any(0)  # (S'/N,) steps any row sees
            first = int((~live).int().cumprod(0).sum())  # leading steps nobody sees; one sync
            if first:
                k_all, v_all = k_all[:, :, :, first * N :], v_all[:, :, :, first * N :]
                valid_all = valid_all[:, first * N :]
        return out, (k_all, v_all, valid_all, step_pos[:, -1] + 1)
