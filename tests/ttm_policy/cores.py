"""Small instances of every temporal core, for the core tests (and test_precision)."""

from ttm_policy import (
    CausalTransformerConfig,
    CausalTransformerCore,
    GRUConfig,
    GRUCore,
    LSTMConfig,
    LSTMCore,
    TokenTuringMachine,
    TTMConfig,
)

D, N = 32, 5


def make_core(kind: str):
    small = dict(dim=D, layers=1, heads=4, mlp_dim=64)
    if kind == "ttm":
        return TokenTuringMachine(TTMConfig(memory_tokens=16, read_tokens=4, **small))
    if kind == "ttm-gated":
        return TokenTuringMachine(
            TTMConfig(memory_tokens=16, read_tokens=4, write_gate=True, **small)
        )
    if kind == "ttm-copy":
        return TokenTuringMachine(
            TTMConfig(memory_tokens=16, read_tokens=4, write_self_bias=4.0, **small)
        )
    if kind == "ttm-memoryless":
        return TokenTuringMachine(
            TTMConfig(memory_tokens=16, read_tokens=4, memoryless=True, **small)
        )
    if kind == "lstm":
        return LSTMCore(LSTMConfig(dim=D, input_tokens=N, hidden=48, layers=2))
    if kind == "gru":
        return GRUCore(GRUConfig(dim=D, input_tokens=N, hidden=48))
    if kind == "transformer":
        return CausalTransformerCore(CausalTransformerConfig(input_tokens=N, window=4, **small))
    if kind == "transformer-full":
        return CausalTransformerCore(CausalTransformerConfig(input_tokens=N, window=None, **small))
    raise ValueError(kind)


ALL = [
    "ttm",
    "ttm-gated",
    "ttm-copy",
    "ttm-memoryless",
    "lstm",
    "gru",
    "transformer",
    "transformer-full",
]
