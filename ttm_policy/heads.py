"""Action heads: features of one step -> K future actions (normalised to [-1, 1]).

Dimensions: B batch, T time (any leading dims `...` work), F feature width (the core's R
output tokens flattened, or pooled), K action horizon (chunk length, 1 without chunks),
A action width (7), Mo mixture components, NB bins per action dimension.

Every head has the same three methods:
    params = head(features)                      features (..., F)
    loss, parts = head.loss(params, target, valid)  target (..., K, A), valid (..., K) bool
    actions = head.predict(params, sample=False)    (..., K, A) normalised
`loss` averages over the valid (step, chunk) entries only; `parts` names it
(`l1`, `mse`, `nll`, `ce`) for the metrics.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal


def trunk(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """LayerNorm, then a 2-layer GELU MLP (robomimic's heads are MLPs over the RNN output)."""
    return nn.Sequential(
        nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out)
    )


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of x (..., K) over entries where valid (..., K) is True (0 if none is)."""
    valid = valid.to(x.dtype)
    return (x * valid).sum() / valid.sum().clamp_min(1.0)


class ContinuousHead(nn.Module):
    """Regresses the K x A actions directly; L1 (ACT, RT-1-free BC) or MSE (robomimic BC).

    `binary_gripper`: the last action dimension (the gripper, open -1 / close +1 once
    normalised) is a logit trained by binary cross-entropy on `target > 0`, and predicted as
    -1 or +1 (its sign), instead of a regressed value that must flip on nearly the same
    observation; the other dimensions are regressed as before."""

    def __init__(
        self,
        *,
        in_dim: int,
        action_dim: int = 7,  # OSC_POSE deltas + gripper
        horizon: int = 1,  # K = 1: one action per step (no chunks)
        hidden: int = 256,  # small next to the core; enough for a 7-D output
        loss: Literal["l1", "mse"] = "l1",  # ACT found L1 better than MSE for chunks
        binary_gripper: bool = False,
    ):
        super().__init__()
        if loss not in ("l1", "mse"):
            raise ValueError(f"ContinuousHead loss={loss!r}: use 'l1' or 'mse'")
        self.K, self.A, self.kind = horizon, action_dim, loss
        self.binary_gripper = bool(binary_gripper)  # None (not decided by ttm-train): off
        self.net = trunk(in_dim, hidden, horizon * action_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).unflatten(-1, (self.K, self.A))  # (..., K, A)

    def loss(self, params, target, valid):
        err = (params - target).abs() if self.kind == "l1" else (params - target).square()
        parts = {}
        if self.binary_gripper:  # the last column: BCE of its logit against target > 0
            bce = F.binary_cross_entropy_with_logits(
                params[..., -1], (target[..., -1] > 0).to(params.dtype), reduction="none"
            )  # (..., K)
            parts["gripper_bce"] = masked_mean(bce, valid)
            err = torch.cat([err[..., :-1], bce.unsqueeze(-1)], dim=-1)
        loss = masked_mean(err.mean(-1), valid)  # mean over A, then over valid (..., K)
        return loss, {self.kind: loss, **parts}

    def close_probability(self, params) -> torch.Tensor:
        """A binary gripper's probability of "close", (..., K)."""
        return torch.sigmoid(params[..., -1])

    def predict(self, params, sample: bool = False) -> torch.Tensor:
        """The regressed dimensions as they are; a binary gripper "close" (+1) where its logit
        is positive, or, with `sample`, with the probability the logit gives (so a close that
        the demonstrations make on one of several alike frames is made at a similar rate,
        rather than never)."""
        if not self.binary_gripper:
            return params  # (..., K, A); deterministic either way
        logit = params[..., -1:]
        close = torch.rand_like(logit) < torch.sigmoid(logit) if sample else logit > 0
        gripper = torch.where(close, 1.0, -1.0).to(params.dtype)  # (..., K, 1)
        return torch.cat([params[..., :-1], gripper], dim=-1)


class GMMHead(nn.Module):
    """Gaussian mixture over each action (robomimic `GMMActorNetwork`), trained by NLL.

    As robomimic: means squashed by tanh (the normalised actions live in [-1, 1]), scales
    softplus + `min_std`, diagonal Gaussians, one mixture per chunk entry (the K entries are
    independent). `predict(sample=False)` returns the mean of the most likely component
    (deterministic, what the save/load and ensembling tests need); robomimic instead samples
    with tiny scales at evaluation, which picks a component at random: `sample=True`.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        action_dim: int = 7,  # OSC_POSE deltas + gripper
        horizon: int = 1,  # K = 1: one action per step (no chunks)
        hidden: int = 256,  # small next to the core; enough for a 7-D output
        modes: int = 5,  # robomimic's default
        min_std: float = 1e-4,  # robomimic's default
    ):
        super().__init__()
        self.K, self.A, self.modes, self.min_std = horizon, action_dim, modes, min_std
        self.net = trunk(in_dim, hidden, horizon * modes * (1 + 2 * action_dim))

    def forward(self, features: torch.Tensor):
        out = self.net(features).unflatten(
            -1, (self.K, self.modes, 1 + 2 * self.A)
        )  # (..., K, Mo, 1+2A)
        logits = out[..., 0]  # (..., K, Mo)
        means = torch.tanh(out[..., 1 : 1 + self.A])  # (..., K, Mo, A)
        scales = F.softplus(out[..., 1 + self.A :]) + self.min_std  # (..., K, Mo, A)
        return logits, means, scales

    def distribution(self, params) -> MixtureSameFamily:
        logits, means, scales = (p.float() for p in params)  # log-probs in float32 under autocast
        comp = Independent(Normal(means, scales), 1)  # batch (..., K, Mo), event (A,)
        return MixtureSameFamily(Categorical(logits=logits), comp)  # batch (..., K)

    def loss(self, params, target, valid):
        nll = -self.distribution(params).log_prob(target)  # (..., K), summed over A
        loss = masked_mean(nll, valid)
        return loss, {"nll": loss}

    def predict(self, params, sample: bool = False) -> torch.Tensor:
        if sample:
            return self.distribution(params).sample()  # (..., K, A)
        logits, means, _ = params
        best = logits.argmax(-1)[..., None, None]  # (..., K, 1, 1)
        idx = best.expand_as(means[..., :1, :])  # (..., K, 1, A); sizes from a tensor (export)
        return means.gather(-2, idx).squeeze(-2)  # (..., K, A)


class DiscreteHead(nn.Module):
    """RT-1's action tokens: each dimension in NB uniform bins over [-1, 1], cross-entropy.

    Targets outside [-1, 1] (a dimension that normalisation passed through unchanged) are
    clipped into the end bins. `predict` returns bin centres: the argmax bin, or a sample.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        action_dim: int = 7,  # OSC_POSE deltas + gripper
        horizon: int = 1,  # K = 1: one action per step (no chunks)
        hidden: int = 256,  # small next to the core; enough for a 7-D output
        bins: int = 256,  # RT-1 uses 256 bins per dimension
    ):
        super().__init__()
        if bins < 2:
            raise ValueError(f"DiscreteHead bins={bins}: need at least 2")
        self.K, self.A, self.bins = horizon, action_dim, bins
        self.net = trunk(in_dim, hidden, horizon * action_dim * bins)
        self.register_buffer("centres", torch.linspace(-1.0, 1.0, bins), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).unflatten(-1, (self.K, self.A, self.bins))  # (..., K, A, NB)

    def to_bins(self, actions: torch.Tensor) -> torch.Tensor:
        """(..., A) in [-1, 1] -> nearest bin index (..., A) int64."""
        x = (actions.clamp(-1.0, 1.0) + 1.0) * 0.5 * (self.bins - 1)
        return x.round().long()

    def loss(self, params, target, valid):
        ce = F.cross_entropy(
            params.flatten(0, -2), self.to_bins(target).flatten(), reduction="none"
        ).view(target.shape)  # (..., K, A)
        loss = masked_mean(ce.mean(-1), valid)
        return loss, {"ce": loss}

    def predict(self, params, sample: bool = False) -> torch.Tensor:
        idx = Categorical(logits=params).sample() if sample else params.argmax(-1)  # (..., K, A)
        return self.centres[idx]
