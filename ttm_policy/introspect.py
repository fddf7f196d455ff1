"""Look inside a TTM's memory: what is read and written when, and how long it survives.

Dimensions: B batch, T time, N input tokens, M memory tokens, R read tokens.

With a weighted-sum write (`tl`, `tl-mha`, `linear`, `pool`-free), each new memory slot is a
convex combination of [old memory ‖ outputs ‖ inputs]. Its weights on the old memory form a
transfer matrix A_t (B, M, M); the product A_{t+k} ... A_{t+1} says how much of the memory
at step t is still in memory k steps later through the direct write path. At initialisation
the softmax spreads each slot over all M+R+N tokens, so a written token fades geometrically,
roughly by M / (M+R+N) per step; training has to learn to keep it. At the `cpu` recipe's
budget it does not (docs/results.md, "the write averages the slots"): each slot ends up with
~1/M of its weight on itself and the memory is one blurred average. `TTMConfig.
write_self_bias` starts the write copying each slot (it holds them, and measured on
SequenceCue does not help); `TTMConfig.write_gate` decides per slot what to keep (it does).
"""

from __future__ import annotations

import torch

from ttm_policy.ttm import TokenTuringMachine


@torch.no_grad()
def trace(ttm: TokenTuringMachine, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run a sequence (B, T, N, D) and record per step: read weights (B, T, R, M+N), write
    weights (B, T, M, M+R+N) and memory token norms (B, T, M) after the write."""
    B, T = tokens.shape[:2]
    memory = ttm.init_memory(B, tokens.device, tokens.dtype)
    reads, writes, norms = [], [], []
    for t in range(T):
        _, memory, w = ttm.step_with_weights(tokens[:, t], memory)
        reads.append(w["read"])
        writes.append(w["write"])
        norms.append(memory.norm(dim=-1))  # (B, M)
    out = {"memory_norm": torch.stack(norms, 1)}
    if reads[0] is not None:
        out["read"] = torch.stack(reads, 1)
    if writes[0] is not None:
        out["write"] = torch.stack(writes, 1)
    return out


@torch.no_grad()
def token_retention(
    ttm: TokenTuringMachine, tokens: torch.Tensor, step: int = 0, token: int = 0
) -> torch.Tensor:
    """How much of input `token` at `step` remains in memory at each later step, through the
    direct write path, relative to the amount first written: (T - step,), starting at 1.

    Needs a weighted-sum write (`tl`, `tl-mha`, `linear`); raises ValueError otherwise.
    """
    if ttm.cfg.memoryless or ttm.cfg.summariser in ("add-erase", "pool"):
        raise ValueError(
            f"token_retention needs a weighted-sum write; summariser={ttm.cfg.summariser!r}, "
            f"memoryless={ttm.cfg.memoryless}"
        )
    M, R = ttm.cfg.memory_tokens, ttm.cfg.read_tokens
    w = trace(ttm, tokens)["write"]  # (B, T, M, M+R+N)
    mass = w[:, step, :, M + R + token]  # (B, M): each slot's share of the token
    first = mass.sum(-1)  # (B,)
    curve = [torch.ones_like(first)]
    for t in range(step + 1, tokens.shape[1]):
        mass = torch.einsum("bij,bj->bi", w[:, t, :, :M], mass)  # carried by the old-memory weights
        curve.append(mass.sum(-1) / first)
    return torch.stack(curve, 1).mean(0)  # (T - step,)


@torch.no_grad()
def token_influence(
    ttm: TokenTuringMachine, tokens: torch.Tensor, step: int = 0, token: int = 0, eps: float = 1e-3
) -> torch.Tensor:
    """How strongly memory k steps later still depends on input `token` at `step`, through
    every path (copied slot to slot, or read, processed and written back): the change of the
    memory when that token is nudged by `eps`, relative to the change right after it was
    written. (T - step,), starting at 1. Works for every summariser.
    """
    if ttm.cfg.memoryless:
        raise ValueError("token_influence: a memory-less TTM has no memory to measure")
    delta = torch.randn_like(tokens[:, step, token])  # (B, D)
    nudged = tokens.clone()
    nudged[:, step, token] += eps * delta / delta.norm(dim=-1, keepdim=True)
    B, T = tokens.shape[:2]
    m1 = ttm.init_memory(B, tokens.device, tokens.dtype)
    m2 = m1.clone()
    change = []
    for t in range(T):
        _, m1 = ttm.step(tokens[:, t], m1)
        _, m2 = ttm.step(nudged[:, t], m2)
        if t >= step:
            change.append((m2 - m1).flatten(1).norm(dim=1))  # (B,)
    change = torch.stack(change, 1)  # (B, T - step)
    return (change / change[:, :1].clamp_min(1e-12)).mean(0)
