"""The temporal cores, in one registry: `--policy NAME` (ttm-train) and `PolicyConfig.core`.

Every core is a module with one interface (dimensions: B batch, T time, N input tokens per
step, D width):
    init_memory(B, device=None, dtype=None) -> state      the state at an episode start
    reset_memory(state, mask (B,) bool) -> state          new episodes where mask is True
    step(tokens (B, N, D), state) -> (out (B, R, D), state)             one control step
    forward(tokens (B, T, N, D), memory=None, reset=None, bptt=None) -> (outs (B, T, R, D), state)
    out_tokens                                            R
    STATE                                                 {state name: axes}, in state order
State is a tensor or a tuple of tensors, batch-first; `ttm-export` names the graph's state
inputs and outputs from `STATE` and `ttm_policy.runtime` reads them from the spec.

A core's settings are a dataclass with `dim` and `input_tokens` (set by PolicyConfig from its
own `dim` and token count), kept in the PolicyConfig field `config_field`, which PolicyConfig
makes from this registry (so `--model.<field>.*` flags and config.json carry it). Adding a
core: its module (settings dataclass + module class with the interface above) and one entry
below (with its import). `train/presets.py` may give it CPU-sized settings; without, it
trains with its settings class's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from torch import nn

from ttm_policy.baselines import (
    CausalTransformerConfig,
    CausalTransformerCore,
    LSTMConfig,
    LSTMCore,
)
from ttm_policy.gru import GRUConfig, GRUCore
from ttm_policy.ttm import TokenTuringMachine, TTMConfig


@dataclass(frozen=True)
class CoreSpec:
    config_field: str
    """The PolicyConfig field holding this core's settings."""
    config: type
    """Its settings dataclass."""
    module: type[nn.Module]
    """The module class, built as module(settings)."""
    sync: dict[str, Any] = field(default_factory=dict)
    """Settings this core fixes, written into the config (so config.json says so)."""
    build: dict[str, Any] = field(default_factory=dict)
    """Settings replaced only when the module is built (the config keeps its own)."""
    about: str = ""

    def make(self, settings: Any) -> nn.Module:
        return self.module(replace(settings, **self.build) if self.build else settings)


CORES: dict[str, CoreSpec] = {
    "ttm": CoreSpec("ttm", TTMConfig, TokenTuringMachine, sync={"memoryless": False},
                    about="TokenTuringMachine: M memory tokens, reads R"),
    "ttm-memoryless": CoreSpec("ttm", TTMConfig, TokenTuringMachine, sync={"memoryless": True},
                               about="the same module reading only the step's tokens (ablation)"),
    "lstm": CoreSpec("lstm", LSTMConfig, LSTMCore, about="robomimic BC-RNN"),
    "transformer": CoreSpec("transformer", CausalTransformerConfig, CausalTransformerCore,
                            about="causal Transformer over the last `window` steps (RT-1)"),
    "none": CoreSpec("transformer", CausalTransformerConfig, CausalTransformerCore,
                     build={"window": 1},
                     about="single frame: the Transformer's blocks over this step's tokens"),
    "gru": CoreSpec("gru", GRUConfig, GRUCore, about="GRU over the flattened step tokens"),
}  # fmt: skip

Core = Literal[tuple(CORES)]  # type: ignore[valid-type]  # the names, for tyro's choices


def config_fields() -> dict[str, type]:
    """PolicyConfig field -> settings dataclass, one per distinct field."""
    return {s.config_field: s.config for s in CORES.values()}


def spec(name: str) -> CoreSpec:
    if name not in CORES:
        raise ValueError(f"unknown temporal core {name!r}; choose one of {sorted(CORES)}")
    return CORES[name]
