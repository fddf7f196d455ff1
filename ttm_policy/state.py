"""Helpers for the explicit recurrent state every temporal core passes around.

A state is a tensor (the TTM's memory, (B, M, D)) or a tuple of batch-first tensors (the
LSTM's `(h, c)`, the Transformer's KV cache). Keeping it explicit is what lets the policy
reset single envs, the trainer truncate gradients, and the exporter make it a graph input.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

State = torch.Tensor | tuple[torch.Tensor, ...]


def where_reset(mask: torch.Tensor, init: State, state: State) -> State:
    """Per sample: `init` where mask (B,) is True, else `state`."""
    if isinstance(state, torch.Tensor):
        return torch.where(mask.view(-1, *[1] * (state.dim() - 1)), init, state)
    return tuple(where_reset(mask, i, s) for i, s in zip(init, state))


def detach(state: State) -> State:
    """Cut gradients through the state (truncated BPTT)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)


def num_bytes(state: State) -> int:
    """Bytes the state holds: what a robot keeps between control steps."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    return sum(num_bytes(s) for s in state)


def flatten(state: State) -> torch.Tensor:
    """The state's floating-point tensors as one float32 vector (batch row 0 first): what the
    diagnostics compare between steps or between episodes. Integer parts (a KV cache's step
    counters) are left out."""
    parts = state if isinstance(state, tuple) else (state,)
    return torch.cat([s.float().flatten() for s in parts if s.is_floating_point()])


def unroll(
    step: Callable[[torch.Tensor, State], tuple[torch.Tensor, State]],
    tokens: torch.Tensor,
    state: State,
    reset_memory: Callable[[State, torch.Tensor], State],
    reset: torch.Tensor | None = None,
    bptt: int | None = None,
) -> tuple[torch.Tensor, State]:
    """The sequence form of a core, step by step: tokens (B, T, ...) -> (outs (B, T, ...),
    state), with `step(tokens[:, t], state) -> (out, state)`; the state is reset where
    reset (B, T) is True (an episode starts at that step) and gradients are cut every `bptt`
    steps (truncated back-propagation through time)."""
    outs = []
    for t in range(tokens.shape[1]):
        if reset is not None:
            state = reset_memory(state, reset[:, t])
        if bptt and t > 0 and t % bptt == 0:
            state = detach(state)
        out, state = step(tokens[:, t], state)
        outs.append(out)
    return torch.stack(outs, dim=1), state
