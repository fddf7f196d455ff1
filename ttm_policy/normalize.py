"""The training data's statistics, stored in the weights, and the maps they define.

- low-dim observations: per dimension, [min, max] -> [-1, 1] where max - min > RANGE_EPS; a
  dimension constant in the training data is only centred (x - min).
- actions: per dimension, [min, max] -> [-1, 1] where the range > RANGE_EPS; a constant
  dimension passes through unchanged.
(See `ttm_policy.policy` for why min/max rather than mean/std.)
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ttm_policy.config import PolicyConfig

RANGE_EPS = 1e-6  # a stats range at or below this counts as a constant dimension


class Range(nn.Module):
    """Per-dimension [min, max] <-> [-1, 1]; buffers `min`, `max` (Dl,) travel in the weights.

    Where max - min <= RANGE_EPS the dimension is constant in the data: `constant="centre"`
    maps it to x - min, `constant="identity"` passes it through.
    """

    def __init__(self, size: int, *, constant: Literal["centre", "identity"]):
        super().__init__()
        self.constant = constant
        self.register_buffer("min", torch.zeros(size))
        self.register_buffer("max", torch.ones(size))

    def set(self, lo, hi, name: str) -> None:
        lo = torch.as_tensor(np.asarray(lo, np.float32)).reshape(-1)
        hi = torch.as_tensor(np.asarray(hi, np.float32)).reshape(-1)
        n = self.min.numel()
        if lo.numel() != n or hi.numel() != n:
            raise ValueError(
                f"stats {name}/min and {name}/max must have shape ({n},), got "
                f"{tuple(lo.shape)} and {tuple(hi.shape)}"
            )
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()) or (hi < lo).any():
            raise ValueError(
                f"stats {name}: min {lo.tolist()} / max {hi.tolist()} not finite min <= max"
            )
        self.min.copy_(lo)
        self.max.copy_(hi)

    def _affine(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = self.max - self.min
        ok = rng > RANGE_EPS  # (Dl,)
        half = torch.where(ok, rng / 2, torch.ones_like(rng))
        mid = (self.max + self.min) / 2
        centre = torch.where(
            ok, mid, self.min if self.constant == "centre" else torch.zeros_like(mid)
        )
        return ok, centre, half

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        _, centre, half = self._affine()
        return (x - centre) / half

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        _, centre, half = self._affine()
        return y * half + centre


class Normalizer(nn.Module):
    """The training data's statistics: `obs.<key>.{min,max}` and `action.{min,max}` buffers."""

    def __init__(self, *, lowdim_dims: dict[str, int], action_dim: int):
        super().__init__()
        self.obs = nn.ModuleDict({k: Range(d, constant="centre") for k, d in lowdim_dims.items()})
        self.action = Range(action_dim, constant="identity")

    def load_stats(self, stats: dict[str, Any]) -> None:
        """From `compute_stats` names: `obs/<key>/min`, `obs/<key>/max`, `action/min`, ..."""
        for name, r in [*((f"obs/{k}", r) for k, r in self.obs.items()), ("action", self.action)]:
            missing = [f"{name}/{s}" for s in ("min", "max") if f"{name}/{s}" not in stats]
            if missing:
                raise KeyError(
                    f"normalisation stats lack {missing}; they hold {sorted(stats)} "
                    "(compute them with train.data.compute_stats on the training demos)"
                )
            r.set(stats[f"{name}/min"], stats[f"{name}/max"], name)


def lowdim_dims_from(cfg: PolicyConfig, stats: dict[str, Any] | None) -> dict[str, int]:
    dims = dict(cfg.lowdim_dims)
    for k in cfg.lowdim_keys:
        if stats is not None and f"obs/{k}/min" in stats:
            d = int(np.asarray(stats[f"obs/{k}/min"]).size)
            if k in dims and dims[k] != d:
                raise ValueError(
                    f"PolicyConfig.lowdim_dims[{k!r}]={dims[k]} but the stats give {d} dimensions"
                )
            dims[k] = d
        if k not in dims:
            raise ValueError(
                f"low-dim key {k!r}: width unknown; pass stats with obs/{k}/min "
                f"or set PolicyConfig.lowdim_dims[{k!r}]"
            )
    return {k: dims[k] for k in cfg.lowdim_keys}
