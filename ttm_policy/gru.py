"""A GRU core: the step's N tokens flattened, a GRU, one output token (a lighter BC-RNN).

Dimensions: B batch, T time steps, N input tokens per step, D width, L layers, Hd hidden.

It has the interface every temporal core has (see `ttm_policy.cores`): `init_memory`,
`reset_memory`, `step`, sequence `forward(tokens, memory, reset, bptt)`, `out_tokens`, and
`STATE` (state name -> axes) that export and the runtime read. Its state is one tensor
`gru_h` (B, L, Hd), batch-first like every core's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ttm_policy.baselines import LSTMConfig
from ttm_policy.state import unroll, where_reset


@dataclass
class GRUConfig(LSTMConfig):
    """The LSTM's settings (dim, input_tokens, hidden, layers) with a lighter default."""

    hidden: int = 256
    layers: int = 1

    def __post_init__(self) -> None:
        for name in ("dim", "input_tokens", "hidden", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"GRUConfig.{name}={getattr(self, name)}: must be >= 1")


class GRUCore(nn.Module):
    STATE = {"gru_h": "B, L, Hd"}

    def __init__(self, cfg: GRUConfig):
        super().__init__()
        self.cfg = cfg
        self.out_tokens = 1
        self.inp = nn.Linear(cfg.input_tokens * cfg.dim, cfg.hidden)
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, cfg.layers, batch_first=True)
        self.out = nn.Linear(cfg.hidden, cfg.dim)

    def init_memory(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        w = self.inp.weight
        shape = (batch_size, self.cfg.layers, self.cfg.hidden)
        return torch.zeros(shape, device=device or w.device, dtype=dtype or w.dtype)

    def reset_memory(self, state: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Samples where mask (B,) is True start a new episode."""
        return where_reset(mask, self.init_memory(mask.shape[0], state.device, state.dtype), state)

    def _run(self, tokens: torch.Tensor, h: torch.Tensor):  # tokens (B, T, N, D), h (B, L, Hd)
        x = self.inp(tokens.flatten(2))  # (B, T, Hd)
        # Outside autocast, in the parameters' dtype: the recurrent state must not be rounded
        # to bf16/fp16 at every step (see LSTMCore).
        dtype = self.gru.weight_ih_l0.dtype
        with torch.autocast(tokens.device.type, enabled=False):
            y, h = self.gru(x.to(dtype), h.transpose(0, 1).to(dtype).contiguous())  # (B, T, Hd)
        return self.out(y).unsqueeze(2), h.transpose(0, 1)  # (B, T, 1, D), (B, L, Hd)

    def _check(self, tokens: torch.Tensor, state: torch.Tensor, seq: bool) -> None:
        n, d = self.cfg.input_tokens, self.cfg.dim
        if tokens.ndim != (4 if seq else 3) or tuple(tokens.shape[-2:]) != (n, d):
            want = f"(B, T, {n}, {d})" if seq else f"(B, {n}, {d})"
            raise ValueError(f"tokens must have shape {want}, got {tuple(tokens.shape)}")
        want = (tokens.shape[0], self.cfg.layers, self.cfg.hidden)
        if tuple(state.shape) != want:
            raise ValueError(
                f"GRU state must have shape {want} (B, L, Hd), got {tuple(state.shape)}"
            )

    def step(self, tokens: torch.Tensor, state: torch.Tensor):
        """tokens (B, N, D), state (B, L, Hd) -> out (B, 1, D), state."""
        self._check(tokens, state, seq=False)
        out, state = self._run(tokens.unsqueeze(1), state)
        return out[:, 0], state

    def forward(self, tokens, memory=None, reset=None, bptt=None):
        """tokens (B, T, N, D) -> outs (B, T, 1, D), state. reset (B, T) bool: start a new
        episode before that step; bptt: cut gradients every `bptt` steps."""
        B, T = tokens.shape[:2]
        state = self.init_memory(B, tokens.device) if memory is None else memory
        self._check(tokens, state, seq=True)
        if reset is None and not bptt:
            return self._run(tokens, state)  # one call over the whole sequence
        return unroll(self.step, tokens, state, self.reset_memory, reset, bptt)
