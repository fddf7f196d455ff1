"""A synthetic "recall the cue" task for temporal cores, with no simulator.

A cue token (one of C fixed random vectors) appears at t = 0 among random distractor
tokens; every later step holds only distractors; the class of the cue must be named at
t = T-1. Only a core that carries information across T-1 steps can beat chance (1/C).
Used by the learning test and by `ttm-bench recall` (memory-initialisation measurement).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ttm_policy import TokenTuringMachine, TTMConfig


@dataclass
class RecallConfig:
    steps: int = 30
    """T: the answer is due T-1 steps after the cue."""
    tokens: int = 4
    """N: tokens per step (the cue replaces token 0 at t = 0)."""
    dim: int = 32
    """D: token width."""
    classes: int = 2
    """C: number of cues; chance accuracy is 1/C."""
    cue_scale: float = 2.0
    """Norm scale of the cue vectors relative to unit-variance distractors."""
    batch: int = 32
    """Training batch size."""
    lr: float = 3e-3
    """AdamW learning rate."""
    max_iters: int = 400
    """Training budget in optimiser steps."""
    target: float = 0.97
    """Stop early once held-out accuracy reaches this."""
    eval_every: int = 25
    """Evaluate on 512 fresh sequences every this many steps."""


def small_ttm(dim: int, **overrides) -> TokenTuringMachine:
    """The TTM the recall task uses: 16 memory tokens, R=8, one Transformer layer."""
    cfg = dict(dim=dim, memory_tokens=16, read_tokens=8, layers=1, heads=4, mlp_dim=2 * dim)
    return TokenTuringMachine(TTMConfig(**{**cfg, **overrides}))


def train_recall(core: nn.Module, cfg: RecallConfig, seed: int = 0) -> dict:
    """Train `core` plus a linear read-out on the recall task; returns accuracy and curve."""
    gen = torch.Generator().manual_seed(seed)
    cues = torch.randn(cfg.classes, cfg.dim, generator=gen) * cfg.cue_scale

    def batch(b: int):
        y = torch.randint(cfg.classes, (b,), generator=gen)
        x = torch.randn(b, cfg.steps, cfg.tokens, cfg.dim, generator=gen)  # (B, T, N, D)
        x[:, 0, 0] = cues[y]
        return x, y

    head = nn.Linear(cfg.dim, cfg.classes)
    params = [*core.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    curve, acc, t0, it = [], 0.0, time.perf_counter(), 0
    for it in range(1, cfg.max_iters + 1):
        x, y = batch(cfg.batch)
        logits = head(core(x)[0][:, -1].mean(1))  # answer read at t = T-1: (B, C)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if it % cfg.eval_every == 0:
            with torch.no_grad():
                x, y = batch(512)
                acc = (head(core(x)[0][:, -1].mean(1)).argmax(-1) == y).float().mean().item()
            curve.append({"iter": it, "loss": loss.item(), "accuracy": acc})
            if acc >= cfg.target:
                break
    return {"accuracy": acc, "iters": it, "seconds": time.perf_counter() - t0, "curve": curve}
